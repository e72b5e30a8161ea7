use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::Kind;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: format!("id-{id}"),
        name: id.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        up: true,
        cordoned: false,
    }
}

fn pool(node: &str, name: &str, free: u64) -> Pool {
    Pool {
        name: name.into(),
        node: format!("id-{node}"),
        free_bytes: free,
        cluster_size: MIB,
    }
}

fn req(size: u64, replicas: u32, spread: &str) -> Request {
    Request {
        size,
        thin: false,
        replicas,
        spread: spread.into(),
    }
}

fn msg(nodes: &[Node], pools: &[Pool], r: &Request) -> String {
    place(nodes, pools, r).unwrap_err().to_string()
}

/// a, b in z1; c in z2; d (down) in z3.
fn three_zones() -> (Vec<Node>, Vec<Pool>) {
    let mut d = node("d", &[("zone", "z3")]);
    d.up = false;
    let nodes = vec![
        node("a", &[("zone", "z1")]),
        node("b", &[("zone", "z1")]),
        node("c", &[("zone", "z2")]),
        d,
    ];
    let pools = vec![
        pool("a", "p", 20 * GIB),
        pool("b", "p", 30 * GIB),
        pool("c", "p", 10 * GIB),
        pool("d", "p", 50 * GIB),
    ];
    (nodes, pools)
}

#[test]
fn one_replica_per_zone_most_free_first() {
    let (mut nodes, pools) = three_zones();
    nodes[3].up = true;
    let got = place(&nodes, &pools, &req(10 * GIB, 3, "zone")).unwrap();
    let got: Vec<(&str, &str)> = got
        .iter()
        .map(|c| (c.node.as_str(), c.domain.as_str()))
        .collect();
    // z3 (50 GiB), then z1 through b (30 GiB, more than a), then z2.
    assert_eq!(got, [("id-d", "z3"), ("id-b", "z1"), ("id-c", "z2")]);
}

#[test]
fn ties_go_to_the_node_name_then_the_pool_name() {
    let nodes = vec![node("b", &[]), node("a", &[])];
    let pools = vec![
        pool("b", "p1", GIB),
        pool("a", "p2", GIB),
        pool("a", "p1", GIB),
    ];
    let got = place(&nodes, &pools, &req(GIB, 1, "")).unwrap();
    assert_eq!(
        got,
        [Choice {
            node: "id-a".into(),
            pool: "p1".into(),
            domain: "a".into()
        }]
    );
}

#[test]
fn not_enough_zones_names_the_ones_that_qualify_and_the_down_node() {
    let (nodes, pools) = three_zones();
    let m = msg(&nodes, &pools, &req(10 * GIB, 3, "zone"));
    assert_eq!(
        m,
        "3 replicas over zone: only 2 zones have a pool with 10 GiB free (z1, z2); d is down"
    );
    let e: ControlError = place(&nodes, &pools, &req(10 * GIB, 3, "zone"))
        .unwrap_err()
        .into();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert_eq!(e.to_string(), m);
}

#[test]
fn not_enough_space_counts_only_pools_with_room() {
    let (nodes, pools) = three_zones();
    // Only b (30 GiB) has room for 25 GiB.
    assert_eq!(
        msg(&nodes, &pools, &req(25 * GIB, 2, "zone")),
        "2 replicas over zone: only 1 zone has a pool with 25 GiB free (z1); d is down"
    );
    assert_eq!(
        msg(&nodes, &pools, &req(40 * GIB, 1, "zone")),
        "1 replica over zone: no zone has a pool with 40 GiB free; d is down"
    );
}

#[test]
fn a_node_without_the_label_or_cordoned_is_named() {
    let (mut nodes, pools) = three_zones();
    nodes[0].labels.clear();
    nodes[2].cordoned = true;
    assert_eq!(
        msg(&nodes, &pools, &req(GIB, 3, "zone")),
        "3 replicas over zone: only 1 zone has a pool with 1 GiB free (z1); \
         a has no label zone; c is cordoned; d is down"
    );
}

