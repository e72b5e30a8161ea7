use super::*;

#[tokio::test]
async fn redb_store_put_get_delete_and_prefix_scan() {
    let d = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    s.put("/ferrox/v1/volume/a", b"1".to_vec()).await.unwrap();
    s.put("/ferrox/v1/volume/b", b"2".to_vec()).await.unwrap();
    s.put("/ferrox/v1/volumes", b"x".to_vec()).await.unwrap();
    s.put("/ferrox/v1/pool/a", b"3".to_vec()).await.unwrap();
    let a = s.get("/ferrox/v1/volume/a").await.unwrap().unwrap();
    assert_eq!(a.value, b"1");
    let (l, rev) = s.range(&kind_prefix("volume")).await.unwrap();
    let keys: Vec<_> = l.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/ferrox/v1/volume/a", "/ferrox/v1/volume/b"]);
    assert_eq!(rev, 4);
    assert!(s.delete("/ferrox/v1/volume/a").await.unwrap());
    assert!(!s.delete("/ferrox/v1/volume/a").await.unwrap());
    assert_eq!(s.get("/ferrox/v1/volume/a").await.unwrap(), None);
    drop(s);
    // Durable across reopen, revisions included.
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    let p = s.blocking_get("/ferrox/v1/pool/a").unwrap().unwrap();
    assert_eq!((p.value.as_slice(), p.mod_revision), (&b"3"[..], 4));
    assert_eq!(
        s.blocking_range("/").unwrap().1,
        5,
        "the delete was revision 5"
    );
}

#[tokio::test]
async fn typed_records_round_trip_with_revisions() {
    let d = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    let r = Records(&s as &dyn StateStore);
    let v = VolumeRec {
        name: "v1".into(),
        pool: "p".into(),
        size: 1 << 20,
        thin: true,
        labels: [("a".to_string(), "b".to_string())].into(),
        clone_of: None,
        replicas: Vec::new(),
        phase: Phase::Creating,
    };
    let rev = r.put_if(&v, 0).await.unwrap();
    assert_eq!(
        r.get_rev::<VolumeRec>("v1").await.unwrap(),
        Some((v.clone(), rev))
    );
    assert_eq!(r.list::<VolumeRec>().await.unwrap(), vec![v.clone()]);
    assert!(r.list::<PoolRec>().await.unwrap().is_empty());
    // A second create of the same name loses.
    let e = r.put_if(&v, 0).await.unwrap_err();
    assert_eq!(e.kind(), crate::Kind::Aborted, "{e}");
    let ready = v.in_phase(Phase::Ready);
    let rev2 = r.put_if(&ready, rev).await.unwrap();
    assert!(rev2 > rev);
    assert!(r.delete_if::<VolumeRec>("v1", rev).await.is_err(), "stale");
    r.delete_if::<VolumeRec>("v1", rev2).await.unwrap();
    // The synchronous view of a stopped node's store reads the same records.
    r.put(&ready).await.unwrap();
    assert_eq!(Records(&s).get::<VolumeRec>("v1").unwrap(), Some(ready));
}

/// The store conformance bodies (`conformance.rs`), each on a fresh redb store.
mod redb_conformance {
    use super::super::conformance;
    use super::*;

    fn fresh() -> (tempfile::TempDir, RedbStore) {
        let d = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn revisions_and_conflicts() {
        let (_d, s) = fresh();
        conformance::revisions_and_conflicts(&s).await;
    }

    #[tokio::test]
    async fn txn_all_or_nothing() {
        let (_d, s) = fresh();
        conformance::txn_all_or_nothing(&s).await;
    }

    #[tokio::test]
    async fn watch_from_a_revision() {
        let (_d, s) = fresh();
        conformance::watch_from_a_revision(&s).await;
    }

    #[tokio::test]
    async fn lease_keep_alive_and_expiry() {
        let (_d, s) = fresh();
        conformance::lease_keep_alive_and_expiry(&s).await;
    }

    #[tokio::test]
    async fn lease_revoke() {
        let (_d, s) = fresh();
        conformance::lease_revoke(&s).await;
    }
}
