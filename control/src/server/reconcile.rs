//! Start-up: bring the data plane back to what the state store records, finish or
//! forget changes a crash interrupted, and say what could not be restored.

use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore};

use super::pools::{close_base, open_base};
use super::{rpc_submit, Core, Job, PoolEntry};
use crate::error::ControlError;
use crate::state::{Phase, PoolBaseRec, PoolRec, PublishRec, Record, SnapshotRec, VolumeRec};

/// Runs once, before the server answers anything but `NodeService`. Individual
/// objects that cannot be restored are logged and shown by the API; only a failing
/// state store fails start-up.
pub(crate) async fn run(core: &Arc<Core>) -> Result<(), ControlError> {
    let c = core.clone();
    rpc_submit(Job::blocking(move || {
        for rec in c.records().list::<PoolRec>()? {
            c.restore_pool(rec)?;
        }
        let loaded: Vec<(String, Arc<LvolStore>)> = c
            .pools()
            .iter()
            .filter_map(|(n, p)| p.lvs.clone().map(|l| (n.clone(), l)))
            .collect();
        for (name, lvs) in loaded {
            c.restore_volumes(&name, &lvs)?;
        }
        Ok(())
    }))
    .await?;
    let mut publishes = {
        let c = core.clone();
        rpc_submit(Job::blocking(move || c.records().list::<PublishRec>())).await?
    };
    // Publications that name an address and a port first: they open the listeners
    // that a filter naming only one of them may match.
    publishes.sort_by_key(|p| p.address.is_empty() || p.port == 0);
    for rec in publishes {
        restore_publish(core, rec).await?;
    }
    Ok(())
}

impl Core {
    fn restore_pool(&self, rec: PoolRec) -> Result<(), ControlError> {
        let r = self.records();
        let name = rec.name.clone();
        let opened = open_base(self, &name, &rec.base, false)
            .map(|(dev, bdev)| (LvolStore::load(dev, self.meta_reactor()), bdev));
        let entry = |lvs, bdev, error| PoolEntry {
            rec: PoolRec {
                phase: Phase::Ready,
                ..rec.clone()
            },
            lvs,
            bdev,
            error,
        };
        match (rec.phase, opened) {
            (Phase::Deleting, res) => {
                tracing::warn!(pool = %name, "finishing a pool removal a restart interrupted");
                drop(res);
                close_base(self, &rec);
                r.delete::<PoolRec>(&name)?;
            }
            (Phase::Creating, Ok((Ok(lvs), bdev))) => {
                tracing::warn!(pool = %name, "a pool creation was interrupted after formatting; keeping the pool");
                r.put(&PoolRec {
                    phase: Phase::Ready,
                    ..rec.clone()
                })?;
                self.pools().insert(name, entry(Some(lvs), bdev, None));
            }
            (Phase::Creating, res) => {
                tracing::warn!(pool = %name, "a pool creation was interrupted before it was formatted; forgetting it");
                drop(res);
                close_base(self, &rec);
                r.delete::<PoolRec>(&name)?;
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

    fn restore_volumes(&self, pool: &str, lvs: &LvolStore) -> Result<(), ControlError> {
        let r = self.records();
        let live = lvs
            .list()
            .map_err(|e| ControlError::lvol(format!("listing pool {pool:?}"), e))?;
        let exists = |n: &str| live.iter().any(|v| v.name == n);
        // (name, phase, is snapshot)
        let mut recs: Vec<(String, Phase, bool)> = Vec::new();
        for v in r
            .list::<VolumeRec>()?
            .into_iter()
            .filter(|v| v.pool == pool)
        {
            recs.push((v.name, v.phase, false));
        }
        for s in r
            .list::<SnapshotRec>()?
            .into_iter()
            .filter(|s| s.pool == pool)
        {
            recs.push((s.name, s.phase, true));
        }
        for (name, phase, snap) in recs {
            let kind = if snap { "snapshot" } else { "volume" };
            let forget = |r: &crate::state::Records<'_>| -> Result<bool, ControlError> {
                if snap {
                    r.delete::<SnapshotRec>(&name)
                } else {
                    r.delete::<VolumeRec>(&name)
                }
            };
            let mark_ready = |r: &crate::state::Records<'_>| -> Result<(), ControlError> {
                if snap {
                    if let Some(s) = r.get::<SnapshotRec>(&name)? {
                        r.put(&s.in_phase(Phase::Ready))?;
                    }
                } else if let Some(v) = r.get::<VolumeRec>(&name)? {
                    r.put(&v.in_phase(Phase::Ready))?;
                }
                Ok(())
            };
            match (phase, exists(&name)) {
                (Phase::Creating, true) => {
                    tracing::warn!(
                        pool,
                        name,
                        kind,
                        "finishing a creation a restart interrupted"
                    );
                    mark_ready(&r)?;
                }
                (Phase::Creating, false) => {
                    tracing::warn!(
                        pool,
                        name,
                        kind,
                        "a creation was interrupted before it happened; forgetting it"
                    );
                    forget(&r)?;
                }
                (Phase::Deleting, true) => {
                    tracing::warn!(
                        pool,
                        name,
                        kind,
                        "finishing a deletion a restart interrupted"
                    );
                    match lvs.delete(&name) {
                        Ok(()) | Err(LvolError::NotFound(_)) => {
                            forget(&r)?;
                        }
                        Err(e) => {
                            tracing::warn!(pool, name, kind, error = %e, "cannot finish the deletion; keeping it");
                            mark_ready(&r)?;
                        }
                    }
                }
                (Phase::Deleting, false) => {
                    forget(&r)?;
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
        }
        // Anything in the pool the store does not know (an intent record lost with
        // the store, or a pool used elsewhere) is adopted, never deleted.
        self.adopt_volumes(pool, lvs)
    }
}

async fn restore_publish(core: &Arc<Core>, rec: PublishRec) -> Result<(), ControlError> {
    let volume = rec.volume.clone();
    let forget = |core: &Arc<Core>| {
        let c = core.clone();
        let v = volume.clone();
        rpc_submit(Job::blocking(move || c.records().delete::<PublishRec>(&v)))
    };
    if rec.phase == Phase::Deleting {
        tracing::warn!(volume, nqn = %rec.nqn, "finishing an unpublish a restart interrupted");
        forget(core).await?;
        return Ok(());
    }
    match core.export(&rec).await {
        Ok(()) => {
            if rec.phase != Phase::Ready {
                let c = core.clone();
                let r = PublishRec {
                    phase: Phase::Ready,
                    ..rec.clone()
                };
                rpc_submit(Job::blocking(move || c.records().put(&r))).await?;
            }
            tracing::info!(volume, nqn = %rec.nqn, "volume re-published");
        }
        Err(e) if rec.phase == Phase::Creating => {
            tracing::warn!(volume, error = %e, "an interrupted publish cannot be completed; forgetting it");
            forget(core).await?;
        }
        Err(e) => {
            tracing::warn!(volume, nqn = %rec.nqn, error = %e, "cannot re-publish; the record is kept");
        }
    }
    Ok(())
}