#[test]
fn a_cordoned_node_gets_no_replica_and_its_refusal_is_about_domains() {
    let (mut nodes, pools) = three_zones();
    let before = place(&nodes, &pools, &req(GIB, 2, "node")).unwrap();
    let on = |cs: &[Choice]| cs.iter().map(|c| c.node.clone()).collect::<Vec<_>>();
    assert_eq!(on(&before), ["id-b", "id-a"]);
    nodes[1].cordoned = true;
    let after = place(&nodes, &pools, &req(GIB, 2, "node")).unwrap();
    assert_eq!(on(&after), ["id-a", "id-c"]);
    // a and c only (b cordoned, d down): three nodes need the cordoned one.
    let e = place(&nodes, &pools, &req(GIB, 3, "node")).unwrap_err();
    assert_eq!(e.failure_reason(), Some("domains"), "{e}");
    assert!(e.to_string().contains("b is cordoned"), "{e}");
    // Enough nodes, too little room.
    let e = place(&nodes, &pools, &req(1000 * GIB, 1, "node")).unwrap_err();
    assert_eq!(e.failure_reason(), Some("space"), "{e}");
    let e = place(&nodes, &pools, &req(GIB, 9, "node")).unwrap_err();
    assert_eq!(e.failure_reason(), None);
}

#[test]
fn two_replicas_never_share_a_node() {
    let nodes = vec![node("a", &[])];
    let pools = vec![pool("a", "p1", GIB), pool("a", "p2", GIB)];
    assert_eq!(
        msg(&nodes, &pools, &req(MIB, 2, "node")),
        "2 replicas over node: only 1 node has a pool with 1 MiB free (a)"
    );
}

#[test]
fn thin_volumes_need_free_space_not_their_size() {
    let nodes = vec![node("a", &[]), node("b", &[])];
    let pools = vec![pool("a", "p", MIB), pool("b", "p", 0)];
    let mut r = req(10 * GIB, 1, "node");
    r.thin = true;
    let got = place(&nodes, &pools, &r).unwrap();
    assert_eq!(got[0].node, "id-a");
    r.replicas = 2;
    assert_eq!(
        msg(&nodes, &pools, &r),
        "2 replicas over node: only 1 node has a pool with free space (a)"
    );
}

#[test]
fn a_pool_whose_clusters_do_not_divide_the_size_is_named() {
    let nodes = vec![node("a", &[]), node("b", &[])];
    let mut p = pool("b", "big", 10 * GIB);
    p.cluster_size = 4 * MIB;
    let pools = vec![pool("a", "p", 10 * GIB), p];
    assert_eq!(
        msg(&nodes, &pools, &req(6 * MIB, 2, "")),
        "2 replicas over node: only 1 node has a pool with 6 MiB free (a); \
         pool big on b: 6 MiB is not a multiple of its 4 MiB clusters"
    );
    assert!(place(&nodes, &pools, &req(8 * MIB, 2, "")).is_ok());
}

#[test]
fn a_prefixed_spread_key_reads_as_values() {
    let key = "topology.example.com/zone";
    let nodes = vec![node("a", &[(key, "z1")])];
    let pools = vec![pool("a", "p", GIB)];
    assert_eq!(
        msg(&nodes, &pools, &req(MIB, 2, key)),
        "2 replicas over topology.example.com/zone: only 1 topology.example.com/zone value \
         has a pool with 1 MiB free (z1)"
    );
}

#[test]
fn replicas_out_of_range_is_invalid_argument_naming_replicas() {
    let (nodes, pools) = three_zones();
    for n in [0, 6, u32::MAX] {
        let e = place(&nodes, &pools, &req(MIB, n, "node")).unwrap_err();
        assert_eq!(e, PlacementError::Replicas(n));
        let e = ControlError::from(e);
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            format!("invalid argument replicas: must be 1 to 5, not {n}")
        );
    }
    assert!(place(&nodes, &pools, &req(MIB, 3, "node")).is_ok());
}

#[test]
fn a_spread_key_no_node_has_is_invalid_argument_naming_spread() {
    let (nodes, pools) = three_zones();
    let e = place(&nodes, &pools, &req(MIB, 1, "rack")).unwrap_err();
    assert_eq!(e, PlacementError::UnknownSpread { key: "rack".into() });
    let e = ControlError::from(e);
    assert_eq!(e.kind(), Kind::InvalidArgument);
    assert!(
        e.to_string()
            .starts_with("invalid argument spread: no node has a label \"rack\""),
        "{e}"
    );
    // A key some node has (even a down one) is known: the answer is about room.
    let e = place(&nodes, &pools, &req(MIB, 4, "zone")).unwrap_err();
    assert!(matches!(e, PlacementError::NotEnough { .. }), "{e}");
}

#[test]
fn an_empty_cluster_has_no_room() {
    assert_eq!(
        msg(&[], &[], &req(MIB, 1, "zone")),
        "1 replica over zone: no zone has a pool with 1 MiB free"
    );
}

// ---- property tests ----

#[derive(Debug, Clone)]
struct Cluster {
    nodes: Vec<Node>,
    pools: Vec<Pool>,
}

