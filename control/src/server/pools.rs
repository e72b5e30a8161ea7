//! Pools: create, import, destroy, export, list, get.

use std::path::PathBuf;
use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore, VolumeInfo, DEFAULT_CLUSTER_SIZE};
use ferrox_bdev::size::human;
use ferrox_bdev::BlockDevice;

use super::{base_bdev_name, lock, open_path_base, rpc_submit, Core, Job, PoolEntry};
use crate::api;
use crate::error::ControlError;
use crate::state::{Phase, PoolBaseRec, PoolRec, PublishRec, SnapshotRec, VolumeRec};
use crate::validate;

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base_of(b: Option<api::PoolBase>) -> Result<PoolBaseRec, ControlError> {
    let b = b.ok_or_else(|| ControlError::invalid("base", "name a bdev or a path"))?;
    match b.base {
        Some(api::pool_base::Base::Bdev(n)) if !n.is_empty() => {
            if b.size_bytes != 0 {
                return Err(ControlError::invalid(
                    "base.size_bytes",
                    "only with a path (a bdev has its own size)",
                ));
            }
            Ok(PoolBaseRec::Bdev(n))
        }
        Some(api::pool_base::Base::Path(p)) if !p.is_empty() => {
            if !p.starts_with('/') {
                return Err(ControlError::invalid(
                    "base.path",
                    format!("{p:?} must be absolute"),
                ));
            }
            if b.size_bytes != 0 {
                validate::size("base.size_bytes", b.size_bytes, 4096)?;
            } else if !std::path::Path::new(&p).exists() {
                return Err(ControlError::invalid(
                    "base.size_bytes",
                    format!("{p} does not exist: give a size to create it"),
                ));
            }
            Ok(PoolBaseRec::Path {
                path: p,
                size: b.size_bytes,
            })
        }
        _ => Err(ControlError::invalid("base", "name a bdev or a path")),
    }
}

/// The same device or file (sizes aside).
fn same_base(a: &PoolBaseRec, b: &PoolBaseRec) -> bool {
    match (a, b) {
        (PoolBaseRec::Bdev(x), PoolBaseRec::Bdev(y)) => x == y,
        (PoolBaseRec::Path { path: x, .. }, PoolBaseRec::Path { path: y, .. }) => x == y,
        _ => false,
    }
}

fn describe(b: &PoolBaseRec) -> String {
    match b {
        PoolBaseRec::Bdev(n) => format!("bdev {n:?}"),
        PoolBaseRec::Path { path, size } => format!("path {path} ({size} bytes)"),
    }
}

/// The base device of a pool (opening a path-based one), and its registry name.
pub(crate) fn open_base(
    core: &Core,
    name: &str,
    base: &PoolBaseRec,
    create: bool,
) -> Result<(Arc<dyn BlockDevice>, String), ControlError> {
    match base {
        PoolBaseRec::Bdev(b) => {
            let dev = core
                .ctx
                .registry
                .get(b)
                .map_err(|_| ControlError::not_found("bdev", b.clone()))?;
            Ok((dev, b.clone()))
        }
        PoolBaseRec::Path { path, size } => {
            let bname = base_bdev_name(name);
            if let Ok(dev) = core.ctx.registry.get(&bname) {
                return Ok((dev, bname));
            }
            let size = (create && *size != 0).then_some(*size);
            let dev = open_path_base(name, &PathBuf::from(path), size)?;
            core.ctx
                .registry
                .add(dev.clone())
                .map_err(|source| ControlError::Registry {
                    during: format!("registering the base of pool {name:?}"),
                    source,
                })?;
            Ok((dev, bname))
        }
    }
}

pub(crate) fn close_base(core: &Core, rec: &PoolRec) {
    if let PoolBaseRec::Path { .. } = rec.base {
        let _ = core.ctx.registry.remove(&base_bdev_name(&rec.name));
    }
}

