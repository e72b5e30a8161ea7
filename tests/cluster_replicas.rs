//! One API on every node, and volumes of N replicas placed as N lvols: three daemons
//! on 127.0.0.2/3/4 over one real etcd (started by the test), each serving its
//! control API on TCP with mutual TLS (a PKI generated here), so that requests about
//! another node's pool are forwarded over TCP.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::BlockingClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The longest a node's state may take to be seen (lease TTL 5 s, the record's
/// refresh every third of it, etcd's expiry check): generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

/// A CA and one certificate for every node (server and client, the three IPs).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "cluster CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let sans = ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(String::from);
    let mut p = CertificateParams::new(sans.to_vec()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "ferrox node");
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca).unwrap();
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        cert: write("node.pem", &cert.pem()),
        key: write("node.key", &key.serialize_pem()),
    }
}

fn start(dir: &Path, name: &str, ip: &str, labels: &str, cluster: &str, pki: &Pki) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args(["--cores", "0", "--default-size", "16MiB", "--log", "warn"])
        .args(["--listen", &format!("{ip}:0")])
        .args(["--control-tcp", &format!("{ip}:0")])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .arg("--tls-client-ca")
        .arg(&pki.ca)
        .args(["--node-name", name, "--labels", labels])
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

/// A client of `dir`'s daemon (its Unix socket).
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

