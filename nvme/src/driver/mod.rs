//! The NVMe PCIe driver: controller bring-up, the admin queue, reset and shutdown
//! ([`Controller`]), and the per-reactor I/O queue pairs ([`IoQueue`]).
//!
//! Bring-up follows the base specification (3.5.1): disable (CC.EN=0) and wait for
//! CSTS.RDY=0 within CAP.TO, program AQA/ASQ/ACQ, enable with 64/16-byte entries and
//! 4 KiB pages, wait for CSTS.RDY=1 within CAP.TO, Identify Controller, Set Features
//! Number of Queues, then Identify every active namespace. Admin commands are
//! synchronous and serialised by a mutex: they only run at set-up, on a queue's
//! creation and during error recovery, never on the I/O path.
//!
//! Recovery: a timed-out I/O command is aborted (Abort) and the controller reset
//! ([`Controller::reset`] bumps an epoch); every queue pair notices the new epoch on its
//! next poll, fails what it had in flight with [`Error::Reset`] and re-creates its queues.
#![forbid(unsafe_code)]

mod queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrox_reactor::{BufferPool, EventFd};
pub use queue::{BufRef, Data, IoQueue};
use zerocopy::FromBytes;

use crate::backing::DeviceBacking;
use crate::dma::{DmaRegion, PoolMap, PAGE_SIZE};
use crate::spec::register;
use crate::spec::{
    AdminOpcode, Aqa, Cap, Cc, Command, Completion, Csts, FeatureId, Identify, IdentifyController,
    IdentifyNamespace, NumberOfQueues, Oncs, SetFeatures, Status,
};
use crate::Error;

const ADMIN_DEPTH: u16 = 32;
const ADMIN_CQ_OFF: usize = PAGE_SIZE;
const ADMIN_DATA_OFF: usize = 2 * PAGE_SIZE;

/// Driver tunables.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// I/O queue pairs to ask for (one per reactor that opens a channel).
    pub io_queues: u16,
    /// Entries per I/O queue (capped by CAP.MQES + 1 and 1024).
    pub queue_depth: u16,
    /// Deadline of one admin command.
    pub admin_timeout: Duration,
    /// Deadline of one I/O command.
    pub io_timeout: Duration,
    /// Route each I/O queue's completions to an MSI-X vector + eventfd (adaptive parking).
    pub interrupts: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            io_queues: 8,
            queue_depth: 256,
            admin_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            interrupts: true,
        }
    }
}

/// One active namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    pub nsid: u32,
    pub block_size: u32,
    pub num_blocks: u64,
    /// The drive's own globally unique identifiers (zero when it reports none).
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
}

struct Admin {
    mem: Arc<DmaRegion>,
    tail: u16,
    head: u16,
    phase: bool,
    cid: u16,
}

/// An attached, enabled NVMe controller.
pub struct Controller {
    backing: Arc<dyn DeviceBacking>,
    cap: Cap,
    opts: ControllerOptions,
    admin: Mutex<Admin>,
    pool: PoolMap,
    ident: Box<IdentifyController>,
    namespaces: Vec<Namespace>,
    granted: u16,
    free_qids: Mutex<Vec<u16>>,
    epoch: AtomicU64,
    irqs: Vec<Option<EventFd>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.backing.id())
            .field("namespaces", &self.namespaces)
            .field("io_queues", &self.granted)
            .finish()
    }
}