impl Core {
    /// The API view of pool `name`; its lvol figures come from its metadata reactor.
    async fn pool_msg(&self, name: &str) -> Result<api::Pool, ControlError> {
        let (rec, lvs, bdev, error) = {
            let pools = self.pools();
            let p = pools
                .get(name)
                .ok_or_else(|| ControlError::not_found("pool", name))?;
            (
                p.rec.clone(),
                p.lvs.clone(),
                p.bdev.clone(),
                p.error.clone(),
            )
        };
        let mut m = api::Pool {
            name: rec.name.clone(),
            bdev,
            path: match &rec.base {
                PoolBaseRec::Path { path, .. } => path.clone(),
                PoolBaseRec::Bdev(_) => String::new(),
            },
            cluster_size: rec.cluster_size,
            max_overcommit: overcommit_of(&rec),
            state: "unavailable".into(),
            message: error.unwrap_or_default(),
            ..Default::default()
        };
        if let Some(lvs) = lvs {
            let s =
                rpc_submit(Job::lvol(format!("pool {name:?} stats"), lvs.stats_async())).await?;
            m.uuid = hex(&s.uuid);
            m.cluster_size = s.cluster_size;
            m.capacity_bytes = s.total_clusters * s.cluster_size;
            m.allocated_bytes = s.allocated_clusters * s.cluster_size;
            m.free_bytes = s.free_clusters * s.cluster_size;
            m.volumes = s.volumes as u32;
            let vols = rpc_submit(Job::lvol(
                format!("pool {name:?} volumes"),
                lvs.list_async(),
            ))
            .await?;
            m.provisioned_bytes = provisioned_of(&vols);
            m.state = "online".into();
        }
        Ok(m)
    }

    pub async fn pool_get(self: &Arc<Self>, name: String) -> Result<api::Pool, ControlError> {
        self.check_ready()?;
        if let Some(node) = self.pool_elsewhere(&name).await? {
            let req = api::GetPoolRequest { name };
            return self
                .forward(&node, |ch| async move {
                    api::pool_service_client::PoolServiceClient::new(ch)
                        .get(req)
                        .await
                })
                .await;
        }
        self.pool_msg(&name).await
    }

    pub async fn pool_list(self: &Arc<Self>) -> Result<Vec<api::Pool>, ControlError> {
        self.check_ready()?;
        let names: Vec<String> = self.pools().keys().cloned().collect();
        let mut out = Vec::with_capacity(names.len());
        for n in &names {
            out.push(self.pool_msg(n).await?);
        }
        Ok(out)
    }

