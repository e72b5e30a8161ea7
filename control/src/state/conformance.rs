//! What every [`StateStore`] must do, as test bodies over `&dyn StateStore`, run for
//! redb (`state/tests.rs`) and for a real etcd (`state/etcd/tests.rs`). Revisions are
//! checked relative to the store's revision when a body starts, so a body runs on a
//! fresh store of either kind.

use std::time::Duration;

use super::kv::{EventKind, Revision, StateStore, StoreError, Txn};

/// The longest a body waits for something a store does in the background (a lease
/// expiring).
const PATIENCE: Duration = Duration::from_secs(20);

async fn now(s: &dyn StateStore) -> Revision {
    s.range("/").await.unwrap().1
}

/// Revisions per write, `put_if`/`delete_if` conflicts that change nothing.
pub(crate) async fn revisions_and_conflicts(s: &dyn StateStore) {
    let b = now(s).await;
    assert_eq!(s.put("/a", b"1".to_vec()).await.unwrap(), b + 1);
    assert_eq!(s.put("/b", b"1".to_vec()).await.unwrap(), b + 2);
    assert_eq!(s.put("/a", b"2".to_vec()).await.unwrap(), b + 3);
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (b + 1, b + 3));
    assert_eq!(a.lease, None);
    match s.put_if("/a", b"3".to_vec(), b + 1).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => assert_eq!((key.as_str(), expected, actual), ("/a", b + 1, b + 3)),
        r => panic!("a stale put_if answered {r:?}"),
    }
    match s.put_if("/b", b"x".to_vec(), 0).await {
        Err(StoreError::Conflict {
            expected: 0,
            actual,
            ..
        }) => assert_eq!(actual, b + 2),
        r => panic!("a create of an existing key answered {r:?}"),
    }
    assert!(matches!(
        s.delete_if("/b", b + 1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.delete_if("/absent", b + 1).await,
        Err(StoreError::Conflict { actual: 0, .. })
    ));
    // Nothing of the failed calls was written, and no revision was spent.
    assert_eq!(s.get("/a").await.unwrap().unwrap().value, b"2");
    assert_eq!(now(s).await, b + 3);
    assert_eq!(s.put_if("/a", b"4".to_vec(), b + 3).await.unwrap(), b + 4);
    assert_eq!(s.put_if("/c", b"1".to_vec(), 0).await.unwrap(), b + 5);
    assert_eq!(s.delete_if("/b", b + 2).await.unwrap(), b + 6);
    assert_eq!(s.get("/b").await.unwrap(), None);
    // A delete of an absent key changes nothing.
    assert!(!s.delete("/b").await.unwrap());
    assert_eq!(now(s).await, b + 6);
    // A key created again starts a new life.
    assert_eq!(s.put("/b", b"2".to_vec()).await.unwrap(), b + 7);
    assert_eq!(s.get("/b").await.unwrap().unwrap().create_revision, b + 7);
    // A prefix scan: in key order, only the prefix, with the read's revision.
    s.put("/v/x", vec![1]).await.unwrap();
    s.put("/v/a", vec![2]).await.unwrap();
    s.put("/vv", vec![3]).await.unwrap();
    let (kvs, rev) = s.range("/v/").await.unwrap();
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!((keys, rev), (vec!["/v/a", "/v/x"], b + 10));
}

/// A transaction commits everything at one revision, or nothing.
pub(crate) async fn txn_all_or_nothing(s: &dyn StateStore) {
    let ra = s.put("/a", b"a".to_vec()).await.unwrap();
    let rb = s.put("/b", b"b".to_vec()).await.unwrap();
    let lost = Txn::new()
        .when("/a", ra)
        .when("/b", ra) // stale
        .put("/a", b"a2".to_vec())
        .put("/c", b"c".to_vec())
        .delete("/b");
    match s.txn(lost).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => assert_eq!((key.as_str(), expected, actual), ("/b", ra, rb)),
        r => panic!("a transaction with a stale compare answered {r:?}"),
    }
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
    let prev: Vec<_> = r
        .prev
        .iter()
        .map(|p| p.as_ref().map(|kv| (kv.value.clone(), kv.mod_revision)))
        .collect();
    assert_eq!(
        prev,
        [Some((b"a".to_vec(), ra)), None, Some((b"b".to_vec(), rb))]
    );
    let (kvs, _) = s.range("/").await.unwrap();
    let got: Vec<_> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision))
        .collect();
    assert_eq!(got, [("/a", &b"a2"[..], rb + 1), ("/c", &b"c"[..], rb + 1)]);
}

