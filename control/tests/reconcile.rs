//! Start-up reconciliation of the states a crash can leave, made deterministically by
//! editing the state store while the node is down: an intent whose action never
//! happened is forgotten, one whose action happened is completed, an interrupted
//! delete is finished, a volume the store lost is adopted, and a record whose volume
//! is gone is kept and shown as "missing".
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::{Phase, PublishRec, Records, RedbStore, VolumeRec};
use support::{list_volumes, Node, MIB};

fn create(c: &ferrox_control::BlockingClient, name: &str) {
    let name = name.to_string();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name,
                size_bytes: 4 * MIB,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
}

#[test]
fn interrupted_changes_are_finished_or_forgotten() {
    let d = tempfile::tempdir().unwrap();
    let mut node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    for v in ["done", "lost-record", "to-delete", "gone"] {
        create(&c, v);
    }
    drop(c);
    node.stop();
    {
        let store = RedbStore::open(&d.path().join("control.redb")).unwrap();
        let r = Records(&store);
        let rec = |name: &str, phase| VolumeRec {
            name: name.into(),
            pool: "p0".into(),
            size: 4 * MIB,
            thin: true,
            labels: Default::default(),
            clone_of: None,
            replicas: Vec::new(),
            phase,
        };
        // Crashed after recording, before creating.
        r.put(&rec("never-made", Phase::Creating)).unwrap();
        // Crashed after creating, before recording completion.
        r.put(&rec("done", Phase::Creating)).unwrap();
        // The record was lost (the volume exists in the pool only).
        r.delete::<VolumeRec>("lost-record").unwrap();
        // Crashed in the middle of a delete.
        r.put(&rec("to-delete", Phase::Deleting)).unwrap();
        // A publish intent for a volume that never got made.
        r.put(&PublishRec {
            volume: "never-made".into(),
            nqn: "nqn.2026-11.io.ferrox:volume:never-made".into(),
            hosts: vec![],
            any_host: true,
            phase: Phase::Creating,
            address: String::new(),
            port: 0,
        })
        .unwrap();
        // A record for a volume the pool does not have.
        r.put(&rec("phantom", Phase::Ready)).unwrap();
    }
    let node = Node::start(d.path());
    let c = node.client();
    let vols = list_volumes(&c);
    let state = |n: &str| vols.iter().find(|v| v.name == n).map(|v| v.state.as_str());
    assert_eq!(state("never-made"), None, "{vols:?}");
    assert_eq!(state("done"), Some("online"));
    assert_eq!(state("lost-record"), Some("online"), "adopted");
    assert_eq!(state("to-delete"), None, "delete finished");
    assert_eq!(state("gone"), Some("online"));
    assert_eq!(state("phantom"), Some("missing"));
    let pool = c
        .call(|ch| async move {
            PoolServiceClient::new(ch)
                .get(GetPoolRequest { name: "p0".into() })
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(pool.volumes, 3, "done, lost-record, gone");
    let store_has_publish = {
        drop(c);
        let mut node = node;
        node.stop();
        let store = RedbStore::open(&d.path().join("control.redb")).unwrap();
        Records(&store).get::<PublishRec>("never-made").unwrap()
    };
    assert_eq!(store_has_publish, None);
}