    pub async fn pool_create(
        self: &Arc<Self>,
        req: api::CreatePoolRequest,
    ) -> Result<api::Pool, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        let base = base_of(req.base)?;
        let cluster_size = match req.cluster_size {
            0 => DEFAULT_CLUSTER_SIZE,
            c if c.is_power_of_two() && c >= 4096 => c,
            c => {
                return Err(ControlError::invalid(
                    "cluster_size",
                    format!("{c} must be a power of two of at least 4096"),
                ))
            }
        };
        if req.max_overcommit > MAX_OVERCOMMIT {
            return Err(ControlError::invalid(
                "max_overcommit",
                format!(
                    "{} is more than {MAX_OVERCOMMIT} (0 means the default, {DEFAULT_OVERCOMMIT})",
                    req.max_overcommit
                ),
            ));
        }
        let _g = self
            .lock(
                &[lock::POOLS, &lock::pool(&req.name)],
                &format!("creating pool {:?}", req.name),
            )
            .await?;
        let rec = PoolRec {
            name: req.name.clone(),
            base,
            cluster_size,
            phase: Phase::Creating,
            max_overcommit: req.max_overcommit,
            node: self.node_tag(),
        };
        let existing = {
            let pools = self.pools();
            if let Some(p) = pools.get(&req.name) {
                let mut diff = Vec::new();
                if p.rec.base != rec.base {
                    diff.push(format!(
                        "base is {}, not {}",
                        describe(&p.rec.base),
                        describe(&rec.base)
                    ));
                }
                if p.rec.cluster_size != cluster_size {
                    diff.push(format!(
                        "cluster_size is {}, not {cluster_size}",
                        p.rec.cluster_size
                    ));
                }
                if overcommit_of(&p.rec) != overcommit_of(&rec) {
                    diff.push(format!(
                        "max_overcommit is {}, not {}",
                        overcommit_of(&p.rec),
                        overcommit_of(&rec)
                    ));
                }
                if !diff.is_empty() {
                    return Err(ControlError::AlreadyExists {
                        kind: "pool",
                        name: req.name,
                        difference: diff.join("; "),
                    });
                }
                true
            } else if let Some(other) = pools.values().find(|p| same_base(&p.rec.base, &rec.base)) {
                return Err(ControlError::FailedPrecondition(format!(
                    "{} already holds pool {:?}",
                    describe(&rec.base),
                    other.rec.name
                )));
            } else {
                false
            }
        };
        if existing {
            return self.pool_msg(&req.name).await;
        }
        if let PoolBaseRec::Bdev(b) = &rec.base {
            if let Some(nqn) = self.bdev_exported(b) {
                return Err(ControlError::FailedPrecondition(format!(
                    "bdev {b:?} is exported by {nqn}; formatting it would destroy that namespace"
                )));
            }
        }
        let meta = self.meta_reactor();
        let (r2, m2) = (rec.clone(), meta.clone());
        let (dev, bdev) = self
            .blocking(move |core| {
                let rec = r2;
                let (dev, bdev) = open_base(core, &rec.name, &rec.base, true)?;
                // Never format over an existing pool: that is what Import is for.
                match LvolStore::load(dev.clone(), m2) {
                    Ok(existing) => {
                        let n = existing.name().to_string();
                        drop(existing);
                        close_base(core, &rec);
                        Err(ControlError::FailedPrecondition(format!(
                            "{} already holds a pool ({n:?}); import it instead",
                            describe(&rec.base)
                        )))
                    }
                    Err(LvolError::NotAPool { .. }) => Ok((dev, bdev)),
                    Err(e) => {
                        close_base(core, &rec);
                        Err(ControlError::lvol(
                            format!("checking {} for an existing pool", describe(&rec.base)),
                            e,
                        ))
                    }
                }
            })
            .await?;
        let close = |rec: &PoolRec| {
            let r2 = rec.clone();
            self.blocking(move |core| {
                close_base(core, &r2);
                Ok(())
            })
        };
        // A pool of that name that this instance does not serve loses here.
        let rev = match self.records().put_if(&rec, 0).await {
            Ok(rev) => rev,
            Err(e) => {
                let _ = close(&rec).await;
                return Err(e);
            }
        };
        let r2 = rec.clone();
        let created = self
            .blocking(move |_| {
                LvolStore::create(dev, &r2.name, r2.cluster_size, meta)
                    .map_err(|e| ControlError::lvol(format!("creating pool {:?}", r2.name), e))
            })
            .await;
        let lvs = match created {
            Ok(l) => l,
            Err(e) => {
                let _ = self.records().delete_if::<PoolRec>(&rec.name, rev).await;
                let _ = close(&rec).await;
                return Err(e);
            }
        };
        let rec = PoolRec {
            phase: Phase::Ready,
            ..rec
        };
        self.records().put_if(&rec, rev).await?;
        tracing::info!(pool = %rec.name, base = %describe(&rec.base), "pool created");
        let name = rec.name.clone();
        self.pools().insert(
            name.clone(),
            PoolEntry {
                rec,
                lvs: Some(lvs),
                bdev,
                error: None,
            },
        );
        self.pool_msg(&name).await
    }

    pub async fn pool_import(
        self: &Arc<Self>,
        req: api::ImportPoolRequest,
    ) -> Result<api::Pool, ControlError> {
        self.check_ready()?;
        let base = base_of(req.base)?;
        let base = match base {
            PoolBaseRec::Path { path, .. } => PoolBaseRec::Path { path, size: 0 },
            b => b,
        };
        let _g = self.lock(&[lock::POOLS], "importing a pool").await?;
        let known = self
            .pools()
            .values()
            .find(|p| same_base(&p.rec.base, &base))
            .map(|p| p.rec.name.clone());
        if let Some(name) = known {
            return self.pool_msg(&name).await;
        }
        let core = self.clone();
        let meta = self.meta_reactor();
        let (rec, lvs, bdev) = rpc_submit(Job::blocking(move || {
            // The registry name of a path base needs the pool's name, which only the
            // label knows: open it under a provisional name first.
            let provisional = format!("import:{}", std::process::id());
            let (dev, _) = open_base(&core, &provisional, &base, false)?;
            let cleanup = |core: &Core| {
                close_base(
                    core,
                    &PoolRec {
                        name: provisional.clone(),
                        base: base.clone(),
                        cluster_size: 0,
                        phase: Phase::Ready,
                        max_overcommit: 0,
                        node: core.node_tag(),
                    },
                )
            };
            let lvs = match LvolStore::load(dev, meta.clone()) {
                Ok(l) => l,
                Err(e) => {
                    cleanup(&core);
                    return Err(ControlError::lvol(
                        format!("importing {}", describe(&base)),
                        e,
                    ));
                }
            };
            let name = lvs.name().to_string();
            if core.pools().contains_key(&name) {
                drop(lvs);
                cleanup(&core);
                return Err(ControlError::AlreadyExists {
                    kind: "pool",
                    name,
                    difference: format!(
                        "a pool of that name is already on another base, not {}",
                        describe(&base)
                    ),
                });
            }
            drop(lvs);
            cleanup(&core);
            let (dev, bdev) = open_base(&core, &name, &base, false)?;
            let lvs = LvolStore::load(dev, meta)
                .map_err(|e| ControlError::lvol(format!("importing {}", describe(&base)), e))?;
            let stats = lvs
                .stats()
                .map_err(|e| ControlError::lvol("reading the imported pool", e))?;
            let rec = PoolRec {
                name,
                base,
                cluster_size: stats.cluster_size,
                phase: Phase::Ready,
                max_overcommit: 0,
                node: core.node_tag(),
            };
            Ok((rec, lvs, bdev))
        }))
        .await?;
        let name = rec.name.clone();
        self.records().put_if(&rec, 0).await?;
        self.adopt_volumes(&name, &lvs).await?;
        tracing::info!(pool = %name, "pool imported");
        self.pools().insert(
            name.clone(),
            PoolEntry {
                rec,
                lvs: Some(lvs),
                bdev,
                error: None,
            },
        );
        self.pool_msg(&name).await
    }

    /// Records every volume and snapshot of `lvs` the store does not know.
    pub(crate) async fn adopt_volumes(
        self: &Arc<Self>,
        pool: &str,
        lvs: &Arc<LvolStore>,
    ) -> Result<(), ControlError> {
        let live = rpc_submit(Job::lvol(
            format!("listing pool {pool:?}"),
            lvs.list_async(),
        ))
        .await?;
        let r = self.records();
        for v in live {
            if v.snapshot {
                if r.get::<SnapshotRec>(&v.name).await?.is_none() {
                    tracing::warn!(pool, snapshot = %v.name, "adopting a snapshot the state store did not know");
                    r.put(&SnapshotRec {
                        name: v.name.clone(),
                        pool: pool.to_string(),
                        volume: v.clones.first().cloned().unwrap_or_default(),
                        group_id: String::new(),
                        phase: Phase::Ready,
                    })
                    .await?;
                }
            } else if r.get::<VolumeRec>(&v.name).await?.is_none() {
                tracing::warn!(pool, volume = %v.name, "adopting a volume the state store did not know");
                r.put(&VolumeRec {
                    name: v.name.clone(),
                    pool: pool.to_string(),
                    size: v.size,
                    thin: v.thin,
                    labels: Default::default(),
                    clone_of: None,
                    replicas: Vec::new(),
                    phase: Phase::Ready,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Destroy (`erase`: remove a file base) or export (keep it).
    pub async fn pool_remove(
        self: &Arc<Self>,
        name: String,
        erase: bool,
    ) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("name", &name)?;
        let _g = self
            .lock(
                &[lock::POOLS, &lock::pool(&name)],
                &format!("removing pool {name:?}"),
            )
            .await?;
        let Some(rec) = self.pools().get(&name).map(|p| p.rec.clone()) else {
            return Ok(false);
        };
        let rev = self
            .records()
            .get_rev::<PoolRec>(&name)
            .await?
            .map_or(0, |(_, rev)| rev);
        let r = self.records();
        let mut published = Vec::new();
        for p in r.list::<PublishRec>().await? {
            let vol = r.get::<VolumeRec>(&p.volume).await.ok().flatten();
            if vol.is_some_and(|v| v.pool == name) {
                published.push(p.volume);
            }
        }
        if !published.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "pool {name:?} has published volumes {published:?}; unpublish them first"
            )));
        }
        let vols: Vec<String> = r
            .list::<VolumeRec>()
            .await?
            .into_iter()
            .filter(|v| v.pool == name)
            .map(|v| v.name)
            .chain(
                r.list::<SnapshotRec>()
                    .await?
                    .into_iter()
                    .filter(|s| s.pool == name)
                    .map(|s| s.name),
            )
            .collect();
        if erase && !vols.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "pool {name:?} holds {vols:?}; delete them first (or export the pool)"
            )));
        }
        let rev = r
            .put_if(
                &PoolRec {
                    phase: Phase::Deleting,
                    ..rec.clone()
                },
                rev,
            )
            .await?;
        for v in &vols {
            r.delete::<VolumeRec>(v).await?;
            r.delete::<SnapshotRec>(v).await?;
        }
        let n = name.clone();
        self.blocking(move |core| {
            // Dropping the store stops its engine on its metadata reactor.
            core.pools().remove(&n);
            close_base(core, &rec);
            if let (true, PoolBaseRec::Path { path, .. }) = (erase, &rec.base) {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(pool = %n, path, error = %e, "cannot remove the pool file");
                }
            }
            Ok(())
        })
        .await?;
        r.delete_if::<PoolRec>(&name, rev).await?;
        tracing::info!(pool = %name, erase, "pool removed");
        Ok(true)
    }
}

