//! The node registry of a cluster (`--cluster`).
//!
//! Keys:
//! * `/ferrox/v1/node/<id>`: the node's record ([`NodeRec`], JSON: name, labels,
//!   NVMe/TCP listeners, control addresses, pools with capacity and free space),
//!   kept after the node stops so that others list it as down;
//! * `/ferrox/v1/alive/<id>`: attached to the node's lease (TTL [`NODE_TTL`],
//!   renewed every third of it): the node is up while it exists. A node killed
//!   with `kill -9` is down for every other node once etcd ends its lease (within
//!   the TTL plus etcd's expiry check, ~0.5 s); a node that stops cleanly revokes
//!   it at once;
//! * `/ferrox/v1/nodename/<name>`: the id that holds the name. A node whose name
//!   another id holds refuses to start, naming that node; a node that is renamed
//!   (`--node-name`) gives its old name back.
//! * `/ferrox/v1/orphans/<id>`: the lvols in the node's pools that no record
//!   accounts for (`server/leader.rs`), absent when there are none.
//!
//! A node's record is written by the node itself (its addresses and pools, with
//! compare-and-swap on the revision it read) and by whoever cordons it
//! ([`NodeRec::cordoned`]), so neither write loses the other's field; the cordon
//! survives the node's restart (registration keeps it) and its lease renewals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Core;
use crate::api;
use crate::error::ControlError;
use crate::state::{self, LeaseId, StateStore, StoreError, Txn};

/// The default TTL of a node's lease.
pub const NODE_TTL: Duration = Duration::from_secs(5);

/// What a node registers (`/ferrox/v1/node/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRec {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<String>,
    pub control: Vec<String>,
    #[serde(default)]
    pub pools: Vec<NodePoolRec>,
    /// Takes no new replicas (`ferroxctl node cordon`); set by any node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePoolRec {
    pub name: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// From `--labels`, checked ([`crate::validate::labels`]).
    pub labels: BTreeMap<String, String>,
    /// The TTL of the node's lease ([`NODE_TTL`] by default).
    pub lease_ttl: Duration,
}

impl ClusterOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            labels: BTreeMap::new(),
            lease_ttl: NODE_TTL,
        }
    }
}

/// A node's membership: what it registered and the lease that says it is up.
pub(crate) struct Membership {
    pub opts: ClusterOptions,
    /// The record as last written.
    pub rec: tokio::sync::Mutex<NodeRec>,
    pub lease: tokio::sync::Mutex<LeaseId>,
    /// What the metrics endpoint shows of the cluster.
    pub view: std::sync::Mutex<super::leader::ClusterView>,
}

impl Membership {
    pub fn view(&self) -> std::sync::MutexGuard<'_, super::leader::ClusterView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn node_key(id: &str) -> String {
    state::key("node", id)
}
fn alive_key(id: &str) -> String {
    state::key("alive", id)
}
fn name_key(name: &str) -> String {
    state::key("nodename", name)
}
pub(crate) fn orphans_key(id: &str) -> String {
    state::key("orphans", id)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("a node record serialises")
}

