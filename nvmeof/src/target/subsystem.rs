//! Subsystems, their namespaces, allowed hosts and controllers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ferrox_bdev::{BlockDevice, Ops};

use super::ctrl::Controller;

/// A namespace: a block device exported under an NSID.
pub struct Namespace {
    pub nsid: u32,
    pub bdev: Arc<dyn BlockDevice>,
    /// Stable per (node, subsystem, nsid) and, for a device with a lasting identity
    /// (`Ops::STABLE_UUID`), per device: the same across restarts, distinct across
    /// subsystems, machines and volumes.
    pub nguid: [u8; 16],
    pub uuid: [u8; 16],
}

/// An NVM subsystem (or the discovery subsystem).
pub struct Subsystem {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub discovery: bool,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    /// The listeners (as bound) through which hosts reach it; empty: the
    /// configuration's listeners (see `TargetShared::reaches`).
    pub listeners: Vec<std::net::SocketAddr>,
    namespaces: RwLock<BTreeMap<u32, Arc<Namespace>>>,
    /// Bumped on every namespace change; I/O queues compare it to refresh caches.
    pub ns_generation: AtomicU64,
    controllers: Mutex<BTreeMap<u16, Arc<Controller>>>,
    /// I/O counts of controllers that are gone.
    retired_io: Mutex<super::ctrl::IoTotals>,
    next_cntlid: Mutex<u16>,
    node_id: [u8; 16],
}

/// Largest NSID a subsystem hands out (Identify Controller NN).
pub const MAX_NSID: u32 = 1024;

impl Subsystem {
    pub fn new(
        nqn: &str,
        serial: &str,
        model: &str,
        allow_any_host: bool,
        hosts: Vec<String>,
        node_id: [u8; 16],
    ) -> Self {
        Self {
            nqn: nqn.to_string(),
            serial: serial.to_string(),
            model: model.to_string(),
            discovery: ferrox_nvme_spec::is_discovery_nqn(nqn),
            allow_any_host,
            hosts,
            listeners: Vec::new(),
            namespaces: RwLock::new(BTreeMap::new()),
            ns_generation: AtomicU64::new(0),
            controllers: Mutex::new(BTreeMap::new()),
            retired_io: Mutex::new(Default::default()),
            next_cntlid: Mutex::new(1),
            node_id,
        }
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    /// Adds a namespace; `nsid` 0 picks the lowest free one. Returns the NSID.
    pub fn add_namespace(&self, nsid: u32, bdev: Arc<dyn BlockDevice>) -> Result<u32, String> {
        let mut ns = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let nsid = if nsid == 0 {
            (1..=MAX_NSID)
                .find(|n| !ns.contains_key(n))
                .ok_or("no free NSID")?
        } else {
            nsid
        };
        if nsid > MAX_NSID {
            return Err(format!("NSID {nsid} is above the maximum {MAX_NSID}"));
        }
        if ns.contains_key(&nsid) {
            return Err(format!("NSID {nsid} is already in use in {}", self.nqn));
        }
        // Stable per (node, subsystem, NSID) and, where the device has a lasting
        // identity, per device: a new volume under an old name is a new disk.
        let info = bdev.info();
        let salt: &[u8] = if info.ops.contains(Ops::STABLE_UUID) {
            &info.uuid
        } else {
            &[]
        };
        let nguid = derive_id(&self.node_id, &self.nqn, nsid, 0, salt);
        let mut uuid = derive_id(&self.node_id, &self.nqn, nsid, 1, salt);
        uuid[6] = (uuid[6] & 0x0f) | 0x80; // version 8: vendor-defined
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        ns.insert(
            nsid,
            Arc::new(Namespace {
                nsid,
                bdev,
                nguid,
                uuid,
            }),
        );
        drop(ns);
        self.ns_changed(nsid);
        Ok(nsid)
    }

    /// Puts `bdev` under namespace `nsid` (same NSID, NGUID and UUID): how a grown
    /// volume reaches hosts. Controllers get a namespace-attribute-changed notice;
    /// each queue moves to the new device at its next command, and requests already on
    /// the old one complete there. Refused when the block size differs or the new
    /// device is smaller.
    pub fn replace_namespace_bdev(
        &self,
        nsid: u32,
        bdev: Arc<dyn BlockDevice>,
    ) -> Result<(), String> {
        let mut ns = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let Some(old) = ns.get(&nsid).cloned() else {
            return Err(format!("no namespace {nsid} in {}", self.nqn));
        };
        let (was, now) = (old.bdev.info().block_size, bdev.info().block_size);
        if was != now {
            return Err(format!(
                "namespace {nsid} of {} has {was}-byte blocks, the new device {now}-byte blocks",
                self.nqn
            ));
        }
        let (was, now) = (old.bdev.info().num_blocks, bdev.info().num_blocks);
        if now < was {
            return Err(format!(
                "namespace {nsid} of {} has {was} blocks; a device of {now} would shrink it under its hosts",
                self.nqn
            ));
        }
        ns.insert(
            nsid,
            Arc::new(Namespace {
                nsid,
                bdev,
                nguid: old.nguid,
                uuid: old.uuid,
            }),
        );
        drop(ns);
        self.ns_changed(nsid);
        Ok(())
    }

    pub fn remove_namespace(&self, nsid: u32) -> Result<(), String> {
        let removed = self
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&nsid);
        if removed.is_none() {
            return Err(format!("no namespace {nsid} in {}", self.nqn));
        }
        self.ns_changed(nsid);
        Ok(())
    }

    /// Records a change of `nsid` (added, removed or resized) and raises the
    /// namespace-attribute-changed event on every controller.
    pub fn ns_changed(&self, nsid: u32) {
        self.ns_generation.fetch_add(1, Ordering::Release);
        for c in self.controllers() {
            c.namespace_changed(nsid);
        }
    }

    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&nsid)
            .cloned()
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Allocates a controller ID (1..=0xFFEF) not in use in this subsystem.
    pub fn register_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<Controller>,
    ) -> Option<Arc<Controller>> {
        let mut ctrls = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.next_cntlid.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..0xFFEF {
            let id = *next;
            *next = if id >= 0xFFEF { 1 } else { id + 1 };
            if let std::collections::btree_map::Entry::Vacant(e) = ctrls.entry(id) {
                let c = make(id);
                e.insert(c.clone());
                return Some(c);
            }
        }
        None
    }

    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cntlid)
            .cloned()
    }

    /// Removes a controller; its I/O counts stay in the subsystem's totals (commands
    /// that complete after this are not counted).
    pub fn unregister_controller(&self, cntlid: u16) {
        let gone = self
            .controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&cntlid);
        if let Some(c) = gone {
            self.retired_io
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&c.io_totals());
        }
    }

    /// I/O counts of every controller the subsystem has had, connected or gone.
    pub fn io_totals(&self) -> super::ctrl::IoTotals {
        let mut t = self
            .retired_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for c in self.controllers() {
            t.add(&c.io_totals());
        }
        t
    }

    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// A 128-bit identifier from the node ID, the NQN, the NSID and a domain, by two
/// FNV-1a passes (stable across builds, unlike std's hasher).
fn derive_id(node: &[u8; 16], nqn: &str, nsid: u32, domain: u8, salt: &[u8]) -> [u8; 16] {
    let fnv = |seed: u64| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for &b in node
            .iter()
            .chain(nqn.as_bytes())
            .chain(&nsid.to_le_bytes())
            .chain(&[domain])
            .chain(salt)
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&fnv(0x5a5a).to_be_bytes());
    out[8..].copy_from_slice(&fnv(0xa5a5_0000).to_be_bytes());
    out
}
