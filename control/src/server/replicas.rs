//! A cluster's one API, and volumes of N replicas placed as N lvols.
//!
//! # Forwarding
//!
//! A request about a volume whose pool another node holds (its [`PoolRec::node`]) is
//! carried out there: this node reads that node's record in the registry, connects to
//! one of the control addresses it registered and makes the same call. Over TCP with
//! mutual TLS, only, when this node has a client identity ([`Core::set_peer_tls`]:
//! its own certificate and key, and the cluster's CA as the servers' CA: `ferrox
//! --control-tcp` with `--cluster`); without one, over the node's Unix socket only,
//! which only another daemon of the same machine can reach. The
//! node that holds the pool answers itself, so a request is forwarded at most once.
//!
//! # Replicas
//!
//! `replicas` > 1 (a cluster only): the node that receives the call reads the
//! registry (nodes up, their pools and free space), asks [`placement::place`], records
//! the volume in phase Creating with where each replica goes (the intent), creates
//! each replica lvol (named as the volume) on its node (`CreateReplica`, forwarded),
//! then marks the record Ready. A failure on the way removes the replicas created so
//! far and the record (roll back). Not mirrored: each replica is its own lvol.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::lvol::LvolError;
use tonic::transport::Channel;

use super::nodes::NodeRec;
use super::{lock, Core};
use crate::api;
use crate::api::volume_service_client::VolumeServiceClient;
use crate::error::{ControlError, Kind};
use crate::placement;
use crate::state::{self, record_key, Phase, PoolRec, ReplicaRec, SnapshotRec, Txn, VolumeRec};
use crate::tls::ClientTls;
use crate::validate;

/// The longest a forwarded call may take (a create on a loaded node included).
const FORWARD_PATIENCE: Duration = Duration::from_secs(60);

fn peer_error(node: &str, s: &tonic::Status) -> ControlError {
    let kind = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Kind::InvalidArgument,
        tonic::Code::NotFound => Kind::NotFound,
        tonic::Code::AlreadyExists => Kind::AlreadyExists,
        tonic::Code::FailedPrecondition => Kind::FailedPrecondition,
        tonic::Code::ResourceExhausted => Kind::ResourceExhausted,
        tonic::Code::Aborted => Kind::Aborted,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Kind::Unavailable
        }
        _ => Kind::Internal,
    };
    ControlError::Peer {
        node: node.into(),
        kind,
        msg: s.message().into(),
    }
}

fn unavailable(node: &str, msg: String) -> ControlError {
    ControlError::Peer {
        node: node.into(),
        kind: Kind::Unavailable,
        msg,
    }
}

impl Core {
    /// This node's client identity towards the other nodes' TCP listeners.
    pub(crate) fn set_peer_tls(&self, tls: ClientTls) {
        *self.peer_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(tls);
    }

    /// The id of the node that holds `pool` when it is another node of the cluster.
    pub(crate) async fn pool_elsewhere(&self, pool: &str) -> Result<Option<String>, ControlError> {
        if self.membership.is_none() || self.pools().contains_key(pool) {
            return Ok(None);
        }
        let Some(rec) = self.records().get::<PoolRec>(pool).await? else {
            return Ok(None);
        };
        if rec.node.is_empty() || rec.node == self.node_tag() {
            return Ok(None);
        }
        Ok(Some(rec.node))
    }

    /// The id of the node that holds volume `name` (the pool of its first replica)
    /// when it is another node of the cluster.
    pub(crate) async fn volume_elsewhere(
        &self,
        name: &str,
    ) -> Result<Option<String>, ControlError> {
        if self.membership.is_none() {
            return Ok(None);
        }
        match self.records().get::<VolumeRec>(name).await? {
            Some(v) => self.pool_elsewhere(&v.pool).await,
            None => Ok(None),
        }
    }

    /// Node `id`'s registered record.
    pub(crate) async fn node_rec(&self, id: &str) -> Result<NodeRec, ControlError> {
        let kv = self
            .store
            .get(&state::key("node", id))
            .await?
            .ok_or_else(|| unavailable(id, "not in the node registry".into()))?;
        serde_json::from_slice(&kv.value).map_err(|source| ControlError::Record {
            key: kv.key,
            source,
        })
    }

