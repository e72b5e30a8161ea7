use std::time::Duration;

use super::*;

fn open(d: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(&d.path().join("state.redb")).unwrap()
}

#[tokio::test]
async fn revisions_increase_and_a_stale_put_if_fails() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    assert_eq!(s.put("/a", b"1".to_vec()).await.unwrap(), 1);
    assert_eq!(s.put("/b", b"1".to_vec()).await.unwrap(), 2);
    assert_eq!(s.put("/a", b"2".to_vec()).await.unwrap(), 3);
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 3));
    match s.put_if("/a", b"3".to_vec(), 1).await {
        Err(StoreError::Conflict {
            key,
            expected: 1,
            actual: 3,
        }) => assert_eq!(key, "/a"),
        r => panic!("a stale put_if answered {r:?}"),
    }
    assert!(matches!(
        s.put_if("/b", b"x".to_vec(), 0).await,
        Err(StoreError::Conflict { actual: 2, .. })
    ));
    assert!(matches!(
        s.delete_if("/b", 1).await,
        Err(StoreError::Conflict { .. })
    ));
    // Nothing of the failed calls was written, and no revision was spent.
    assert_eq!(s.get("/a").await.unwrap().unwrap().value, b"2");
    assert_eq!(s.range("/").await.unwrap().1, 3);
    assert_eq!(s.put_if("/a", b"4".to_vec(), 3).await.unwrap(), 4);
    assert_eq!(s.put_if("/c", b"1".to_vec(), 0).await.unwrap(), 5);
    assert_eq!(s.delete_if("/b", 2).await.unwrap(), 6);
    // A delete of an absent key changes nothing.
    assert!(!s.delete("/b").await.unwrap());
    assert_eq!(s.range("/").await.unwrap().1, 6);
    // A key created again starts a new life.
    assert_eq!(s.put("/b", b"2".to_vec()).await.unwrap(), 7);
    assert_eq!(s.get("/b").await.unwrap().unwrap().create_revision, 7);
}

#[tokio::test]
async fn a_txn_is_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    let ra = s.put("/a", b"a".to_vec()).await.unwrap();
    let rb = s.put("/b", b"b".to_vec()).await.unwrap();
    let lost = Txn::new()
        .when("/a", ra)
        .when("/b", ra) // stale
        .put("/a", b"a2".to_vec())
        .put("/c", b"c".to_vec())
        .delete("/b");
    assert!(matches!(
        s.txn(lost).await,
        Err(StoreError::Conflict { ref key, .. }) if key == "/b"
    ));
    let (kvs, rev) = s.range("/").await.unwrap();
    let vals: Vec<_> = kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!((vals, rev), (vec![&b"a"[..], b"b"], rb));
    let won = Txn::new()
        .when("/a", ra)
        .when("/b", rb)
        .when("/c", 0)
        .put("/a", b"a2".to_vec())
        .put("/c", b"c".to_vec())
        .delete("/b");
    let r = s.txn(won).await.unwrap();
    assert_eq!(r.revision, rb + 1, "one revision for the whole transaction");
    assert_eq!(
        r.prev[0].as_ref().map(|kv| kv.value.clone()),
        Some(b"a".to_vec())
    );
    assert_eq!(r.prev[1], None);
    let (kvs, _) = s.range("/").await.unwrap();
    let got: Vec<_> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.mod_revision))
        .collect();
    assert_eq!(got, [("/a", rb + 1), ("/c", rb + 1)]);
}

#[tokio::test]
async fn a_watch_sees_events_in_order_from_a_revision() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    s.put("/v/a", b"1".to_vec()).await.unwrap(); // 1
    s.put("/p/x", b"1".to_vec()).await.unwrap(); // 2
    s.put("/v/b", b"1".to_vec()).await.unwrap(); // 3
    s.delete("/v/a").await.unwrap(); // 4
    let mut from2 = s.watch("/v/", 2).await.unwrap();
    let mut now = s.watch("/v/", 0).await.unwrap();
    s.txn(
        Txn::new()
            .put("/v/c", b"2".to_vec())
            .put("/p/y", b"2".to_vec()),
    )
    .await
    .unwrap(); // 5
    s.put("/v/b", b"2".to_vec()).await.unwrap(); // 6
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = from2.recv().await.unwrap().unwrap();
        seen.push((e.kind, e.kv.key, e.kv.mod_revision));
    }
    let want = [
        (EventKind::Put, "/v/b".to_string(), 3),
        (EventKind::Delete, "/v/a".to_string(), 4),
        (EventKind::Put, "/v/c".to_string(), 5),
        (EventKind::Put, "/v/b".to_string(), 6),
    ];
    assert_eq!(seen, want);
    let e = now.recv().await.unwrap().unwrap();
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/v/c", 5));
    let e = now.recv().await.unwrap().unwrap();
    assert_eq!((e.kv.value.as_slice(), e.kv.mod_revision), (&b"2"[..], 6));
    assert_eq!(e.kv.create_revision, 3);
}

