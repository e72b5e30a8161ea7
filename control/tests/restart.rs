//! A restart brings back pools, volumes (with labels), snapshots, clones and
//! publications from the state store.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use support::{list_subsystems, list_volumes, Node, MIB};

#[test]
fn restart_restores_everything() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: "v1".into(),
                size_bytes: 8 * MIB,
                thin: false,
                labels: [("tier".to_string(), "gold".to_string())].into(),
                ..Default::default()
            })
            .await
    })
    .unwrap();
    c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .create(CreateSnapshotRequest {
                volume: "v1".into(),
                name: "s1".into(),
                group_id: "g1".into(),
            })
            .await
    })
    .unwrap();
    c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .clone_snapshot(CloneSnapshotRequest {
                snapshot: "s1".into(),
                name: "c1".into(),
                labels: Default::default(),
            })
            .await
    })
    .unwrap();
    let published = c
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .publish(PublishRequest {
                    volume: "c1".into(),
                    any_host: true,
                    ..Default::default()
                })
                .await
        })
        .unwrap()
        .into_inner();
    let before = list_volumes(&c);
    drop(c);

    let node = node.restart();
    let c = node.client();
    let pools = c
        .call(|ch| async move { PoolServiceClient::new(ch).list(ListPoolsRequest {}).await })
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].state, "online");
    assert_eq!(pools[0].volumes, 3);
    let after = list_volumes(&c);
    assert_eq!(before, after);
    assert!(after.iter().all(|v| v.state == "online"), "{after:?}");
    let v1 = after.iter().find(|v| v.name == "v1").unwrap();
    assert_eq!(v1.labels.get("tier").map(String::as_str), Some("gold"));
    let c1 = after.iter().find(|v| v.name == "c1").unwrap();
    assert_eq!(c1.published_nqn, published.nqn);
    let snaps = c
        .call(|ch| async move {
            SnapshotServiceClient::new(ch)
                .list(ListSnapshotsRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].group_id, "g1");
    let subs = list_subsystems(&c);
    let s = subs
        .iter()
        .find(|s| s.nqn == published.nqn)
        .expect("re-published");
    assert_eq!(s.volume, "c1");
    assert_eq!(s.namespaces.len(), 1);

    // Export then import: the pool and its volumes come back (labels do not).
    c.call(|ch| async move {
        TargetServiceClient::new(ch)
            .unpublish(UnpublishRequest {
                volume: "c1".into(),
            })
            .await
    })
    .unwrap();
    let e = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .export(ExportPoolRequest { name: "p0".into() })
                .await
        })
        .unwrap();
    assert!(e.into_inner().existed);
    let path = node.dir.join("p0.img").display().to_string();
    let p = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .import(ImportPoolRequest {
                    base: Some(PoolBase {
                        base: Some(pool_base::Base::Path(path)),
                        size_bytes: 0,
                    }),
                })
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(p.name, "p0");
    assert_eq!(p.volumes, 3);
    let n = list_volumes(&c).len();
    assert_eq!(n, 2);
}
