//! VolumeService.Stats: a published volume under I/O reports totals, rates and
//! latency percentiles over its window; an unpublished one reports no I/O figures;
//! bad arguments get their codes.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use support::load::{connect, Load};
use support::{create_and_publish, Node, MIB};
use tonic::Code;

fn stats(c: &BlockingClient, name: &str, window_ms: u32) -> Result<VolumeStats, tonic::Status> {
    let req = VolumeStatsRequest {
        name: name.into(),
        window_ms,
    };
    c.call(|ch| async move { VolumeServiceClient::new(ch).stats(req).await })
        .map(tonic::Response::into_inner)
}

#[test]
fn stats_of_a_volume_under_io() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    let (listener, nqn) = create_and_publish(&c, "busy", 16 * MIB);
    let load = Load::start(connect(&listener, &nqn), 8);
    assert!(
        load.stats.wait_beyond(0, Duration::from_secs(30)),
        "no I/O started"
    );
    let s = stats(&c, "busy", 300).unwrap();
    let st = load.stop();
    assert_eq!(st.errors.load(Ordering::Relaxed), 0);

    assert_eq!(s.nqn, nqn);
    assert!(s.controllers >= 1, "{s:?}");
    assert!(s.window_seconds >= 0.3, "{s:?}");
    assert!(s.read_ops > 0 && s.write_ops > 0, "{s:?}");
    assert!(s.read_bytes >= 4096 * s.read_ops, "{s:?}");
    assert!(s.read_iops > 0.0 && s.write_iops > 0.0, "{s:?}");
    assert!(s.window_ops > 0, "{s:?}");
    assert!(s.latency_mean_us > 0.0, "{s:?}");
    assert!(
        0.0 < s.latency_p50_us
            && s.latency_p50_us <= s.latency_p90_us
            && s.latency_p90_us <= s.latency_p99_us
            && s.latency_p99_us <= s.latency_p999_us,
        "{s:?}"
    );
    assert!(s.allocated_bytes > 0, "{s:?}");

    // The host is gone (the load's connections closed): its controller leaves, its
    // counts stay.
    let t0 = std::time::Instant::now();
    let after = loop {
        let a = stats(&c, "busy", 10).unwrap();
        if a.controllers == 0 {
            break a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the controller stayed: {a:?}"
        );
    };
    assert!(
        after.read_ops >= s.read_ops && after.write_ops >= s.write_ops,
        "{after:?} after {s:?}"
    );
    assert!(after.read_bytes >= s.read_bytes, "{after:?}");

    // Not published: no I/O figures, and no waiting for a window.
    let req = CreateVolumeRequest {
        name: "idle".into(),
        size_bytes: 4 * MIB,
        thin: true,
        ..Default::default()
    };
    c.call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
        .unwrap();
    let s = stats(&c, "idle", 10_000).unwrap();
    assert!(
        s.nqn.is_empty() && s.window_seconds == 0.0 && s.read_ops == 0,
        "{s:?}"
    );

    assert_eq!(stats(&c, "ghost", 0).unwrap_err().code(), Code::NotFound);
    let e = stats(&c, "busy", 10_001).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("window_ms"), "{}", e.message());
}