    /// A channel to node `id`'s control API, and its name.
    async fn peer(&self, id: &str) -> Result<(String, Channel), ControlError> {
        let rec = self.node_rec(id).await?;
        if self.store.get(&state::key("alive", id)).await?.is_none() {
            return Err(unavailable(&rec.name, "the node is down".into()));
        }
        let tls = self
            .peer_tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut why = Vec::new();
        for a in &rec.control {
            // A cluster with certificates speaks mutual TLS only; one without, the
            // Unix socket (a node of the same machine) only.
            let ch = match (&tls, a.strip_prefix("unix:")) {
                (Some(t), None) if a.starts_with("https://") => crate::tls::connect_tls(a, t).await,
                (None, Some(path)) => crate::connect(std::path::Path::new(path)).await,
                _ => continue,
            };
            match ch {
                Ok(ch) => return Ok((rec.name, ch)),
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            why.push(format!(
                "none of its control addresses ({}) is one this node can use",
                rec.control.join(", ")
            ));
        }
        Err(unavailable(&rec.name, why.join("; ")))
    }

    /// Makes call `f` on node `id`.
    pub(crate) async fn forward<T, F, Fut>(&self, id: &str, f: F) -> Result<T, ControlError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (name, ch) = self.peer(id).await?;
        tracing::debug!(node = %name, "forwarding a request");
        match tokio::time::timeout(FORWARD_PATIENCE, f(ch)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(peer_error(&name, &s)),
            Err(_) => Err(unavailable(
                &name,
                format!("no answer in {FORWARD_PATIENCE:?}"),
            )),
        }
    }

    /// Where each replica of `rec` lives, with node names from the registry.
    pub(crate) async fn replica_views(
        &self,
        rec: &VolumeRec,
    ) -> Result<Vec<api::Replica>, ControlError> {
        let mut out = Vec::new();
        for r in &rec.replicas {
            let node = match self.node_rec(&r.node).await {
                Ok(n) => n.name,
                Err(_) => r.node.clone(),
            };
            out.push(api::Replica {
                node,
                node_id: r.node.clone(),
                pool: r.pool.clone(),
            });
        }
        Ok(out)
    }