fn trim(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl Controller {
    /// Brings the controller behind `backing` up and maps `pool` for its data buffers.
    pub fn init(
        backing: Arc<dyn DeviceBacking>,
        pool: &'static BufferPool,
        opts: ControllerOptions,
    ) -> Result<Arc<Self>, Error> {
        let cap = Cap(backing.read64(register::CAP));
        let vs = backing.read32(register::VS);
        if vs == u32::MAX {
            return Err(Error::BadData {
                id: backing.id().into(),
                what: "BAR0 reads all ones (device gone?)".into(),
            });
        }
        let mem = backing.alloc_dma(3 * PAGE_SIZE)?;
        let mut admin = Admin {
            mem,
            tail: 0,
            head: 0,
            phase: true,
            cid: 0,
        };
        enable(&*backing, cap, &mut admin)?;
        let pool_map = backing.map_pool(pool)?;
        let mut me = Self {
            backing: backing.clone(),
            cap,
            opts,
            admin: Mutex::new(admin),
            pool: pool_map,
            ident: Box::new(IdentifyController::zeroed()),
            namespaces: Vec::new(),
            granted: 0,
            free_qids: Mutex::new(Vec::new()),
            epoch: AtomicU64::new(0),
            irqs: Vec::new(),
        };
        let raw = me.admin_data(
            Identify {
                cns: crate::spec::Cns(1),
                ..Default::default()
            }
            .to_command(0),
            "Identify Controller",
        )?;
        let ident = IdentifyController::read_from_bytes(&raw).expect("4096-byte page");
        if ident.nn == 0 || ident.mn.iter().all(|&b| b == 0) || ident.vid == 0 && ident.ssvid == 0 {
            return Err(Error::BadData {
                id: backing.id().into(),
                what: "Identify Controller returned no data (NN=0, empty MN): short or failed DMA"
                    .into(),
            });
        }
        me.ident = Box::new(ident);
        let want = me.opts.io_queues.max(1);
        let set = SetFeatures {
            fid: FeatureId::NUMBER_OF_QUEUES,
            cdw11: NumberOfQueues {
                nsq: want - 1,
                ncq: want - 1,
            }
            .to_dword(),
            ..Default::default()
        };
        let c = me.admin_cmd(set.to_command(0), None, "Set Features (Number of Queues)")?;
        let got = NumberOfQueues::from_dword(c.dw0);
        me.granted = want.min(got.nsq + 1).min(got.ncq + 1);
        *me.free_qids.lock().unwrap_or_else(|e| e.into_inner()) = (1..=me.granted).rev().collect();
        me.namespaces = me.scan_namespaces()?;
        if me.opts.interrupts && backing.max_interrupts() > 1 {
            let n = (u32::from(me.granted) + 1).min(backing.max_interrupts()) as usize;
            let mut irqs = vec![None];
            for _ in 1..n {
                irqs.push(Some(EventFd::new().map_err(|e| Error::io("eventfd", e))?));
            }
            let fds: Vec<Option<&EventFd>> = irqs.iter().map(Option::as_ref).collect();
            match backing.set_interrupts(&fds) {
                Ok(()) => me.irqs = irqs,
                Err(e) => {
                    tracing::warn!(id = backing.id(), error = %e, "MSI-X unavailable; queues will only be polled")
                }
            }
        }
        tracing::info!(
            id = backing.id(),
            mn = trim(&me.ident.mn),
            sn = trim(&me.ident.sn),
            vs = format_args!("{vs:#010x}"),
            io_queues = me.granted,
            namespaces = me.namespaces.len(),
            "NVMe controller ready"
        );
        Ok(Arc::new(me))
    }

    fn scan_namespaces(&self) -> Result<Vec<Namespace>, Error> {
        let list = self.admin_data(
            Identify {
                cns: crate::spec::Cns(2),
                ..Default::default()
            }
            .to_command(0),
            "Identify Active Namespace List",
        )?;
        let mut out = Vec::new();
        for nsid in list
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .take_while(|&n| n != 0)
        {
            let raw = self.admin_data(
                Identify {
                    nsid,
                    ..Default::default()
                }
                .to_command(0),
                "Identify Namespace",
            )?;
            let id = IdentifyNamespace::read_from_bytes(&raw).expect("4096-byte page");
            if id.nsze == 0 {
                continue;
            }
            let fmt = id.lba_format();
            let bs = fmt
                .block_size()
                .filter(|&b| b <= 65536 && fmt.ms == 0)
                .ok_or_else(|| Error::BadData {
                    id: self.id().into(),
                    what: format!(
                        "namespace {nsid}: unsupported LBA format (LBADS {}, {} metadata bytes)",
                        fmt.lbads, fmt.ms
                    ),
                })?;
            out.push(Namespace {
                nsid,
                block_size: bs as u32,
                num_blocks: id.nsze,
                nguid: id.nguid,
                eui64: id.eui64,
            });
        }
        Ok(out)
    }

    /// The backing's name (PCI address).
    pub fn id(&self) -> &str {
        self.backing.id()
    }

    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.ident
    }

    /// Active namespaces with a usable format.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// I/O queue pairs the controller granted.
    pub fn io_queues(&self) -> u16 {
        self.granted
    }

    /// Largest transfer of one command in bytes (MDTS, and one PRP list page).
    pub fn max_transfer(&self) -> u32 {
        let list_limit = (PAGE_SIZE / 8) * PAGE_SIZE;
        let mdts = match self.ident.mdts {
            0 => usize::MAX,
            n => PAGE_SIZE << n.min(20),
        };
        list_limit.min(mdts).min(1 << 20) as u32
    }

    /// Optional NVM commands (write zeroes, DSM...).
    pub fn oncs(&self) -> Oncs {
        Oncs::from_bits_retain(self.ident.oncs)
    }

    /// Current reset epoch (queues compare it with theirs).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn pool_map(&self) -> &PoolMap {
        &self.pool
    }

    pub(crate) fn backing(&self) -> &dyn DeviceBacking {
        &*self.backing
    }

    pub(crate) fn options(&self) -> &ControllerOptions {
        &self.opts
    }

    pub(crate) fn irq(&self, qid: u16) -> Option<&EventFd> {
        self.irqs.get(usize::from(qid)).and_then(Option::as_ref)
    }

    pub(crate) fn doorbell(&self, qid: u16, cq: bool) -> usize {
        register::doorbell(qid, cq, self.cap.dstrd())
    }

    pub(crate) fn take_qid(&self) -> Result<u16, Error> {
        self.free_qids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| Error::NoQueue {
                id: self.id().into(),
                granted: self.granted,
            })
    }

    pub(crate) fn put_qid(&self, qid: u16) {
        self.free_qids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(qid);
    }

    fn lock_admin(&self) -> MutexGuard<'_, Admin> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs an admin command whose data (up to 4 KiB) lands in a zeroed page; returns it.
    fn admin_data(&self, cmd: Command, what: &'static str) -> Result<Vec<u8>, Error> {
        let mut a = self.lock_admin();
        a.mem.fill(ADMIN_DATA_OFF, PAGE_SIZE, 0);
        let prp = a.mem.iova() + ADMIN_DATA_OFF as u64;
        self.admin_locked(&mut a, cmd, Some(prp), what)?;
        let mut page = vec![0u8; PAGE_SIZE];
        a.mem.read_bytes(ADMIN_DATA_OFF, &mut page);
        Ok(page)
    }

    /// Runs an admin command (PRP1 = `prp1`) and waits for its completion.
    pub(crate) fn admin_cmd(
        &self,
        cmd: Command,
        prp1: Option<u64>,
        what: &'static str,
    ) -> Result<Completion, Error> {
        let mut a = self.lock_admin();
        self.admin_locked(&mut a, cmd, prp1, what)
    }

    fn admin_locked(
        &self,
        a: &mut Admin,
        mut cmd: Command,
        prp1: Option<u64>,
        what: &'static str,
    ) -> Result<Completion, Error> {
        a.cid = a.cid.wrapping_add(1);
        cmd.cid = a.cid;
        cmd.dptr = [prp1.unwrap_or(0), 0];
        a.mem.write_obj(usize::from(a.tail) * 64, &cmd);
        a.tail = (a.tail + 1) % ADMIN_DEPTH;
        // The SQE's relaxed stores must be visible before the device sees the new tail.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.backing
            .write32(self.doorbell(0, false), u32::from(a.tail));
        let deadline = Instant::now() + self.opts.admin_timeout;
        loop {
            let off = ADMIN_CQ_OFF + usize::from(a.head) * 16;
            // Acquire pairs with the device writing the entry before its phase tag.
            let status = a.mem.atomic_u16(off + 14).load(Ordering::Acquire);
            if (status & 1 != 0) == a.phase {
                let cqe: Completion = a.mem.read_obj(off);
                a.head = (a.head + 1) % ADMIN_DEPTH;
                if a.head == 0 {
                    a.phase = !a.phase;
                }
                self.backing
                    .write32(self.doorbell(0, true), u32::from(a.head));
                if cqe.cid != cmd.cid {
                    // A late completion of an earlier, timed-out command: skip it.
                    continue;
                }
                let st = cqe.status();
                if !st.is_success() {
                    return Err(Error::Command {
                        id: self.id().into(),
                        what,
                        status: st,
                    });
                }
                return Ok(cqe);
            }
            if Csts(self.backing.read32(register::CSTS)).cfs() {
                return Err(Error::Fatal {
                    id: self.id().into(),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::AdminTimeout {
                    id: self.id().into(),
                    what,
                    opcode: cmd.opcode,
                    ms: self.opts.admin_timeout.as_millis() as u64,
                });
            }
            std::hint::spin_loop();
        }
    }

    /// Asks the controller to abort command `cid` of queue `sqid`; `true` if it did.
    pub fn abort(&self, sqid: u16, cid: u16) -> Result<bool, Error> {
        let mut cmd = Command::new(AdminOpcode::ABORT.0, 0);
        cmd.cdw10 = u32::from(sqid) | (u32::from(cid) << 16);
        let c = self.admin_cmd(cmd, None, "Abort")?;
        Ok(c.dw0 & 1 == 0)
    }

    /// Resets the controller (CC.EN 1→0→1), re-creates the admin queue and asks for the
    /// same number of I/O queues; every [`IoQueue`] re-creates itself on its next poll.
    pub fn reset(&self) -> Result<(), Error> {
        let mut a = self.lock_admin();
        tracing::warn!(id = self.id(), "resetting NVMe controller");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        enable(&*self.backing, self.cap, &mut a)?;
        let set = SetFeatures {
            fid: FeatureId::NUMBER_OF_QUEUES,
            cdw11: NumberOfQueues {
                nsq: self.granted - 1,
                ncq: self.granted - 1,
            }
            .to_dword(),
            ..Default::default()
        };
        self.admin_locked(
            &mut a,
            set.to_command(0),
            None,
            "Set Features (Number of Queues)",
        )?;
        Ok(())
    }

    /// Normal shutdown (CC.SHN, wait for CSTS.SHST complete within CAP.TO), controller
    /// disabled, device handed back (interrupts off, DMA unmapped). Queues must be idle.
    pub fn shutdown(&self) -> Result<(), Error> {
        let a = self.lock_admin();
        let b = &*self.backing;
        let mut cc = Cc(b.read32(register::CC));
        cc.set_shn(Cc::SHN_NORMAL);
        b.write32(register::CC, cc.0);
        let r = wait(b, self.cap, "shutdown", |s| s.shst() == Csts::SHST_COMPLETE);
        cc.set_shn(Cc::SHN_NONE);
        cc.set_en(false);
        b.write32(register::CC, cc.0);
        let r2 = wait(b, self.cap, "disable", |s| !s.rdy());
        b.release();
        drop(a);
        tracing::info!(id = self.id(), "NVMe controller shut down and released");
        r.and(r2)
    }
}

