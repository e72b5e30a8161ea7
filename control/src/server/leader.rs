//! The cluster's leader, its reconciliation, and every node's orphan report.
//!
//! # Election
//!
//! One node at a time leads: the one whose id is in `/ferrox/v1/leader/reconcile`.
//! A node creates that key only when it is absent, attached to its own lease (the
//! one that says it is up, TTL [`super::NODE_TTL`]). The others watch it; when it
//! goes (the leader stopped and revoked its lease, or was killed and etcd expired
//! the lease after its TTL), each tries to create it again and one wins: a new
//! leader within the TTL plus etcd's expiry check.
//!
//! # What the leader does, every [`PASS_EVERY`]
//!
//! A volume of several replicas whose record is in phase Creating or Deleting and
//! whose change is not in flight is finished or rolled back. A create or delete of
//! such a volume holds the volume's lock key (`lock/volume/<name>`) under its node's
//! session lease for as long as it runs; the leader takes the same lock without
//! waiting (a held lock is a change in flight: left alone), re-reads the record
//! under it, and writes every step with compare-and-swap on the revision it read:
//!
//! * Creating: every replica is made on its node (`CreateReplica`, idempotent: a
//!   replica that exists is kept) → Ready. A replica that cannot be made (its node
//!   down, its pool full) → Deleting: the volume is rolled back.
//! * Deleting: every replica is removed on its node → the record goes. A replica
//!   that cannot be removed (its node down) keeps the record in Deleting until a
//!   later pass can.
//!
//! # Orphans
//!
//! Every node of a cluster, once its start-up reconciliation is done and then every
//! [`ORPHAN_SCAN`], lists the lvols of each of its pools (under the pool's lock, so
//! no create or delete of a replica runs meanwhile) and compares them with the
//! cluster's records: an lvol that no volume, replica or snapshot record accounts
//! for is an orphan; a replica of a Ready volume that the records place in the pool
//! and the pool lacks is missing (a warning and `ferrox_missing_replicas`). Orphans are reported — a warning naming each once, the list in
//! `/ferrox/v1/orphans/<node id>` (`NodeService.Get`/`List`), the gauge
//! `ferrox_orphan_lvols` — and never deleted: what to do with the data is the
//! operator's call.
//!
//! # Fault injection (tests)
//!
//! `FERROX_TEST_STOP_CREATE_AFTER=N` in a daemon's environment makes every create
//! of a replicated volume through it stop for good once N of its replicas are made,
//! holding its lock, as if its node had died there; a test then kills the daemon
//! with `kill -9`. Not for production use.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{lock, rpc_submit, Core, Job};
use crate::error::ControlError;
use crate::state::{
    self, EventKind, Phase, Record, Revision, SnapshotRec, StoreError, Txn, VolumeRec,
};

/// How often the leader looks for interrupted changes.
pub(crate) const PASS_EVERY: Duration = Duration::from_secs(2);
/// How often a node compares its pools with the records.
pub(crate) const ORPHAN_SCAN: Duration = Duration::from_secs(10);
/// The test hook: see the module's doc.
pub(crate) const STOP_CREATE_AFTER: &str = "FERROX_TEST_STOP_CREATE_AFTER";

fn leader_key() -> String {
    state::key("leader", "reconcile")
}

/// What the metrics endpoint shows of the cluster, refreshed with the node's
/// membership (every third of its lease's TTL).
#[derive(Debug, Default, Clone)]
pub(crate) struct ClusterView {
    /// (name, up, leader) of every node in the registry.
    pub nodes: Vec<(String, bool, bool)>,
    /// Orphan lvols per pool of this node (pools without any included, as 0).
    pub orphans: BTreeMap<String, u64>,
    /// Replicas of Ready volumes the records place in each pool of this node that
    /// the pool does not hold.
    pub missing: BTreeMap<String, u64>,
    /// Placement refusals (FailedPrecondition) by reason.
    pub placement_failures: BTreeMap<&'static str, u64>,
}

