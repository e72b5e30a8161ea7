//! `ferrox --cluster`: the control plane's state in etcd (a real etcd, started by the
//! test), a clear exit 2 when etcd does not answer (no fallback to redb), and clear
//! errors for bad endpoints.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::state::{EtcdStore, StateStore};
use ferrox_control::BlockingClient;

const MIB: u64 = 1 << 20;

fn ferrox(args: &[&str], data: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
        ])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrox");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unreachable_cluster_is_exit_2_and_no_fallback() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", dead_port());
    let (code, err) = ferrox(&["--cluster", &url], d.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach the cluster store") && err.contains(&url),
        "{err}"
    );
    assert!(err.contains("etcd"), "the reason: {err}");
    assert!(
        !d.path().join("control.redb").exists(),
        "no local store was opened"
    );
    assert!(!d.path().join("ferrox.sock").exists());
}

#[test]
fn bad_endpoints_are_named() {
    let d = tempfile::tempdir().unwrap();
    for (arg, needles) in [
        (
            "127.0.0.1:2379",
            &["--cluster", "\"127.0.0.1:2379\"", "http://HOST:PORT"][..],
        ),
        (
            "http://127.0.0.1:2379,https://x:1",
            &["\"https://x:1\"", "https is not supported"],
        ),
        ("http://127.0.0.1", &["no port"]),
        ("", &["--cluster", "at least one etcd endpoint"]),
    ] {
        let (code, err) = ferrox(&["--cluster", arg], d.path());
        assert_eq!(code, 2, "{arg:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{arg:?}: stderr should mention {n}: {err}");
        }
    }
    let (code, err) = ferrox(
        &["--cluster", "http://127.0.0.1:2379", "--no-control"],
        d.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-control"), "{err}");

    for (toml, needles) in [
        (
            "[cluster]\nendpoints = []\n",
            &["cluster.endpoints", "at least one"][..],
        ),
        (
            "[cluster]\nendpoints = [\"ftp://x:1\"]\n",
            &["cluster.endpoints", "\"ftp\""],
        ),
        ("[cluster]\nendpoint = \"http://x:1\"\n", &["endpoint"]),
    ] {
        let p = d.path().join("ferrox.toml");
        std::fs::write(&p, toml).unwrap();
        let (code, err) = ferrox(&["--config", p.to_str().unwrap()], d.path());
        assert_eq!(code, 2, "{toml:?}: {err}");
        for n in needles {
            assert!(
                err.contains(n),
                "{toml:?}: stderr should mention {n}: {err}"
            );
        }
    }
}

/// Starts the daemon on `dir` with `--cluster`; returns once it printed "ready".
fn start(dir: &Path, cluster: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
        ])
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
    panic!("ferrox exited before it was ready: {:?}", child.wait());
}

fn stop(mut child: Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_control_state_lives_in_etcd() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let daemon = start(d.path(), &etcd.endpoints_arg());
    let c = BlockingClient::connect(&d.path().join("ferrox.sock")).unwrap();
    let img = d.path().join("p0.img").display().to_string();
    c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name: "p0".into(),
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
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: "v1".into(),
                size_bytes: 4 * MIB,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    drop(c);
    stop(daemon);
    assert!(
        !d.path().join("control.redb").exists(),
        "with --cluster there is no local store"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = rt.block_on(async {
        let s = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
        let (kvs, _) = s.range("/ferrox/v1/").await.unwrap();
        kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>()
    });
    for k in ["/ferrox/v1/pool/p0", "/ferrox/v1/volume/v1"] {
        assert!(keys.iter().any(|x| x == k), "{k} in etcd: {keys:?}");
    }

    // A restart on the same etcd finds its volume again.
    let daemon = start(d.path(), &etcd.endpoints_arg());
    let c = BlockingClient::connect(&d.path().join("ferrox.sock")).unwrap();
    let vols = c
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .list(ListVolumesRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(
        vols.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["v1"]
    );
    drop(c);
    stop(daemon);
}

/// etcd lost while the daemon runs: the data path keeps serving, a change answers
/// `Unavailable` with etcd's reason, and changes work again once etcd is back.
#[test]
fn losing_etcd_while_running_and_getting_it_back() {
    let Some(mut etcd) = EtcdCluster::start(1) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let daemon = start(d.path(), &etcd.endpoints_arg());
    let c = BlockingClient::connect(&d.path().join("ferrox.sock")).unwrap();
    let listeners = c
        .call(|ch| async move {
            ferrox_control::api::node_service_client::NodeServiceClient::new(ch)
                .get_info(GetNodeInfoRequest {})
                .await
        })
        .unwrap()
        .into_inner()
        .listeners;
    let nvme: std::net::SocketAddr = listeners[0].parse().unwrap();
    let create = |name: &str| {
        let img = d.path().join(format!("{name}.img")).display().to_string();
        let name = name.to_string();
        c.call(|ch| async move {
            PoolServiceClient::new(ch)
                .create(CreatePoolRequest {
                    name,
                    base: Some(PoolBase {
                        base: Some(pool_base::Base::Path(img)),
                        size_bytes: 64 * MIB,
                    }),
                    cluster_size: 0,
                    max_overcommit: 0,
                })
                .await
        })
    };

    etcd.kill(0);
    let e = create("p1").unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("etcd"), "the reason: {}", e.message());
    // The data path does not need etcd.
    assert!(std::net::TcpStream::connect(nvme).is_ok());

    etcd.restart(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match create("p1") {
            Ok(p) => {
                assert_eq!(p.into_inner().state, "online");
                break;
            }
            Err(e) if e.code() == tonic::Code::Unavailable => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "etcd is back but changes still fail: {e:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    drop(c);
    stop(daemon);
}