/// Waits until `cond(CSTS)` or CAP.TO passes (a CFS is reported at once).
fn wait(
    b: &dyn DeviceBacking,
    cap: Cap,
    what: &'static str,
    cond: impl Fn(Csts) -> bool,
) -> Result<(), Error> {
    let ms = u64::from(cap.to().max(1)) * 500;
    let deadline = Instant::now() + Duration::from_millis(ms);
    loop {
        let csts = Csts(b.read32(register::CSTS));
        if cond(csts) {
            return Ok(());
        }
        if csts.cfs() && what != "disable" {
            return Err(Error::Fatal { id: b.id().into() });
        }
        if Instant::now() > deadline {
            let want = u8::from(what == "enable");
            return Err(Error::ReadyTimeout {
                id: b.id().into(),
                want,
                ms,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Disables the controller, programs the admin queue in `a` and enables it again.
fn enable(b: &dyn DeviceBacking, cap: Cap, a: &mut Admin) -> Result<(), Error> {
    if Cc(b.read32(register::CC)).en() || Csts(b.read32(register::CSTS)).rdy() {
        b.write32(register::CC, 0);
    }
    wait(b, cap, "disable", |s| !s.rdy())?;
    a.mem.fill(0, 2 * PAGE_SIZE, 0);
    a.tail = 0;
    a.head = 0;
    a.phase = true;
    let mut aqa = Aqa(0);
    aqa.set_asqs(ADMIN_DEPTH - 1);
    aqa.set_acqs(ADMIN_DEPTH - 1);
    b.write32(register::AQA, aqa.0);
    b.write64(register::ASQ, a.mem.iova());
    b.write64(register::ACQ, a.mem.iova() + ADMIN_CQ_OFF as u64);
    let mut cc = Cc(0);
    cc.set_css(Cc::CSS_NVM);
    cc.set_mps(0);
    cc.set_iosqes(6);
    cc.set_iocqes(4);
    cc.set_en(true);
    b.write32(register::CC, cc.0);
    wait(b, cap, "enable", |s| s.rdy())
}

/// Status a completion reports for an aborted command.
pub const ABORTED: Status = Status::ABORT_REQUESTED;

#[cfg(test)]
pub(crate) mod tests;
