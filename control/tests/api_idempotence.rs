//! Every mutating RPC, called twice with the same parameters, answers the same object;
//! with different parameters, AlreadyExists naming the difference.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use support::{list_subsystems, Node, MIB};
use tonic::Code;

fn vol(name: &str, size: u64, thin: bool) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        size_bytes: size,
        thin,
        labels: [("app".to_string(), "db".to_string())].into(),
        ..Default::default()
    }
}

#[test]
fn mutating_calls_are_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 128 * MIB);
    node.pool(&c, "p0", 128 * MIB); // same parameters: the existing pool
    let err = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .create(CreatePoolRequest {
                    name: "p0".into(),
                    base: Some(PoolBase {
                        base: Some(pool_base::Base::Bdev("other".into())),
                        size_bytes: 0,
                    }),
                    cluster_size: 0,
                    max_overcommit: 0,
                })
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("base"), "{}", err.message());

    let a = c
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .create(vol("v1", 8 * MIB, true))
                .await
        })
        .unwrap()
        .into_inner();
    let b = c
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .create(vol("v1", 8 * MIB, true))
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(a.uuid, b.uuid);
    assert_eq!(a.size_bytes, 8 * MIB);
    assert_eq!(a.labels.get("app").map(String::as_str), Some("db"));
    let err = c
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .create(vol("v1", 16 * MIB, false))
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("size_bytes"), "{}", err.message());
    assert!(err.message().contains("thin"), "{}", err.message());

    let snap = |name: &'static str, group: &'static str| CreateSnapshotRequest {
        volume: "v1".into(),
        name: name.into(),
        group_id: group.into(),
    };
    let s1 = c
        .call(|ch| async move { SnapshotServiceClient::new(ch).create(snap("s1", "g")).await })
        .unwrap()
        .into_inner();
    let s2 = c
        .call(|ch| async move { SnapshotServiceClient::new(ch).create(snap("s1", "g")).await })
        .unwrap()
        .into_inner();
    assert_eq!(s1.uuid, s2.uuid);
    assert_eq!(s1.group_id, "g");
    assert!(s1.created_unix > 0);
    let err = c
        .call(|ch| async move { SnapshotServiceClient::new(ch).create(snap("s1", "h")).await })
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("group_id"), "{}", err.message());

    let clone = || CloneSnapshotRequest {
        snapshot: "s1".into(),
        name: "c1".into(),
        labels: Default::default(),
    };
    let c1 = c
        .call(|ch| async move { SnapshotServiceClient::new(ch).clone_snapshot(clone()).await })
        .unwrap()
        .into_inner();
    let c2 = c
        .call(|ch| async move { SnapshotServiceClient::new(ch).clone_snapshot(clone()).await })
        .unwrap()
        .into_inner();
    assert_eq!(c1.uuid, c2.uuid);
    assert_eq!(c1.parent, "s1");

    let publish = |any: bool| PublishRequest {
        volume: "v1".into(),
        any_host: any,
        hosts: if any {
            vec![]
        } else {
            vec!["nqn.2014-08.org.nvmexpress:uuid:5c6b7a0e-8f3c-4c2e-9a51-3c1f0a0d2b11".into()]
        },
        ..Default::default()
    };
    let p1 = c
        .call(|ch| async move { TargetServiceClient::new(ch).publish(publish(true)).await })
        .unwrap()
        .into_inner();
    assert_eq!(p1.nqn, "nqn.2026-11.io.ferrox:volume:v1");
    assert_eq!(p1.connect.len(), 1);
    assert!(
        p1.connect[0].starts_with("nvme connect -t tcp -a 127.0.0.1 -s ")
            && p1.connect[0].ends_with(" -n nqn.2026-11.io.ferrox:volume:v1"),
        "{:?}",
        p1.connect
    );
    assert!(p1.note.contains("running listeners"), "{}", p1.note);
    let p2 = c
        .call(|ch| async move { TargetServiceClient::new(ch).publish(publish(true)).await })
        .unwrap()
        .into_inner();
    assert_eq!(p1, p2);
    let err = c
        .call(|ch| async move { TargetServiceClient::new(ch).publish(publish(false)).await })
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("hosts"), "{}", err.message());
    let subs = list_subsystems(&c);
    let s = subs
        .iter()
        .find(|s| s.volume == "v1")
        .expect("v1's subsystem");
    assert!(s.any_host);
    assert_eq!(s.namespaces.len(), 1);
    assert_eq!(s.namespaces[0].size_bytes, 8 * MIB);

    // Deletes: the first says it existed, the second succeeds too.
    let unpub = || UnpublishRequest {
        volume: "v1".into(),
    };
    let r = c.call(|ch| async move { TargetServiceClient::new(ch).unpublish(unpub()).await });
    assert!(r.unwrap().into_inner().existed);
    let r = c.call(|ch| async move { TargetServiceClient::new(ch).unpublish(unpub()).await });
    assert!(!r.unwrap().into_inner().existed);
    let del = || DestroyVolumeRequest { name: "c1".into() };
    let r = c.call(|ch| async move { VolumeServiceClient::new(ch).destroy(del()).await });
    assert!(r.unwrap().into_inner().existed);
    let r = c.call(|ch| async move { VolumeServiceClient::new(ch).destroy(del()).await });
    assert!(!r.unwrap().into_inner().existed);
    let dels = || DestroySnapshotRequest { name: "s1".into() };
    let r = c.call(|ch| async move { SnapshotServiceClient::new(ch).destroy(dels()).await });
    assert!(r.unwrap().into_inner().existed);
    let r = c.call(|ch| async move { SnapshotServiceClient::new(ch).destroy(dels()).await });
    assert!(!r.unwrap().into_inner().existed);

    // Resize to the same size is a no-op; a bigger one shows.
    let rs = |s| ResizeVolumeRequest {
        name: "v1".into(),
        size_bytes: s,
        force: false,
    };
    let v = c
        .call(|ch| async move { VolumeServiceClient::new(ch).resize(rs(16 * MIB)).await })
        .unwrap()
        .into_inner();
    assert_eq!(v.size_bytes, 16 * MIB);
    let v = c
        .call(|ch| async move { VolumeServiceClient::new(ch).resize(rs(16 * MIB)).await })
        .unwrap()
        .into_inner();
    assert_eq!(v.size_bytes, 16 * MIB);
}
