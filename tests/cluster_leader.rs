//! The cluster's leader and its reconciliation: three daemons on 127.0.0.2/3/4 over
//! one real etcd (started by the test).
//!
//! * A node killed with `kill -9` in the middle of creating a 3-replica volume (its
//!   create stopped for good after two replicas by the daemon's test hook): once it
//!   is back, the volume exists with 3 replicas or not at all, and every lvol of
//!   every pool is either a record's or reported as an orphan.
//! * An lvol no record accounts for is reported (node get, the metric), not deleted.
//! * The leader killed with `kill -9`: another node leads within the lease's TTL
//!   (plus etcd's expiry check and the poll).
//! * The metrics endpoint shows every node up or down, the leader, and placement
//!   refusals by reason.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::state::{EtcdStore, StateStore};
use ferrox_control::BlockingClient;

/// The longest a node's state may take to be seen: generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// The longest the leader may take to settle an interrupted create: the crashed
/// create's lock lives as long as its session lease (15 s), then a pass (2 s).
const RECONCILE_PATIENCE: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;
const HOOK: &str = "FERROX_TEST_STOP_CREATE_AFTER";

/// A daemon: its process and where it serves metrics.
struct Daemon {
    child: Child,
    metrics: String,
}

fn start(dir: &Path, name: &str, ip: &str, cluster: &str, hook: Option<&str>) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrox"));
    cmd.args(["--cores", "0", "--default-size", "16MiB", "--log", "warn"])
        .args(["--listen", &format!("{ip}:0")])
        .args(["--metrics-addr", &format!("{ip}:0")])
        .args(["--node-name", name, "--labels", "zone=z1"])
        .args(["--cluster", cluster])
        .arg("--data-dir")
        .arg(dir)
        .env_remove(HOOK)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = hook {
        cmd.env(HOOK, n);
    }
    let mut child = cmd.spawn().expect("start ferrox");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut metrics = None;
    for line in out.lines() {
        let line = line.expect("read ferrox stdout");
        if let Some(u) = line.strip_prefix("ferrox: metrics on http://") {
            metrics = u.split('/').next().map(str::to_string);
        }
        if line.contains("ferrox: ready") {
            let metrics = metrics.expect("the daemon prints its metrics address");
            return Daemon { child, metrics };
        }
    }
    panic!(
        "ferrox {name} exited before it was ready: {:?}",
        child.wait()
    );
}

fn kill9(d: &mut Daemon) {
    d.child.kill().unwrap();
    d.child.wait().unwrap();
}

fn stop(d: &mut Daemon) {
    let st = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(d.child.wait().unwrap().code(), Some(0));
}

/// One scrape of `addr`'s metrics.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    body
}

