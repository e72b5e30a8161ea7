//! Two creates of one volume name at once through two different nodes: three
//! daemons on 127.0.0.2/3/4 over one real etcd (started by the test). Exactly one
//! volume results; the same request through both answers it on both, different
//! requests answer it on one and AlreadyExists naming the difference on the other,
//! and no lvol of the losing request is left behind.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::BlockingClient;

const PATIENCE: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// Rounds of each race (bounded; each is a few RPCs).
const ROUNDS: usize = 4;

fn start(dir: &Path, name: &str, ip: &str, cluster: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args(["--cores", "0", "--default-size", "16MiB", "--log", "warn"])
        .args(["--listen", &format!("{ip}:0")])
        .args(["--node-name", name, "--labels", "zone=z1"])
        .args(["--cluster", cluster])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrox");
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.expect("read ferrox stdout").contains("ferrox: ready") {
            return child;
        }
    }
    panic!(
        "ferrox {name} exited before it was ready: {:?}",
        child.wait()
    );
}

fn stop(child: &mut Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn client(dir: &Path) -> BlockingClient {
    BlockingClient::connect(&dir.join("ferrox.sock")).unwrap()
}

fn create(c: &BlockingClient, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
    c.call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
        .map(|r| r.into_inner())
}

/// `x` through `dirs[i]` and `y` through `dirs[j]`, released together.
fn race(
    dirs: &[PathBuf],
    (i, x): (usize, CreateVolumeRequest),
    (j, y): (usize, CreateVolumeRequest),
) -> (Result<Volume, tonic::Status>, Result<Volume, tonic::Status>) {
    let go = Arc::new(Barrier::new(2));
    let (g, d) = (go.clone(), dirs[j].clone());
    let t = std::thread::spawn(move || {
        let c = client(&d);
        g.wait();
        create(&c, y)
    });
    let c = client(&dirs[i]);
    go.wait();
    let here = create(&c, x);
    (here, t.join().unwrap())
}

fn lvols(dir: &Path) -> u32 {
    client(dir)
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .list(ListPoolsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .pools[0]
        .volumes
}

fn total(dirs: &[PathBuf]) -> u32 {
    dirs.iter().map(|d| lvols(d)).sum()
}

fn delete(dir: &Path, name: &str) {
    let name = name.to_string();
    let existed = client(dir)
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .destroy(DestroyVolumeRequest { name })
                .await
        })
        .unwrap()
        .into_inner()
        .existed;
    assert!(existed);
}

fn replicated(name: &str, replicas: u32) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        size_bytes: 4 * MIB,
        replicas,
        spread: "node".into(),
        ..Default::default()
    }
}

/// Exactly one of `r` succeeded; the other is AlreadyExists containing `why`.
fn one_winner(
    r: (Result<Volume, tonic::Status>, Result<Volume, tonic::Status>),
    why: &str,
) -> Volume {
    match r {
        (Ok(v), Err(e)) | (Err(e), Ok(v)) => {
            assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
            assert!(e.message().contains(why), "{why:?} not in {e:?}");
            v
        }
        other => panic!("not exactly one winner: {other:?}"),
    }
}

#[test]
fn one_name_created_at_once_through_two_nodes_is_one_volume() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = etcd.endpoints_arg();
    let d = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| d.path().join(n)).collect();
    let mut a = start(&dirs[0], "a", "127.0.0.2", &url);
    let mut b = start(&dirs[1], "b", "127.0.0.3", &url);
    let mut c = start(&dirs[2], "c", "127.0.0.4", &url);
    for (dir, pool) in dirs.iter().zip(["pa", "pb", "pc"]) {
        let img = dir.join(format!("{pool}.img")).display().to_string();
        client(dir)
            .call(|ch| async move {
                PoolServiceClient::new(ch)
                    .create(CreatePoolRequest {
                        name: pool.into(),
                        base: Some(PoolBase {
                            base: Some(pool_base::Base::Path(img)),
                            size_bytes: 64 * MIB,
                        }),
                        cluster_size: 0,
                        max_overcommit: 0,
                    })
                    .await
            })
            .unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ns = client(&dirs[0])
            .call(|ch| async move { NodeServiceClient::new(ch).list(ListNodesRequest {}).await })
            .unwrap()
            .into_inner()
            .nodes;
        if ns.len() == 3 && ns.iter().all(|n| n.state == "up" && n.pools.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{ns:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = total(&dirs);

    for round in 0..ROUNDS {
        // The same request through a and b: both answer the one volume.
        let name = format!("same{round}");
        let (x, y) = race(&dirs, (0, replicated(&name, 2)), (1, replicated(&name, 2)));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.uuid, y.uuid);
        assert_eq!(x.replicas, y.replicas);
        assert_eq!(total(&dirs), before + 2, "{name}");
        delete(&dirs[2], &name);

        // Different replica counts through b and c: one volume, the other call
        // names the difference.
        let name = format!("diff{round}");
        let r = race(&dirs, (1, replicated(&name, 2)), (2, replicated(&name, 3)));
        let v = one_winner(r, "replicas");
        let n = v.replicas.len() as u32;
        assert!(n == 2 || n == 3, "{v:?}");
        assert_eq!(total(&dirs), before + n, "{name}: {v:?}");
        delete(&dirs[0], &name);

        // One copy in pa (through c) against two replicas (through a, which
        // places its first in pa too): one volume, the other names the difference.
        let name = format!("mixed{round}");
        let single = CreateVolumeRequest {
            pool: "pa".into(),
            ..replicated(&name, 1)
        };
        let r = race(&dirs, (2, single), (0, replicated(&name, 2)));
        let v = one_winner(r, "replicas");
        let n = v.replicas.len().max(1) as u32;
        assert_eq!(total(&dirs), before + n, "{name}: {v:?}");
        delete(&dirs[1], &name);
        assert_eq!(total(&dirs), before);
    }
    stop(&mut c);
    stop(&mut b);
    stop(&mut a);
}