/// A watch from a revision replays what happened since, in order, then follows.
pub(crate) async fn watch_from_a_revision(s: &dyn StateStore) {
    let b = now(s).await;
    s.put("/v/a", b"1".to_vec()).await.unwrap(); // b+1
    s.put("/p/x", b"1".to_vec()).await.unwrap(); // b+2
    s.put("/v/b", b"1".to_vec()).await.unwrap(); // b+3
    s.delete("/v/a").await.unwrap(); // b+4
    let mut past = s.watch("/v/", b + 2).await.unwrap();
    let mut next = s.watch("/v/", 0).await.unwrap();
    s.txn(
        Txn::new()
            .put("/v/c", b"2".to_vec())
            .put("/p/y", b"2".to_vec()),
    )
    .await
    .unwrap(); // b+5
    s.put("/v/b", b"2".to_vec()).await.unwrap(); // b+6
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(PATIENCE, past.recv())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        seen.push((e.kind, e.kv.key, e.kv.mod_revision));
    }
    let want = [
        (EventKind::Put, "/v/b".to_string(), b + 3),
        (EventKind::Delete, "/v/a".to_string(), b + 4),
        (EventKind::Put, "/v/c".to_string(), b + 5),
        (EventKind::Put, "/v/b".to_string(), b + 6),
    ];
    assert_eq!(seen, want);
    let e = next.recv().await.unwrap().unwrap();
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/v/c", b + 5));
    let e = next.recv().await.unwrap().unwrap();
    assert_eq!(
        (e.kv.value.as_slice(), e.kv.mod_revision),
        (&b"2"[..], b + 6)
    );
    assert_eq!(e.kv.create_revision, b + 3);
}

/// Polls `key` until it is gone; panics after [`PATIENCE`].
async fn wait_gone(s: &dyn StateStore, key: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while s.get(key).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} outlived its lease by {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A lease kept alive keeps its keys; once it is no longer renewed it expires and
/// deletes them (and only them), and is gone.
pub(crate) async fn lease_keep_alive_and_expiry(s: &dyn StateStore) {
    let lease = s.lease_grant(Duration::from_secs(2)).await.unwrap();
    s.txn(Txn::new().put_leased("/n/a", vec![1], lease))
        .await
        .unwrap();
    s.txn(Txn::new().put_leased("/n/moved", vec![1], lease))
        .await
        .unwrap();
    // Written again without the lease: no longer the lease's to delete.
    s.put("/n/moved", vec![2]).await.unwrap();
    assert_eq!(s.get("/n/a").await.unwrap().unwrap().lease, Some(lease));
    let mut w = s.watch("/n/", 0).await.unwrap();
    // Renewed for three of its TTLs: still there.
    let ttl = s.lease_keep_alive(lease).await.unwrap();
    assert_eq!(ttl, Duration::from_secs(2));
    let until = tokio::time::Instant::now() + 3 * ttl;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(ttl / 5).await;
        assert_eq!(s.lease_keep_alive(lease).await.unwrap(), ttl);
    }
    assert!(
        s.get("/n/a").await.unwrap().is_some(),
        "a renewed lease ended"
    );
    // No longer renewed: it ends.
    let e = tokio::time::timeout(PATIENCE, w.recv())
        .await
        .expect("the lease's keys deleted")
        .unwrap()
        .unwrap();
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Delete, "/n/a"));
    wait_gone(s, "/n/a").await;
    assert_eq!(s.get("/n/moved").await.unwrap().unwrap().value, vec![2]);
    let r = s.lease_keep_alive(lease).await;
    assert!(
        matches!(r, Err(StoreError::LeaseNotFound(id)) if id == lease),
        "{r:?}"
    );
    let r = s.txn(Txn::new().put_leased("/n/b", vec![1], lease)).await;
    assert!(
        matches!(r, Err(StoreError::LeaseNotFound(id)) if id == lease),
        "{r:?}"
    );
    assert_eq!(s.get("/n/b").await.unwrap(), None);
}

/// Revoking a lease deletes its keys now; a revoked lease is gone.
pub(crate) async fn lease_revoke(s: &dyn StateStore) {
    let l1 = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    let l2 = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_ne!(l1, l2);
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
    assert!(s.get("/n/plain").await.unwrap().is_some());
    assert!(matches!(
        s.lease_revoke(l1).await,
        Err(StoreError::LeaseNotFound(id)) if id == l1
    ));
    s.lease_revoke(l2).await.unwrap();
    assert_eq!(s.get("/n/2").await.unwrap(), None);
}
