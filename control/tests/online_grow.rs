//! A published volume grows while a host does I/O on it: the resize succeeds, the
//! I/O goes on without an error, a host that connects afterwards sees the new size and
//! can write and read the new blocks.
//! Shrinking a published volume is refused.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrox_bdev::testing::{run, Req};
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::ResizeVolumeRequest;
use support::load::{connect, host_group, Load};
use support::{create_and_publish, Node, MIB};
use tonic::Code;

/// The longest the I/O may go without a completion before the test calls it stalled.
const STALL_BOUND: Duration = Duration::from_secs(30);

fn resize(c: &ferrox_control::BlockingClient, size: u64) -> Result<u64, tonic::Status> {
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .resize(ResizeVolumeRequest {
                name: "grow".into(),
                size_bytes: size,
                force: true,
            })
            .await
    })
    .map(|v| v.into_inner().size_bytes)
}

#[test]
fn a_published_volume_grows_under_io() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    let (listener, nqn) = create_and_publish(&c, "grow", 16 * MIB);

    let hosts = host_group();
    let h = &hosts.handles()[0];
    let first = connect(&listener, &nqn);
    let bs = u64::from(first.info().block_size);
    assert_eq!(first.info().num_blocks * bs, 16 * MIB);
    let load = Load::start(first, 8);
    assert!(
        load.stats.wait_beyond(0, STALL_BOUND),
        "no I/O before the resize"
    );

    assert_eq!(resize(&c, 32 * MIB).unwrap(), 32 * MIB);
    let seen = load.stats.completed();
    assert!(
        load.stats.wait_beyond(seen + 100, STALL_BOUND),
        "the I/O stalled after the resize"
    );

    // A host connecting now sees the new size and uses the new blocks.
    let second = connect(&listener, &nqn);
    let blocks = second.info().num_blocks;
    assert_eq!(blocks * bs, 32 * MIB);
    let tail: Vec<u8> = (0..4096u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let end = blocks - 4096 / bs;
    // (One batch runs its requests concurrently: the write goes first, alone.)
    let out = run(h, second.clone(), vec![Req::Write(end, tail.clone())]);
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let out = run(h, second.clone(), vec![Req::Read(end, 4096 / bs)]);
    assert!(
        out[0].as_ref().unwrap().as_deref() == Some(&tail[..]),
        "the new blocks read back differently"
    );

    // Shrinking while published is refused, and changes nothing.
    let e = resize(&c, 8 * MIB).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not shrink"), "{}", e.message());

    let stats = load.stop();
    assert_eq!(
        stats.errors.load(Ordering::Relaxed),
        0,
        "I/O errors: {:?}",
        stats.first_error.lock().unwrap()
    );
    // The old host's writes (all below the old end) left the new region alone.
    let out = run(h, second, vec![Req::Read(end, 4096 / bs)]);
    assert!(
        out[0].as_ref().unwrap().as_deref() == Some(&tail[..]),
        "the new blocks changed"
    );
    hosts.shutdown();
}
