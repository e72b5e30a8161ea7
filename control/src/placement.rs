//! Placement: which pool of which node holds each replica of a new volume.
//!
//! [`place`] is a pure function of a snapshot of the cluster (the nodes with their
//! labels and state, the pools with their free space) and the request. No I/O, no
//! store, no clock: the caller reads the node registry, calls it, then creates the
//! replicas it answers (and creates none when it answers an error, so a refused
//! placement leaves nothing half-created).
//!
//! # Rules
//!
//! * `replicas` is 1 to [`MAX_REPLICAS`].
//! * Every replica goes to a distinct value of the `spread` label: `zone=z1` and
//!   `zone=z2`, never two in `z1`. `spread` [`SPREAD_NODE`] (the default, also when it
//!   is empty) means the node itself, whatever labels it has. A node without the
//!   `spread` label hosts no replica under that spread; a `spread` key that no node
//!   of the cluster has at all is the caller's mistake ([`PlacementError::UnknownSpread`]).
//! * Never on a node that is down or cordoned. Never two replicas on one node (this
//!   follows from the previous rules: a node has one value per label key).
//! * A thick volume needs a pool with at least `size` bytes free, as the pool itself
//!   does: it reserves every cluster at creation. A thin volume needs a pool with some
//!   space free (`free_bytes > 0`): a single pool creates a thin volume whatever its
//!   free space (thin volumes overcommit), so placement does not ask for `size` either,
//!   but it never picks a full pool, where the first write would fail.
//! * `size` is a multiple of the pool's cluster size, as `CreateVolume` asks of a
//!   single pool (`validate::size`): a pool with clusters that do not divide it is
//!   not a candidate.
//! * Preference: in each failure domain, the candidate pool with the most free space;
//!   the domains whose best pool has the most free space. Ties are broken by node name,
//!   node id, pool name and domain value, so the answer never depends on the order of
//!   the input.
//!
//! An answer exists exactly when at least `replicas` domains have a candidate pool:
//! taking one per domain never rules out another domain, so the greedy choice above
//! is complete (the property tests check this against a brute-force search).
//!
//! # What it doesn't implement
//!
//! * The per-pool object limit: a pool at its limit is still a candidate (its create
//!   fails, and the caller removes what it made).
//! * Balancing by the number of replicas per node, or by used fraction rather than
//!   free bytes.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::error::ControlError;
use crate::validate::human;

/// Most replicas of one volume.
pub const MAX_REPLICAS: u32 = 5;

/// The `spread` that means "the node itself"; the default.
pub const SPREAD_NODE: &str = "node";

/// A node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique in the cluster: what [`Pool::node`] and [`Choice::node`] name.
    pub id: String,
    /// Unique in the cluster; what messages name.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// False when its lease expired.
    pub up: bool,
    /// Takes no new replicas.
    pub cordoned: bool,
}

/// A pool and the node it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Unique on its node (two nodes may each have a pool of the same name).
    pub name: String,
    /// [`Node::id`] of its node. A pool of a node that is not in the list is no
    /// candidate.
    pub node: String,
    pub free_bytes: u64,
    /// 0 is taken as 1 (any size).
    pub cluster_size: u64,
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub size: u64,
    pub thin: bool,
    pub replicas: u32,
    /// A label key, or [`SPREAD_NODE`]; empty means [`SPREAD_NODE`].
    pub spread: String,
}

/// Where one replica goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Choice {
    /// [`Node::id`].
    pub node: String,
    /// [`Pool::name`], on that node.
    pub pool: String,
    /// The value of the `spread` label on that node (its name for [`SPREAD_NODE`]).
    pub domain: String,
}

const UNKNOWN_SPREAD_HINT: &str = "spread over a label the nodes have, or over \"node\"";

/// Why there is no placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("replicas must be 1 to {MAX_REPLICAS}, not {0}")]
    Replicas(u32),
    /// No node of the cluster has this label at all.
    #[error("spread: no node has a label {key:?}; {UNKNOWN_SPREAD_HINT}")]
    UnknownSpread { key: String },
    /// Fewer failure domains with room than replicas.
    #[error("{}", not_enough(*.replicas, .spread, *.size, *.thin, .domains, .excluded))]
    NotEnough {
        replicas: u32,
        spread: String,
        size: u64,
        thin: bool,
        /// The domains that have a candidate pool, sorted.
        domains: Vec<String>,
        /// Nodes and pools left out for another reason than their free space:
        /// "c is down", "d has no label zone", …
        excluded: Vec<String>,
        /// How many domains have a node that may host a replica (up, not
        /// cordoned, labelled), whatever its pools' space.
        eligible: usize,
    },
}

impl PlacementError {
    /// For a refusal of placement (FailedPrecondition), what was missing, as the
    /// `reason` of the metric `ferrox_placement_failures_total`: `"domains"` (fewer
    /// failure domains with a node up, not cordoned, than replicas) or `"space"`
    /// (enough such domains, too few with a pool that fits). `None` for a bad request.
    pub fn failure_reason(&self) -> Option<&'static str> {
        match self {
            Self::NotEnough {
                replicas, eligible, ..
            } => Some(if *eligible < *replicas as usize {
                "domains"
            } else {
                "space"
            }),
            Self::Replicas(_) | Self::UnknownSpread { .. } => None,
        }
    }
}

impl From<PlacementError> for ControlError {
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::Replicas(n) => {
                ControlError::invalid("replicas", format!("must be 1 to {MAX_REPLICAS}, not {n}"))
            }
            PlacementError::UnknownSpread { key } => ControlError::invalid(
                "spread",
                format!("no node has a label {key:?}; {UNKNOWN_SPREAD_HINT}"),
            ),
            e @ PlacementError::NotEnough { .. } => ControlError::FailedPrecondition(e.to_string()),
        }
    }
}