/// Registers `rec` in `store`: claims its name (refusing one another node holds),
/// writes its record and its lease-backed `alive` key. Answers the lease.
pub(crate) async fn register(
    store: &dyn StateStore,
    rec: &NodeRec,
    ttl: Duration,
) -> Result<LeaseId, ControlError> {
    for _ in 0..super::lock::MAX_RACES {
        let nk = name_key(&rec.name);
        let held = store.get(&nk).await?;
        let mut txn = Txn::new();
        match &held {
            Some(kv) if kv.value != rec.id.as_bytes() => {
                let other = String::from_utf8_lossy(&kv.value).into_owned();
                let up = store.get(&alive_key(&other)).await?.is_some();
                let mut what = format!("node {other} ({})", if up { "up" } else { "down" });
                if let Some(o) = store.get(&node_key(&other)).await? {
                    if let Ok(o) = serde_json::from_slice::<NodeRec>(&o.value) {
                        what.push_str(&format!(", NVMe/TCP on {}", o.listeners.join(", ")));
                    }
                }
                return Err(ControlError::AlreadyExists {
                    kind: "node name",
                    name: rec.name.clone(),
                    difference: format!("it belongs to {what}, and this node's id is {}", rec.id),
                });
            }
            Some(kv) => txn = txn.when(nk.clone(), kv.mod_revision),
            None => {
                txn = txn
                    .when(nk.clone(), 0)
                    .put(nk.clone(), rec.id.clone().into_bytes())
            }
        }
        // A renamed node gives its old name back (if it still holds it); a cordon
        // outlives the restart.
        let mut rec = rec.clone();
        let old = store.get(&node_key(&rec.id)).await?;
        txn = txn.when(
            node_key(&rec.id),
            old.as_ref().map_or(0, |o| o.mod_revision),
        );
        if let Some(old) = old {
            if let Ok(o) = serde_json::from_slice::<NodeRec>(&old.value) {
                rec.cordoned = o.cordoned;
                // Its pools as last known, until the first refresh after start-up
                // (which restores the same pools) says otherwise.
                if rec.pools.is_empty() {
                    rec.pools = o.pools;
                }
                if o.name != rec.name {
                    if let Some(kv) = store.get(&name_key(&o.name)).await? {
                        if kv.value == rec.id.as_bytes() {
                            txn = txn
                                .when(name_key(&o.name), kv.mod_revision)
                                .delete(name_key(&o.name));
                        }
                    }
                }
            }
        }
        txn = txn.put(node_key(&rec.id), json(&rec));
        match store.txn(txn).await {
            Ok(_) => {
                let lease = store.lease_grant(ttl).await?;
                store
                    .txn(Txn::new().put_leased(
                        alive_key(&rec.id),
                        rec.name.clone().into_bytes(),
                        lease,
                    ))
                    .await?;
                return Ok(lease);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(super::lock::raced("node name", &rec.name))
}

impl Core {
    /// Keeps this node's lease alive, and its record current (pools, addresses),
    /// until the core is dropped; runs on the control runtime.
    pub(crate) async fn keep_membership(self: Arc<Self>) {
        let core = Arc::downgrade(&self);
        let every = match &self.membership {
            Some(m) => m.opts.lease_ttl / 3,
            None => return,
        };
        drop(self);
        loop {
            tokio::time::sleep(every).await;
            let Some(c) = core.upgrade() else { return };
            let Some(m) = &c.membership else { return };
            let lease = *m.lease.lock().await;
            let rec = m.rec.lock().await;
            match c.store.lease_keep_alive(lease).await {
                Ok(_) => {}
                Err(StoreError::LeaseNotFound(_)) => {
                    // Lapsed (etcd unreachable for longer than the TTL): up again.
                    tracing::warn!("this node's lease lapsed; registering again");
                    match c.store.lease_grant(m.opts.lease_ttl).await {
                        Ok(l) => {
                            let put = Txn::new().put_leased(
                                alive_key(&rec.id),
                                rec.name.clone().into_bytes(),
                                l,
                            );
                            if let Err(e) = c.store.txn(put).await {
                                tracing::warn!(error = %e, "cannot mark this node up");
                            }
                            *m.lease.lock().await = l;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot renew this node's lease"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this node's lease");
                    continue;
                }
            }
            drop(rec);
            c.refresh_record().await;
            c.refresh_view().await;
        }
    }

    /// Writes this node's record again when what it says (listeners, control
    /// addresses, pools) changed: every lease period, and at once when the node
    /// becomes ready or opens its control TCP listener, so that a node other nodes
    /// see up can be reached the moment it says it is ready.
    pub(crate) async fn refresh_record(self: &Arc<Self>) {
        let Some(m) = &self.membership else { return };
        let mut rec = m.rec.lock().await;
        let mut now = rec.clone();
        now.listeners = self
            .ctx
            .target
            .listeners()
            .iter()
            .map(ToString::to_string)
            .collect();
        now.control = self.control_addrs();
        if self.ready.load(std::sync::atomic::Ordering::Acquire) {
            if let Ok(pools) = self.pool_list().await {
                now.pools = pools.iter().map(pool_rec).collect();
            }
        }
        let stale = (&now.listeners, &now.control, &now.pools)
            != (&rec.listeners, &rec.control, &rec.pools);
        if stale {
            let res = update_node(&*self.store, &now.id, |r| {
                r.listeners.clone_from(&now.listeners);
                r.control.clone_from(&now.control);
                r.pools.clone_from(&now.pools);
            })
            .await;
            match res {
                Ok(r) => *rec = r,
                Err(e) => tracing::warn!(error = %e, "cannot update this node's record"),
            }
        }
    }

    /// What this node writes in [`crate::state::PoolRec::node`]: its id in a
    /// cluster, empty on its own.
    pub(crate) fn node_tag(&self) -> String {
        match self.membership {
            Some(_) => super::pools::hex(&self.ctx.node_id),
            None => String::new(),
        }
    }

    /// Whether volume (or clone) `name` is on a pool this node holds.
    pub(crate) async fn holds_volume(&self, name: &str) -> Result<bool, ControlError> {
        let Some(v) = self.records().get::<state::VolumeRec>(name).await? else {
            return Ok(false);
        };
        Ok(self.pools().contains_key(&v.pool))
    }

    /// Where this node's control API is.
    pub(crate) fn control_addrs(&self) -> Vec<String> {
        self.control_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every node (a cluster), or this one.
    pub(crate) async fn node_list(self: &Arc<Self>) -> Result<Vec<api::ClusterNode>, ControlError> {
        if self.membership.is_none() {
            let pools = if self.ready.load(std::sync::atomic::Ordering::Acquire) {
                self.pool_list().await?.iter().map(pool_rec).collect()
            } else {
                Vec::new()
            };
            let me = NodeRec {
                id: super::pools::hex(&self.ctx.node_id),
                name: self.ctx.node_name.clone(),
                labels: BTreeMap::new(),
                listeners: self
                    .ctx
                    .target
                    .listeners()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                control: self.control_addrs(),
                pools,
                cordoned: false,
            };
            return Ok(vec![to_api(me, true)]);
        }
        let (recs, _) = self.store.range(&state::kind_prefix("node")).await?;
        let up = self.up_nodes().await?;
        let leader = self.leader_id().await?;
        let (orphans, _) = self.store.range(&state::kind_prefix("orphans")).await?;
        let mut out = Vec::new();
        for kv in recs {
            let r = decode(&kv)?;
            let is_up = up.contains(&r.id);
            let is_leader = leader.as_deref() == Some(r.id.as_str());
            let found = orphans
                .iter()
                .find(|o| o.key == orphans_key(&r.id))
                .and_then(|o| serde_json::from_slice::<Vec<String>>(&o.value).ok())
                .unwrap_or_default();
            let mut n = to_api(r, is_up);
            n.leader = is_leader;
            n.orphans = found;
            out.push(n);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The ids of the nodes that are up (their `alive` key exists).
    pub(crate) async fn up_nodes(
        &self,
    ) -> Result<std::collections::BTreeSet<String>, ControlError> {
        let (alive, _) = self.store.range(&state::kind_prefix("alive")).await?;
        Ok(alive
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
            .collect())
    }

    /// `NodeService.Get`: node `name` (its name or its id).
    pub(crate) async fn node_get(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<api::ClusterNode, ControlError> {
        if name.is_empty() {
            return Err(ControlError::invalid("name", "must not be empty"));
        }
        self.node_list()
            .await?
            .into_iter()
            .find(|n| n.name == name || n.id == name)
            .ok_or_else(|| ControlError::not_found("node", name))
    }

    /// `NodeService.Cordon` (`on`) and `Uncordon`: idempotent.
    pub(crate) async fn node_cordon(
        self: &Arc<Self>,
        name: &str,
        on: bool,
    ) -> Result<api::ClusterNode, ControlError> {
        if self.membership.is_none() {
            return Err(ControlError::FailedPrecondition(
                "cordoning needs a cluster: this daemon runs without --cluster".into(),
            ));
        }
        let id = self.node_get(name).await?.id;
        let r = update_node(&*self.store, &id, |r| r.cordoned = on).await?;
        tracing::info!(node = %r.name, cordoned = on, "node cordon changed");
        self.node_get(&id).await
    }

    /// Marks this node down now (a clean stop): revokes its lease.
    pub(crate) async fn leave(&self) {
        if let Some(m) = &self.membership {
            let lease = *m.lease.lock().await;
            if let Err(e) = self.store.lease_revoke(lease).await {
                tracing::warn!(error = %e, "cannot revoke this node's lease; it will expire");
            }
        }
    }
}

fn decode(kv: &state::KeyValue) -> Result<NodeRec, ControlError> {
    serde_json::from_slice(&kv.value).map_err(|source| ControlError::Record {
        key: kv.key.clone(),
        source,
    })
}

/// Changes node `id`'s record with `f`, by compare-and-swap on the revision read
/// (re-read and redone when another writer got there first); answers what was
/// written. A node without a record is `NotFound`.
pub(crate) async fn update_node(
    store: &dyn StateStore,
    id: &str,
    f: impl Fn(&mut NodeRec),
) -> Result<NodeRec, ControlError> {
    let key = node_key(id);
    for _ in 0..super::lock::MAX_RACES {
        let kv = store
            .get(&key)
            .await?
            .ok_or_else(|| ControlError::not_found("node", id))?;
        let mut r = decode(&kv)?;
        f(&mut r);
        match store.put_if(&key, json(&r), kv.mod_revision).await {
            Ok(_) => return Ok(r),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(super::lock::raced("node", id))
}

fn pool_rec(p: &api::Pool) -> NodePoolRec {
    NodePoolRec {
        name: p.name.clone(),
        capacity_bytes: p.capacity_bytes,
        free_bytes: p.free_bytes,
    }
}

fn to_api(r: NodeRec, up: bool) -> api::ClusterNode {
    api::ClusterNode {
        id: r.id,
        name: r.name,
        labels: r.labels,
        state: if up { "up" } else { "down" }.into(),
        listeners: r.listeners,
        control: r.control,
        pools: r
            .pools
            .into_iter()
            .map(|p| api::NodePool {
                name: p.name,
                capacity_bytes: p.capacity_bytes,
                free_bytes: p.free_bytes,
            })
            .collect(),
        cordoned: r.cordoned,
        leader: false,
        orphans: Vec::new(),
    }
}
