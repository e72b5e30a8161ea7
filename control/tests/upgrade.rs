//! A data directory whose state store has the format before revisions (bare JSON
//! values in table `state`) is upgraded transparently: a node started on it restores
//! its pool, volumes and publication, and goes on changing them.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use redb::{ReadableTable, TableDefinition};
use support::{create_and_publish, list_subsystems, list_volumes, Node, MIB};

const OLD: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The header the format with revisions puts before each value (DESIGN.md).
const HEADER: usize = 25;

/// Rewrites the store at `path` in the format before revisions, as the code before
/// them wrote it: the same keys and JSON values, in table `state` alone.
fn downgrade(path: &std::path::Path) {
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let kv = tx.open_table(KV).unwrap();
        let mut old = tx.open_table(OLD).unwrap();
        for item in kv.iter().unwrap() {
            let (k, v) = item.unwrap();
            if k.value().starts_with("/ferrox/v1/lock/") {
                continue; // the old code had no locks
            }
            old.insert(k.value(), &v.value()[HEADER..]).unwrap();
        }
    }
    tx.delete_table(KV).unwrap();
    tx.delete_table(META).unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_store_without_revisions_is_upgraded_at_start() {
    let d = tempfile::tempdir().unwrap();
    let mut node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 64 * MIB);
    let (_, nqn) = create_and_publish(&c, "pub", 4 * MIB);
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: "plain".into(),
                size_bytes: 8 * MIB,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    drop(c);
    node.stop();
    downgrade(&d.path().join("control.redb"));

    let node = Node::start(d.path());
    let c = node.client();
    let mut vols: Vec<_> = list_volumes(&c)
        .into_iter()
        .map(|v| (v.name, v.size_bytes, v.state, v.published_nqn))
        .collect();
    vols.sort();
    assert_eq!(
        vols,
        [
            (
                "plain".to_string(),
                8 * MIB,
                "online".to_string(),
                String::new()
            ),
            (
                "pub".to_string(),
                4 * MIB,
                "online".to_string(),
                nqn.clone()
            ),
        ]
    );
    assert!(
        list_subsystems(&c).iter().any(|s| s.nqn == nqn),
        "re-published"
    );
    // Changes go on: the upgraded records carry revisions that compare-and-swap
    // writes match.
    let ok = c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .destroy(DestroyVolumeRequest {
                name: "plain".into(),
            })
            .await
    });
    assert!(ok.unwrap().into_inner().existed);
    assert_eq!(list_volumes(&c).len(), 1);
}
