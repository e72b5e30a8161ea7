//! Publishing volumes as NVMe/TCP subsystems.

use std::sync::Arc;

use ferrox_nvmeof::{SubsystemConfig, TargetError};

use super::lock::{self, Locks};
use super::{rpc_submit, Core, Job};
use crate::api;
use crate::api::target_service_client::TargetServiceClient;
use crate::error::ControlError;
use crate::state::{record_key, Phase, PublishRec, Record, Txn, VolumeRec};
use crate::validate;

/// What `Publish` says about listeners.
const LISTENER_NOTE: &str =
    "reachable through the running listeners that match address and port (the configuration's listeners when neither is given); with both given and no such listener, one is opened";

impl Core {
    /// The running listeners `rec` asks for: those matching its address and port, or
    /// an empty list for "the configuration's listeners".
    fn rec_listeners(&self, rec: &PublishRec) -> Vec<std::net::SocketAddr> {
        if rec.address.is_empty() && rec.port == 0 {
            return Vec::new();
        }
        self.ctx
            .target
            .listeners()
            .into_iter()
            .filter(|a| {
                (rec.address.is_empty() || a.ip().to_string() == rec.address)
                    && (rec.port == 0 || u32::from(a.port()) == rec.port)
            })
            .collect()
    }

    fn publish_response(&self, rec: &PublishRec) -> api::PublishResponse {
        // The listeners the exported subsystem was given (the filter may match more
        // by now, but those do not reach it).
        let t = &self.ctx.target;
        let listeners = t
            .subsystem(&rec.nqn)
            .map(|s| t.listeners_of(&s))
            .unwrap_or_default();
        let host = rec
            .hosts
            .first()
            .map(|h| format!(" --hostnqn {h}"))
            .unwrap_or_default();
        api::PublishResponse {
            nqn: rec.nqn.clone(),
            listeners: listeners.iter().map(ToString::to_string).collect(),
            connect: listeners
                .iter()
                .map(|a| {
                    format!(
                        "nvme connect -t tcp -a {} -s {} -n {}{host}",
                        a.ip(),
                        a.port(),
                        rec.nqn
                    )
                })
                .collect(),
            note: LISTENER_NOTE.into(),
        }
    }

    /// Makes sure a running listener matches `rec`'s filter: with an address and a
    /// port and no such listener, opens one (it closes once no published volume
    /// names it; a restart opens it again for the publications that need it).
    async fn ensure_listener(self: &Arc<Self>, rec: &PublishRec) -> Result<(), ControlError> {
        if (rec.address.is_empty() && rec.port == 0) || !self.rec_listeners(rec).is_empty() {
            return Ok(());
        }
        let (Ok(ip), Ok(port)) = (
            rec.address.parse::<std::net::IpAddr>(),
            u16::try_from(rec.port),
        ) else {
            return Err(ControlError::FailedPrecondition(format!(
                "no running listener matches {:?}:{} ({:?}); give both an address and a port to open one",
                rec.address,
                rec.port,
                self.ctx.target.listeners()
            )));
        };
        if port == 0 {
            return Err(ControlError::FailedPrecondition(format!(
                "no running listener on {ip} ({:?}); give a port to open one",
                self.ctx.target.listeners()
            )));
        }
        let addr = std::net::SocketAddr::new(ip, port);
        let target = self.ctx.target.clone();
        rpc_submit(Job::blocking(move || {
            target
                .add_listener(addr)
                .map(|_| ())
                .map_err(|source| ControlError::Target {
                    during: format!("opening a listener on {addr}"),
                    source,
                })
        }))
        .await
    }

    /// Adds the subsystem of `rec` to the target (on the target's reactor).
    pub(crate) async fn export(self: &Arc<Self>, rec: &PublishRec) -> Result<(), ControlError> {
        let vol = self
            .records()
            .get::<VolumeRec>(&rec.volume)
            .await?
            .ok_or_else(|| ControlError::not_found("volume", rec.volume.clone()))?;
        let lvs = self.lvs(&vol.pool)?;
        let name = vol.name.clone();
        let bdev = rpc_submit(Job::blocking(move || {
            lvs.volume(&name)
                .map_err(|e| ControlError::lvol(format!("opening volume {name:?}"), e))
        }))
        .await?;
        let uuid = ferrox_bdev::BlockDevice::info(&*bdev).uuid;
        self.ensure_listener(rec).await?;
        let sc = SubsystemConfig {
            nqn: rec.nqn.clone(),
            serial: format!("FX{}", &super::pools::hex(&uuid)[..18]),
            model: "Ferrox volume".into(),
            allow_any_host: rec.any_host,
            hosts: rec.hosts.clone(),
            namespaces: vec![(1, bdev)],
            listeners: self.rec_listeners(rec),
        };
        let target = self.ctx.target.clone();
        let nqn = rec.nqn.clone();
        rpc_submit(Job::on_reactor(self.target_reactor(), move |_r| {
            target
                .add_subsystem(sc)
                .map(|_| ())
                .inspect_err(|_| {
                    // A listener opened for it above would serve nobody.
                    target.close_unused_listeners();
                })
                .map_err(|source| match source {
                    TargetError::Duplicate(_) => ControlError::AlreadyExists {
                        kind: "subsystem",
                        name: nqn,
                        difference: "it exports something else".into(),
                    },
                    source => ControlError::Target {
                        during: format!("adding subsystem {nqn}"),
                        source,
                    },
                })
        }))
        .await
    }

