//! Cluster figures (not a test: it prints numbers, asserts only that the operations
//! succeed). Three daemons on 127.0.0.2/3/4 over one real etcd member, control API
//! between nodes on TCP with mutual TLS, each node one reactor on core 0.
//!
//! `cargo bench --bench cluster -- [--n N] [--volumes V] [--kills K]` prints:
//! 1. create / publish / unpublish / delete latency, p50 and p99 over N rounds
//!    (default 100), of a thin volume in node c's pool asked through node a (carried
//!    out on c), beside the same asked through c itself, interleaved;
//! 2. time from `kill -9` of node c to `down` in node a's node list (K times, default
//!    3; the lease TTL is 5 s);
//! 3. V thin volumes (default 1000) over the three nodes' pools, created through a:
//!    mean create time, `volume list` time through a (p50 of 10), and the etcd keys
//!    and bytes each volume adds.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{pki, Node, Pki, MIB};
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::state::{EtcdStore, StateStore};

const BIN: &str = env!("CARGO_BIN_EXE_ferrox");
const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const LABELS: [&str; 3] = ["zone=z1", "zone=z2", "zone=z3"];

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, p99) in milliseconds.
fn pct(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.50), at(0.99))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn create(n: &Node, name: &str, pool: &str) -> Duration {
    let req = CreateVolumeRequest {
        name: name.into(),
        size_bytes: 4 * MIB,
        thin: true,
        pool: pool.into(),
        ..Default::default()
    };
    let c = n.client();
    let (r, t) =
        timed(|| c.call(|ch| async move { VolumeServiceClient::new(ch).create(req).await }));
    r.unwrap_or_else(|e| panic!("create {name} through {}: {e}", n.name));
    t
}

fn publish(n: &Node, name: &str) -> Duration {
    let req = PublishRequest {
        volume: name.into(),
        any_host: true,
        ..Default::default()
    };
    let c = n.client();
    let (r, t) =
        timed(|| c.call(|ch| async move { TargetServiceClient::new(ch).publish(req).await }));
    r.unwrap_or_else(|e| panic!("publish {name} through {}: {e}", n.name));
    t
}

fn unpublish(n: &Node, name: &str) -> Duration {
    let req = UnpublishRequest {
        volume: name.into(),
    };
    let c = n.client();
    let (r, t) =
        timed(|| c.call(|ch| async move { TargetServiceClient::new(ch).unpublish(req).await }));
    assert!(
        r.unwrap_or_else(|e| panic!("unpublish {name}: {e}"))
            .into_inner()
            .existed
    );
    t
}

fn delete(n: &Node, name: &str) -> Duration {
    let req = DestroyVolumeRequest { name: name.into() };
    let c = n.client();
    let (r, t) =
        timed(|| c.call(|ch| async move { VolumeServiceClient::new(ch).destroy(req).await }));
    assert!(
        r.unwrap_or_else(|e| panic!("delete {name}: {e}"))
            .into_inner()
            .existed
    );
    t
}

fn list(n: &Node) -> (usize, Duration) {
    let c = n.client();
    let (r, t) = timed(|| {
        c.call(|ch| async move {
            VolumeServiceClient::new(ch)
                .list(ListVolumesRequest::default())
                .await
        })
    });
    (r.unwrap().into_inner().volumes.len(), t)
}

fn state_of(n: &Node, of: &str) -> Option<String> {
    n.nodes()
        .into_iter()
        .find(|x| x.name == of)
        .map(|x| x.state)
}

/// Keys and bytes (key + value) under /ferrox/ in etcd.
fn etcd_usage(rt: &tokio::runtime::Runtime, endpoints: &[String]) -> (usize, usize) {
    rt.block_on(async {
        let s = EtcdStore::connect(endpoints).await.expect("etcd");
        let (kvs, _) = s.range("/ferrox/").await.expect("range");
        let bytes = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        (kvs.len(), bytes)
    })
}

