//! The daemon's control plane across a `kill -9` in the middle of a run of volume
//! creates: after a restart, the store and the pool agree (no volume the store does
//! not know, no record whose volume is gone), and published volumes are back.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;

const MIB: u64 = 1 << 20;

/// Starts the daemon on `dir` and returns once it printed "ready".
fn start(dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrox");
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.expect("read ferrox stdout");
        if line.contains("ferrox: ready") {
            return child;
        }
    }
    panic!("ferrox exited before it was ready: {:?}", child.wait());
}

fn volumes(c: &BlockingClient) -> Vec<Volume> {
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .list(ListVolumesRequest::default())
            .await
    })
    .unwrap()
    .into_inner()
    .volumes
}

#[test]
fn kill_9_during_creates_is_reconciled_on_start() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("ferrox.sock");
    let mut daemon = start(d.path());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let c = BlockingClient::connect(&sock).unwrap();
    let img = d.path().join("p0.img").display().to_string();
    c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name: "p0".into(),
                base: Some(PoolBase {
                    base: Some(pool_base::Base::Path(img)),
                    size_bytes: 256 * MIB,
                }),
                cluster_size: 0,
                max_overcommit: 0,
            })
            .await
    })
    .unwrap();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: "keep".into(),
                size_bytes: 4 * MIB,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .create(CreateSnapshotRequest {
                volume: "keep".into(),
                name: "keep-s".into(),
                group_id: String::new(),
            })
            .await
    })
    .unwrap();
    let nqn = c
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .publish(PublishRequest {
                    volume: "keep".into(),
                    any_host: true,
                    ..Default::default()
                })
                .await
        })
        .unwrap()
        .into_inner()
        .nqn;
    drop(c);

    // A bounded run of creates; the daemon is killed once five have completed, while
    // the sixth and later are in flight.
    let (tx, rx) = std::sync::mpsc::channel();
    let sock2 = sock.clone();
    let creator = std::thread::spawn(move || {
        let c = BlockingClient::connect(&sock2).unwrap();
        for i in 0..40 {
            let r = c.call(|ch| async move {
                VolumeServiceClient::new(ch)
                    .create(CreateVolumeRequest {
                        name: format!("v{i}"),
                        size_bytes: 4 * MIB,
                        thin: i % 2 == 0,
                        ..Default::default()
                    })
                    .await
            });
            if r.is_err() || tx.send(i).is_err() {
                return i;
            }
        }
        40
    });
    for _ in 0..5 {
        rx.recv().expect("five creates before the kill");
    }
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let attempted = creator.join().unwrap();
    assert!(attempted >= 5);

    let mut daemon = start(d.path());
    let c = BlockingClient::connect(&sock).unwrap();
    let vols = volumes(&c);
    let snaps = c
        .call(|ch| async move {
            SnapshotServiceClient::new(ch)
                .list(ListSnapshotsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .snapshots;
    let pool = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .get(GetPoolRequest { name: "p0".into() })
                .await
        })
        .unwrap()
        .into_inner();
    // Every record's volume exists, and every volume in the pool has a record.
    assert!(vols.iter().all(|v| v.state == "online"), "{vols:?}");
    assert!(snaps.iter().all(|s| s.state == "online"), "{snaps:?}");
    assert_eq!(
        pool.volumes as usize,
        vols.len() + snaps.len(),
        "{pool:?} {vols:?}"
    );
    // The five acknowledged creates survived; nothing beyond the attempts appeared.
    for i in 0..5 {
        assert!(
            vols.iter().any(|v| v.name == format!("v{i}")),
            "v{i} lost: {vols:?}"
        );
    }
    assert!(vols.len() <= 1 + attempted + 1, "{vols:?}");
    let keep = vols.iter().find(|v| v.name == "keep").unwrap();
    assert_eq!(keep.published_nqn, nqn);
    let subs = c
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .list_subsystems(ListSubsystemsRequest {})
                .await
        })
        .unwrap()
        .into_inner()
        .subsystems;
    assert!(
        subs.iter().any(|s| s.nqn == nqn && s.namespaces.len() == 1),
        "{subs:?}"
    );
    // Creating an interrupted one again works (the name is free or idempotent).
    let again = attempted.min(39);
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: format!("v{again}"),
                size_bytes: 4 * MIB,
                thin: again % 2 == 0,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    drop(c);
    // A clean stop: SIGTERM to this pid, then wait.
    Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(daemon.wait().unwrap().success());
    assert!(!sock.exists(), "the socket is removed on a clean stop");
}

#[test]
fn no_control_starts_without_a_socket() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
            "--no-control",
        ])
        .arg("--data-dir")
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut saw_socket = false;
    for line in out.lines() {
        let line = line.unwrap();
        saw_socket |= line.contains("control socket");
        if line.contains("ferrox: ready") {
            break;
        }
    }
    assert!(!saw_socket);
    assert!(!d.path().join("ferrox.sock").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}
