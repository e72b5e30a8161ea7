//! A pool's volumes promise at most `max_overcommit` times its capacity (default 10):
//! a thin create, a clone or a growth past it fails with FAILED_PRECONDITION naming
//! the cap, and leaves nothing behind.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use support::{list_volumes, Node, MIB};
use tonic::{Code, Status};

fn pool(node: &Node, c: &BlockingClient, name: &str, size: u64, cap: u32) -> Result<Pool, Status> {
    let path = node.dir.join(format!("{name}.img")).display().to_string();
    let name = name.to_string();
    c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name,
                base: Some(PoolBase {
                    base: Some(pool_base::Base::Path(path)),
                    size_bytes: size,
                }),
                cluster_size: 0,
                max_overcommit: cap,
            })
            .await
    })
    .map(tonic::Response::into_inner)
}

fn volume(c: &BlockingClient, name: &str, pool: &str, size: u64) -> Result<Volume, Status> {
    let r = CreateVolumeRequest {
        name: name.into(),
        pool: pool.into(),
        size_bytes: size,
        thin: true,
        ..Default::default()
    };
    c.call(|ch| async move { VolumeServiceClient::new(ch).create(r).await })
        .map(tonic::Response::into_inner)
}

fn resize(c: &BlockingClient, name: &str, size: u64) -> Result<Volume, Status> {
    let r = ResizeVolumeRequest {
        name: name.into(),
        size_bytes: size,
        ..Default::default()
    };
    c.call(|ch| async move { VolumeServiceClient::new(ch).resize(r).await })
        .map(tonic::Response::into_inner)
}

fn refused(r: Result<impl std::fmt::Debug, Status>) {
    let e = r.expect_err("over the cap");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("max_overcommit"), "{:?}", e.message());
}

#[test]
fn thin_promises_stop_at_the_pools_cap() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    // A bad cap names its field.
    let e = pool(&node, &c, "bad", 64 * MIB, 5000).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("max_overcommit"), "{e:?}");

    // 64 MiB capped at 2x: 128 MiB less what the label takes may be promised.
    let p = pool(&node, &c, "p2", 64 * MIB, 2).unwrap();
    assert_eq!(p.max_overcommit, 2);
    let cap = 2 * p.capacity_bytes;
    volume(&c, "a", "p2", 64 * MIB).unwrap();
    let room = cap - 64 * MIB;
    refused(volume(&c, "b", "p2", room + MIB));
    assert!(
        list_volumes(&c).iter().all(|v| v.name != "b"),
        "nothing left behind"
    );
    volume(&c, "b", "p2", room).unwrap();
    // Full: no growth, no clone (a clone promises its snapshot's size again).
    refused(resize(&c, "a", 65 * MIB));
    c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .create(CreateSnapshotRequest {
                volume: "a".into(),
                name: "s".into(),
                group_id: String::new(),
            })
            .await
    })
    .unwrap();
    refused(c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .clone_snapshot(CloneSnapshotRequest {
                snapshot: "s".into(),
                name: "c".into(),
                labels: Default::default(),
            })
            .await
    }));
    // Shrinking gives promises back, and a snapshot promised nothing of its own.
    resize(&c, "b", room - 32 * MIB).unwrap();
    resize(&c, "a", 96 * MIB).unwrap();

    // The default cap is 10x.
    let p = pool(&node, &c, "p10", 64 * MIB, 0).unwrap();
    assert_eq!(p.max_overcommit, 10);
    let cap = 10 * p.capacity_bytes;
    refused(volume(&c, "big", "p10", cap - cap % MIB + MIB));
    volume(&c, "big", "p10", cap - cap % MIB).unwrap();
    let got = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .get(GetPoolRequest { name: "p10".into() })
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(got.provisioned_bytes, cap - cap % MIB);
}
