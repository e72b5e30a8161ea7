//! Start-up: bring the data plane back to what the state store records, finish or
//! forget changes a crash interrupted, and say what could not be restored.

use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore};

use super::pools::{close_base, open_base};
use super::{rpc_submit, Core, Job, PoolEntry};
use crate::error::ControlError;
use crate::state::{
    Phase, PoolBaseRec, PoolRec, PublishRec, Record, Revision, SnapshotRec, StoreError, VolumeRec,
};

/// Runs once, before the server answers anything but `NodeService`. Individual
/// objects that cannot be restored are logged and shown by the API; only a failing
/// state store fails start-up. Every fix is a compare-and-swap on the revision the
/// record was read at: a record another control-plane instance changed since is left
/// to that instance.
pub(crate) async fn run(core: &Arc<Core>) -> Result<(), ControlError> {
    for (rec, rev) in core.records().list_rev::<PoolRec>().await? {
        // In a cluster, other nodes' pools are theirs to restore.
        if rec.node == core.node_tag() {
            core.restore_pool(rec, rev).await?;
        }
    }
    let loaded: Vec<(String, Arc<LvolStore>)> = core
        .pools()
        .iter()
        .filter_map(|(n, p)| p.lvs.clone().map(|l| (n.clone(), l)))
        .collect();
    for (name, lvs) in loaded {
        core.restore_volumes(&name, &lvs).await?;
    }
    let mut publishes = core.records().list_rev::<PublishRec>().await?;
    // Publications that name an address and a port first: they open the listeners
    // that a filter naming only one of them may match.
    publishes.sort_by_key(|(p, _)| p.address.is_empty() || p.port == 0);
    for (rec, rev) in publishes {
        if core.membership.is_some() && !core.holds_volume(&rec.volume).await? {
            continue; // another node's
        }
        restore_publish(core, rec, rev).await?;
    }
    Ok(())
}

impl Core {
    /// Moves `rec`, read at `rev`, to phase `to` (`None`: forgets it), unless it
    /// changed since.
    async fn settle<R: Record>(
        &self,
        rec: &R,
        rev: Revision,
        to: Option<Phase>,
    ) -> Result<(), ControlError> {
        let r = self.records();
        let res = match to {
            None => r.delete_if::<R>(rec.id(), rev).await.map(drop),
            Some(p) => r.put_if(&rec.in_phase(p), rev).await.map(drop),
        };
        match res {
            Err(ControlError::Store(StoreError::Conflict { key, .. })) => {
                tracing::warn!(
                    key,
                    "changed since reconciliation read it; left to that change"
                );
                Ok(())
            }
            res => res,
        }
    }

    async fn restore_pool(
        self: &Arc<Self>,
        rec: PoolRec,
        rev: Revision,
    ) -> Result<(), ControlError> {
        let name = rec.name.clone();
        let r2 = rec.clone();
        let opened = self
            .blocking(move |core| {
                Ok(open_base(core, &r2.name, &r2.base, false)
                    .map(|(dev, bdev)| (LvolStore::load(dev, core.meta_reactor()), bdev)))
            })
            .await?;
        let entry = |lvs, bdev, error| PoolEntry {
            rec: PoolRec {
                phase: Phase::Ready,
                ..rec.clone()
            },
            lvs,
            bdev,
            error,
        };
        let close = |res| {
            let r2 = rec.clone();
            self.blocking(move |core| {
                drop(res);
                close_base(core, &r2);
                Ok(())
            })
        };
        match (rec.phase, opened) {
            (Phase::Deleting, res) => {
                tracing::warn!(pool = %name, "finishing a pool removal a restart interrupted");
                close(res).await?;
                self.settle(&rec, rev, None).await?;
            }
            (Phase::Creating, Ok((Ok(lvs), bdev))) => {
                tracing::warn!(pool = %name, "a pool creation was interrupted after formatting; keeping the pool");
                self.settle(&rec, rev, Some(Phase::Ready)).await?;
                self.pools().insert(name, entry(Some(lvs), bdev, None));
            }
            (Phase::Creating, res) => {
                tracing::warn!(pool = %name, "a pool creation was interrupted before it was formatted; forgetting it");
                close(res).await?;
                self.settle(&rec, rev, None).await?;
            }
            (Phase::Ready, Ok((Ok(lvs), bdev))) => {
                if lvs.name() != name {
                    let why = format!("its base now holds pool {:?}", lvs.name());
                    tracing::warn!(pool = %name, "{why}");
                    self.pools().insert(name, entry(None, bdev, Some(why)));
                } else {
                    tracing::info!(pool = %name, "pool re-imported");
                    self.pools().insert(name, entry(Some(lvs), bdev, None));
                }
            }
            (Phase::Ready, Ok((Err(e), bdev))) => {
                let why = format!("cannot load: {e}");
                tracing::warn!(pool = %name, "{why}");
                self.pools().insert(name, entry(None, bdev, Some(why)));
            }
            (Phase::Ready, Err(e)) => {
                let why = format!("cannot open its base: {e}");
                tracing::warn!(pool = %name, "{why}");
                let bdev = match &rec.base {
                    PoolBaseRec::Bdev(b) => b.clone(),
                    PoolBaseRec::Path { .. } => super::base_bdev_name(&name),
                };
                self.pools().insert(name, entry(None, bdev, Some(why)));
            }
        }
        Ok(())
    }