    /// Removes subsystem `nqn` from the target; true when it was there.
    pub(crate) async fn unexport(self: &Arc<Self>, nqn: &str) -> Result<bool, ControlError> {
        let target = self.ctx.target.clone();
        let nqn = nqn.to_string();
        rpc_submit(Job::on_reactor(self.target_reactor(), move |_r| {
            if target.subsystem(&nqn).is_none() {
                return Ok(false);
            }
            target
                .remove_subsystem(&nqn)
                .map(|()| true)
                .map_err(|source| ControlError::Target {
                    during: format!("removing subsystem {nqn}"),
                    source,
                })
        }))
        .await
    }

    /// The locks a change of `volume`'s publication takes: its pool's and the
    /// target's.
    async fn lock_publication(&self, volume: &str, what: &str) -> Result<Locks, ControlError> {
        match self.records().get::<VolumeRec>(volume).await? {
            Some(v) => self.lock(&[&lock::pool(&v.pool), lock::TARGET], what).await,
            None => self.lock(&[lock::TARGET], what).await,
        }
    }

    pub async fn publish(
        self: &Arc<Self>,
        req: api::PublishRequest,
    ) -> Result<api::PublishResponse, ControlError> {
        self.check_ready()?;
        validate::name("volume", &req.volume)?;
        if let Some(node) = self.volume_elsewhere(&req.volume).await? {
            return self
                .forward(&node, |ch| async move {
                    TargetServiceClient::new(ch).publish(req).await
                })
                .await;
        }
        let nqn = if req.nqn.is_empty() {
            format!("{}{}", validate::NQN_PREFIX, req.volume)
        } else {
            req.nqn.clone()
        };
        validate::nqn("nqn", &nqn)?;
        let mut hosts = req.hosts.clone();
        for h in &hosts {
            validate::nqn("hosts", h)?;
        }
        hosts.sort();
        hosts.dedup();
        match (req.any_host, hosts.is_empty()) {
            (false, true) => {
                return Err(ControlError::invalid(
                    "hosts",
                    "name at least one host NQN, or set any_host",
                ))
            }
            (true, false) => {
                return Err(ControlError::invalid(
                    "any_host",
                    "either list hosts or allow any host, not both",
                ))
            }
            _ => {}
        }
        if !req.address.is_empty() && req.address.parse::<std::net::IpAddr>().is_err() {
            return Err(ControlError::invalid(
                "address",
                format!("{:?} is not an IP address", req.address),
            ));
        }
        if req.port > u32::from(u16::MAX) {
            return Err(ControlError::invalid(
                "port",
                format!("{} is not a TCP port", req.port),
            ));
        }
        let _g = self
            .lock_publication(&req.volume, &format!("publishing volume {:?}", req.volume))
            .await?;
        let rec = PublishRec {
            volume: req.volume.clone(),
            nqn,
            hosts,
            any_host: req.any_host,
            phase: Phase::Creating,
            // The canonical form, so "::1" and "0:0::1" compare equal.
            address: req
                .address
                .parse::<std::net::IpAddr>()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            port: req.port,
        };
        if (!rec.address.is_empty() || rec.port != 0)
            && self.rec_listeners(&rec).is_empty()
            && (rec.address.is_empty() || rec.port == 0)
        {
            return Err(ControlError::FailedPrecondition(format!(
                "no running listener on {}:{} ({:?}); {LISTENER_NOTE}",
                req.address,
                req.port,
                self.ctx.target.listeners()
            )));
        }
        if let Some(old) = self.records().get::<PublishRec>(&req.volume).await? {
            let mut diff = Vec::new();
            if old.nqn != rec.nqn {
                diff.push(format!("nqn is {}, not {}", old.nqn, rec.nqn));
            }
            if old.hosts != rec.hosts {
                diff.push(format!("hosts are {:?}, not {:?}", old.hosts, rec.hosts));
            }
            if old.any_host != rec.any_host {
                diff.push(format!(
                    "any_host is {}, not {}",
                    old.any_host, rec.any_host
                ));
            }
            if (&old.address, old.port) != (&rec.address, rec.port) {
                diff.push(format!(
                    "listener filter is {:?}:{}, not {:?}:{}",
                    old.address, old.port, rec.address, rec.port
                ));
            }
            if !diff.is_empty() {
                return Err(ControlError::AlreadyExists {
                    kind: "publication of volume",
                    name: req.volume,
                    difference: diff.join("; "),
                });
            }
            return Ok(self.publish_response(&old));
        }
        self.volume_get(req.volume.clone()).await?;
        let vol_rev = self
            .records()
            .get_rev::<VolumeRec>(&req.volume)
            .await?
            .map_or(0, |(_, rev)| rev);
        if self.ctx.target.subsystem(&rec.nqn).is_some() {
            return Err(ControlError::AlreadyExists {
                kind: "subsystem",
                name: rec.nqn,
                difference: "it exports something else".into(),
            });
        }
        // Neither published nor changed since it was read, or this loses the race.
        let claim = Txn::new()
            .when(record_key::<PublishRec>(&rec.volume), 0)
            .when(record_key::<VolumeRec>(&rec.volume), vol_rev);
        let Some(rev) = self.claim(claim, &rec).await? else {
            return Err(lock::raced("publication of volume", &rec.volume));
        };
        if let Err(e) = self.export(&rec).await {
            self.records()
                .delete_if::<PublishRec>(&rec.volume, rev)
                .await?;
            return Err(e);
        }
        let rec = PublishRec {
            phase: Phase::Ready,
            ..rec
        };
        self.records().put_if(&rec, rev).await?;
        tracing::info!(volume = %rec.volume, nqn = %rec.nqn, "volume published");
        Ok(self.publish_response(&rec))
    }

