use super::testing::EtcdCluster;
use super::*;
use crate::state::conformance;

/// A fresh one-member etcd and a store on it; `None`: etcd is missing (skipped).
async fn fresh() -> Option<(EtcdCluster, EtcdStore)> {
    let c = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .unwrap()?;
    let s = EtcdStore::connect(&c.endpoints()).await.unwrap();
    Some((c, s))
}

#[tokio::test]
async fn revisions_and_conflicts() {
    let Some((_c, s)) = fresh().await else { return };
    conformance::revisions_and_conflicts(&s).await;
}

#[tokio::test]
async fn txn_all_or_nothing() {
    let Some((_c, s)) = fresh().await else { return };
    conformance::txn_all_or_nothing(&s).await;
}

#[tokio::test]
async fn watch_from_a_revision() {
    let Some((_c, s)) = fresh().await else { return };
    conformance::watch_from_a_revision(&s).await;
}

#[tokio::test]
async fn lease_keep_alive_and_expiry() {
    let Some((_c, s)) = fresh().await else { return };
    conformance::lease_keep_alive_and_expiry(&s).await;
}

#[tokio::test]
async fn lease_revoke() {
    let Some((_c, s)) = fresh().await else { return };
    conformance::lease_revoke(&s).await;
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_told_so() {
    let Some((_c, s)) = fresh().await else { return };
    let mut last = 0;
    for i in 0..5 {
        last = s.put(&format!("/k/{i}"), vec![1]).await.unwrap();
    }
    s.client
        .kv_client()
        .compact(etcd_rev(last - 1), None)
        .await
        .unwrap();
    match s.watch("/k/", last - 3).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (last - 3, last - 1))
        }
        Err(e) => panic!("a watch from a compacted revision failed with {e}"),
        Ok(_) => panic!("a watch from a compacted revision started"),
    }
    let mut w = s.watch("/k/", last).await.unwrap();
    assert_eq!(w.recv().await.unwrap().unwrap().kv.key, "/k/4");
}

#[tokio::test]
async fn a_txn_writing_a_key_twice_is_refused_whole() {
    let Some((_c, s)) = fresh().await else { return };
    let b = s.range("/").await.unwrap().1;
    let e = s
        .txn(Txn::new().put("/d", vec![1]).put("/d", vec![2]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("transaction"), "{e}");
    assert_eq!(s.range("/").await.unwrap(), (Vec::new(), b));
}

#[tokio::test]
async fn an_unreachable_etcd_is_unavailable_with_the_reason() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let chain = crate::error_chain(&e);
    assert!(chain.contains("etcd"), "{chain}");

    // Lost while running: every call answers Unavailable (bounded by the request
    // timeout), never hangs.
    let Some((mut c, s)) = fresh().await else {
        return;
    };
    s.put("/x", vec![1]).await.unwrap();
    c.kill(0);
    for r in [
        s.get("/x").await.map(drop),
        s.put("/x", vec![2]).await.map(drop),
        s.lease_grant(Duration::from_secs(5)).await.map(drop),
    ] {
        assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
    }
}

#[test]
fn endpoints_are_checked() {
    check_endpoint("http://127.0.0.1:2379").unwrap();
    check_endpoint("http://etcd.example:2379/").unwrap();
    for (bad, why) in [
        ("127.0.0.1:2379", "expected http://HOST:PORT"),
        ("https://127.0.0.1:2379", "https is not supported"),
        ("unix://x:1", "scheme \"unix\""),
        ("http://127.0.0.1", "no port"),
        ("http://127.0.0.1:0", "port \"0\""),
        ("http://127.0.0.1:99999", "port \"99999\""),
        ("http://:2379", "expected http://HOST:PORT"),
    ] {
        let e = check_endpoint(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

/// Three members: losing the leader loses and doubles no change; losing a second
/// member (no quorum) makes every write `Unavailable`.
#[tokio::test]
async fn three_members_survive_one_loss_and_refuse_without_quorum() {
    let Some(mut c) = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
    else {
        return;
    };
    let s = EtcdStore::connect(&c.endpoints()).await.unwrap();
    // A counter advanced by compare-and-swap: each success is exactly one step.
    let mut done = 0u32;
    let step = |s: &EtcdStore| {
        let s = s.clone();
        async move {
            let (v, r) = match s.get("/counter").await? {
                Some(kv) => (
                    String::from_utf8(kv.value).unwrap().parse::<u32>().unwrap(),
                    kv.mod_revision,
                ),
                None => (0, 0),
            };
            s.put_if("/counter", (v + 1).to_string().into_bytes(), r)
                .await
                .map(|_| v + 1)
        }
    };
    for _ in 0..5 {
        done = step(&s).await.unwrap();
    }
    // Kill the leader: the others elect another; a write may fail while they do
    // (one that timed out may still have happened: the next step reads it back).
    let mut admin = s.client.clone();
    let leader = admin.status().await.unwrap().leader();
    let members = admin.member_list().await.unwrap();
    let name = members
        .members()
        .iter()
        .find(|m| m.id() == leader)
        .map(|m| m.name().to_string())
        .expect("the leader is a member");
    let led: usize = name.trim_start_matches('m').parse().unwrap();
    c.kill(led);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ok = 0;
    while ok < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress on 2 of 3 members"
        );
        match step(&s).await {
            Ok(n) => {
                done = n;
                ok += 1;
            }
            Err(StoreError::Unavailable { .. } | StoreError::Conflict { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let v = s.get("/counter").await.unwrap().unwrap().value;
    assert_eq!(String::from_utf8(v).unwrap(), done.to_string());
    assert!(done >= 10, "{done}");
    c.kill((led + 1) % 3);
    let r = s.put_if("/counter", b"x".to_vec(), 0).await;
    assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
}
