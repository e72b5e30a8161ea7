//! `ferrox --metrics-addr`: the daemon prints where it serves metrics, and a scrape
//! there parses (with `prometheus-parse`) and carries the reactor and subsystem series.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[test]
fn metrics_addr_serves_a_parsable_scrape() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
        ])
        .args(["--node-name", "rack1-node7"])
        .args(["--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrox");
    let mut url = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("ferrox: metrics on http://") {
            url = Some(u.to_string());
        }
        if line.contains("ferrox: ready") {
            break;
        }
    }
    let url = url.expect("the daemon prints its metrics address");
    let (addr, path) = url.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let has = |metric: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .any(|x| x.metric == metric && x.labels.get(label.0) == Some(label.1))
    };
    assert!(has("ferrox_reactor_loops_total", ("core", "0")));
    assert!(has("ferrox_node_info", ("node", "rack1-node7")));
    // The name is kept in the data directory.
    assert_eq!(
        std::fs::read_to_string(d.path().join("node-name")).unwrap(),
        "rack1-node7\n"
    );
    assert!(has(
        "ferrox_subsystem_controllers",
        ("subsystem", "nqn.2026-11.io.ferrox:default")
    ));
}