/// 1 to 8 nodes whose id order differs from their name order, labels from small
/// alphabets (sometimes missing), mostly up; 0 to 3 pools each with little free space
/// (ties are common), some with 2 MiB clusters.
fn cluster() -> impl Strategy<Value = Cluster> {
    let label = |vals: &'static [&'static str]| {
        prop_oneof![
            1 => Just(None),
            4 => proptest::sample::select(vals).prop_map(Some),
        ]
    };
    let pool_spec = (0u64..6, prop_oneof![4 => Just(MIB), 1 => Just(2 * MIB)]);
    let node_spec = (
        label(&["z1", "z2", "z3"]),
        label(&["r1", "r2"]),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.15),
        proptest::collection::vec(pool_spec, 0..=3),
    );
    proptest::collection::vec(node_spec, 1..=8).prop_map(|specs| {
        let count = specs.len();
        let mut nodes = Vec::new();
        let mut pools = Vec::new();
        for (i, (zone, rack, up, cordoned, ps)) in specs.into_iter().enumerate() {
            let id = format!("id{}", count - i);
            let mut labels = BTreeMap::new();
            if let Some(z) = zone {
                labels.insert("zone".to_string(), z.to_string());
            }
            if let Some(r) = rack {
                labels.insert("rack".to_string(), r.to_string());
            }
            for (j, (free, cs)) in ps.into_iter().enumerate() {
                pools.push(Pool {
                    name: format!("p{j}"),
                    node: id.clone(),
                    free_bytes: free * MIB,
                    cluster_size: cs,
                });
            }
            nodes.push(Node {
                id,
                name: format!("n{i}"),
                labels,
                up,
                cordoned,
            });
        }
        Cluster { nodes, pools }
    })
}

fn request() -> impl Strategy<Value = Request> {
    (
        1u64..=5,
        any::<bool>(),
        0u32..=6,
        proptest::sample::select(&["node", "", "zone", "rack", "dc"][..]),
    )
        .prop_map(|(size, thin, replicas, spread)| Request {
            size: size * MIB,
            thin,
            replicas,
            spread: spread.into(),
        })
}

/// The rules, written from the module documentation and nothing else: may `p` on
/// `n` host a replica of `r`, and in which domain.
fn eligible<'a>(r: &Request, n: &'a Node, p: &Pool) -> Option<&'a str> {
    let spread = if r.spread.is_empty() {
        "node"
    } else {
        &r.spread
    };
    let domain = if spread == "node" {
        Some(n.name.as_str())
    } else {
        n.labels.get(spread).map(String::as_str)
    }?;
    let room = if r.thin {
        p.free_bytes > 0
    } else {
        p.free_bytes >= r.size
    };
    let divides = r.size.rem_euclid(p.cluster_size) == 0;
    (n.up && !n.cordoned && p.node == n.id && room && divides).then_some(domain)
}

/// Whether `set` (indices into `c.pools`) obeys every rule for `r`.
fn obeys(c: &Cluster, r: &Request, set: &[usize]) -> bool {
    let mut domains = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    set.len() == r.replicas as usize
        && set.iter().all(|&i| {
            let p = &c.pools[i];
            let Some(n) = c.nodes.iter().find(|n| n.id == p.node) else {
                return false;
            };
            eligible(r, n, p).is_some_and(|d| domains.insert(d)) && nodes.insert(&n.id)
        })
}

/// Brute force: does any set of `r.replicas` pools obey the rules?
fn exists(c: &Cluster, r: &Request) -> bool {
    fn go(c: &Cluster, r: &Request, from: usize, set: &mut Vec<usize>) -> bool {
        if set.len() == r.replicas as usize {
            return obeys(c, r, set);
        }
        (from..c.pools.len()).any(|i| {
            set.push(i);
            let found = go(c, r, i + 1, set);
            set.pop();
            found
        })
    }
    (1..=5).contains(&r.replicas) && go(c, r, 0, &mut Vec::new())
}

/// The best free space among the pools that may host a replica in each domain.
fn best_per_domain(c: &Cluster, r: &Request) -> BTreeMap<String, u64> {
    let mut best = BTreeMap::new();
    for p in &c.pools {
        for n in c.nodes.iter().filter(|n| n.id == p.node) {
            if let Some(d) = eligible(r, n, p) {
                let b = best.entry(d.to_string()).or_insert(0);
                *b = p.free_bytes.max(*b);
            }
        }
    }
    best
}

