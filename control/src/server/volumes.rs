//! Volumes and snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore, VolumeInfo};

use super::pools::hex;
use super::{lock, rpc_submit, Core, Job};
use crate::api;
use crate::api::volume_service_client::VolumeServiceClient;
use crate::error::ControlError;
use crate::state::{
    self, record_key, Phase, PublishRec, Record, Revision, SnapshotRec, Txn, VolumeRec,
};
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

/// What a pool's listing says of volume `name`: its information and state.
fn live_in(list: Vec<VolumeInfo>, name: &str) -> (Option<VolumeInfo>, &'static str) {
    match list.into_iter().find(|v| v.name == name) {
        Some(v) => (Some(v), "online"),
        None => (None, "missing"),
    }
}

impl Core {
    /// Live information of `name` in `pool`, or the state that explains its absence:
    /// the pool's listing, from its metadata reactor.
    async fn live(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<(Option<VolumeInfo>, &'static str), ControlError> {
        let lvs = match self.lvs(pool) {
            Ok(l) => l,
            Err(_) => return Ok((None, "pool-unavailable")),
        };
        let list = rpc_submit(Job::lvol(
            format!("listing pool {pool:?}"),
            lvs.list_async(),
        ))
        .await?;
        Ok(live_in(list, name))
    }

    /// The API view of `rec` and its publication.
    pub(super) async fn volume_msg(
        &self,
        rec: &VolumeRec,
        published: Option<&PublishRec>,
    ) -> Result<api::Volume, ControlError> {
        let live = self.live(&rec.pool, &rec.name).await?;
        Ok(self.volume_api(rec, published, live))
    }

    fn volume_api(
        &self,
        rec: &VolumeRec,
        published: Option<&PublishRec>,
        (info, state): (Option<VolumeInfo>, &'static str),
    ) -> api::Volume {
        let cluster = self
            .pools()
            .get(&rec.pool)
            .map_or(0, |p| p.rec.cluster_size);
        let mut m = api::Volume {
            name: rec.name.clone(),
            pool: rec.pool.clone(),
            size_bytes: rec.size,
            thin: rec.thin,
            labels: rec.labels.clone(),
            published_nqn: published.map(|p| p.nqn.clone()).unwrap_or_default(),
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
        m
    }

    /// The API view of `rec`, its publication read from the store.
    pub(super) async fn volume_view(
        self: &Arc<Self>,
        rec: VolumeRec,
    ) -> Result<api::Volume, ControlError> {
        let published = self.records().get::<PublishRec>(&rec.name).await?;
        let replicas = self.replica_views(&rec).await?;
        let mut m = self.volume_msg(&rec, published.as_ref()).await?;
        m.replicas = replicas;
        Ok(m)
    }

    async fn snapshot_msg(&self, rec: &SnapshotRec) -> Result<api::Snapshot, ControlError> {
        let (info, state) = self.live(&rec.pool, &rec.name).await?;
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

    pub(super) async fn volume_rec(&self, name: &str) -> Result<VolumeRec, ControlError> {
        self.records()
            .get::<VolumeRec>(name)
            .await?
            .filter(|v| v.phase == Phase::Ready)
            .ok_or_else(|| ControlError::not_found("volume", name))
    }

    pub async fn volume_get(self: &Arc<Self>, name: String) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let rec = self.volume_rec(&name).await?;
        if let Some(node) = self.pool_elsewhere(&rec.pool).await? {
            return self
                .forward(&node, |ch| async move {
                    VolumeServiceClient::new(ch)
                        .get(api::GetVolumeRequest { name })
                        .await
                })
                .await;
        }
        self.volume_view(rec).await
    }

    pub async fn volume_list(
        self: &Arc<Self>,
        pool: String,
    ) -> Result<Vec<api::Volume>, ControlError> {
        self.check_ready()?;
        let mut vols = self.records().list::<VolumeRec>().await?;
        vols.retain(|v| pool.is_empty() || v.pool == pool);
        // The volumes of another node's pool: as that node sees them.
        let mut out = Vec::new();
        let mut elsewhere = BTreeMap::new();
        for v in &vols {
            if !elsewhere.contains_key(&v.pool) {
                elsewhere.insert(v.pool.clone(), self.pool_elsewhere(&v.pool).await?);
            }
        }
        let mut asked = std::collections::BTreeSet::new();
        for (p, node) in &elsewhere {
            let Some(node) = node else { continue };
            let pool = p.clone();
            match self
                .forward(node, |ch| async move {
                    VolumeServiceClient::new(ch)
                        .list(api::ListVolumesRequest { pool })
                        .await
                })
                .await
            {
                Ok(r) => {
                    out.extend(r.volumes);
                    asked.insert(p.clone());
                }
                Err(e) => tracing::warn!(pool = %p, error = %e, "cannot list another node's pool"),
            }
        }
        // What those nodes answered replaces the records here; a node that could not
        // be asked leaves its volumes as the records say ("pool-unavailable").
        vols.retain(|v| !asked.contains(&v.pool));
        let mut views = BTreeMap::new();
        for v in &vols {
            if !v.replicas.is_empty() {
                views.insert(v.name.clone(), self.replica_views(v).await?);
            }
        }
        let published: BTreeMap<String, PublishRec> = self
            .records()
            .list::<PublishRec>()
            .await?
            .into_iter()
            .map(|p| (p.volume.clone(), p))
            .collect();
        for v in &vols {
            let mut m = self.volume_msg(v, published.get(&v.name)).await?;
            m.replicas = views.remove(&v.name).unwrap_or_default();
            out.push(m);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
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
    async fn not_a_snapshot(&self, name: &str) -> Result<(), ControlError> {
        if self.records().get::<SnapshotRec>(name).await?.is_some() {
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
        // proto3 cannot tell an unset 0 from 0: it means the default, one copy. Past
        // the most a cluster places is a bad argument; within it, a missing feature.
        validate::replicas("replicas", req.replicas.max(1))?;
        if !req.topology.is_empty() {
            return Err(ControlError::FailedPrecondition(
                "topology constraints are not supported in this version; leave it empty".into(),
            ));
        }
        check_labels(&req.labels)?;
        if req.replicas > 1 && self.membership.is_some() {
            return self.volume_create_replicated(req).await;
        }
        if req.replicas > 1 {
            return Err(ControlError::FailedPrecondition(format!(
                "replicas = {}: a single node keeps one local copy (0 or 1); more needs a \
                 cluster (--cluster)",
                req.replicas
            )));
        }
        if let Some(node) = self.pool_elsewhere(&req.pool).await? {
            return self
                .forward(&node, |ch| async move {
                    VolumeServiceClient::new(ch).create(req).await
                })
                .await;
        }
        let (pool, cluster) = self.pick_pool(&req.pool)?;
        validate::size("size_bytes", req.size_bytes, cluster)?;
        let _g = self
            .lock(
                &[&lock::pool(&pool)],
                &format!("creating volume {:?}", req.name),
            )
            .await?;
        let rec = VolumeRec {
            name: req.name.clone(),
            pool,
            size: req.size_bytes,
            thin: req.thin,
            labels: req.labels,
            clone_of: None,
            replicas: Vec::new(),
            phase: Phase::Creating,
        };
        for _ in 0..lock::MAX_RACES {
            self.not_a_snapshot(&req.name).await?;
            if let Some((old, rev)) = self.records().get_rev::<VolumeRec>(&req.name).await? {
                // A volume of several replicas is never this request, whatever its
                // phase; and waiting here for its create, which needs this pool's
                // lock for its replica, would hold that create up.
                if !old.replicas.is_empty() {
                    return Err(ControlError::AlreadyExists {
                        kind: "volume",
                        name: req.name,
                        difference: format!("it has {} replicas, not 1", old.replicas.len()),
                    });
                }
                if old.phase != Phase::Ready {
                    self.settled::<VolumeRec>(&req.name, rev).await?;
                    continue;
                }
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
                return self.volume_view(old).await;
            }
            let lvs = self.lvs(&rec.pool)?;
            let pool_rec = self.pool_rec(&rec.pool)?;
            // The name is free of volumes and snapshots, or this loses the race.
            let claim = Txn::new()
                .when(record_key::<VolumeRec>(&req.name), 0)
                .when(record_key::<SnapshotRec>(&req.name), 0);
            let Some(rev) = self.claim(claim, &rec).await? else {
                continue;
            };
            let rec = self
                .create_claimed(rec, rev, move |rec| {
                    let what = format!("creating volume {:?}", rec.name);
                    super::pools::check_overcommit(&pool_rec, &lvs, rec.size, &what)?;
                    lvs.create_volume(&rec.name, rec.size, rec.thin)
                        .map(drop)
                        .map_err(|e| {
                            ControlError::lvol(format!("creating volume {:?}", rec.name), e)
                        })
                })
                .await?;
            tracing::info!(volume = %rec.name, pool = %rec.pool, size = rec.size, thin = rec.thin, "volume created");
            return self.volume_view(rec).await;
        }
        Err(lock::raced("volume", &req.name))
    }

    pub async fn volume_resize(
        self: &Arc<Self>,
        req: api::ResizeVolumeRequest,
    ) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        let found = self.volume_rec(&req.name).await?;
        if !found.replicas.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {:?} has {} replicas: resizing them is not supported yet",
                req.name,
                found.replicas.len()
            )));
        }
        if let Some(node) = self.pool_elsewhere(&found.pool).await? {
            return self
                .forward(&node, |ch| async move {
                    VolumeServiceClient::new(ch).resize(req).await
                })
                .await;
        }
        let pool = found.pool;
        let _g = self
            .lock(
                &[&lock::pool(&pool)],
                &format!("resizing volume {:?}", req.name),
            )
            .await?;
        let (rec, rev) = self
            .records()
            .get_rev::<VolumeRec>(&req.name)
            .await?
            .filter(|(v, _)| v.phase == Phase::Ready && v.pool == pool)
            .ok_or_else(|| ControlError::not_found("volume", req.name.clone()))?;
        let cluster = self.pick_pool(&rec.pool)?.1;
        validate::size("size_bytes", req.size_bytes, cluster)?;
        // A published volume grows online: its namespace moves to a device of the new
        // size and every controller gets a namespace-attribute-changed notice (the
        // Linux host then re-reads the size). Shrinking would cut blocks from under a
        // host that may be using them.
        let published = self.records().get::<PublishRec>(&req.name).await?;
        if published.is_some() && req.size_bytes < rec.size {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {:?} is published: it can grow ({} bytes now) but not shrink while hosts may use it; unpublish it first",
                req.name, rec.size
            )));
        }
        let lvs = self.lvs(&rec.pool)?;
        let pool_rec = self.pool_rec(&rec.pool)?;
        let name = rec.name.clone();
        let nqn = published.as_ref().map(|p| p.nqn.clone());
        let grown = self
            .blocking(move |_| {
                // Growing promises more of the pool; the volume's own size is the base.
                let now = lvs
                    .list()
                    .map_err(|e| ControlError::lvol("listing the pool", e))?
                    .into_iter()
                    .find(|v| v.name == name)
                    .map_or(0, |v| v.size);
                if req.size_bytes > now {
                    super::pools::check_overcommit(
                        &pool_rec,
                        &lvs,
                        req.size_bytes - now,
                        &format!("growing volume {name:?}"),
                    )?;
                }
                if nqn.is_some() {
                    // The record can lag the volume after a crash; the volume's own
                    // size is what its hosts see.
                    let live = lvs.volume(&name).map_err(|e| {
                        ControlError::lvol(format!("opening volume {name:?}"), e)
                    })?;
                    let info = ferrox_bdev::BlockDevice::info(&*live);
                    let live = info.num_blocks * u64::from(info.block_size);
                    if req.size_bytes < live {
                        return Err(ControlError::FailedPrecondition(format!(
                            "volume {name:?} is published: it can grow ({live} bytes now) but not shrink while hosts may use it; unpublish it first"
                        )));
                    }
                }
                lvs.resize(&name, req.size_bytes, req.force)
                    .map_err(|e| ControlError::lvol(format!("resizing volume {name:?}"), e))?;
                match nqn {
                    Some(nqn) => {
                        let dev = lvs.volume(&name).map_err(|e| {
                            ControlError::lvol(format!("opening volume {name:?}"), e)
                        })?;
                        Ok(Some((nqn, dev)))
                    }
                    None => Ok(None),
                }
            })
            .await?;
        let rec = VolumeRec {
            size: req.size_bytes,
            ..rec
        };
        self.records().put_if(&rec, rev).await?;
        let name = rec.name.clone();
        let msg = self.volume_msg(&rec, published.as_ref()).await?;
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
        if self.records().get::<SnapshotRec>(&name).await?.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "{name:?} is a snapshot; delete it with SnapshotService.Destroy"
            )));
        }
        let Some(found) = self.records().get::<VolumeRec>(&name).await? else {
            return Ok(false);
        };
        let pool = found.pool;
        if !found.replicas.is_empty() {
            // No pool lock here: each replica's node takes its own while deleting
            // it; the record's revision guards the volume.
            return self.volume_destroy_replicated(name).await;
        }
        if let Some(node) = self.pool_elsewhere(&pool).await? {
            let req = api::DestroyVolumeRequest { name };
            return self
                .forward(&node, |ch| async move {
                    VolumeServiceClient::new(ch).destroy(req).await
                })
                .await
                .map(|r| r.existed);
        }
        let _g = self
            .lock(&[&lock::pool(&pool)], &format!("deleting volume {name:?}"))
            .await?;
        let Some((rec, rev)) = self.records().get_rev::<VolumeRec>(&name).await? else {
            return Ok(false);
        };
        if self.records().get::<PublishRec>(&name).await?.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {name:?} is published; unpublish it first"
            )));
        }
        let lvs = self.lvs(&rec.pool)?;
        // Not published meanwhile.
        let guard = Txn::new().when(record_key::<PublishRec>(&name), 0);
        self.delete_recorded(lvs, rec, rev, guard, "volume").await
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
        let Some(pool) = self
            .records()
            .get::<SnapshotRec>(&req.name)
            .await?
            .map(|s| s.pool)
            .or(self
                .records()
                .get::<VolumeRec>(&req.volume)
                .await?
                .map(|v| v.pool))
        else {
            if self.records().get::<VolumeRec>(&req.name).await?.is_some() {
                return Err(ControlError::AlreadyExists {
                    kind: "object",
                    name: req.name,
                    difference: "it is a volume, not a snapshot".into(),
                });
            }
            return Err(ControlError::not_found("volume", req.volume));
        };
        let _g = self
            .lock(
                &[&lock::pool(&pool)],
                &format!("creating snapshot {:?}", req.name),
            )
            .await?;
        for _ in 0..lock::MAX_RACES {
            if let Some((old, rev)) = self.records().get_rev::<SnapshotRec>(&req.name).await? {
                if old.phase != Phase::Ready {
                    self.settled::<SnapshotRec>(&req.name, rev).await?;
                    continue;
                }
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
                        name: req.name.clone(),
                        difference: diff.join("; "),
                    });
                }
                return self.snapshot_msg(&old).await;
            }
            if self.records().get::<VolumeRec>(&req.name).await?.is_some() {
                return Err(ControlError::AlreadyExists {
                    kind: "object",
                    name: req.name.clone(),
                    difference: "it is a volume, not a snapshot".into(),
                });
            }
            let Some((vol, vol_rev)) = self
                .records()
                .get_rev::<VolumeRec>(&req.volume)
                .await?
                .filter(|(v, _)| v.phase == Phase::Ready)
            else {
                return Err(ControlError::not_found("volume", req.volume));
            };
            if !vol.replicas.is_empty() {
                return Err(ControlError::FailedPrecondition(format!(
                    "volume {:?} has {} replicas: snapshotting them is not supported yet",
                    vol.name,
                    vol.replicas.len()
                )));
            }
            if vol.pool != pool {
                // Moved to another pool since it was looked up: not the one locked.
                return Err(lock::raced("volume", &req.volume));
            }
            let lvs = self.lvs(&vol.pool)?;
            let rec = SnapshotRec {
                name: req.name.clone(),
                pool: vol.pool,
                volume: vol.name,
                group_id: req.group_id.clone(),
                phase: Phase::Creating,
            };
            let claim = Txn::new()
                .when(record_key::<SnapshotRec>(&req.name), 0)
                .when(record_key::<VolumeRec>(&req.name), 0)
                .when(record_key::<VolumeRec>(&req.volume), vol_rev);
            let Some(rev) = self.claim(claim, &rec).await? else {
                continue;
            };
            let rec = self
                .create_claimed(rec, rev, move |rec| {
                    lvs.snapshot(&rec.volume, &rec.name).map(drop).map_err(|e| {
                        ControlError::lvol(format!("snapshotting {:?}", rec.volume), e)
                    })
                })
                .await?;
            tracing::info!(snapshot = %rec.name, volume = %rec.volume, "snapshot created");
            return self.snapshot_msg(&rec).await;
        }
        Err(lock::raced("snapshot", &req.name))
    }

    pub async fn snapshot_list(
        self: &Arc<Self>,
        volume: String,
    ) -> Result<Vec<api::Snapshot>, ControlError> {
        self.check_ready()?;
        let snaps = self.records().list::<SnapshotRec>().await?;
        let mut out = Vec::new();
        for s in snaps
            .iter()
            .filter(|s| volume.is_empty() || s.volume == volume)
        {
            out.push(self.snapshot_msg(s).await?);
        }
        Ok(out)
    }

    pub async fn snapshot_destroy(self: &Arc<Self>, name: String) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let Some(pool) = self
            .records()
            .get::<SnapshotRec>(&name)
            .await?
            .map(|s| s.pool)
        else {
            return Ok(false);
        };
        let _g = self
            .lock(
                &[&lock::pool(&pool)],
                &format!("deleting snapshot {name:?}"),
            )
            .await?;
        let Some((rec, rev)) = self.records().get_rev::<SnapshotRec>(&name).await? else {
            return Ok(false);
        };
        let clones: Vec<String> = self
            .records()
            .list::<VolumeRec>()
            .await?
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
        self.delete_recorded(lvs, rec, rev, Txn::new(), "snapshot")
            .await
    }

    /// Finishes the creation of a volume or snapshot whose intent ([`Core::claim`])
    /// is recorded at `rev` in phase Creating: `make` creates the object in the pool
    /// (on a blocking thread), then the record goes to Ready. A failure removes the
    /// record; a crash in between is finished by the start-up reconciliation.
    async fn create_claimed<R: Record>(
        self: &Arc<Self>,
        rec: R,
        rev: Revision,
        make: impl FnOnce(&R) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<R, ControlError> {
        let r = self.records();
        let intent = rec.clone();
        if let Err(e) = self.blocking(move |_| make(&intent)).await {
            r.delete_if::<R>(rec.id(), rev).await?;
            return Err(e);
        }
        let rec = rec.in_phase(Phase::Ready);
        r.put_if(&rec, rev).await?;
        Ok(rec)
    }

    /// Deletes a volume or snapshot, read at `rev`, with its intent recorded first
    /// (if `guard`'s compares hold too): the record goes to Deleting, the pool deletes
    /// the object, then the record goes. A failure puts the record back; a crash in
    /// between is finished by the start-up reconciliation.
    async fn delete_recorded<R: Record>(
        self: &Arc<Self>,
        lvs: Arc<LvolStore>,
        rec: R,
        rev: Revision,
        guard: Txn,
        what: &'static str,
    ) -> Result<bool, ControlError> {
        let r = self.records();
        let name = rec.id().to_string();
        let guard = guard.when(record_key::<R>(&name), rev);
        let rev = r
            .txn(state::put_record(guard, &rec.in_phase(Phase::Deleting))?)
            .await?;
        let during = format!("deleting {what} {name:?}");
        let deleted = match rpc_submit(Job::lvol(during, lvs.delete_async(&name))).await {
            Ok(())
            | Err(ControlError::Lvol {
                source: LvolError::NotFound(_),
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            r.put_if(&rec, rev).await?;
            return Err(e);
        }
        r.delete_if::<R>(&name, rev).await?;
        tracing::info!(kind = what, name = %name, "deleted");
        Ok(true)
    }

    pub async fn snapshot_clone(
        self: &Arc<Self>,
        req: api::CloneSnapshotRequest,
    ) -> Result<api::Volume, ControlError> {
        self.check_ready()?;
        validate::name("snapshot", &req.snapshot)?;
        validate::name("name", &req.name)?;
        check_labels(&req.labels)?;
        let Some(pool) = self
            .records()
            .get::<VolumeRec>(&req.name)
            .await?
            .map(|v| v.pool)
            .or(self
                .records()
                .get::<SnapshotRec>(&req.snapshot)
                .await?
                .map(|s| s.pool))
        else {
            self.not_a_snapshot(&req.name).await?;
            return Err(ControlError::not_found("snapshot", req.snapshot));
        };
        let _g = self
            .lock(
                &[&lock::pool(&pool)],
                &format!("creating clone {:?}", req.name),
            )
            .await?;
        for _ in 0..lock::MAX_RACES {
            self.not_a_snapshot(&req.name).await?;
            if let Some((old, rev)) = self.records().get_rev::<VolumeRec>(&req.name).await? {
                if old.phase != Phase::Ready {
                    self.settled::<VolumeRec>(&req.name, rev).await?;
                    continue;
                }
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
                return self.volume_view(old).await;
            }
            let Some((snap, snap_rev)) = self
                .records()
                .get_rev::<SnapshotRec>(&req.snapshot)
                .await?
                .filter(|(s, _)| s.phase == Phase::Ready)
            else {
                return Err(ControlError::not_found("snapshot", req.snapshot));
            };
            if snap.pool != pool {
                // Another object of that name in another pool: not the one locked.
                return Err(lock::raced("snapshot", &req.snapshot));
            }
            let lvs = self.lvs(&snap.pool)?;
            let (l, s) = (lvs.clone(), snap.name.clone());
            let size = self
                .blocking(move |_| {
                    Ok(l.list()
                        .map_err(|e| ControlError::lvol("listing the pool", e))?
                        .into_iter()
                        .find(|v| v.name == s)
                        .map_or(0, |v| v.size))
                })
                .await?;
            let rec = VolumeRec {
                name: req.name.clone(),
                pool: snap.pool.clone(),
                size,
                thin: true,
                labels: req.labels.clone(),
                clone_of: Some(snap.name.clone()),
                replicas: Vec::new(),
                phase: Phase::Creating,
            };
            let claim = Txn::new()
                .when(record_key::<VolumeRec>(&req.name), 0)
                .when(record_key::<SnapshotRec>(&req.name), 0)
                .when(record_key::<SnapshotRec>(&snap.name), snap_rev);
            let Some(rev) = self.claim(claim, &rec).await? else {
                continue;
            };
            let from = snap.name.clone();
            let pool_rec = self.pool_rec(&snap.pool)?;
            let rec = self
                .create_claimed(rec, rev, move |rec| {
                    let what = format!("cloning {from:?}");
                    super::pools::check_overcommit(&pool_rec, &lvs, rec.size, &what)?;
                    lvs.clone_volume(&from, &rec.name)
                        .map(drop)
                        .map_err(|e| ControlError::lvol(format!("cloning {from:?}"), e))
                })
                .await?;
            tracing::info!(volume = %rec.name, snapshot = %snap.name, "clone created");
            return self.volume_view(rec).await;
        }
        Err(lock::raced("volume", &req.name))
    }
}
