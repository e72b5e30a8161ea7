//! The Prometheus endpoint of a running node: the exposition parses (with
//! `prometheus-parse`), carries reactor, subsystem, controller and pool series, and its
//! counters move after I/O through the NVMe/TCP host library.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::time::Duration;

use prometheus_parse::Value;
use support::load::{connect, Load};
use support::{create_and_publish, http_get, scrape, value, Node, MIB};

#[test]
fn metrics_parse_and_counters_move_after_io() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    let (listener, nqn) = create_and_publish(&c, "m1", 16 * MIB);
    let addr = node.serve_metrics();

    // Before I/O: the series exist, with their types.
    let before = scrape(addr);
    let reactor = [("reactor", "0")];
    let sub = [("subsystem", nqn.as_str()), ("volume", "m1")];
    let pool = [("pool", "p0")];
    assert!(value(&before, "ferrox_reactor_loops_total", &reactor).is_some());
    assert!(value(&before, "ferrox_reactor_busy_seconds_total", &reactor).is_some());
    assert!(value(&before, "ferrox_reactor_parks_total", &reactor).is_some());
    assert_eq!(
        value(&before, "ferrox_subsystem_controllers", &sub),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "ferrox_pool_capacity_bytes", &pool).map(|v| v > 0.0),
        Some(true)
    );
    assert_eq!(value(&before, "ferrox_pool_up", &pool), Some(1.0));
    assert_eq!(value(&before, "ferrox_control_ready", &[]), Some(1.0));
    assert_eq!(
        value(&before, "ferrox_node_info", &[("node", "test-node")]),
        Some(1.0)
    );
    let gauge = before
        .samples
        .iter()
        .find(|s| s.metric == "ferrox_pool_allocated_bytes")
        .unwrap();
    assert!(matches!(gauge.value, Value::Gauge(_)), "{gauge:?}");
    let alloc0 = value(&before, "ferrox_pool_allocated_bytes", &pool).unwrap();

    // I/O through a host connection; wait (bounded) until some completed.
    let dev = connect(&listener, &nqn);
    let load = Load::start(dev, 4);
    let mut seen = 0;
    while seen < 1000 {
        assert!(
            load.stats.wait_beyond(seen, Duration::from_secs(30)),
            "no I/O completion for 30 s"
        );
        seen = load.stats.completed();
    }
    let during = scrape(addr);
    let stats = load.stop();
    assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);

    assert_eq!(
        value(&during, "ferrox_subsystem_controllers", &sub),
        Some(1.0)
    );
    // The admin queue and at least one I/O queue.
    assert!(value(&during, "ferrox_subsystem_connections", &sub).unwrap() >= 2.0);
    // The target-wide count holds them too; nothing was refused.
    assert!(value(&during, "ferrox_nvmf_connections", &[]).unwrap() >= 2.0);
    assert_eq!(value(&before, "ferrox_nvmf_connections", &[]), Some(0.0));
    assert_eq!(
        value(&during, "ferrox_nvmf_connections_refused_total", &[]),
        Some(0.0)
    );
    assert!(value(&during, "ferrox_nvmf_connections_max", &[]).unwrap() >= 1.0);
    let ctrl = |m: &str| value(&during, m, &sub).unwrap_or_else(|| panic!("no {m}"));
    let (r_ops, w_ops) = (
        ctrl("ferrox_controller_read_ops_total"),
        ctrl("ferrox_controller_write_ops_total"),
    );
    // The load alternates 4 KiB writes and reads; 1000 had completed before the scrape.
    assert!(r_ops + w_ops >= 1000.0, "{r_ops} + {w_ops}");
    assert!(r_ops > 0.0 && w_ops > 0.0);
    assert!(ctrl("ferrox_controller_read_bytes_total") >= 4096.0 * r_ops);
    assert!(ctrl("ferrox_controller_write_bytes_total") >= 4096.0 * w_ops);
    // The latency histogram counted every one of those I/O commands.
    let hist = during
        .samples
        .iter()
        .find(|x| {
            x.metric == "ferrox_controller_io_latency_seconds"
                && sub.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .expect("a latency histogram for the volume's controller");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.last().expect("buckets");
            assert!(inf.less_than.is_infinite(), "the last bucket is +Inf");
            // Counted at completion (the op counters at submission): the 1000
            // requests that completed before the scrape are all in.
            assert!(inf.count >= 1000.0, "{} latencies", inf.count);
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative"
            );
        }
        v => panic!("the latency is not a histogram: {v:?}"),
    }
    // Writes to a thin volume allocated clusters.
    assert!(value(&during, "ferrox_pool_allocated_bytes", &pool).unwrap() > alloc0);
    // Reactor counters are monotonic and the reactor did work for the I/O.
    for m in [
        "ferrox_reactor_loops_total",
        "ferrox_reactor_busy_loops_total",
        "ferrox_reactor_busy_seconds_total",
        "ferrox_reactor_completions_total",
    ] {
        let (a, b) = (
            value(&before, m, &reactor).unwrap(),
            value(&during, m, &reactor).unwrap(),
        );
        assert!(b > a, "{m}: {a} -> {b}");
    }

    // Anything but /metrics is a 404.
    let (status, _) = http_get(addr, "/nope");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
}