    async fn restore_volumes(
        self: &Arc<Self>,
        pool: &str,
        lvs: &Arc<LvolStore>,
    ) -> Result<(), ControlError> {
        let live: Vec<String> = rpc_submit(Job::lvol(
            format!("listing pool {pool:?}"),
            lvs.list_async(),
        ))
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
        let exists = |n: &str| live.iter().any(|v| v == n);
        let r = self.records();
        for (v, rev) in r.list_rev::<VolumeRec>().await? {
            // A volume of several replicas spans nodes: not this node's alone to
            // finish or roll back (the cluster's reconciliation is to come).
            if v.pool == pool && v.replicas.is_empty() {
                let e = exists(&v.name);
                self.restore_object(pool, lvs, e, v, rev, "volume").await?;
            }
        }
        for (s, rev) in r.list_rev::<SnapshotRec>().await? {
            if s.pool == pool {
                let e = exists(&s.name);
                self.restore_object(pool, lvs, e, s, rev, "snapshot")
                    .await?;
            }
        }
        // Anything in the pool the store does not know (an intent record lost with
        // the store, or a pool used elsewhere) is adopted, never deleted. In a
        // cluster such an lvol may be a replica a crash left behind: reported as an
        // orphan instead (`server/leader.rs`), not made a volume of its own.
        if self.membership.is_some() {
            return Ok(());
        }
        self.adopt_volumes(pool, lvs).await
    }

    /// Finishes or forgets the interrupted change of a volume or snapshot record.
    async fn restore_object<R: Record>(
        self: &Arc<Self>,
        pool: &str,
        lvs: &Arc<LvolStore>,
        exists: bool,
        rec: R,
        rev: Revision,
        kind: &'static str,
    ) -> Result<(), ControlError> {
        let name = rec.id().to_string();
        let name = name.as_str();
        match (rec.phase(), exists) {
            (Phase::Creating, true) => {
                tracing::warn!(
                    pool,
                    name,
                    kind,
                    "finishing a creation a restart interrupted"
                );
                self.settle(&rec, rev, Some(Phase::Ready)).await?;
            }
            (Phase::Creating, false) => {
                tracing::warn!(
                    pool,
                    name,
                    kind,
                    "a creation was interrupted before it happened; forgetting it"
                );
                self.settle(&rec, rev, None).await?;
            }
            (Phase::Deleting, true) => {
                tracing::warn!(
                    pool,
                    name,
                    kind,
                    "finishing a deletion a restart interrupted"
                );
                let during = format!("deleting {kind} {name:?}");
                match rpc_submit(Job::lvol(during, lvs.delete_async(name))).await {
                    Ok(())
                    | Err(ControlError::Lvol {
                        source: LvolError::NotFound(_),
                        ..
                    }) => {
                        self.settle(&rec, rev, None).await?;
                    }
                    Err(e) => {
                        tracing::warn!(pool, name, kind, error = %e, "cannot finish the deletion; keeping it");
                        self.settle(&rec, rev, Some(Phase::Ready)).await?;
                    }
                }
            }
            (Phase::Deleting, false) => {
                self.settle(&rec, rev, None).await?;
            }
            (Phase::Ready, true) => {}
            (Phase::Ready, false) => {
                tracing::warn!(
                    pool,
                    name,
                    kind,
                    "recorded but missing from its pool; the API shows it as \"missing\""
                );
            }
        }
        Ok(())
    }
}

async fn restore_publish(
    core: &Arc<Core>,
    rec: PublishRec,
    rev: Revision,
) -> Result<(), ControlError> {
    let volume = rec.volume.as_str();
    if rec.phase == Phase::Deleting {
        tracing::warn!(volume, nqn = %rec.nqn, "finishing an unpublish a restart interrupted");
        return core.settle(&rec, rev, None).await;
    }
    match core.export(&rec).await {
        Ok(()) => {
            if rec.phase != Phase::Ready {
                core.settle(&rec, rev, Some(Phase::Ready)).await?;
            }
            tracing::info!(volume, nqn = %rec.nqn, "volume re-published");
        }
        Err(e) if rec.phase == Phase::Creating => {
            tracing::warn!(volume, error = %e, "an interrupted publish cannot be completed; forgetting it");
            core.settle(&rec, rev, None).await?;
        }
        Err(e) => {
            tracing::warn!(volume, nqn = %rec.nqn, error = %e, "cannot re-publish; the record is kept");
        }
    }
    Ok(())
}
