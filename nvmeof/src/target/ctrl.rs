//! Controller state shared by a controller's admin and I/O queues: properties and the
//! CC/CSTS state machine, features, keep-alive, asynchronous events, teardown.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::queue::QueueHandle;
use super::subsystem::Subsystem;
use ferrox_nvme_spec::Status;

/// Queue entries an I/O or admin queue may have (CAP.MQES + 1).
pub const MAX_QUEUE_ENTRIES: u32 = 128;
/// I/O queues a controller grants at most.
pub const MAX_IO_QUEUES: u16 = 64;
/// Version reported in VS and Identify: NVMe 1.3.
pub const VERSION: u32 = 0x0001_0300;

/// Register offsets (NVMe-oF property space).
pub mod prop {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1c;
    pub const NSSR: u32 = 0x20;
}

/// CAP: MQES, CQR, TO = 15 s, CSS = NVM, MPSMIN = MPSMAX = 4 KiB.
pub const CAP: u64 = (MAX_QUEUE_ENTRIES as u64 - 1) | (1 << 16) | (30 << 24) | (1 << 37);

const CC_EN: u32 = 1;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;
const CSTS_SHST_COMPLETE: u32 = 0b10 << 2;

/// Per-queue I/O counters, written by the owning reactor only.
#[derive(Default)]
pub struct QueueCounters {
    pub read_cmds: AtomicU64,
    pub write_cmds: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Received data bytes copied out of the staging buffer.
    pub copied_bytes: AtomicU64,
    /// Received data bytes read straight into their command's buffer.
    pub direct_bytes: AtomicU64,
    /// I/O command latency, capsule received → response queued: counts per bucket,
    /// bucket `i` holding latencies below `2^i` µs (the last one: everything else).
    pub latency: [AtomicU64; LATENCY_BUCKETS],
    pub latency_sum_ns: AtomicU64,
}

/// Latency histogram buckets: < 1 µs, < 2 µs, … < 2^(N-2) µs, and the rest.
pub const LATENCY_BUCKETS: usize = 24;

/// A summed latency histogram: cumulative-free counts per bucket, sum, count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

/// A controller's (or subsystem's) I/O counts: commands, bytes and latency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub read_ops: u64,
    pub write_ops: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub latency: Latency,
}

impl IoTotals {
    pub fn add(&mut self, o: &IoTotals) {
        self.read_ops += o.read_ops;
        self.write_ops += o.write_ops;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        for (a, b) in self.latency.buckets.iter_mut().zip(o.latency.buckets) {
            *a += b;
        }
        self.latency.sum_ns += o.latency.sum_ns;
        self.latency.count += o.latency.count;
    }
}

impl Latency {
    /// The upper bound of bucket `i` in seconds (`f64::INFINITY` for the last).
    pub fn upper_bound_secs(i: usize) -> f64 {
        if i + 1 >= LATENCY_BUCKETS {
            f64::INFINITY
        } else {
            (1u64 << i) as f64 / 1e6
        }
    }
}

impl QueueCounters {
    pub fn add(c: &AtomicU64, v: u64) {
        // Single writer: a load and a store, no locked instruction on the I/O path.
        c.store(c.load(Ordering::Relaxed) + v, Ordering::Relaxed);
    }

    /// Records one I/O command's latency (single writer, like `add`).
    pub fn record_latency(&self, ns: u64) {
        let us = ns / 1000;
        let bucket = if us == 0 {
            0
        } else {
            (64 - us.leading_zeros()) as usize
        };
        Self::add(&self.latency[bucket.min(LATENCY_BUCKETS - 1)], 1);
        Self::add(&self.latency_sum_ns, ns);
    }

    fn add_latency_to(&self, l: &mut Latency) {
        for (b, c) in l.buckets.iter_mut().zip(&self.latency) {
            let v = c.load(Ordering::Relaxed);
            *b += v;
            l.count += v;
        }
        l.sum_ns += self.latency_sum_ns.load(Ordering::Relaxed);
    }
}

/// Settable features (current values).
#[derive(Debug, Clone)]
pub struct Features {
    pub arbitration: u32,
    pub power_mgmt: u32,
    pub temp_threshold: u32,
    pub error_recovery: u32,
    pub volatile_write_cache: bool,
    /// Granted (NSQA, NCQA), zero-based; `None` until Set Features Number of Queues.
    pub queues: Option<(u16, u16)>,
    pub irq_coalescing: u32,
    pub write_atomicity: u32,
    pub async_event_config: u32,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            arbitration: 0,
            power_mgmt: 0,
            temp_threshold: 0x0157, // 343 K
            error_recovery: 0,
            volatile_write_cache: true,
            queues: None,
            irq_coalescing: 0,
            write_atomicity: 0,
            async_event_config: 0,
        }
    }
}

/// An I/O queue of this controller.
#[derive(Debug, Clone)]
pub struct QueueRef {
    pub qid: u16,
    pub queue: QueueHandle,
}