fn latency(a: &Node, c: &Node, rounds: usize) {
    let ops = ["create", "publish", "unpublish", "delete"];
    let mut remote: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut local: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for i in 0..rounds {
        for (via, out) in [(a, &mut remote), (c, &mut local)] {
            let v = format!("lat-{}-{i}", via.name);
            out[0].push(create(via, &v, "pc"));
            out[1].push(publish(via, &v));
            out[2].push(unpublish(via, &v));
            out[3].push(delete(via, &v));
        }
    }
    println!("\n1. latency over {rounds} rounds, thin 4 MiB volume in node c's pool (ms)");
    println!(
        "| op | through a (forwarded to c) p50 / p99 | through c (local) p50 / p99 | ratio p50 |"
    );
    println!("|---|---|---|---|");
    for (k, op) in ops.iter().enumerate() {
        let (r50, r99) = pct(&mut remote[k]);
        let (l50, l99) = pct(&mut local[k]);
        println!(
            "| {op} | {r50:.2} / {r99:.2} | {l50:.2} / {l99:.2} | {:.2}x |",
            r50 / l50
        );
    }
}

fn kill_to_down(a: &Node, c: &mut Node, kills: usize, url: &str, pki: &Pki) {
    println!("\n2. kill -9 of node c until a lists it down (lease TTL 5 s)");
    let mut seen = Vec::new();
    for _ in 0..kills {
        let t = Instant::now();
        c.kill();
        let deadline = t + Duration::from_secs(60);
        while state_of(a, "c").as_deref() != Some("down") {
            assert!(Instant::now() < deadline, "c still not down after 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        seen.push(t.elapsed());
        c.restart(BIN, LABELS[2], url, pki);
        a.wait_nodes("c up again", Duration::from_secs(60), |ns| {
            ns.iter().any(|n| n.name == "c" && n.state == "up")
        });
    }
    let s: Vec<String> = seen
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!("kill -9 -> down, seconds: {}", s.join(", "));
}

fn many(nodes: &[Node], volumes: usize, rt: &tokio::runtime::Runtime, endpoints: &[String]) {
    let (keys0, bytes0) = etcd_usage(rt, endpoints);
    let a = &nodes[0];
    let mut total = Duration::ZERO;
    for i in 0..volumes {
        total += create(a, &format!("m{i:05}"), ["pa", "pb", "pc"][i % 3]);
    }
    let (keys1, bytes1) = etcd_usage(rt, endpoints);
    let mut lists = Vec::new();
    for _ in 0..10 {
        let (n, t) = list(a);
        assert_eq!(n, volumes, "volume list through a");
        lists.push(t);
    }
    let (l50, l99) = pct(&mut lists);
    println!("\n3. {volumes} thin volumes over three nodes' pools, created through a");
    println!("| mean create | volume list through a p50 / max | etcd keys per volume | etcd bytes per volume |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} ms | {l50:.1} / {l99:.1} ms | {:.2} | {:.0} |",
        ms(total) / volumes as f64,
        (keys1 - keys0) as f64 / volumes as f64,
        (bytes1 - bytes0) as f64 / volumes as f64
    );
}

fn main() {
    let rounds = arg("--n", 100);
    let volumes = arg("--volumes", 1000);
    let kills = arg("--kills", 3);
    let Some(etcd) = EtcdCluster::start(1) else {
        eprintln!(
            "cluster bench: no etcd binary (scripts/install-test-deps.sh installs etcd-server)"
        );
        std::process::exit(2);
    };
    let url = etcd.endpoints_arg();
    let d = tempfile::tempdir().unwrap();
    let pki = pki(d.path(), &IPS);
    let dir = |n: &str| -> std::path::PathBuf { Path::new(d.path()).join(n) };
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .zip(IPS.iter().zip(LABELS))
        .map(|(n, (ip, l))| Node::start(BIN, &dir(n), n, ip, l, &url, &pki))
        .collect();
    for (n, p) in nodes.iter().zip(["pa", "pb", "pc"]) {
        n.create_pool(p, 4096 * MIB);
    }
    nodes[0].wait_nodes(
        "three nodes up with a pool",
        Duration::from_secs(60),
        |ns| ns.len() == 3 && ns.iter().all(|n| n.state == "up" && n.pools.len() == 1),
    );
    println!(
        "cluster bench: 3 nodes (one reactor each, core 0), 1 etcd member, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    latency(&nodes[0], &nodes[2], rounds);
    let (first, rest) = nodes.split_at_mut(1);
    kill_to_down(&first[0], &mut rest[1], kills, &url, &pki);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    many(&nodes, volumes, &rt, &etcd.endpoints());
    for n in &mut nodes {
        n.stop();
    }
}