    pub async fn unpublish(self: &Arc<Self>, volume: String) -> Result<bool, ControlError> {
        self.check_ready()?;
        validate::name("volume", &volume)?;
        if let Some(node) = self.volume_elsewhere(&volume).await? {
            let req = api::UnpublishRequest { volume };
            return self
                .forward(&node, |ch| async move {
                    TargetServiceClient::new(ch).unpublish(req).await
                })
                .await
                .map(|r| r.existed);
        }
        let _g = self
            .lock_publication(&volume, &format!("unpublishing volume {volume:?}"))
            .await?;
        let Some((rec, rev)) = self.records().get_rev::<PublishRec>(&volume).await? else {
            return Ok(false);
        };
        let rev = self
            .records()
            .put_if(&rec.in_phase(Phase::Deleting), rev)
            .await?;
        self.unexport(&rec.nqn).await?;
        self.records().delete_if::<PublishRec>(&volume, rev).await?;
        tracing::info!(volume = %rec.volume, nqn = %rec.nqn, "volume unpublished");
        Ok(true)
    }

    pub async fn subsystems(self: &Arc<Self>) -> Result<Vec<api::Subsystem>, ControlError> {
        self.check_ready()?;
        let by_nqn = self
            .records()
            .list::<PublishRec>()
            .await?
            .into_iter()
            .map(|p| (p.nqn, p.volume))
            .collect::<std::collections::BTreeMap<_, _>>();
        let target = self.ctx.target.clone();
        // A consistent view of controllers and namespaces, taken on the target's reactor.
        rpc_submit(Job::on_reactor(self.target_reactor(), move |_r| {
            Ok(target
                .subsystems()
                .iter()
                .map(|s| api::Subsystem {
                    nqn: s.nqn.clone(),
                    serial: s.serial.clone(),
                    model: s.model.clone(),
                    any_host: s.allow_any_host,
                    hosts: s.hosts.clone(),
                    namespaces: s
                        .namespaces()
                        .iter()
                        .map(|n| {
                            let i = n.bdev.info();
                            api::Namespace {
                                nsid: n.nsid,
                                bdev: i.name.clone(),
                                size_bytes: i.num_blocks * u64::from(i.block_size),
                                block_size: i.block_size,
                            }
                        })
                        .collect(),
                    controllers: s
                        .controllers()
                        .iter()
                        .map(|c| api::ControllerInfo {
                            cntlid: u32::from(c.cntlid),
                            hostnqn: c.hostnqn.clone(),
                        })
                        .collect(),
                    listeners: target
                        .listeners_of(s)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    volume: by_nqn.get(&s.nqn).cloned().unwrap_or_default(),
                    discovery: s.discovery,
                })
                .collect())
        }))
        .await
    }
}
