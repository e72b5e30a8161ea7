//! Volumes and snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore, VolumeInfo};

use super::pools::hex;
use super::{rpc_submit, Core, Job};
use crate::api;
use crate::error::ControlError;
use crate::state::{Phase, PublishRec, Record, SnapshotRec, VolumeRec};
use crate::validate;

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ControlError> {
    for (k, v) in labels {
        if k.is_empty() || k.len() > 63 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ControlError::invalid(
                "labels",
                format!("key {k:?} must be 1 to 63 printable ASCII characters"),
            ));
        }
        if v.len() > 253 || v.chars().any(char::is_control) {
            return Err(ControlError::invalid(
                "labels",
                format!("value of {k:?} must be at most 253 characters, no control characters"),
            ));
        }
    }
    Ok(())
}

impl Core {
    /// Live information of `name` in `pool`, or the state that explains its absence.
    fn live(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<(Option<VolumeInfo>, &'static str), ControlError> {
        let lvs = match self.lvs(pool) {
            Ok(l) => l,
            Err(_) => return Ok((None, "pool-unavailable")),
        };
        let list = lvs
            .list()
            .map_err(|e| ControlError::lvol(format!("listing pool {pool:?}"), e))?;
        Ok(match list.into_iter().find(|v| v.name == name) {
            Some(v) => (Some(v), "online"),
            None => (None, "missing"),
        })
    }

    pub(super) fn volume_msg(&self, rec: &VolumeRec) -> Result<api::Volume, ControlError> {
        let (info, state) = self.live(&rec.pool, &rec.name)?;
        let cluster = self
            .pools()
            .get(&rec.pool)
            .map_or(0, |p| p.rec.cluster_size);
        let published = self.records().get::<PublishRec>(&rec.name)?;
        let mut m = api::Volume {
            name: rec.name.clone(),
            pool: rec.pool.clone(),
            size_bytes: rec.size,
            thin: rec.thin,
            labels: rec.labels.clone(),
            published_nqn: published.map(|p| p.nqn).unwrap_or_default(),
            state: state.into(),
            ..Default::default()
        };
        if let Some(v) = info {
            m.uuid = hex(&v.uuid);
            m.size_bytes = v.size;
            m.thin = v.thin;
            m.allocated_bytes = v.allocated_clusters * cluster;
            m.parent = v.parent.unwrap_or_default();
            m.created_unix = v.created;
        }
        Ok(m)
    }

    fn snapshot_msg(&self, rec: &SnapshotRec) -> Result<api::Snapshot, ControlError> {
        let (info, state) = self.live(&rec.pool, &rec.name)?;
        let cluster = self
            .pools()
            .get(&rec.pool)
            .map_or(0, |p| p.rec.cluster_size);
        let mut m = api::Snapshot {
            name: rec.name.clone(),
            volume: rec.volume.clone(),
            pool: rec.pool.clone(),
            group_id: rec.group_id.clone(),
            state: state.into(),
            ..Default::default()
        };
        if let Some(v) = info {
            m.uuid = hex(&v.uuid);
            m.size_bytes = v.size;
            m.allocated_bytes = v.allocated_clusters * cluster;
            m.created_unix = v.created;
            m.children = v.clones;
        }
        Ok(m)
    }

    pub(super) fn volume_rec(&self, name: &str) -> Result<VolumeRec, ControlError> {
        self.records()
            .get::<VolumeRec>(name)?
            .filter(|v| v.phase == Phase::Ready)
            .ok_or_else(|| ControlError::not_found("volume", name))
    }

    pub async fn volume_get(self: &Arc<Self>, name: String) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            core.volume_msg(&core.volume_rec(&name)?)
        }))
        .await
    }

    pub async fn volume_list(
        self: &Arc<Self>,
        pool: String,
    ) -> Result<Vec<api::Volume>, ControlError> {
        self.check_ready()?;
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            core.records()
                .list::<VolumeRec>()?
                .iter()
                .filter(|v| pool.is_empty() || v.pool == pool)
                .map(|v| core.volume_msg(v))
                .collect()
        }))
        .await
    }

    /// The pool a new volume goes to: the one named, or the only one.
    fn pick_pool(&self, pool: &str) -> Result<(String, u64), ControlError> {
        let pools = self.pools();
        if pool.is_empty() {
            return match pools.values().collect::<Vec<_>>().as_slice() {
                [p] => Ok((p.rec.name.clone(), p.rec.cluster_size)),
                [] => Err(ControlError::FailedPrecondition(
                    "there is no pool: create one first".into(),
                )),
                many => Err(ControlError::invalid(
                    "pool",
                    format!("name one of the {} pools", many.len()),
                )),
            };
        }
        validate::name("pool", pool)?;
        let p = pools
            .get(pool)
            .ok_or_else(|| ControlError::not_found("pool", pool))?;
        Ok((p.rec.name.clone(), p.rec.cluster_size))
    }

    /// AlreadyExists when `name` is taken by a snapshot.
    fn not_a_snapshot(&self, name: &str) -> Result<(), ControlError> {
        if self.records().get::<SnapshotRec>(name)?.is_some() {
            return Err(ControlError::AlreadyExists {
                kind: "object",
                name: name.into(),
                difference: "it is a snapshot, not a volume".into(),
            });
        }
        Ok(())
    }

    pub async fn volume_create(
        self: &Arc<Self>,
        req: api::CreateVolumeRequest,
    ) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        if req.replicas > 1 {
            return Err(ControlError::FailedPrecondition(format!(
                "replicas = {}: this version keeps one local copy (0 or 1)",
                req.replicas
            )));
        }
        if !req.topology.is_empty() {
            return Err(ControlError::FailedPrecondition(
                "topology constraints are not supported in this version; leave it empty".into(),
            ));
        }
        check_labels(&req.labels)?;
        let (pool, cluster) = self.pick_pool(&req.pool)?;
        validate::size("size_bytes", req.size_bytes, cluster)?;
        let _g = self.ops.lock().await;
        self.not_a_snapshot(&req.name)?;
        let rec = VolumeRec {
            name: req.name.clone(),
            pool,
            size: req.size_bytes,
            thin: req.thin,
            labels: req.labels,
            clone_of: None,
            phase: Phase::Creating,
        };
        if let Some(old) = self.records().get::<VolumeRec>(&req.name)? {
            let mut diff = Vec::new();
            if old.pool != rec.pool {
                diff.push(format!("pool is {:?}, not {:?}", old.pool, rec.pool));
            }
            if old.size != rec.size {
                diff.push(format!("size_bytes is {}, not {}", old.size, rec.size));
            }
            if old.thin != rec.thin {
                diff.push(format!("thin is {}, not {}", old.thin, rec.thin));
            }
            if old.labels != rec.labels {
                diff.push(format!("labels are {:?}, not {:?}", old.labels, rec.labels));
            }
            if let Some(s) = &old.clone_of {
                diff.push(format!("it is a clone of {s:?}"));
            }
            if !diff.is_empty() {
                return Err(ControlError::AlreadyExists {
                    kind: "volume",
                    name: req.name,
                    difference: diff.join("; "),
                });
            }
            let core = self.clone();
            return rpc_submit(Job::blocking(move || core.volume_msg(&old))).await;
        }
        let lvs = self.lvs(&rec.pool)?;
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            let rec = core.create_recorded(rec, |rec| {
                lvs.create_volume(&rec.name, rec.size, rec.thin)
                    .map(drop)
                    .map_err(|e| ControlError::lvol(format!("creating volume {:?}", rec.name), e))
            })?;
            tracing::info!(volume = %rec.name, pool = %rec.pool, size = rec.size, thin = rec.thin, "volume created");
            core.volume_msg(&rec)
        }))
        .await
    }

    pub async fn volume_resize(
        self: &Arc<Self>,
        req: api::ResizeVolumeRequest,
    ) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        let _g = self.ops.lock().await;
        let rec = self.volume_rec(&req.name)?;
        let cluster = self.pick_pool(&rec.pool)?.1;
        validate::size("size_bytes", req.size_bytes, cluster)?;
        // A published volume grows online: its namespace moves to a device of the new
        // size and every controller gets a namespace-attribute-changed notice (the
        // Linux host then re-reads the size). Shrinking would cut blocks from under a
        // host that may be using them.
        let published = self.records().get::<PublishRec>(&req.name)?;
        if published.is_some() && req.size_bytes < rec.size {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {:?} is published: it can grow ({} bytes now) but not shrink while hosts may use it; unpublish it first",
                req.name, rec.size
            )));
        }
        let lvs = self.lvs(&rec.pool)?;
        let core = self.clone();
        let name = rec.name.clone();
        let (msg, grown) = rpc_submit(Job::blocking(move || {
            if published.is_some() {
                // The record can lag the volume after a crash; the volume's own size
                // is what its hosts see.
                let live = lvs.volume(&rec.name).map_err(|e| {
                    ControlError::lvol(format!("opening volume {:?}", rec.name), e)
                })?;
                let info = ferrox_bdev::BlockDevice::info(&*live);
                let live = info.num_blocks * u64::from(info.block_size);
                if req.size_bytes < live {
                    return Err(ControlError::FailedPrecondition(format!(
                        "volume {:?} is published: it can grow ({live} bytes now) but not shrink while hosts may use it; unpublish it first",
                        rec.name
                    )));
                }
            }
            lvs.resize(&rec.name, req.size_bytes, req.force)
                .map_err(|e| ControlError::lvol(format!("resizing volume {:?}", rec.name), e))?;
            let rec = VolumeRec {
                size: req.size_bytes,
                ..rec
            };
            core.records().put(&rec)?;
            let grown = match published {
                Some(p) => {
                    let dev = lvs.volume(&rec.name).map_err(|e| {
                        ControlError::lvol(format!("opening volume {:?}", rec.name), e)
                    })?;
                    Some((p.nqn, dev))
                }
                None => None,
            };
            Ok((core.volume_msg(&rec)?, grown))
        }))
        .await?;
        if let Some((nqn, dev)) = grown {
            let target = self.ctx.target.clone();
            rpc_submit(Job::on_reactor(self.target_reactor(), move |_r| {
                let Some(sub) = target.subsystem(&nqn) else {
                    // Not exported right now (a failed re-publish, an unpublish under
                    // way): the next export opens the volume at its new size.
                    tracing::info!(volume = %name, %nqn, "volume grown; its subsystem is not exported now");
                    return Ok(());
                };
                let now = sub.namespace(1).map(|ns| ns.bdev.info().num_blocks);
                if now == Some(ferrox_bdev::BlockDevice::info(&*dev).num_blocks) {
                    return Ok(()); // the same size: nothing for hosts to learn
                }
                sub.replace_namespace_bdev(1, dev)
                    .map_err(|why| ControlError::Target {
                        during: format!("growing published volume {name:?}"),
                        source: ferrox_nvmeof::TargetError::Subsystem { nqn, why },
                    })?;
                tracing::info!(volume = %name, "published volume grown; hosts notified");
                Ok(())
            }))
            .await?;
        }
        Ok(msg)
    }

    pub async fn volume_destroy(self: &Arc<Self>, name: String) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let _g = self.ops.lock().await;
        if self.records().get::<SnapshotRec>(&name)?.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "{name:?} is a snapshot; delete it with SnapshotService.Destroy"
            )));
        }
        let Some(rec) = self.records().get::<VolumeRec>(&name)? else {
            return Ok(false);
        };
        if self.records().get::<PublishRec>(&name)?.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {name:?} is published; unpublish it first"
            )));
        }
        let lvs = self.lvs(&rec.pool)?;
        self.delete_recorded(lvs, rec, name, "volume").await
    }

    pub async fn snapshot_create(
        self: &Arc<Self>,
        req: api::CreateSnapshotRequest,
    ) -> Result<api::Snapshot, ControlError> {
        self.check_ready()?;
        validate::name("volume", &req.volume)?;
        validate::name("name", &req.name)?;
        if !req.group_id.is_empty() {
            validate::name("group_id", &req.group_id)?;
        }
        let _g = self.ops.lock().await;
        if let Some(old) = self.records().get::<SnapshotRec>(&req.name)? {
            let mut diff = Vec::new();
            if old.volume != req.volume {
                diff.push(format!(
                    "it is of volume {:?}, not {:?}",
                    old.volume, req.volume
                ));
            }
            if old.group_id != req.group_id {
                diff.push(format!(
                    "group_id is {:?}, not {:?}",
                    old.group_id, req.group_id
                ));
            }
            if !diff.is_empty() {
                return Err(ControlError::AlreadyExists {
                    kind: "snapshot",
                    name: req.name,
                    difference: diff.join("; "),
                });
            }
            let core = self.clone();
            return rpc_submit(Job::blocking(move || core.snapshot_msg(&old))).await;
        }
        if self.records().get::<VolumeRec>(&req.name)?.is_some() {
            return Err(ControlError::AlreadyExists {
                kind: "object",
                name: req.name,
                difference: "it is a volume, not a snapshot".into(),
            });
        }
        let vol = self.volume_rec(&req.volume)?;
        let lvs = self.lvs(&vol.pool)?;
        let rec = SnapshotRec {
            name: req.name,
            pool: vol.pool,
            volume: vol.name,
            group_id: req.group_id,
            phase: Phase::Creating,
        };
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            let rec = core.create_recorded(rec, |rec| {
                lvs.snapshot(&rec.volume, &rec.name)
                    .map(drop)
                    .map_err(|e| ControlError::lvol(format!("snapshotting {:?}", rec.volume), e))
            })?;
            tracing::info!(snapshot = %rec.name, volume = %rec.volume, "snapshot created");
            core.snapshot_msg(&rec)
        }))
        .await
    }

    pub async fn snapshot_list(
        self: &Arc<Self>,
        volume: String,
    ) -> Result<Vec<api::Snapshot>, ControlError> {
        self.check_ready()?;
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            core.records()
                .list::<SnapshotRec>()?
                .iter()
                .filter(|s| volume.is_empty() || s.volume == volume)
                .map(|s| core.snapshot_msg(s))
                .collect()
        }))
        .await
    }

    pub async fn snapshot_destroy(self: &Arc<Self>, name: String) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let _g = self.ops.lock().await;
        let Some(rec) = self.records().get::<SnapshotRec>(&name)? else {
            return Ok(false);
        };
        let clones: Vec<String> = self
            .records()
            .list::<VolumeRec>()?
            .into_iter()
            .filter(|v| v.clone_of.as_deref() == Some(name.as_str()))
            .map(|v| v.name)
            .collect();
        if !clones.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "snapshot {name:?} has clones {clones:?}; delete them first"
            )));
        }
        let lvs = self.lvs(&rec.pool)?;
        self.delete_recorded(lvs, rec, name, "snapshot").await
    }

    /// Creates a volume or snapshot with its intent recorded first: the record is
    /// written as Creating, `make` creates the object in the pool, then the record goes
    /// to Ready. A failure removes the record; a crash in between is finished by the
    /// start-up reconciliation. On a blocking thread.
    fn create_recorded<R: Record>(
        &self,
        rec: R,
        make: impl FnOnce(&R) -> Result<(), ControlError>,
    ) -> Result<R, ControlError> {
        let r = self.records();
        r.put(&rec)?;
        if let Err(e) = make(&rec) {
            r.delete::<R>(rec.id())?;
            return Err(e);
        }
        let rec = rec.in_phase(Phase::Ready);
        r.put(&rec)?;
        Ok(rec)
    }

    /// Deletes a volume or snapshot with its intent recorded first: the record goes to
    /// Deleting, the pool deletes the object, then the record goes. A failure puts the
    /// record back; a crash in between is finished by the start-up reconciliation.
    async fn delete_recorded<R: Record + Clone + Send + 'static>(
        self: &Arc<Self>,
        lvs: Arc<LvolStore>,
        rec: R,
        name: String,
        what: &'static str,
    ) -> Result<bool, ControlError> {
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            let r = core.records();
            r.put(&rec.in_phase(Phase::Deleting))?;
            match lvs.delete(&name) {
                Ok(()) | Err(LvolError::NotFound(_)) => {}
                Err(e) => {
                    r.put(&rec)?;
                    return Err(ControlError::lvol(format!("deleting {what} {name:?}"), e));
                }
            }
            r.delete::<R>(&name)?;
            tracing::info!(kind = what, name = %name, "deleted");
            Ok(true)
        }))
        .await
    }

    pub async fn snapshot_clone(
        self: &Arc<Self>,
        req: api::CloneSnapshotRequest,
    ) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("snapshot", &req.snapshot)?;
        validate::name("name", &req.name)?;
        check_labels(&req.labels)?;
        let _g = self.ops.lock().await;
        self.not_a_snapshot(&req.name)?;
        if let Some(old) = self.records().get::<VolumeRec>(&req.name)? {
            let mut diff = Vec::new();
            if old.clone_of.as_deref() != Some(req.snapshot.as_str()) {
                diff.push(format!("it is not a clone of {:?}", req.snapshot));
            }
            if old.labels != req.labels {
                diff.push(format!("labels are {:?}, not {:?}", old.labels, req.labels));
            }
            if !diff.is_empty() {
                return Err(ControlError::AlreadyExists {
                    kind: "volume",
                    name: req.name,
                    difference: diff.join("; "),
                });
            }
            let core = self.clone();
            return rpc_submit(Job::blocking(move || core.volume_msg(&old))).await;
        }
        let snap = self
            .records()
            .get::<SnapshotRec>(&req.snapshot)?
            .filter(|s| s.phase == Phase::Ready)
            .ok_or_else(|| ControlError::not_found("snapshot", req.snapshot.clone()))?;
        let lvs = self.lvs(&snap.pool)?;
        let core = self.clone();
        rpc_submit(Job::blocking(move || {
            let size = lvs
                .list()
                .map_err(|e| ControlError::lvol("listing the pool", e))?
                .into_iter()
                .find(|v| v.name == snap.name)
                .map_or(0, |v| v.size);
            let rec = VolumeRec {
                name: req.name,
                pool: snap.pool,
                size,
                thin: true,
                labels: req.labels,
                clone_of: Some(snap.name.clone()),
                phase: Phase::Creating,
            };
            let rec = core.create_recorded(rec, |rec| {
                lvs.clone_volume(&snap.name, &rec.name)
                    .map(drop)
                    .map_err(|e| ControlError::lvol(format!("cloning {:?}", snap.name), e))
            })?;
            tracing::info!(volume = %rec.name, snapshot = %snap.name, "clone created");
            core.volume_msg(&rec)
        }))
        .await
    }
}