impl Core {
    /// The id of the node that leads, if any.
    pub(crate) async fn leader_id(&self) -> Result<Option<String>, ControlError> {
        Ok(self
            .store
            .get(&leader_key())
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Runs for election, and leads when elected, until the core is dropped; runs on
    /// the control runtime.
    pub(crate) async fn campaign(self: Arc<Self>) {
        let core = Arc::downgrade(&self);
        drop(self);
        let mut leading = false;
        let mut unreachable = false;
        loop {
            let Some(c) = core.upgrade() else { return };
            let Some(m) = &c.membership else { return };
            let ttl = m.opts.lease_ttl;
            if !c.ready.load(std::sync::atomic::Ordering::Acquire) {
                drop(c);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let lease = *m.lease.lock().await;
            let me = c.node_tag();
            let key = leader_key();
            let claim = Txn::new().when(key.clone(), 0).put_leased(
                key.clone(),
                me.clone().into_bytes(),
                lease,
            );
            match c.store.txn(claim).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => unreachable = false,
                Err(StoreError::LeaseNotFound(_)) => {
                    // keep_membership grants another; try again then.
                    drop(c);
                    tokio::time::sleep(ttl / 3).await;
                    continue;
                }
                Err(e) => {
                    // Once per outage (etcd unreachable), not every second.
                    if !unreachable {
                        tracing::warn!(error = %e, "cannot run for leader; retrying every second");
                        unreachable = true;
                    }
                    drop(c);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let held = match c.store.get(&key).await {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the leader key");
                    drop(c);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(kv) = held else { continue };
            if kv.value == me.as_bytes() && kv.lease == Some(lease) {
                if !leading {
                    tracing::info!(node = %c.ctx.node_name, "this node leads the cluster's reconciliation");
                    leading = true;
                }
                if let Err(e) = c.reconcile_pass().await {
                    tracing::warn!(error = %e, "a reconciliation pass failed; the next one retries");
                }
                drop(c);
                tokio::time::sleep(PASS_EVERY).await;
                continue;
            }
            if leading {
                tracing::warn!("this node no longer leads the cluster's reconciliation");
                leading = false;
            }
            // Follow: wait for the key to go, re-checking at least once per TTL.
            let watch = c.store.watch(&key, kv.mod_revision + 1).await;
            drop(c);
            let Ok(mut w) = watch else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let _ = tokio::time::timeout(ttl, async {
                loop {
                    match w.recv().await {
                        Ok(Some(e)) if e.kind == EventKind::Delete => return,
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            // The watch ended (etcd restarting?): re-check, not at
                            // once.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return;
                        }
                    }
                }
            })
            .await;
        }
    }

    /// One pass of the leader: every replicated volume whose change was interrupted.
    pub(crate) async fn reconcile_pass(self: &Arc<Self>) -> Result<(), ControlError> {
        let stale: Vec<String> = self
            .records()
            .list::<VolumeRec>()
            .await?
            .into_iter()
            .filter(|v| !v.replicas.is_empty() && v.phase != Phase::Ready)
            .map(|v| v.name)
            .collect();
        for name in stale {
            let what = format!("reconciling volume {name:?}");
            let Some(_g) = self.try_lock(&[&lock::volume(&name)], &what).await? else {
                continue; // its change is in flight
            };
            let Some((rec, rev)) = self.records().get_rev::<VolumeRec>(&name).await? else {
                continue;
            };
            match rec.phase {
                _ if rec.replicas.is_empty() => {}
                Phase::Ready => {}
                Phase::Creating => self.finish_create(rec, rev).await?,
                Phase::Deleting => self.finish_delete(rec, rev).await?,
            }
        }
        Ok(())
    }

    /// An interrupted create: finished if every replica can be made, else rolled
    /// back.
    async fn finish_create(
        self: &Arc<Self>,
        rec: VolumeRec,
        rev: Revision,
    ) -> Result<(), ControlError> {
        let up = self.up_nodes().await?;
        let mut why = None;
        for r in &rec.replicas {
            if !up.contains(&r.node) {
                let name = self
                    .node_rec(&r.node)
                    .await
                    .map_or(r.node.clone(), |n| n.name);
                why = Some(format!("node {name} is down"));
                break;
            }
            if let Err(e) = self.replica_on(r, &rec, true).await {
                why = Some(e.to_string());
                break;
            }
        }
        let Some(why) = why else {
            let ready = rec.in_phase(Phase::Ready);
            if self.cas(&ready, rev).await?.is_some() {
                tracing::warn!(volume = %rec.name, replicas = rec.replicas.len(),
                    "finished a create a crash interrupted: every replica is made");
            }
            return Ok(());
        };
        tracing::warn!(volume = %rec.name, reason = %why,
            "rolling back a create a crash interrupted: not every replica can be made");
        let deleting = rec.in_phase(Phase::Deleting);
        match self.cas(&deleting, rev).await? {
            Some(rev) => self.finish_delete(deleting, rev).await,
            None => Ok(()),
        }
    }

    /// An interrupted delete (or a roll back): every replica removed, then the record.
    async fn finish_delete(
        self: &Arc<Self>,
        rec: VolumeRec,
        rev: Revision,
    ) -> Result<(), ControlError> {
        for r in &rec.replicas {
            if let Err(e) = self.replica_on(r, &rec, false).await {
                tracing::warn!(volume = %rec.name, pool = %r.pool, error = %e,
                    "cannot remove a replica yet; the volume stays in phase deleting until a later pass can");
                return Ok(());
            }
        }
        match self.records().delete_if::<VolumeRec>(&rec.name, rev).await {
            Ok(_) => {
                tracing::warn!(volume = %rec.name, "removed a volume whose create or delete a crash interrupted");
                Ok(())
            }
            Err(ControlError::Store(StoreError::Conflict { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `rec` if it is still at `rev`: its new revision, or `None` when another
    /// change got there first (left to it).
    async fn cas(&self, rec: &VolumeRec, rev: Revision) -> Result<Option<Revision>, ControlError> {
        match self.records().put_if(rec, rev).await {
            Ok(r) => Ok(Some(r)),
            Err(ControlError::Store(StoreError::Conflict { key, .. })) => {
                tracing::warn!(key, "changed since the leader read it; left to that change");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Compares this node's pools with the records every [`ORPHAN_SCAN`] until the
    /// core is dropped (a cluster only); runs on the control runtime.
    pub(crate) async fn watch_orphans(self: Arc<Self>) {
        let core = Arc::downgrade(&self);
        drop(self);
        let mut reported: Option<Vec<String>> = None;
        loop {
            let Some(c) = core.upgrade() else { return };
            if c.membership.is_none() {
                return;
            }
            if !c.ready.load(std::sync::atomic::Ordering::Acquire) {
                drop(c);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            match c.scan_orphans().await {
                Ok(found) => {
                    if reported.as_ref() != Some(&found) {
                        match c.publish_orphans(&found).await {
                            Ok(()) => reported = Some(found),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot record this node's orphan lvols")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot compare this node's pools with the records")
                }
            }
            drop(c);
            tokio::time::sleep(ORPHAN_SCAN).await;
        }
    }

    /// This node's orphan lvols, "pool/lvol", sorted; see the module's doc.
    pub(crate) async fn scan_orphans(self: &Arc<Self>) -> Result<Vec<String>, ControlError> {
        let me = self.node_tag();
        let pools: Vec<_> = self
            .pools()
            .iter()
            .filter_map(|(n, p)| p.lvs.clone().map(|l| (n.clone(), l)))
            .collect();
        let mut found = Vec::new();
        let mut per_pool = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for (pool, lvs) in pools {
            let _g = self
                .lock(
                    &[&lock::pool(&pool)],
                    &format!("looking for orphan lvols in pool {pool:?}"),
                )
                .await?;
            let live = rpc_submit(Job::lvol(
                format!("listing pool {pool:?}"),
                lvs.list_async(),
            ))
            .await?;
            let mut known: BTreeSet<String> = BTreeSet::new();
            let mut placed_here = Vec::new();
            for v in self.records().list::<VolumeRec>().await? {
                let replica = v.replicas.iter().any(|r| r.pool == pool && r.node == me);
                if replica && v.phase == Phase::Ready {
                    placed_here.push(v.name.clone());
                }
                if replica || (v.replicas.is_empty() && v.pool == pool) {
                    known.insert(v.name);
                }
            }
            for s in self.records().list::<SnapshotRec>().await? {
                if s.pool == pool {
                    known.insert(s.name);
                }
            }
            // The other way round: a replica the records place here, gone.
            let mut lost = 0;
            for v in &placed_here {
                if !live.iter().any(|l| &l.name == v) {
                    lost += 1;
                    tracing::warn!(pool = %pool, volume = %v, "a replica the records place in this pool is missing from it");
                }
            }
            let mut n = 0;
            for v in live {
                if !known.contains(&v.name) {
                    n += 1;
                    found.push(format!("{pool}/{}", v.name));
                }
            }
            missing.insert(pool.clone(), lost);
            per_pool.insert(pool, n);
        }
        found.sort();
        if let Some(m) = &self.membership {
            let mut v = m.view();
            v.orphans = per_pool;
            v.missing = missing;
        }
        Ok(found)
    }

    /// Records `found` in `/ferrox/v1/orphans/<id>` (removes the key when empty), and
    /// names each in the log.
    async fn publish_orphans(&self, found: &[String]) -> Result<(), ControlError> {
        let key = super::nodes::orphans_key(&self.node_tag());
        for o in found {
            tracing::warn!(lvol = %o, "an lvol in this node's pool that no record accounts for (an orphan): reported, not deleted");
        }
        if found.is_empty() {
            self.store.delete(&key).await?;
        } else {
            let v = serde_json::to_vec(found).map_err(|e| ControlError::Internal(e.to_string()))?;
            self.store.put(&key, v).await?;
        }
        Ok(())
    }

    /// Refreshes the metrics' view of the registry.
    pub(crate) async fn refresh_view(self: &Arc<Self>) {
        let Some(m) = &self.membership else { return };
        match self.node_list().await {
            Ok(nodes) => {
                m.view().nodes = nodes
                    .into_iter()
                    .map(|n| (n.name, n.state == "up", n.leader))
                    .collect();
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the registry for metrics"),
        }
    }

    /// Counts a placement refusal under `reason`.
    pub(crate) fn count_placement_failure(&self, reason: &'static str) {
        if let Some(m) = &self.membership {
            *m.view().placement_failures.entry(reason).or_default() += 1;
        }
    }

    /// The cluster as the metrics endpoint shows it (`None` on one node).
    pub(crate) fn cluster_view(&self) -> Option<ClusterView> {
        self.membership.as_ref().map(|m| m.view().clone())
    }
}

/// Stops a create for good after `made` replicas when the test hook asks for it.
pub(crate) async fn test_stop_point(made: usize) {
    let Some(n) = std::env::var_os(STOP_CREATE_AFTER) else {
        return;
    };
    if n.to_str().and_then(|s| s.parse::<usize>().ok()) == Some(made) {
        tracing::warn!(made, "{STOP_CREATE_AFTER}: this create stops here for good");
        std::future::pending::<()>().await;
    }
}
