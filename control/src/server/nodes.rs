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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRec {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<String>,
    pub control: Vec<String>,
    #[serde(default)]
    pub pools: Vec<NodePoolRec>,
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
        // A renamed node gives its old name back (if it still holds it).
        if let Some(old) = store.get(&node_key(&rec.id)).await? {
            if let Ok(o) = serde_json::from_slice::<NodeRec>(&old.value) {
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
        txn = txn.put(node_key(&rec.id), json(rec));
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
        if now != *rec {
            match self.store.put(&node_key(&now.id), json(&now)).await {
                Ok(_) => *rec = now,
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
            };
            return Ok(vec![to_api(me, true)]);
        }
        let (recs, _) = self.store.range(&state::kind_prefix("node")).await?;
        let (alive, _) = self.store.range(&state::kind_prefix("alive")).await?;
        let up: std::collections::BTreeSet<String> = alive
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
            .collect();
        let mut out = Vec::new();
        for kv in recs {
            let r: NodeRec =
                serde_json::from_slice(&kv.value).map_err(|source| ControlError::Record {
                    key: kv.key.clone(),
                    source,
                })?;
            let is_up = up.contains(&r.id);
            out.push(to_api(r, is_up));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
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
    }
}