/// Every pool of `dir`'s own node: (name, volumes, free bytes).
fn own_pools(dir: &Path) -> Vec<(String, u32, u64)> {
    client(dir)
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .list(ListPoolsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .pools
        .into_iter()
        .map(|p| (p.name, p.volumes, p.free_bytes))
        .collect()
}

fn create(dir: &Path, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
    client(dir)
        .call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
        .map(|r| r.into_inner())
}

fn replicated(name: &str, size: u64, replicas: u32, spread: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        size_bytes: size,
        replicas,
        spread: spread.into(),
        ..Default::default()
    }
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

fn list(dir: &Path) -> Vec<Volume> {
    client(dir)
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .list(ListVolumesRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .volumes
}

/// (node, pool) of each replica, sorted.
fn where_(v: &Volume) -> Vec<(String, String)> {
    let mut w: Vec<_> = v
        .replicas
        .iter()
        .map(|r| (r.node.clone(), r.pool.clone()))
        .collect();
    w.sort();
    w
}

fn pair(n: &str, p: &str) -> (String, String) {
    (n.to_string(), p.to_string())
}

#[test]
fn replicas_are_placed_on_distinct_nodes_and_requests_are_forwarded() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = etcd.endpoints_arg();
    let d = tempfile::tempdir().unwrap();
    let pki = pki(d.path());
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| d.path().join(n)).collect();
    // One zone for all: a spread over zone has one domain.
    let mut a = start(&dirs[0], "a", "127.0.0.2", "zone=z1,rack=r1", &url, &pki);
    let mut b = start(&dirs[1], "b", "127.0.0.3", "zone=z1,rack=r2", &url, &pki);
    let mut c = start(&dirs[2], "c", "127.0.0.4", "zone=z1,rack=r3", &url, &pki);
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
    // Every node registered its TCP listener, and its pool with free space: the
    // moment each said it was ready and answered the pool's creation.
    let at_once = |ns: &[ClusterNode]| {
        ns.len() == 3
            && ns.iter().all(|n| {
                n.control.iter().any(|c| c.starts_with("https://"))
                    && n.pools.len() == 1
                    && n.pools[0].free_bytes > 0
            })
    };
    let now = nodes(&dirs[0]);
    assert!(at_once(&now), "records not current: {now:?}");
    wait_nodes(&dirs[0], "three nodes up, each with a pool", |ns| {
        ns.len() == 3
            && ns.iter().all(|n| {
                n.state == "up"
                    && n.control.iter().any(|c| c.starts_with("https://"))
                    && n.pools.len() == 1
                    && n.pools[0].free_bytes > 0
            })
    });
    let before: Vec<_> = dirs.iter().map(|d| own_pools(d)).collect();
    // Another node's pool, through a: as its node sees it.
    let pc = client(&dirs[0])
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .get(GetPoolRequest { name: "pc".into() })
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!((pc.name.as_str(), pc.state.as_str()), ("pc", "online"));
    assert_eq!(pc.free_bytes, before[2][0].2);

    // Through a: three replicas spread over nodes, 16 MiB thick each.
    let v = create(&dirs[0], replicated("db1", 16 * MIB, 3, "node")).unwrap();
    let everywhere = vec![pair("a", "pa"), pair("b", "pb"), pair("c", "pc")];
    assert_eq!(where_(&v), everywhere, "{v:?}");
    // Each node's own pool holds one lvol now, its 16 MiB reserved.
    for (i, dir) in dirs.iter().enumerate() {
        let now = own_pools(dir);
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0].1, before[i][0].1 + 1, "{now:?}");
        assert!(now[0].2 + 16 * MIB <= before[i][0].2, "{now:?}");
    }
    // Through c: where each replica lives.
    let got = get(&dirs[2], "db1").unwrap();
    assert_eq!(where_(&got), everywhere, "{got:?}");
    assert_eq!(got.size_bytes, 16 * MIB);
    assert_eq!(got.state, "online");
    // A retry through another node answers the same volume; a different ask is named.
    let again = create(&dirs[1], replicated("db1", 16 * MIB, 3, "node")).unwrap();
    assert_eq!(where_(&again), everywhere);
    let e = create(&dirs[1], replicated("db1", 16 * MIB, 2, "node")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("3 replicas"), "{e:?}");

    // The same create through two nodes at once: one volume, both answer it.
    let (da, db) = (dirs[0].clone(), dirs[1].clone());
    let t = std::thread::spawn(move || create(&da, replicated("twin", 4 * MIB, 2, "node")));
    let here = create(&db, replicated("twin", 4 * MIB, 2, "node")).unwrap();
    let there = t.join().unwrap().unwrap();
    assert_eq!(where_(&here), where_(&there));
    assert_eq!(here.uuid, there.uuid);
    assert_eq!(here.replicas.len(), 2);
    assert!(delete(&dirs[2], "twin"));
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(own_pools(dir)[0].1, before[i][0].1 + 1, "{}", dir.display());
    }

    // Two replicas over zone with one zone: refused, naming it; nothing is made.
    let e = create(&dirs[0], replicated("db2", 16 * MIB, 2, "zone")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("2 replicas over zone") && e.message().contains("(z1)"),
        "{e:?}"
    );
    assert_eq!(
        get(&dirs[0], "db2").unwrap_err().code(),
        tonic::Code::NotFound
    );
    // Without a cluster's worth of anything else: an unknown spread key is named.
    let e = create(&dirs[0], replicated("db2", 16 * MIB, 2, "row")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("spread"), "{e:?}");

    // One copy in b's pool, created, read, published and deleted through the others.
    let solo = CreateVolumeRequest {
        name: "solo".into(),
        size_bytes: 4 * MIB,
        thin: true,
        pool: "pb".into(),
        ..Default::default()
    };
    let s = create(&dirs[0], solo.clone()).unwrap();
    assert_eq!((s.pool.as_str(), s.state.as_str()), ("pb", "online"));
    assert!(s.replicas.is_empty());
    assert_eq!(create(&dirs[2], solo).unwrap().uuid, s.uuid);
    assert_eq!(own_pools(&dirs[1])[0].1, before[1][0].1 + 2);
    assert_eq!(get(&dirs[2], "solo").unwrap().uuid, s.uuid);
    let pubreq = PublishRequest {
        volume: "solo".into(),
        any_host: true,
        ..Default::default()
    };
    let p = client(&dirs[2])
        .call(|ch| async move { TargetServiceClient::new(ch).publish(pubreq).await })
        .unwrap()
        .into_inner();
    // Published on b: its listener (127.0.0.3) reaches it.
    assert!(
        !p.listeners.is_empty() && p.listeners.iter().all(|l| l.contains("127.0.0.3")),
        "{p:?}"
    );
    assert_eq!(get(&dirs[0], "solo").unwrap().published_nqn, p.nqn);
    // Every node lists the cluster's volumes, each as its node sees it.
    for dir in &dirs {
        let l = list(dir);
        let names: Vec<_> = l.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["db1", "solo"], "{l:?}");
        assert!(l.iter().all(|v| v.state == "online"), "{l:?}");
        assert_eq!(where_(&l[0]), everywhere);
    }
    let unp = client(&dirs[0])
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .unpublish(UnpublishRequest {
                    volume: "solo".into(),
                })
                .await
        })
        .unwrap()
        .into_inner();
    assert!(unp.existed);
    assert!(delete(&dirs[2], "solo"));
    assert!(!delete(&dirs[2], "solo"));
    assert_eq!(own_pools(&dirs[1])[0].1, before[1][0].1 + 1);

    // Delete through b: every replica goes.
    assert!(delete(&dirs[1], "db1"));
    assert!(!delete(&dirs[0], "db1"));
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(own_pools(dir)[0].1, before[i][0].1, "{}", dir.display());
    }
    assert_eq!(
        get(&dirs[2], "db1").unwrap_err().code(),
        tonic::Code::NotFound
    );

    // c killed: at once, while its lease still says up, a create that chose it
    // fails there and removes the replicas it made on a and b (or, if c is already
    // down, it is refused). Either way nothing is left.
    c.kill().unwrap();
    c.wait().unwrap();
    let e = create(&dirs[0], replicated("db4", 16 * MIB, 3, "node")).unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::FailedPrecondition
        ) && (e.message().contains("node c:") || e.message().contains("c is down")),
        "{e:?}"
    );
    assert_eq!(
        get(&dirs[1], "db4").unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(own_pools(&dirs[0])[0].1, before[0][0].1);
    assert_eq!(own_pools(&dirs[1])[0].1, before[1][0].1);
    // Once it is down it is never chosen: three over nodes is refused naming it;
    // two go to a and b.
    wait_nodes(&dirs[0], "c down", |ns| {
        ns.iter().any(|n| n.name == "c" && n.state == "down")
    });
    let e = create(&dirs[1], replicated("db3", 16 * MIB, 3, "node")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("c is down"), "{e:?}");
    let v = create(&dirs[1], replicated("db3", 16 * MIB, 2, "")).unwrap();
    assert_eq!(where_(&v), [pair("a", "pa"), pair("b", "pb")]);
    assert!(delete(&dirs[0], "db3"));
    assert_eq!(own_pools(&dirs[0])[0].1, before[0][0].1);
    assert_eq!(own_pools(&dirs[1])[0].1, before[1][0].1);
    stop(&mut b);
    stop(&mut a);
}