#[tokio::test]
async fn a_watch_before_the_history_kept_is_compacted() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    for i in 0..HISTORY + 2 {
        s.blocking_txn(&Txn::new().put(format!("/k/{i}"), vec![1]))
            .unwrap();
    }
    assert!(matches!(
        s.watch("/k/", 1).await,
        Err(StoreError::Compacted { requested: 1, .. })
    ));
    assert!(s.watch("/k/", 10).await.is_ok());
    drop(s);
    // History starts at open.
    let s = open(&d);
    let last = (HISTORY + 2) as Revision;
    assert!(matches!(
        s.watch("/k/", last).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut w = s.watch("/k/", last + 1).await.unwrap();
    s.put("/k/new", vec![2]).await.unwrap();
    assert_eq!(w.recv().await.unwrap().unwrap().kv.mod_revision, last + 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_deletes_its_keys_and_keep_alive_defers_it() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    let ttl = Duration::from_secs(5);
    let lease = s.lease_grant(ttl).await.unwrap();
    s.txn(Txn::new().put_leased("/n/a", vec![1], lease))
        .await
        .unwrap();
    s.txn(Txn::new().put_leased("/n/moved", vec![1], lease))
        .await
        .unwrap();
    // Written again without the lease: no longer the lease's to delete.
    s.put("/n/moved", vec![2]).await.unwrap();
    let mut w = s.watch("/n/", 0).await.unwrap();

    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(s.lease_keep_alive(lease).await.unwrap(), ttl);
    tokio::time::advance(Duration::from_secs(4)).await;
    // 8 s after the grant, 4 s after the keep-alive: not expired.
    assert!(s.inner.take_expired(Instant::now()).is_empty());
    assert!(s.get("/n/a").await.unwrap().is_some());

    tokio::time::advance(Duration::from_secs(2)).await;
    let e = w.recv().await.unwrap().unwrap();
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Delete, "/n/a"));
    assert_eq!(s.get("/n/a").await.unwrap(), None);
    assert_eq!(s.get("/n/moved").await.unwrap().unwrap().value, vec![2]);
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(id)) if id == lease
    ));
    assert!(matches!(
        s.txn(Txn::new().put_leased("/n/b", vec![1], lease)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

#[tokio::test]
async fn revoking_a_lease_deletes_its_keys_and_so_does_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    let l1 = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    let l2 = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    s.txn(
        Txn::new()
            .put_leased("/n/1", vec![1], l1)
            .put_leased("/n/2", vec![2], l2)
            .put("/n/plain", vec![3]),
    )
    .await
    .unwrap();
    s.lease_revoke(l1).await.unwrap();
    assert_eq!(s.get("/n/1").await.unwrap(), None);
    assert!(s.get("/n/2").await.unwrap().is_some());
    drop(s);
    // Leases do not survive a restart of the redb store: the keys go at open.
    let s = open(&d);
    assert_eq!(s.get("/n/2").await.unwrap(), None);
    assert!(s.get("/n/plain").await.unwrap().is_some());
}

#[test]
fn a_store_of_the_format_without_revisions_is_upgraded() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.redb");
    {
        // What the code before revisions wrote: bare values in table "state".
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(LEGACY).unwrap();
            t.insert("/ferrox/v1/pool/p", &b"{\"x\":1}"[..]).unwrap();
            t.insert("/ferrox/v1/volume/v", &b"{\"y\":2}"[..]).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    let (kvs, rev) = s.blocking_range("/ferrox/v1/").unwrap();
    assert_eq!(rev, 1);
    let got: Vec<_> = kvs
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                kv.value.as_slice(),
                kv.create_revision,
                kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/ferrox/v1/pool/p", &b"{\"x\":1}"[..], 1, 1),
            ("/ferrox/v1/volume/v", &b"{\"y\":2}"[..], 1, 1),
        ]
    );
    s.blocking_txn(&Txn::new().put("/ferrox/v1/volume/w", vec![]))
        .unwrap();
    drop(s);
    // Upgraded once: the old table is gone and a reopen changes nothing.
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.blocking_range("/").unwrap().1, 2);
    let tx = s.inner.db.begin_read().unwrap();
    let names: Vec<String> = tx
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!names.iter().any(|n| n == "state"), "{names:?}");
}

#[test]
fn a_corrupt_value_is_reported_as_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    {
        let tx = s.inner.db.begin_write().unwrap();
        tx.open_table(KV)
            .unwrap()
            .insert("/bad", &[1u8, 2][..])
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(
        s.blocking_get("/bad"),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_watcher_that_falls_too_far_behind_is_told_so() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d);
    // Writes of leased keys only are not synced: cheap enough for thousands.
    let lease = s.lease_grant(Duration::from_secs(600)).await.unwrap();
    let mut w = s.watch("/x/", 0).await.unwrap();
    let n = HISTORY + WATCH_BUFFER + 1;
    for i in 0..n {
        s.blocking_txn(&Txn::new().put_leased(format!("/x/{i}"), vec![], lease))
            .unwrap();
    }
    let mut last = 0;
    let err = loop {
        match w.recv().await {
            Ok(Some(e)) => {
                assert_eq!(e.kv.mod_revision, last + 1, "in order, none missing");
                last = e.kv.mod_revision;
            }
            Ok(None) => panic!("the watch ended without saying it lagged"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        last as usize,
        HISTORY + WATCH_BUFFER,
        "everything buffered came"
    );
    assert!(
        matches!(err, StoreError::Compacted { requested, .. } if requested == last),
        "{err:?}"
    );
}