#[derive(Default)]
struct Events {
    changed_ns: Vec<u32>,
    overflow: bool,
    /// A namespace notice waits for an AER command.
    pending_notice: bool,
    /// A notice was sent; further ones wait until the host reads the log.
    awaiting_log_read: bool,
}

/// One controller of a subsystem.
pub struct Controller {
    pub cntlid: u16,
    pub subsys: Arc<Subsystem>,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// The admin queue.
    pub admin: QueueHandle,
    pub kato_ms: AtomicU32,
    /// The Volatile Write Cache feature, readable by I/O queues without a lock.
    pub write_cache: AtomicBool,
    regs: Mutex<(u32, u32)>, // (CC, CSTS)
    pub features: Mutex<Features>,
    io_queues: Mutex<Vec<QueueRef>>,
    last_keepalive: Mutex<Instant>,
    dead: AtomicBool,
    events: Mutex<Events>,
    pub counters: Mutex<Vec<Arc<QueueCounters>>>,
    /// What closed I/O queues counted.
    retired: QueueCounters,
    pub created: Instant,
    /// Bytes of pool buffers its queues' R2Ts hold (see `TargetShared::r2t_caps`).
    pub r2t_held: Arc<AtomicUsize>,
}

impl Controller {
    pub fn new(
        cntlid: u16,
        subsys: Arc<Subsystem>,
        hostnqn: &str,
        hostid: [u8; 16],
        kato_ms: u32,
        admin: QueueHandle,
    ) -> Self {
        Self {
            cntlid,
            subsys,
            hostnqn: hostnqn.to_string(),
            hostid,
            admin,
            kato_ms: AtomicU32::new(kato_ms),
            write_cache: AtomicBool::new(true),
            regs: Mutex::new((0, 0)),
            features: Mutex::new(Features::default()),
            io_queues: Mutex::new(Vec::new()),
            last_keepalive: Mutex::new(Instant::now()),
            dead: AtomicBool::new(false),
            events: Mutex::new(Events::default()),
            counters: Mutex::new(Vec::new()),
            retired: QueueCounters::default(),
            created: Instant::now(),
            r2t_held: Arc::default(),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        let (cc, csts) = *self.regs.lock().unwrap_or_else(|e| e.into_inner());
        cc & CC_EN != 0 && csts & CSTS_RDY != 0
    }

    pub fn get_property(&self, offset: u32, size8: bool) -> Result<u64, Status> {
        let (cc, csts) = *self.regs.lock().unwrap_or_else(|e| e.into_inner());
        match (offset, size8) {
            (prop::CAP, true) => Ok(CAP),
            (prop::CAP, false) => Ok(CAP & 0xffff_ffff),
            (prop::VS, false) => Ok(u64::from(VERSION)),
            (prop::CC, false) => Ok(u64::from(cc)),
            (prop::CSTS, false) => Ok(u64::from(csts)),
            (prop::NSSR, false) => Ok(0),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Property Set: only CC is writable. Applies the enable/disable and shutdown
    /// transitions at once (this controller has nothing slow to start or stop).
    pub fn set_property(&self, offset: u32, size8: bool, value: u64) -> Result<(), Status> {
        if offset != prop::CC || size8 {
            return Err(Status::INVALID_FIELD);
        }
        let new = value as u32;
        let disabled = {
            let mut regs = self.regs.lock().unwrap_or_else(|e| e.into_inner());
            let (old, mut csts) = *regs;
            let mut disabled = false;
            if new & CC_EN != 0 && old & CC_EN == 0 {
                let css = (new >> 4) & 7;
                let mps = (new >> 7) & 0xf;
                let ams = (new >> 11) & 7;
                let iosqes = (new >> 16) & 0xf;
                let iocqes = (new >> 20) & 0xf;
                if css != 0 || mps != 0 || ams != 0 || iosqes != 6 || iocqes != 4 {
                    csts |= CSTS_CFS;
                } else {
                    csts |= CSTS_RDY;
                }
            } else if new & CC_EN == 0 && old & CC_EN != 0 {
                // Controller reset: not ready, no shutdown state, I/O queues go away.
                csts = 0;
                disabled = true;
            }
            let shn = (new >> 14) & 3;
            if shn != 0 && (old >> 14) & 3 == 0 {
                csts = (csts & !(3 << 2)) | CSTS_SHST_COMPLETE;
            } else if shn == 0 {
                csts &= !(3 << 2);
            }
            *regs = (new, csts);
            disabled
        };
        if disabled {
            self.close_io_queues();
        }
        Ok(())
    }

    pub fn keep_alive(&self) {
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// True when KATO is set and no Keep Alive came within it.
    pub fn keepalive_expired(&self, now: Instant) -> bool {
        let kato = self.kato_ms.load(Ordering::Relaxed);
        if kato == 0 {
            return false;
        }
        let last = *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last).as_millis() > u128::from(kato)
    }

    pub fn add_io_queue(&self, q: QueueRef) -> Result<(), Status> {
        let mut qs = self.io_queues.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `teardown` takes the queue list with: a queue either
        // joins before teardown (and is closed by it) or is refused.
        if self.is_dead() {
            return Err(Status::CONNECT_INVALID_PARAMETERS);
        }
        if qs.iter().any(|x| x.qid == q.qid) {
            return Err(Status::CONNECT_INVALID_PARAMETERS);
        }
        qs.push(q);
        Ok(())
    }

    pub fn remove_io_queue(&self, qid: u16, conn: u64, counters: &Arc<QueueCounters>) {
        self.io_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|q| !(q.qid == qid && q.queue.conn_id() == conn));
        // Keep what the queue counted (for SMART) but not the queue's entry.
        let mut cs = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cs.iter().position(|c| Arc::ptr_eq(c, counters)) {
            let gone = cs.swap_remove(i);
            let r = &self.retired;
            for (keep, from) in [
                (&r.read_cmds, &gone.read_cmds),
                (&r.write_cmds, &gone.write_cmds),
                (&r.read_bytes, &gone.read_bytes),
                (&r.write_bytes, &gone.write_bytes),
            ] {
                keep.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            for (keep, from) in r.latency.iter().zip(&gone.latency) {
                keep.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            r.latency_sum_ns.fetch_add(
                gone.latency_sum_ns.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    pub fn io_queue_count(&self) -> usize {
        self.io_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn close_io_queues(&self) {
        let qs: Vec<QueueRef> =
            std::mem::take(&mut *self.io_queues.lock().unwrap_or_else(|e| e.into_inner()));
        for q in qs {
            q.queue.close("controller reset or torn down");
        }
    }

    /// Tears the controller down: it leaves the subsystem, and its queues close.
    pub fn teardown(&self, reason: &str) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(cntlid = self.cntlid, subsystem = %self.subsys.nqn, host = %self.hostnqn, reason, "controller torn down");
        self.subsys.unregister_controller(self.cntlid);
        self.close_io_queues();
        self.admin.close(reason);
    }

    /// A namespace was added, removed or resized: log it, and raise a notice for an
    /// outstanding Asynchronous Event Request when the host enabled it.
    pub fn namespace_changed(&self, nsid: u32) {
        {
            let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
            if !ev.changed_ns.contains(&nsid) {
                if ev.changed_ns.len() >= 1024 {
                    ev.overflow = true;
                } else {
                    ev.changed_ns.push(nsid);
                }
            }
            let enabled = self
                .features
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .async_event_config
                & (1 << 8)
                != 0;
            if !enabled || ev.awaiting_log_read {
                return;
            }
            ev.pending_notice = true;
        }
        self.admin.deliver_events();
    }

    /// Takes a pending event for an AER completion: the completion's DW0.
    pub fn take_event(&self) -> Option<u32> {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if !ev.pending_notice {
            return None;
        }
        ev.pending_notice = false;
        ev.awaiting_log_read = true;
        // Type 2 (notice), info 0 (namespace attribute changed), log page 0x04.
        Some(0x2 | (0x04 << 16))
    }

    /// The Changed Namespace List log (up to 1024 NSIDs).
    pub fn changed_ns_log(&self) -> Vec<u32> {
        let ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if ev.overflow {
            vec![0xFFFF_FFFF]
        } else {
            ev.changed_ns.clone()
        }
    }

    /// The host read the Changed Namespace List without RAE: clear it and re-arm the
    /// notice.
    pub fn clear_changed_ns_log(&self) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.changed_ns.clear();
        ev.overflow = false;
        ev.awaiting_log_read = false;
    }

    /// The I/O latency histogram of all this controller's queues, past and present.
    pub fn latency(&self) -> Latency {
        let cs = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut l = Latency::default();
        for c in cs.iter().map(|c| &**c).chain([&self.retired]) {
            c.add_latency_to(&mut l);
        }
        l
    }

    /// Commands, bytes and latency of all this controller's queues, past and present.
    pub fn io_totals(&self) -> IoTotals {
        let (read_ops, write_ops, read_bytes, write_bytes) = self.totals();
        IoTotals {
            read_ops,
            write_ops,
            read_bytes,
            write_bytes,
            latency: self.latency(),
        }
    }

    /// Write data bytes the live I/O queues received straight into their commands'
    /// buffers, and those copied out of a staging buffer: (direct, copied).
    pub fn received_bytes(&self) -> (u64, u64) {
        let cs = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        cs.iter().fold((0, 0), |t, c| {
            (t.0 + l(&c.direct_bytes), t.1 + l(&c.copied_bytes))
        })
    }

    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let cs = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        cs.iter()
            .map(|c| &**c)
            .chain([&self.retired])
            .fold((0, 0, 0, 0), |t, c| {
                (
                    t.0 + l(&c.read_cmds),
                    t.1 + l(&c.write_cmds),
                    t.2 + l(&c.read_bytes),
                    t.3 + l(&c.write_bytes),
                )
            })
    }
}