fn check(c: &Cluster, shuffled: &Cluster, r: &Request) -> Result<(), TestCaseError> {
    let got = place(&c.nodes, &c.pools, r);
    // (c) Determinism: the same answer again, and for the input in another order.
    prop_assert_eq!(&got, &place(&c.nodes, &c.pools, r));
    prop_assert_eq!(&got, &place(&shuffled.nodes, &shuffled.pools, r));
    let best = best_per_domain(c, r);
    match &got {
        Ok(choices) => {
            // (a) Every answer obeys the rules.
            let set: Vec<usize> = choices
                .iter()
                .map(|ch| {
                    c.pools
                        .iter()
                        .position(|p| p.node == ch.node && p.name == ch.pool)
                        .expect("a chosen pool exists")
                })
                .collect();
            prop_assert!(obeys(c, r, &set), "{choices:?} breaks a rule");
            // … and prefers space: each pool is the roomiest of its domain, and no
            // domain left out has a roomier pool than a chosen one.
            let chosen: BTreeMap<&str, u64> = choices
                .iter()
                .zip(&set)
                .map(|(ch, &i)| (ch.domain.as_str(), c.pools[i].free_bytes))
                .collect();
            for (d, free) in &chosen {
                prop_assert_eq!(Some(free), best.get(*d), "domain {}", d);
            }
            let least = chosen.values().min().copied().unwrap_or(0);
            for (d, free) in &best {
                prop_assert!(
                    chosen.contains_key(d.as_str()) || *free <= least,
                    "domain {} has {} free, more than a chosen one",
                    d,
                    free
                );
            }
        }
        Err(PlacementError::Replicas(n)) => {
            prop_assert!(!(1..=5).contains(n));
            prop_assert_eq!(*n, r.replicas);
        }
        Err(PlacementError::UnknownSpread { key }) => {
            prop_assert_ne!(key.as_str(), "node");
            prop_assert!(c.nodes.iter().all(|n| !n.labels.contains_key(key)));
        }
        Err(
            e @ PlacementError::NotEnough {
                domains, eligible, ..
            },
        ) => {
            // (b) Completeness: no answer, so the brute force finds none either; and
            // the domains named are exactly those with room.
            prop_assert!(!exists(c, r), "an assignment exists");
            let with_room: Vec<&String> = best.keys().collect();
            prop_assert_eq!(domains.iter().collect::<Vec<_>>(), with_room);
            prop_assert!(domains.len() < r.replicas as usize);
            // The domains a node may host in (up, not cordoned, labelled), from the
            // rules; the metric's reason follows from them.
            let spread = if r.spread.is_empty() {
                "node"
            } else {
                &r.spread
            };
            let hosts: BTreeSet<&str> = c
                .nodes
                .iter()
                .filter(|n| n.up && !n.cordoned)
                .filter_map(|n| {
                    if spread == "node" {
                        Some(n.name.as_str())
                    } else {
                        n.labels.get(spread).map(String::as_str)
                    }
                })
                .collect();
            prop_assert_eq!(*eligible, hosts.len());
            let want = if hosts.len() < r.replicas as usize {
                "domains"
            } else {
                "space"
            };
            prop_assert_eq!(e.failure_reason(), Some(want));
        }
    }
    if exists(c, r) {
        prop_assert!(got.is_ok(), "an assignment exists but: {:?}", got);
    }
    Ok(())
}

#[test]
fn every_answer_obeys_the_rules_and_one_exists_whenever_one_does() {
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let input = (cluster(), request()).prop_flat_map(|(c, r)| {
        let shuffled = (
            Just(c.nodes.clone()).prop_shuffle(),
            Just(c.pools.clone()).prop_shuffle(),
        )
            .prop_map(|(nodes, pools)| Cluster { nodes, pools });
        (Just(c), shuffled, Just(r))
    });
    runner
        .run(&input, |(c, shuffled, r)| check(&c, &shuffled, &r))
        .unwrap();
}

/// The property test's brute force is not vacuous: over many random inputs it finds
/// assignments and fails to, for several replica counts.
#[test]
fn the_brute_force_finds_both_answers() {
    let mut runner = TestRunner::new(Config {
        cases: 1,
        failure_persistence: None,
        ..Config::default()
    });
    let mut seen = BTreeSet::new();
    for _ in 0..400 {
        let c = cluster().new_tree(&mut runner).unwrap().current();
        let r = request().new_tree(&mut runner).unwrap().current();
        seen.insert((r.replicas, exists(&c, &r)));
    }
    for n in 1..=3 {
        assert!(seen.contains(&(n, true)), "{seen:?}");
        assert!(seen.contains(&(n, false)), "{seen:?}");
    }
}
