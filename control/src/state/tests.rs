use super::*;

#[test]
fn redb_store_put_get_delete_and_prefix_scan() {
    let d = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    s.put("/ferrox/v1/volume/a", b"1").unwrap();
    s.put("/ferrox/v1/volume/b", b"2").unwrap();
    s.put("/ferrox/v1/volumes", b"x").unwrap();
    s.put("/ferrox/v1/pool/a", b"3").unwrap();
    assert_eq!(
        s.get("/ferrox/v1/volume/a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let l = s.list_prefix(&kind_prefix("volume")).unwrap();
    let keys: Vec<_> = l.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/ferrox/v1/volume/a", "/ferrox/v1/volume/b"]);
    assert!(s.delete("/ferrox/v1/volume/a").unwrap());
    assert!(!s.delete("/ferrox/v1/volume/a").unwrap());
    assert_eq!(s.get("/ferrox/v1/volume/a").unwrap(), None);
    drop(s);
    // Durable across reopen.
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    assert_eq!(
        s.get("/ferrox/v1/pool/a").unwrap().as_deref(),
        Some(&b"3"[..])
    );
}

#[test]
fn typed_records_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let s = RedbStore::open(&d.path().join("state.redb")).unwrap();
    let r = Records(&s);
    let v = VolumeRec {
        name: "v1".into(),
        pool: "p".into(),
        size: 1 << 20,
        thin: true,
        labels: [("a".to_string(), "b".to_string())].into(),
        clone_of: None,
        phase: Phase::Creating,
    };
    r.put(&v).unwrap();
    assert_eq!(r.get::<VolumeRec>("v1").unwrap(), Some(v.clone()));
    assert_eq!(r.list::<VolumeRec>().unwrap(), vec![v]);
    assert!(r.list::<PoolRec>().unwrap().is_empty());
}