    /// `CreateReplica`: a replica lvol in a pool of this node. Idempotent.
    pub async fn replica_create(
        self: &Arc<Self>,
        req: api::ReplicaRequest,
    ) -> Result<api::Replica, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        validate::name("pool", &req.pool)?;
        let lvs = self.lvs(&req.pool)?;
        let pool_rec = self.pool_rec(&req.pool)?;
        validate::size("size_bytes", req.size_bytes, pool_rec.cluster_size)?;
        let _g = self
            .lock(
                &[&lock::pool(&req.pool)],
                &format!("creating a replica of {:?}", req.name),
            )
            .await?;
        let (name, size, thin) = (req.name.clone(), req.size_bytes, req.thin);
        self.blocking(move |_| {
            let what = format!("creating a replica of {name:?}");
            let list = lvs
                .list()
                .map_err(|e| ControlError::lvol(what.clone(), e))?;
            if let Some(v) = list.into_iter().find(|v| v.name == name) {
                if !v.snapshot && v.size == size && v.thin == thin {
                    return Ok(()); // a retry
                }
                return Err(ControlError::AlreadyExists {
                    kind: "replica",
                    name,
                    difference: format!(
                        "the pool holds an lvol of that name: size {}, thin {}, snapshot {}",
                        v.size, v.thin, v.snapshot
                    ),
                });
            }
            super::pools::check_overcommit(&pool_rec, &lvs, size, &what)?;
            lvs.create_volume(&name, size, thin)
                .map(drop)
                .map_err(|e| ControlError::lvol(what, e))
        })
        .await?;
        tracing::info!(volume = %req.name, pool = %req.pool, "replica created");
        Ok(api::Replica {
            node: self.ctx.node_name.clone(),
            node_id: self.node_tag(),
            pool: req.pool,
        })
    }

    /// `DestroyReplica`: whether it existed.
    pub async fn replica_destroy(
        self: &Arc<Self>,
        req: api::ReplicaRequest,
    ) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        validate::name("pool", &req.pool)?;
        let lvs = self.lvs(&req.pool)?;
        let _g = self
            .lock(
                &[&lock::pool(&req.pool)],
                &format!("deleting a replica of {:?}", req.name),
            )
            .await?;
        let name = req.name.clone();
        let existed = self
            .blocking(move |_| match lvs.delete(&name) {
                Ok(()) => Ok(true),
                Err(LvolError::NotFound(_)) => Ok(false),
                Err(e) => Err(ControlError::lvol(
                    format!("deleting a replica of {name:?}"),
                    e,
                )),
            })
            .await?;
        if existed {
            tracing::info!(volume = %req.name, pool = %req.pool, "replica deleted");
        }
        Ok(existed)
    }

    /// Creates (`create`) or deletes one replica on the node that holds it.
    pub(crate) async fn replica_on(
        self: &Arc<Self>,
        r: &ReplicaRec,
        rec: &VolumeRec,
        create: bool,
    ) -> Result<(), ControlError> {
        let req = api::ReplicaRequest {
            name: rec.name.clone(),
            pool: r.pool.clone(),
            size_bytes: rec.size,
            thin: rec.thin,
        };
        if r.node == self.node_tag() {
            return if create {
                self.replica_create(req).await.map(drop)
            } else {
                self.replica_destroy(req).await.map(drop)
            };
        }
        if create {
            self.forward(&r.node, |ch| async move {
                VolumeServiceClient::new(ch).create_replica(req).await
            })
            .await
            .map(drop)
        } else {
            self.forward(&r.node, |ch| async move {
                VolumeServiceClient::new(ch).destroy_replica(req).await
            })
            .await
            .map(drop)
        }
    }

    /// The registry as [`placement::place`] takes it.
    async fn placement_input(
        &self,
    ) -> Result<(Vec<placement::Node>, Vec<placement::Pool>), ControlError> {
        let (recs, _) = self.store.range(&state::kind_prefix("node")).await?;
        let (alive, _) = self.store.range(&state::kind_prefix("alive")).await?;
        let cluster: BTreeMap<String, u64> = self
            .records()
            .list::<PoolRec>()
            .await?
            .into_iter()
            .filter(|p| p.phase == Phase::Ready)
            .map(|p| (p.name, p.cluster_size))
            .collect();
        let (mut nodes, mut pools) = (Vec::new(), Vec::new());
        for kv in recs {
            let r: NodeRec =
                serde_json::from_slice(&kv.value).map_err(|source| ControlError::Record {
                    key: kv.key.clone(),
                    source,
                })?;
            let up = alive
                .iter()
                .any(|a| a.key.rsplit('/').next() == Some(r.id.as_str()));
            for p in &r.pools {
                // A pool whose record is gone (being destroyed) is no candidate.
                if let Some(&cluster_size) = cluster.get(&p.name) {
                    pools.push(placement::Pool {
                        name: p.name.clone(),
                        node: r.id.clone(),
                        free_bytes: p.free_bytes,
                        cluster_size,
                    });
                }
            }
            nodes.push(placement::Node {
                id: r.id,
                name: r.name,
                labels: r.labels,
                up,
                cordoned: r.cordoned,
            });
        }
        Ok((nodes, pools))
    }

    /// `Create` with `replicas` > 1 in a cluster.
    pub(crate) async fn volume_create_replicated(
        self: &Arc<Self>,
        req: api::CreateVolumeRequest,
    ) -> Result<api::Volume, ControlError> {
        if !req.pool.is_empty() {
            return Err(ControlError::invalid(
                "pool",
                "leave it empty with replicas > 1: placement chooses the pools",
            ));
        }
        let preq = placement::Request {
            size: req.size_bytes,
            thin: req.thin,
            replicas: req.replicas,
            spread: req.spread.clone(),
        };
        if req.size_bytes == 0 {
            return Err(ControlError::invalid("size_bytes", "must not be 0"));
        }
        // Held until the volume is Ready or rolled back: the leader leaves a create
        // in flight alone (`server/leader.rs`).
        let _g = self
            .lock(
                &[&lock::volume(&req.name)],
                &format!("creating volume {:?}", req.name),
            )
            .await?;
        for _ in 0..lock::MAX_RACES {
            if self
                .records()
                .get::<SnapshotRec>(&req.name)
                .await?
                .is_some()
            {
                return Err(ControlError::AlreadyExists {
                    kind: "object",
                    name: req.name,
                    difference: "it is a snapshot, not a volume".into(),
                });
            }
            if let Some((old, rev)) = self.records().get_rev::<VolumeRec>(&req.name).await? {
                if old.phase != Phase::Ready && !old.replicas.is_empty() {
                    // Not in flight (this call holds its lock): a crash interrupted it.
                    return Err(ControlError::Aborted(format!(
                        "volume {:?} was left {:?} by an interrupted change; the cluster's leader finishes or rolls it back; retry",
                        req.name, old.phase
                    )));
                }
                if old.phase != Phase::Ready {
                    self.settled::<VolumeRec>(&req.name, rev).await?;
                    continue;
                }
                let mut diff = Vec::new();
                let n = old.replicas.len().max(1);
                if n != req.replicas as usize {
                    diff.push(format!("it has {n} replicas, not {}", req.replicas));
                }
                if old.size != req.size_bytes {
                    diff.push(format!(
                        "size_bytes is {}, not {}",
                        old.size, req.size_bytes
                    ));
                }
                if old.thin != req.thin {
                    diff.push(format!("thin is {}, not {}", old.thin, req.thin));
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
                return self.volume_get(old.name).await;
            }
            let (nodes, pools) = self.placement_input().await?;
            let choices = placement::place(&nodes, &pools, &preq).map_err(|e| {
                if let Some(reason) = e.failure_reason() {
                    self.count_placement_failure(reason);
                }
                ControlError::from(e)
            })?;
            let replicas: Vec<ReplicaRec> = choices
                .iter()
                .map(|c| ReplicaRec {
                    node: c.node.clone(),
                    pool: c.pool.clone(),
                })
                .collect();
            let rec = VolumeRec {
                name: req.name.clone(),
                pool: replicas[0].pool.clone(),
                size: req.size_bytes,
                thin: req.thin,
                labels: req.labels.clone(),
                clone_of: None,
                phase: Phase::Creating,
                replicas,
            };
            let claim = Txn::new()
                .when(record_key::<VolumeRec>(&req.name), 0)
                .when(record_key::<SnapshotRec>(&req.name), 0);
            let Some(rev) = self.claim(claim, &rec).await? else {
                continue;
            };
            for (i, r) in rec.replicas.iter().enumerate() {
                if let Err(e) = self.replica_on(r, &rec, true).await {
                    // Roll back: the ones made, and this one (a timeout may have made it).
                    let mut left = false;
                    for done in &rec.replicas[..=i] {
                        if let Err(e) = self.replica_on(done, &rec, false).await {
                            tracing::warn!(volume = %rec.name, pool = %done.pool, error = %e,
                                "cannot remove a replica while rolling back; left to the cluster's leader");
                            left = true;
                        }
                    }
                    if left {
                        // The record stays, in Deleting, until the leader removes
                        // what is left: no replica is ever without a record.
                        let deleting = VolumeRec {
                            phase: Phase::Deleting,
                            ..rec.clone()
                        };
                        self.records().put_if(&deleting, rev).await?;
                    } else {
                        self.records()
                            .delete_if::<VolumeRec>(&rec.name, rev)
                            .await?;
                    }
                    return Err(e);
                }
                super::leader::test_stop_point(i + 1).await;
            }
            let rec = rec.in_phase_ready();
            self.records().put_if(&rec, rev).await?;
            tracing::info!(volume = %rec.name, replicas = rec.replicas.len(), "replicated volume created");
            return self.volume_get(rec.name).await;
        }
        Err(lock::raced("volume", &req.name))
    }

    /// `Destroy` of a volume of several replicas: the record goes to Deleting, every
    /// replica goes (on its node), then the record. A replica that cannot be removed
    /// (its node down) puts the record back.
    pub(crate) async fn volume_destroy_replicated(
        self: &Arc<Self>,
        name: String,
    ) -> Result<bool, ControlError> {
        let _g = self
            .lock(
                &[&lock::volume(&name)],
                &format!("deleting volume {name:?}"),
            )
            .await?;
        let Some((rec, rev)) = self.records().get_rev::<VolumeRec>(&name).await? else {
            return Ok(false);
        };
        if rec.phase == Phase::Creating {
            return Err(ControlError::Aborted(format!(
                "volume {name:?} was left creating by an interrupted create; the cluster's leader finishes or rolls it back; retry"
            )));
        }
        if self
            .records()
            .get::<state::PublishRec>(&name)
            .await?
            .is_some()
        {
            return Err(ControlError::FailedPrecondition(format!(
                "volume {name:?} is published; unpublish it first"
            )));
        }
        let guard = Txn::new()
            .when(record_key::<VolumeRec>(&name), rev)
            .when(record_key::<state::PublishRec>(&name), 0);
        let deleting = VolumeRec {
            phase: Phase::Deleting,
            ..rec.clone()
        };
        let rev = self
            .records()
            .txn(state::put_record(guard, &deleting)?)
            .await?;
        for r in &rec.replicas {
            if let Err(e) = self.replica_on(r, &rec, false).await {
                self.records().put_if(&rec, rev).await?;
                return Err(e);
            }
        }
        self.records().delete_if::<VolumeRec>(&name, rev).await?;
        tracing::info!(volume = %name, "replicated volume deleted");
        Ok(true)
    }
}

impl VolumeRec {
    fn in_phase_ready(self) -> Self {
        Self {
            phase: Phase::Ready,
            ..self
        }
    }
}