/// Polls `addr`'s metrics until every line of `want` is in them.
fn wait_metrics(addr: &str, want: &[String]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = scrape(addr);
        if want.iter().all(|w| got.lines().any(|l| l == w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {PATIENCE:?} the metrics lack some of {want:?}:\n{got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// Polls `dir`'s node list until `ok`; panics after `patience`.
fn wait_nodes(
    dir: &Path,
    what: &str,
    patience: Duration,
    ok: impl Fn(&[ClusterNode]) -> bool,
) -> Vec<ClusterNode> {
    let deadline = Instant::now() + patience;
    loop {
        let got = nodes(dir);
        if ok(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after {patience:?} still {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leaders(ns: &[ClusterNode]) -> Vec<String> {
    ns.iter()
        .filter(|n| n.leader)
        .map(|n| n.name.clone())
        .collect()
}

/// The lvols in `dir`'s node's own pool, as its pool list counts them.
fn lvols(dir: &Path) -> u32 {
    let pools = client(dir)
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .list(ListPoolsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "{pools:?}");
    pools[0].volumes
}

fn create(dir: &Path, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
    client(dir)
        .call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
        .map(|r| r.into_inner())
}

fn get(dir: &Path, name: &str) -> Result<Volume, tonic::Status> {
    let name = name.to_string();
    client(dir)
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .get(GetVolumeRequest { name })
                .await
        })
        .map(|r| r.into_inner())
}

fn replica(dir: &Path, name: &str, pool: &str, make: bool, size: u64, thin: bool) {
    let req = ReplicaRequest {
        name: name.into(),
        pool: pool.into(),
        size_bytes: size,
        thin,
    };
    client(dir)
        .call(|ch| async move {
            let mut c = VolumeServiceClient::new(ch);
            if make {
                c.create_replica(req).await.map(drop)
            } else {
                c.destroy_replica(req).await.map(drop)
            }
        })
        .unwrap();
}

fn replicated(name: &str, replicas: u32, spread: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        size_bytes: 8 * MIB,
        replicas,
        spread: spread.into(),
        ..Default::default()
    }
}

/// The volume record of `name` in the cluster's store, as JSON text, if any.
fn record(etcd: &(tokio::runtime::Runtime, EtcdStore), name: &str) -> Option<String> {
    let key = ferrox_control::state::key("volume", name);
    let kv = etcd.0.block_on(etcd.1.get(&key)).unwrap();
    kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

fn line(name: &str, labels: &str, v: u64) -> String {
    format!("ferrox_{name}{{{labels}}} {v}")
}

/// Starts a create of 3-replica volume `name` through node `via` (whose daemon
/// runs with the hook set to 2) in a thread; returns once two replicas are made
/// and the intent record names all three.
fn stop_mid_create(
    dirs: &[PathBuf],
    store: &(tokio::runtime::Runtime, EtcdStore),
    via: usize,
    name: &str,
    before: &[u32],
) -> std::thread::JoinHandle<Result<Volume, tonic::Status>> {
    let (dir, n) = (dirs[via].clone(), name.to_string());
    let stuck = std::thread::spawn(move || create(&dir, replicated(&n, 3, "node")));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let made: u32 = dirs.iter().map(|d| lvols(d)).sum::<u32>() - before.iter().sum::<u32>();
        if made == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{made} replicas made, not 2");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The intent: in phase Creating, all three replicas placed.
    let half = record(store, name).expect("the intent record");
    assert!(half.contains("\"phase\":\"creating\""), "{half}");
    assert_eq!(half.matches("\"pool\":").count(), 4, "{half}");
    stuck
}

#[test]
fn the_leader_finishes_or_rolls_back_a_create_a_kill_9_interrupted() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = etcd.endpoints_arg();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(EtcdStore::connect(&etcd.endpoints())).unwrap();
    let store = (rt, store);
    let d = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| d.path().join(n)).collect();
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut a = start(&dirs[0], "a", ips[0], &url, None);
    // b's and c's creates of replicated volumes stop for good after two replicas.
    let mut b = start(&dirs[1], "b", ips[1], &url, Some("2"));
    let mut c = start(&dirs[2], "c", ips[2], &url, Some("2"));
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
    let ns = wait_nodes(&dirs[0], "three up, one leader", PATIENCE, |ns| {
        ns.len() == 3
            && ns.iter().all(|n| n.state == "up" && n.pools.len() == 1)
            && leaders(ns).len() == 1
    });
    let first = leaders(&ns).remove(0);
    // Every node agrees, and the metrics say the same.
    for (dir, dmn) in dirs.iter().zip([&a, &b, &c]) {
        assert_eq!(leaders(&nodes(dir)), std::slice::from_ref(&first));
        let want: Vec<String> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| {
                [
                    line("cluster_node_up", &format!("node=\"{n}\""), 1),
                    line(
                        "cluster_leader",
                        &format!("node=\"{n}\""),
                        u64::from(*n == first),
                    ),
                ]
            })
            .collect();
        wait_metrics(&dmn.metrics, &want);
    }

    // Placement refusals are counted by reason on the node that answered them.
    let e = create(&dirs[0], replicated("nope", 2, "zone")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = create(
        &dirs[0],
        CreateVolumeRequest {
            size_bytes: 1024 * MIB,
            ..replicated("nope", 2, "node")
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = create(&dirs[0], replicated("nope", 3, "zone")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    wait_metrics(
        &a.metrics,
        &[
            line("placement_failures_total", "reason=\"domains\"", 2),
            line("placement_failures_total", "reason=\"space\"", 1),
        ],
    );
    wait_metrics(
        &b.metrics,
        &[line("placement_failures_total", "reason=\"domains\"", 0)],
    );

    // Round 1: a create through c stops after two of its three replicas; c dies
    // there and stays down. The leader rolls the volume back as far as it can (the
    // replicas on a and b; the record stays, deleting, for c's), and finishes the
    // roll back once c is back.
    let before: Vec<u32> = dirs.iter().map(|d| lvols(d)).collect();
    let stuck = stop_mid_create(&dirs, &store, 2, "db0", &before);
    kill9(&mut c);
    assert!(
        stuck.join().unwrap().is_err(),
        "the create through c answered"
    );
    let deadline = Instant::now() + RECONCILE_PATIENCE;
    loop {
        let r = record(&store, "db0").expect("db0's record stays while c is down");
        if r.contains("\"phase\":\"deleting\"")
            && lvols(&dirs[0]) == before[0]
            && lvols(&dirs[1]) == before[1]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "db0 still {r} after {RECONCILE_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = start(&dirs[2], "c", ips[2], &url, None);
    let deadline = Instant::now() + RECONCILE_PATIENCE;
    while let Some(r) = record(&store, "db0") {
        assert!(
            Instant::now() < deadline,
            "db0 still {r} after {RECONCILE_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(lvols(dir), before[i], "{}", dir.display());
    }
    assert_eq!(
        get(&dirs[0], "db0").unwrap_err().code(),
        tonic::Code::NotFound
    );

    // Round 2: the same through b, restarted at once: the volume exists with its
    // three replicas, or not at all.
    let stuck = stop_mid_create(&dirs, &store, 1, "db1", &before);
    kill9(&mut b);
    assert!(
        stuck.join().unwrap().is_err(),
        "the create through b answered"
    );
    let mut b = start(&dirs[1], "b", ips[1], &url, None);
    let deadline = Instant::now() + RECONCILE_PATIENCE;
    let settled = loop {
        match record(&store, "db1") {
            None => break None,
            Some(r) if r.contains("\"phase\":\"ready\"") => {
                break Some(get(&dirs[0], "db1").unwrap())
            }
            Some(r) => assert!(
                Instant::now() < deadline,
                "db1 still {r} after {RECONCILE_PATIENCE:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("after the crash, db1: {settled:?}");
    let extra = match &settled {
        Some(v) => {
            assert_eq!(v.replicas.len(), 3, "{v:?}");
            1
        }
        None => 0,
    };
    // Every pool holds exactly what the records say: one replica each when the
    // volume was finished, nothing when it was rolled back; nothing unreported.
    let ns = wait_nodes(&dirs[0], "b up again", PATIENCE, |ns| ns[1].state == "up");
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(
            lvols(dir),
            before[i] + extra,
            "{}: {settled:?}",
            dir.display()
        );
        assert!(ns[i].orphans.is_empty(), "{:?}", ns[i]);
    }
    // Retrying the create answers what the leader settled (or makes it anew).
    let v = create(&dirs[0], replicated("db1", 3, "node")).unwrap();
    assert_eq!(v.replicas.len(), 3);

    // An lvol no record accounts for: reported by its node, never deleted.
    replica(&dirs[1], "stray", "pb", true, 4 * MIB, true);
    let ns = wait_nodes(&dirs[0], "b reports its orphan", PATIENCE, |ns| {
        ns[1].orphans == ["pb/stray"]
    });
    assert!(
        ns[0].orphans.is_empty() && ns[2].orphans.is_empty(),
        "{ns:?}"
    );
    wait_metrics(&b.metrics, &[line("orphan_lvols", "pool=\"pb\"", 1)]);
    wait_metrics(&a.metrics, &[line("orphan_lvols", "pool=\"pa\"", 0)]);
    assert_eq!(lvols(&dirs[1]), before[1] + 2);
    replica(&dirs[1], "stray", "pb", false, 4 * MIB, true);
    wait_nodes(&dirs[0], "b's orphan gone", PATIENCE, |ns| {
        ns[1].orphans.is_empty()
    });

    // A replica the records place in pc, gone from it: c says it is missing; back,
    // c says nothing.
    wait_metrics(&c.metrics, &[line("missing_replicas", "pool=\"pc\"", 0)]);
    replica(&dirs[2], "db1", "pc", false, 8 * MIB, false);
    wait_metrics(&c.metrics, &[line("missing_replicas", "pool=\"pc\"", 1)]);
    replica(&dirs[2], "db1", "pc", true, 8 * MIB, false);
    wait_metrics(&c.metrics, &[line("missing_replicas", "pool=\"pc\"", 0)]);

    // The leader killed: another node leads, within the lease's TTL (5 s) plus
    // etcd's expiry check, once it is seen down.
    let ns = nodes(&dirs[0]);
    let old = leaders(&ns).remove(0);
    let i = ns.iter().position(|n| n.name == old).unwrap();
    let survivor = (i + 1) % 3;
    let killed_at = Instant::now();
    match i {
        0 => kill9(&mut a),
        1 => kill9(&mut b),
        _ => kill9(&mut c),
    }
    let ns = wait_nodes(&dirs[survivor], "a new leader", PATIENCE, |ns| {
        let l = leaders(ns);
        l.len() == 1 && l[0] != old
    });
    let took = killed_at.elapsed();
    let new = leaders(&ns).remove(0);
    eprintln!("leader {old} killed: {new} leads after {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let dmn = match survivor {
        0 => &a,
        1 => &b,
        _ => &c,
    };
    wait_metrics(
        &dmn.metrics,
        &[
            line("cluster_node_up", &format!("node=\"{old}\""), 0),
            line("cluster_leader", &format!("node=\"{old}\""), 0),
            line("cluster_leader", &format!("node=\"{new}\""), 1),
        ],
    );
    for (j, dmn) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        if j != i {
            stop(dmn);
        }
    }
}
