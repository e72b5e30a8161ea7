//! Cordoned nodes: three daemons on 127.0.0.2/3/4 over one real etcd (started by
//! the test). A node cordoned through another takes no new replicas; the cordon is
//! kept in its record through the node's own record refreshes and its restart;
//! uncordoned, it takes replicas again. An unknown node is named.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::BlockingClient;

/// The longest a node's state may take to be seen: generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

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

fn nodes(dir: &Path) -> Vec<ClusterNode> {
    client(dir)
        .call(|ch| async move { NodeServiceClient::new(ch).list(ListNodesRequest {}).await })
        .unwrap()
        .into_inner()
        .nodes
}

fn node_get(dir: &Path, name: &str) -> Result<ClusterNode, tonic::Status> {
    let name = name.to_string();
    client(dir)
        .call(|ch| async move {
            NodeServiceClient::new(ch)
                .get(GetNodeRequest { name })
                .await
        })
        .map(|r| r.into_inner())
}

fn cordon(dir: &Path, name: &str, on: bool) -> Result<ClusterNode, tonic::Status> {
    let req = CordonNodeRequest { name: name.into() };
    client(dir)
        .call(|ch| async move {
            let mut c = NodeServiceClient::new(ch);
            if on {
                c.cordon(req).await
            } else {
                c.uncordon(req).await
            }
        })
        .map(|r| r.into_inner())
}

/// Polls `dir`'s node list until `ok`; panics after [`PATIENCE`].
fn wait_nodes(dir: &Path, what: &str, ok: impl Fn(&[ClusterNode]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = nodes(dir);
        if ok(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after {PATIENCE:?} still {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create(dir: &Path, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
    client(dir)
        .call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
        .map(|r| r.into_inner())
}

fn delete(dir: &Path, name: &str) -> bool {
    let name = name.to_string();
    client(dir)
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .destroy(DestroyVolumeRequest { name })
                .await
        })
        .unwrap()
        .into_inner()
        .existed
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

/// The node names of a volume's replicas, sorted.
fn on(v: &Volume) -> Vec<String> {
    let mut n: Vec<_> = v.replicas.iter().map(|r| r.node.clone()).collect();
    n.sort();
    n
}

fn cordoned(ns: &[ClusterNode], name: &str) -> bool {
    ns.iter().any(|n| n.name == name && n.cordoned)
}

#[test]
fn a_cordoned_node_takes_no_new_replicas_and_stays_cordoned() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = etcd.endpoints_arg();
    let d = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| d.path().join(n)).collect();
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
    wait_nodes(&dirs[0], "three nodes up, each with a pool", |ns| {
        ns.len() == 3 && ns.iter().all(|n| n.state == "up" && n.pools.len() == 1)
    });
    assert!(nodes(&dirs[0]).iter().all(|n| !n.cordoned));

    // Unknown nodes are named; so is an empty name.
    let e = cordon(&dirs[0], "zz", true).unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("\"zz\""), "{e:?}");
    let e = node_get(&dirs[0], "zz").unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("no node named \"zz\""), "{e:?}");
    let e = node_get(&dirs[0], "").unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // b cordoned through a (twice: idempotent); every node sees it.
    let got = cordon(&dirs[0], "b", true).unwrap();
    assert!(got.cordoned && got.name == "b", "{got:?}");
    assert!(cordon(&dirs[0], "b", true).unwrap().cordoned);
    let by_id = node_get(&dirs[2], &got.id).unwrap();
    assert!(by_id.cordoned && by_id.name == "b", "{by_id:?}");
    assert!(cordoned(&nodes(&dirs[2]), "b"));
    assert!(!cordoned(&nodes(&dirs[2]), "a"));

    // New replicas go elsewhere; three need b and are refused naming it.
    let v = create(&dirs[2], replicated("v1", 2)).unwrap();
    assert_eq!(on(&v), ["a", "c"], "{v:?}");
    let e = create(&dirs[1], replicated("v2", 3)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("b is cordoned"), "{e:?}");

    // b rewrites its own record when its pool changes (a volume in pb, made
    // through a): the cordon outlives that write.
    let free_before = nodes(&dirs[0])[1].pools[0].free_bytes;
    let solo = CreateVolumeRequest {
        name: "solo".into(),
        size_bytes: 8 * MIB,
        pool: "pb".into(),
        ..Default::default()
    };
    create(&dirs[0], solo).unwrap();
    wait_nodes(
        &dirs[0],
        "b's record refreshed with less free space",
        |ns| ns[1].pools[0].free_bytes < free_before,
    );
    assert!(
        cordoned(&nodes(&dirs[0]), "b"),
        "b's refresh lost its cordon"
    );

    // And its restart.
    stop(&mut b);
    wait_nodes(&dirs[0], "b down", |ns| ns[1].state == "down");
    let mut b = start(&dirs[1], "b", "127.0.0.3", &url);
    wait_nodes(&dirs[0], "b up again, with its pool", |ns| {
        ns[1].state == "up" && ns[1].pools.len() == 1
    });
    assert!(
        cordoned(&nodes(&dirs[1]), "b"),
        "b's restart lost its cordon"
    );
    let e = create(&dirs[0], replicated("v2", 3)).unwrap_err();
    assert!(e.message().contains("b is cordoned"), "{e:?}");

    // Uncordoned (through b itself): three replicas fit again.
    let got = cordon(&dirs[1], "b", false).unwrap();
    assert!(!got.cordoned, "{got:?}");
    let v = create(&dirs[0], replicated("v2", 3)).unwrap();
    assert_eq!(on(&v), ["a", "b", "c"], "{v:?}");

    for v in ["v1", "v2", "solo"] {
        assert!(delete(&dirs[0], v), "{v}");
    }
    stop(&mut c);
    stop(&mut b);
    stop(&mut a);
}
