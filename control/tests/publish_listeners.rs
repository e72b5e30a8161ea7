//! Publishing on a chosen listener: the answer and the subsystem list name that
//! listener only; an address and port nobody listens on open a new listener that a
//! host then connects through (and that closes when its volume is unpublished); a
//! malformed address, a port alone that matches nothing, and a second publish with
//! another filter are refused with their codes.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use support::{list_subsystems, node_info, Node, MIB};
use tonic::Code;

fn publish(
    c: &BlockingClient,
    volume: &str,
    address: &str,
    port: u32,
) -> Result<PublishResponse, tonic::Status> {
    let req = PublishRequest {
        volume: volume.into(),
        any_host: true,
        address: address.into(),
        port,
        ..Default::default()
    };
    c.call(|ch| async move { TargetServiceClient::new(ch).publish(req).await })
        .map(tonic::Response::into_inner)
}

#[test]
fn a_volume_published_on_one_listener_names_that_listener() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    for v in ["l1", "l2"] {
        let req = CreateVolumeRequest {
            name: v.into(),
            size_bytes: 4 * MIB,
            thin: true,
            ..Default::default()
        };
        c.call(|ch| async move { VolumeServiceClient::new(ch).create(req).await })
            .unwrap();
    }
    let running: std::net::SocketAddr = node_info(&c).listeners[0].parse().unwrap();

    let p = publish(&c, "l1", "127.0.0.1", u32::from(running.port())).unwrap();
    assert_eq!(p.listeners, vec![running.to_string()]);
    assert_eq!(p.connect.len(), 1);
    assert!(
        p.connect[0].contains(&format!("-s {}", running.port())),
        "{:?}",
        p.connect
    );
    // The same again: the same answer; another filter: AlreadyExists naming it.
    assert_eq!(
        publish(&c, "l1", "127.0.0.1", u32::from(running.port())).unwrap(),
        p
    );
    let e = publish(&c, "l1", "", 0).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("listener filter"), "{}", e.message());

    let unused = if running.port() == 1 { 2 } else { 1 };
    let e = publish(&c, "l2", "", unused).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("no running listener"),
        "{}",
        e.message()
    );
    let e = publish(&c, "l2", "localhost", 0).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("address"), "{}", e.message());
    let e = publish(&c, "l2", "", 70000).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let subs = list_subsystems(&c);
    let l1 = subs
        .iter()
        .find(|s| s.volume == "l1")
        .expect("l1's subsystem");
    assert_eq!(l1.listeners, vec![running.to_string()]);
    assert!(
        subs.iter().all(|s| s.volume != "l2"),
        "l2 was not published"
    );

    // An address and port nobody listens on: a listener is opened for it.
    let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let fresh = probe.local_addr().unwrap();
    drop(probe);
    let p = publish(&c, "l2", "127.0.0.2", u32::from(fresh.port())).unwrap();
    assert_eq!(p.listeners, vec![fresh.to_string()]);
    let listeners = |c: &BlockingClient| node_info(c).listeners;
    assert!(listeners(&c).contains(&fresh.to_string()));
    let dev = support::load::connect(&fresh.to_string(), &p.nqn);
    assert_eq!(
        dev.info().num_blocks * u64::from(dev.info().block_size),
        4 * MIB
    );
    drop(dev);

    // After a restart the publication opens its listener again.
    drop(c);
    let node = node.restart();
    let c = node.client();
    let now = listeners(&c);
    assert!(
        now.contains(&fresh.to_string()),
        "after the restart: {now:?}, want {fresh}"
    );
    let dev = support::load::connect(&fresh.to_string(), &p.nqn);
    assert_eq!(dev.info().block_size, 512);
    drop(dev);

    // Unpublishing the only volume on it closes the listener opened for it.
    let volume = "l2".to_string();
    let existed = c
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .unpublish(UnpublishRequest { volume })
                .await
        })
        .unwrap()
        .into_inner()
        .existed;
    assert!(existed);
    let now = listeners(&c);
    assert!(!now.contains(&fresh.to_string()), "{now:?}");
    assert!(now.contains(&running.to_string()), "{now:?}");
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(fresh).is_ok() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{fresh} still accepts connections after the unpublish"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
