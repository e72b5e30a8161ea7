//! The node registry: three daemons on 127.0.0.2/3/4 over one real etcd (started by
//! the test) list each other with their labels; one killed with `kill -9` is listed
//! down by the others once its lease ends; a taken node name refuses to start.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::etcd::testing::EtcdCluster;
use ferrox_control::BlockingClient;

/// The longest a node's state may take to be seen (lease TTL 5 s, plus etcd's expiry
/// check and the poll): generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn start(dir: &Path, name: &str, ip: &str, labels: &str, cluster: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args(["--cores", "0", "--default-size", "16MiB", "--log", "warn"])
        .args(["--listen", &format!("{ip}:0")])
        .args([
            "--node-name",
            name,
            "--labels",
            labels,
            "--cluster",
            cluster,
        ])
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

fn list(dir: &Path) -> Vec<ClusterNode> {
    let c = BlockingClient::connect(&dir.join("ferrox.sock")).unwrap();
    c.call(|ch| async move { NodeServiceClient::new(ch).list(ListNodesRequest {}).await })
        .unwrap()
        .into_inner()
        .nodes
}

/// (name, state) of every node `dir`'s daemon lists.
fn states(dir: &Path) -> Vec<(String, String)> {
    list(dir).into_iter().map(|n| (n.name, n.state)).collect()
}

/// Polls until `dir`'s daemon lists `want`; panics after [`PATIENCE`].
fn wait_states(dir: &Path, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = states(dir);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: after {PATIENCE:?} still {got:?}, want {want:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_see_each_other_and_a_killed_one_goes_down() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = etcd.endpoints_arg();
    let d = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| d.path().join(n)).collect();
    let mut a = start(&dirs[0], "a", "127.0.0.2", "zone=z1,rack=r1", &url);
    let mut b = start(&dirs[1], "b", "127.0.0.3", "zone=z2,rack=r1", &url);
    let mut c = start(&dirs[2], "c", "127.0.0.4", "zone=z3,rack=r2", &url);
    let all_up = [("a", "up"), ("b", "up"), ("c", "up")];
    for dir in &dirs {
        wait_states(dir, &all_up);
    }
    let nodes = list(&dirs[1]);
    let a_rec = &nodes[0];
    assert_eq!(a_rec.labels.get("zone").map(String::as_str), Some("z1"));
    assert_eq!(a_rec.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(a_rec.id.len(), 32);
    assert!(
        a_rec.listeners.iter().all(|l| l.starts_with("127.0.0.2:")) && !a_rec.listeners.is_empty(),
        "{a_rec:?}"
    );
    assert!(
        a_rec.control.iter().any(|c| c.contains("ferrox.sock")),
        "{a_rec:?}"
    );
    assert_eq!(nodes[2].labels.get("zone").map(String::as_str), Some("z3"));

    // A second daemon named "a" (another data directory: another node id) refuses
    // to start and names the node that holds the name.
    let other = d.path().join("a2");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--default-size",
            "16MiB",
            "--listen",
            "127.0.0.5:0",
        ])
        .args(["--node-name", "a", "--cluster", &url])
        .arg("--data-dir")
        .arg(&other)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node name \"a\"") && err.contains(&a_rec.id) && err.contains("(up"),
        "{err}"
    );

    // kill -9: the others see it down once its lease ends.
    c.kill().unwrap();
    c.wait().unwrap();
    let c_down = [("a", "up"), ("b", "up"), ("c", "down")];
    wait_states(&dirs[0], &c_down);
    wait_states(&dirs[1], &c_down);
    // Its record stays (down), with its labels.
    let c_rec = list(&dirs[0]).pop().unwrap();
    assert_eq!(c_rec.labels.get("rack").map(String::as_str), Some("r2"));

    // A pool on a: in its record (refreshed with its lease), and never b's to
    // restore when b restarts on the same store.
    let img = dirs[0].join("pa.img").display().to_string();
    let ca = BlockingClient::connect(&dirs[0].join("ferrox.sock")).unwrap();
    ca.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name: "pa".into(),
                base: Some(PoolBase {
                    base: Some(pool_base::Base::Path(img)),
                    size_bytes: 64 << 20,
                }),
                cluster_size: 0,
                max_overcommit: 0,
            })
            .await
    })
    .unwrap();
    // A client left connected would hold up a's clean stop (it drains connections).
    drop(ca);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let a_now = list(&dirs[1]).into_iter().next().unwrap();
        if let Some(p) = a_now.pools.first() {
            assert_eq!(p.name, "pa");
            assert!(
                p.free_bytes > 0 && p.free_bytes <= p.capacity_bytes,
                "{p:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a's pool never showed: {a_now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A clean stop revokes the lease: down at once for the others.
    stop(&mut b);
    wait_states(&dirs[0], &[("a", "up"), ("b", "down"), ("c", "down")]);
    // Back with the same name and data directory (same id): up again.
    let mut b = start(&dirs[1], "b", "127.0.0.3", "zone=z2,rack=r1", &url);
    wait_states(&dirs[0], &[("a", "up"), ("b", "up"), ("c", "down")]);
    let pools_of = |dir: &Path| {
        let c = BlockingClient::connect(&dir.join("ferrox.sock")).unwrap();
        c.call(|ch| async move {
            PoolServiceClient::new(ch)
                .list(ListPoolsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .pools
        .into_iter()
        .map(|p| (p.name, p.state))
        .collect::<Vec<_>>()
    };
    assert_eq!(pools_of(&dirs[1]), [], "b restored a's pool");
    assert_eq!(
        pools_of(&dirs[0]),
        [("pa".to_string(), "online".to_string())]
    );
    stop(&mut b);
    stop(&mut a);
}

fn stop(child: &mut Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn bad_labels_are_named() {
    let d = tempfile::tempdir().unwrap();
    for (labels, cluster, needles) in [
        (
            "zone",
            Some("http://127.0.0.1:1"),
            &["--labels", "no '='"][..],
        ),
        (
            "zone=-z1",
            Some("http://127.0.0.1:1"),
            &["--labels", "begin and end with a letter or digit"],
        ),
        (
            "zone=z1,zone=z2",
            Some("http://127.0.0.1:1"),
            &["given twice"],
        ),
        ("zone=z1", None, &["--labels", "--cluster"]),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrox"));
        cmd.args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
        ])
        .args(["--labels", labels])
        .arg("--data-dir")
        .arg(d.path())
        .stdin(Stdio::null());
        if let Some(c) = cluster {
            cmd.args(["--cluster", c]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{labels}: {err}");
        for n in needles {
            assert!(
                err.contains(n),
                "{labels}: stderr should mention {n}: {err}"
            );
        }
    }
}