impl Core {
    /// A pool's record, as the pool table holds it.
    pub fn pool_rec(&self, name: &str) -> Result<PoolRec, ControlError> {
        self.pools()
            .get(name)
            .map(|p| p.rec.clone())
            .ok_or_else(|| ControlError::not_found("pool", name))
    }
}

/// The over-commit cap when a pool does not set one: its volumes may promise ten
/// times its capacity.
pub const DEFAULT_OVERCOMMIT: u32 = 10;
/// The largest cap a pool may set.
pub const MAX_OVERCOMMIT: u32 = 1000;

/// A pool's over-commit cap, its default applied.
pub fn overcommit_of(rec: &PoolRec) -> u32 {
    match rec.max_overcommit {
        0 => DEFAULT_OVERCOMMIT,
        n => n,
    }
}

/// What a pool's volumes promise: the sizes of its volumes and clones (snapshots are
/// read-only images of what their volumes already promise).
pub fn provisioned(lvs: &LvolStore) -> Result<u64, LvolError> {
    Ok(provisioned_of(&lvs.list()?))
}

/// [`provisioned`] of a pool's listing.
fn provisioned_of(vols: &[VolumeInfo]) -> u64 {
    vols.iter()
        .filter(|v| !v.snapshot)
        .fold(0u64, |sum, v| sum.saturating_add(v.size))
}

/// Refuses to promise `more` bytes when the pool's volumes would then promise more
/// than its cap allows.
pub fn check_overcommit(
    rec: &PoolRec,
    lvs: &LvolStore,
    more: u64,
    what: &str,
) -> Result<(), ControlError> {
    let stats = lvs
        .stats()
        .map_err(|e| ControlError::lvol(format!("pool {:?} stats", rec.name), e))?;
    let capacity = stats.total_clusters * stats.cluster_size;
    let cap = overcommit_of(rec);
    let limit = capacity.saturating_mul(u64::from(cap));
    let now = provisioned(lvs)
        .map_err(|e| ControlError::lvol(format!("pool {:?} volumes", rec.name), e))?;
    if now.saturating_add(more) > limit {
        return Err(ControlError::FailedPrecondition(format!(
            "{what}: pool {:?} would promise {} in all, over its max_overcommit of {cap}× its {} \
             capacity ({} promised now); grow the pool, use another, or create it with a \
             larger max_overcommit",
            rec.name,
            human(now.saturating_add(more)),
            human(capacity),
            human(now),
        )));
    }
    Ok(())
}