/// "3 replicas over zone: only 2 zones have a pool with 10 GiB free (z1, z2); c is down"
fn not_enough(
    replicas: u32,
    spread: &str,
    size: u64,
    thin: bool,
    domains: &[String],
    excluded: &[String],
) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let noun = |n: usize| {
        if spread.contains('/') {
            format!("{spread} value{}", s(n))
        } else {
            format!("{spread}{}", s(n))
        }
    };
    let room = if thin {
        "free space".to_string()
    } else {
        format!("{} free", human(size))
    };
    let n = domains.len();
    let mut msg = format!("{replicas} replica{} over {spread}: ", s(replicas as usize));
    match n {
        0 => msg.push_str(&format!("no {} has a pool with {room}", noun(1))),
        1 => msg.push_str(&format!("only 1 {} has a pool with {room}", noun(1))),
        _ => msg.push_str(&format!("only {n} {} have a pool with {room}", noun(n))),
    }
    if n > 0 {
        msg.push_str(&format!(" ({})", domains.join(", ")));
    }
    if !excluded.is_empty() {
        msg.push_str("; ");
        msg.push_str(&excluded.join("; "));
    }
    msg
}

/// The order of preference among candidate pools: most free space first, then node
/// name, node id and pool name.
type Rank<'a> = (Reverse<u64>, &'a str, &'a str, &'a str);

fn rank<'a>(node: &'a Node, pool: &'a Pool) -> Rank<'a> {
    (
        Reverse(pool.free_bytes),
        node.name.as_str(),
        node.id.as_str(),
        pool.name.as_str(),
    )
}

/// Whether `pool` has room for the request: see the module's rules.
pub fn fits(req: &Request, pool: &Pool) -> bool {
    divides(req, pool)
        && if req.thin {
            pool.free_bytes > 0
        } else {
            pool.free_bytes >= req.size
        }
}

fn divides(req: &Request, pool: &Pool) -> bool {
    // Not `is_multiple_of`: newer than the workspace's rust-version (1.85).
    req.size.rem_euclid(pool.cluster_size.max(1)) == 0
}

/// The effective spread key: [`SPREAD_NODE`] when empty.
pub fn spread_key(req: &Request) -> &str {
    if req.spread.is_empty() {
        SPREAD_NODE
    } else {
        &req.spread
    }
}

/// The failure domain of `node` under `spread`, if it has one.
pub fn domain<'a>(node: &'a Node, spread: &str) -> Option<&'a str> {
    if spread == SPREAD_NODE {
        Some(&node.name)
    } else {
        node.labels.get(spread).map(String::as_str)
    }
}

/// Chooses a pool for each of `req.replicas` replicas, best first; see the module's
/// rules. Node ids are unique, and pool names unique per node, as the registry keeps
/// them.
pub fn place(nodes: &[Node], pools: &[Pool], req: &Request) -> Result<Vec<Choice>, PlacementError> {
    if !(1..=MAX_REPLICAS).contains(&req.replicas) {
        return Err(PlacementError::Replicas(req.replicas));
    }
    let spread = spread_key(req);
    if spread != SPREAD_NODE
        && !nodes.is_empty()
        && !nodes.iter().any(|n| n.labels.contains_key(spread))
    {
        return Err(PlacementError::UnknownSpread { key: spread.into() });
    }
    let by_id: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    // Nodes that may host a replica, with their domain; the others explained.
    let mut hosts: BTreeMap<&str, (&Node, &str)> = BTreeMap::new();
    let mut excluded: Vec<(&str, &str, String)> = Vec::new();
    for n in by_id.values() {
        let why = if !n.up {
            format!("{} is down", n.name)
        } else if n.cordoned {
            format!("{} is cordoned", n.name)
        } else if let Some(d) = domain(n, spread) {
            hosts.insert(&n.id, (n, d));
            continue;
        } else {
            format!("{} has no label {spread}", n.name)
        };
        excluded.push((&n.name, "", why));
    }
    // The best candidate pool of each domain.
    let mut best: BTreeMap<&str, (Rank, Choice)> = BTreeMap::new();
    for p in pools {
        let Some(&(n, d)) = hosts.get(p.node.as_str()) else {
            continue;
        };
        if !divides(req, p) {
            excluded.push((
                &n.name,
                &p.name,
                format!(
                    "pool {} on {}: {} is not a multiple of its {} clusters",
                    p.name,
                    n.name,
                    human(req.size),
                    human(p.cluster_size)
                ),
            ));
            continue;
        }
        if !fits(req, p) {
            continue;
        }
        let r = rank(n, p);
        if best.get(d).is_none_or(|(b, _)| r < *b) {
            let c = Choice {
                node: n.id.clone(),
                pool: p.name.clone(),
                domain: d.into(),
            };
            best.insert(d, (r, c));
        }
    }
    if best.len() < req.replicas as usize {
        excluded.sort();
        return Err(PlacementError::NotEnough {
            replicas: req.replicas,
            spread: spread.into(),
            size: req.size,
            thin: req.thin,
            domains: best.keys().map(|d| d.to_string()).collect(),
            excluded: excluded.into_iter().map(|(_, _, why)| why).collect(),
            eligible: hosts
                .values()
                .map(|(_, d)| *d)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        });
    }
    let mut ranked: Vec<(Rank, Choice)> = best.into_values().collect();
    ranked.sort_by(|a, b| (&a.0, &a.1.domain).cmp(&(&b.0, &b.1.domain)));
    Ok(ranked
        .into_iter()
        .take(req.replicas as usize)
        .map(|(_, c)| c)
        .collect())
}

#[cfg(test)]
mod tests;
