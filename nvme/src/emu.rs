//! An in-process NVMe PCIe controller: the [`DeviceBacking`] the unit tests (and fault
//! injection) drive the real driver against.
//!
//! It models BAR0 (CAP, VS, CC, CSTS, AQA, ASQ, ACQ and doorbells with stride 0), the
//! admin commands the driver issues (Identify CNS 0/1/2, Set Features Number of Queues,
//! Create/Delete I/O SQ/CQ, Abort) and the NVM commands Read, Write (FUA), Flush, Write
//! Zeroes and Dataset Management (deallocate), over RAM namespaces. Commands run
//! synchronously when their SQ tail doorbell is written, like an infinitely fast device;
//! data moves through a [`DmaSpace`] by IOVA, PRP lists included (and checked, so a
//! malformed list is a `PRP_OFFSET_INVALID` completion, as on hardware).
//!
//! Faults ([`Fault`]) make chosen commands fail with a status, vanish (a timeout),
//! return short data or set CSTS.CFS; [`EmulatedController::set_never_ready`] keeps
//! CSTS.RDY at 0.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrox_reactor::{BufferPool, EventFd};
use zerocopy::{FromBytes, IntoBytes};

use crate::backing::DeviceBacking;
use crate::dma::{DmaRegion, DmaSpace, PoolMap, PAGE_SIZE};
use crate::spec::register;
use crate::spec::{
    AdminOpcode, Aqa, Cap, Cc, Command, Completion, Csts, DsmRange, IdentifyController,
    IdentifyNamespace, IoOpcode, LbaFormat, NumberOfQueues, Oncs, Status, Vs,
};
use crate::Error;

/// Which queue a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// The admin queue.
    Admin,
    /// Any I/O queue.
    Io,
}

/// What an injected fault does to a matching command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Complete with this status.
    Status(Status),
    /// Never complete (until aborted or the controller is reset).
    Drop,
    /// Transfer only this many bytes of the data, then succeed.
    ShortData(usize),
    /// Set CSTS.CFS and stop processing commands.
    Fatal,
}

/// One injected fault: the next `times` commands with `opcode` on `queue` get `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub queue: QueueKind,
    pub opcode: u8,
    pub kind: FaultKind,
    pub times: u32,
}

/// Shape of the emulated controller.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// (blocks, block size) per namespace, NSIDs from 1.
    pub namespaces: Vec<(u64, u32)>,
    /// I/O queue pairs the controller grants at most.
    pub max_io_queues: u16,
    /// CAP.MQES (zero-based).
    pub mqes: u16,
    /// CAP.TO in 500 ms units.
    pub timeout_units: u8,
    /// MDTS (2^n pages; 0: no limit).
    pub mdts: u8,
    /// MSI-X vectors.
    pub msix: u32,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            namespaces: vec![(2048, 512)],
            max_io_queues: 4,
            mqes: 255,
            timeout_units: 1,
            mdts: 5,
            msix: 8,
        }
    }
}

struct Sq {
    base: u64,
    size: u16,
    head: u16,
    cqid: u16,
}

struct Cq {
    base: u64,
    size: u16,
    tail: u16,
    phase: bool,
    ien: bool,
    iv: u16,
}

#[derive(Default)]
struct State {
    cc: Cc,
    csts: Csts,
    aqa: Aqa,
    asq: u64,
    acq: u64,
    sqs: HashMap<u16, Sq>,
    cqs: HashMap<u16, Cq>,
    granted: u16,
    held: Vec<(u16, u16)>,
    faults: Vec<Fault>,
    never_ready: bool,
    irqs: Vec<Option<EventFd>>,
    ns: Vec<(u32, Vec<u8>)>,
    next_iova: u64,
    doorbells: u64,
    commands: u64,
    opcodes: Vec<(QueueKind, u8)>,
}

/// Counters of what the driver did, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// SQ tail doorbell writes.
    pub sq_doorbells: u64,
    /// Commands executed (dropped ones included).
    pub commands: u64,
    /// Times CC.EN went from 1 to 0.
    pub resets: u64,
}

/// The emulated controller; see the module documentation.
pub struct EmulatedController {
    cfg: EmuConfig,
    space: DmaSpace,
    state: Mutex<State>,
    resets: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for EmulatedController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedController")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl EmulatedController {
    /// A controller with RAM namespaces of the configured sizes.
    pub fn new(cfg: EmuConfig) -> Arc<Self> {
        let ns = cfg
            .namespaces
            .iter()
            .map(|&(blocks, bs)| (bs, vec![0u8; (blocks * u64::from(bs)) as usize]))
            .collect();
        Arc::new(Self {
            cfg,
            space: DmaSpace::default(),
            state: Mutex::new(State {
                ns,
                next_iova: 0x1000_0000,
                ..State::default()
            }),
            resets: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects a fault (faults match in the order injected).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Keeps CSTS.RDY at 0 after CC.EN is set (a controller that never comes up).
    pub fn set_never_ready(&self, on: bool) {
        self.lock().never_ready = on;
    }

    /// Sets CSTS.CFS now.
    pub fn set_fatal(&self) {
        self.lock().csts.set_cfs(true);
    }

    /// Namespace `nsid`'s bytes `[offset, offset + len)`.
    pub fn ns_bytes(&self, nsid: u32, offset: usize, len: usize) -> Vec<u8> {
        self.lock().ns[nsid as usize - 1].1[offset..offset + len].to_vec()
    }

    /// What the driver did so far.
    pub fn stats(&self) -> EmuStats {
        let s = self.lock();
        EmuStats {
            sq_doorbells: s.doorbells,
            commands: s.commands,
            resets: self.resets.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Every command executed so far: (queue, opcode).
    pub fn opcodes(&self) -> Vec<(QueueKind, u8)> {
        self.lock().opcodes.clone()
    }

    fn cap(&self) -> Cap {
        let mut cap = Cap(0);
        cap.set_mqes(self.cfg.mqes);
        cap.set_cqr(true);
        cap.set_to(self.cfg.timeout_units);
        cap.set_css(Cap::CSS_NVM);
        cap
    }

    fn enable(&self, s: &mut State) {
        if s.never_ready {
            return;
        }
        let sq_size = s.aqa.asqs() + 1;
        let cq_size = s.aqa.acqs() + 1;
        s.sqs.insert(
            0,
            Sq {
                base: s.asq,
                size: sq_size,
                head: 0,
                cqid: 0,
            },
        );
        s.cqs.insert(
            0,
            Cq {
                base: s.acq,
                size: cq_size,
                tail: 0,
                phase: true,
                ien: false,
                iv: 0,
            },
        );
        s.csts.set_rdy(true);
    }

    fn disable(&self, s: &mut State) {
        s.sqs.clear();
        s.cqs.clear();
        s.held.clear();
        s.granted = 0;
        s.csts = Csts(0);
        self.resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn ring_sq(&self, s: &mut State, qid: u16, tail: u16) {
        s.doorbells += 1;
        loop {
            if s.csts.cfs() {
                return;
            }
            let Some(sq) = s.sqs.get_mut(&qid) else {
                return;
            };
            if sq.head == tail || tail >= sq.size {
                return;
            }
            let addr = sq.base + u64::from(sq.head) * 64;
            sq.head = (sq.head + 1) % sq.size;
            let (sqhd, cqid) = (sq.head, sq.cqid);
            let mut cmd = Command::default();
            if !self.space.read(addr, cmd.as_mut_bytes()) {
                s.csts.set_cfs(true);
                return;
            }
            s.commands += 1;
            let kind = if qid == 0 {
                QueueKind::Admin
            } else {
                QueueKind::Io
            };
            s.opcodes.push((kind, cmd.opcode));
            let fault = take_fault(s, kind, cmd.opcode);
            let result = match fault {
                Some(FaultKind::Drop) => {
                    s.held.push((qid, cmd.cid));
                    continue;
                }
                Some(FaultKind::Fatal) => {
                    s.csts.set_cfs(true);
                    return;
                }
                Some(FaultKind::Status(st)) => Err(st),
                Some(FaultKind::ShortData(n)) => self.execute(s, qid, &cmd, Some(n)),
                None => self.execute(s, qid, &cmd, None),
            };
            let cqe = match result {
                Ok(dw0) => Completion::success(cmd.cid).with_dw0(dw0),
                Err(st) => Completion::new(cmd.cid, st),
            };
            self.post(s, cqid, cqe.with_sq(qid, sqhd));
        }
    }

    fn post(&self, s: &mut State, cqid: u16, mut cqe: Completion) {
        let Some(cq) = s.cqs.get_mut(&cqid) else {
            return;
        };
        cqe.set_phase(cq.phase);
        let addr = cq.base + u64::from(cq.tail) * 16;
        // Body first, then the status word with the phase tag: the driver reads the
        // phase with Acquire and only then the rest.
        let bytes = cqe.as_bytes();
        self.space.write(addr, &bytes[..14]);
        self.space.write(addr + 14, &bytes[14..]);
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        if cq.ien {
            if let Some(Some(fd)) = s.irqs.get(cq.iv as usize) {
                fd.notify();
            }
        }
    }

    /// Runs one command; `Ok(dw0)` or an error status.
    fn execute(
        &self,
        s: &mut State,
        qid: u16,
        cmd: &Command,
        short: Option<usize>,
    ) -> Result<u32, Status> {
        if qid == 0 {
            self.admin(s, cmd, short)
        } else {
            self.io(s, cmd, short)
        }
    }

    fn dma_to_host(&self, cmd: &Command, data: &[u8], short: Option<usize>) -> Result<(), Status> {
        let n = short.unwrap_or(data.len()).min(data.len());
        let mut done = 0;
        for (iova, len) in prp_segments(&self.space, cmd.dptr, data.len())? {
            if done >= n {
                break;
            }
            let len = len.min(n - done);
            if !self.space.write(iova, &data[done..done + len]) {
                return Err(Status::DATA_TRANSFER_ERROR);
            }
            done += len;
        }
        Ok(())
    }

    fn dma_from_host(&self, cmd: &Command, data: &mut [u8]) -> Result<(), Status> {
        let mut done = 0;
        for (iova, len) in prp_segments(&self.space, cmd.dptr, data.len())? {
            if !self.space.read(iova, &mut data[done..done + len]) {
                return Err(Status::DATA_TRANSFER_ERROR);
            }
            done += len;
        }
        Ok(())
    }

    fn admin(&self, s: &mut State, cmd: &Command, short: Option<usize>) -> Result<u32, Status> {
        match AdminOpcode(cmd.opcode) {
            AdminOpcode::IDENTIFY => {
                let mut page = vec![0u8; 4096];
                match cmd.cdw10 & 0xFF {
                    1 => {
                        let mut id = IdentifyController::zeroed();
                        id.vid = 0x1b36;
                        id.ssvid = 0x1af4;
                        id.set_sn("FXEMU0001");
                        id.set_mn("Ferrox emulated NVMe");
                        id.set_fr("1.0");
                        id.mdts = self.cfg.mdts;
                        id.ver = Vs::V1_4.0;
                        id.sqes = 0x66;
                        id.cqes = 0x44;
                        id.nn = s.ns.len() as u32;
                        id.oncs = (Oncs::DSM | Oncs::WRITE_ZEROES).bits();
                        id.vwc = 1;
                        page.copy_from_slice(id.as_bytes());
                    }
                    0 => {
                        let Some((bs, data)) = s.ns.get((cmd.nsid as usize).wrapping_sub(1)) else {
                            return Err(Status::INVALID_NAMESPACE);
                        };
                        let mut id = IdentifyNamespace::zeroed();
                        id.nsze = (data.len() / *bs as usize) as u64;
                        id.ncap = id.nsze;
                        id.nuse = id.nsze;
                        id.lbaf[0] = LbaFormat::new(bs.trailing_zeros() as u8, 0);
                        // Namespace 2 on reports an NGUID; namespace 1 reports none.
                        if cmd.nsid >= 2 {
                            id.nguid = [0xa0 | cmd.nsid as u8; 16];
                        }
                        page.copy_from_slice(id.as_bytes());
                    }
                    2 => {
                        let ids = (1..=s.ns.len() as u32).filter(|&n| n > cmd.nsid);
                        for (i, n) in ids.take(1024).enumerate() {
                            page[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
                        }
                    }
                    _ => return Err(Status::INVALID_FIELD),
                }
                self.dma_to_host(cmd, &page, short).map(|()| 0)
            }
            AdminOpcode::SET_FEATURES if cmd.cdw10 & 0xFF == 0x07 => {
                if s.granted != 0 {
                    // Allowed once per enable; later calls report the grant.
                    return Ok(NumberOfQueues {
                        nsq: s.granted - 1,
                        ncq: s.granted - 1,
                    }
                    .to_dword());
                }
                let want = NumberOfQueues::from_dword(cmd.cdw11);
                let g = (want.nsq.min(want.ncq) + 1).min(self.cfg.max_io_queues);
                s.granted = g;
                Ok(NumberOfQueues {
                    nsq: g - 1,
                    ncq: g - 1,
                }
                .to_dword())
            }
            AdminOpcode::CREATE_CQ => {
                let qid = cmd.cdw10 as u16;
                let size = (cmd.cdw10 >> 16) as u16 + 1;
                if qid == 0 || qid > s.granted || s.cqs.contains_key(&qid) {
                    return Err(Status::INVALID_QUEUE_ID);
                }
                if size < 2 || size > self.cfg.mqes + 1 {
                    return Err(Status::INVALID_QUEUE_SIZE);
                }
                let iv = (cmd.cdw11 >> 16) as u16;
                if u32::from(iv) >= self.cfg.msix.max(1) {
                    return Err(Status::INVALID_INTERRUPT_VECTOR);
                }
                s.cqs.insert(
                    qid,
                    Cq {
                        base: cmd.dptr[0],
                        size,
                        tail: 0,
                        phase: true,
                        ien: cmd.cdw11 & 2 != 0,
                        iv,
                    },
                );
                Ok(0)
            }
            AdminOpcode::CREATE_SQ => {
                let qid = cmd.cdw10 as u16;
                let size = (cmd.cdw10 >> 16) as u16 + 1;
                let cqid = (cmd.cdw11 >> 16) as u16;
                if qid == 0 || qid > s.granted || s.sqs.contains_key(&qid) {
                    return Err(Status::INVALID_QUEUE_ID);
                }
                if !s.cqs.contains_key(&cqid) || cqid == 0 {
                    return Err(Status::INVALID_CQ);
                }
                s.sqs.insert(
                    qid,
                    Sq {
                        base: cmd.dptr[0],
                        size,
                        head: 0,
                        cqid,
                    },
                );
                Ok(0)
            }
            AdminOpcode::DELETE_SQ => {
                let qid = cmd.cdw10 as u16;
                s.held.retain(|h| h.0 != qid);
                s.sqs
                    .remove(&qid)
                    .map(|_| 0)
                    .ok_or(Status::INVALID_QUEUE_ID)
            }
            AdminOpcode::DELETE_CQ => s
                .cqs
                .remove(&(cmd.cdw10 as u16))
                .map(|_| 0)
                .ok_or(Status::INVALID_QUEUE_ID),
            AdminOpcode::ABORT => {
                let (sqid, cid) = (cmd.cdw10 as u16, (cmd.cdw10 >> 16) as u16);
                let Some(pos) = s.held.iter().position(|&h| h == (sqid, cid)) else {
                    return Ok(1);
                };
                s.held.remove(pos);
                let cqid = s.sqs.get(&sqid).map_or(0, |q| q.cqid);
                let head = s.sqs.get(&sqid).map_or(0, |q| q.head);
                self.post(
                    s,
                    cqid,
                    Completion::new(cid, Status::ABORT_REQUESTED).with_sq(sqid, head),
                );
                Ok(0)
            }
            _ => Err(Status::INVALID_OPCODE),
        }
    }

    fn io(&self, s: &mut State, cmd: &Command, short: Option<usize>) -> Result<u32, Status> {
        let Some((bs, data)) = s.ns.get_mut((cmd.nsid as usize).wrapping_sub(1)) else {
            return Err(Status::INVALID_NAMESPACE);
        };
        let bs = *bs as usize;
        let dlen = data.len();
        let range = |slba: u64, nlb: usize| -> Result<std::ops::Range<usize>, Status> {
            let start = slba as usize * bs;
            let end = start + nlb * bs;
            if end > dlen {
                return Err(Status::LBA_OUT_OF_RANGE);
            }
            Ok(start..end)
        };
        match IoOpcode(cmd.opcode) {
            IoOpcode::READ => {
                let r = range(cmd.slba(), cmd.block_count() as usize)?;
                let bytes = data[r].to_vec();
                self.dma_to_host(cmd, &bytes, short).map(|()| 0)
            }
            IoOpcode::WRITE => {
                let r = range(cmd.slba(), cmd.block_count() as usize)?;
                let mut bytes = vec![0u8; r.len()];
                self.dma_from_host(cmd, &mut bytes)?;
                data[r].copy_from_slice(&bytes);
                Ok(0)
            }
            IoOpcode::WRITE_ZEROES => {
                let r = range(cmd.slba(), cmd.block_count() as usize)?;
                data[r].fill(0);
                Ok(0)
            }
            IoOpcode::FLUSH => Ok(0),
            IoOpcode::DATASET_MANAGEMENT => {
                let n = cmd.dsm_range_count();
                let mut raw = vec![0u8; n * 16];
                self.dma_from_host(cmd, &mut raw)?;
                for chunk in raw.chunks_exact(16) {
                    let d = DsmRange::read_from_bytes(chunk).map_err(|_| Status::INTERNAL_ERROR)?;
                    if cmd.cdw11 & 4 != 0 {
                        let r = range(d.slba, d.nlb as usize)?;
                        data[r].fill(0);
                    }
                }
                Ok(0)
            }
            _ => Err(Status::INVALID_OPCODE),
        }
    }
}

fn take_fault(s: &mut State, kind: QueueKind, opcode: u8) -> Option<FaultKind> {
    let i = s
        .faults
        .iter()
        .position(|f| f.queue == kind && f.opcode == opcode && f.times > 0)?;
    let f = &mut s.faults[i];
    f.times -= 1;
    let k = f.kind;
    if f.times == 0 {
        s.faults.remove(i);
    }
    Some(k)
}

/// The (IOVA, length) segments a PRP pair describes for `len` bytes (4 KiB pages, one
/// PRP list page at most, no chaining).
fn prp_segments(space: &DmaSpace, dptr: [u64; 2], len: usize) -> Result<Vec<(u64, usize)>, Status> {
    let page = PAGE_SIZE as u64;
    let [prp1, prp2] = dptr;
    if prp1 % 4 != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let first = len.min((page - prp1 % page) as usize);
    let mut segs = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Ok(segs);
    }
    if prp2 % page != 0 && left > PAGE_SIZE {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    if left <= PAGE_SIZE {
        if prp2 % page != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        segs.push((prp2, left));
        return Ok(segs);
    }
    let entries = left.div_ceil(PAGE_SIZE);
    if entries > PAGE_SIZE / 8 {
        return Err(Status::INVALID_FIELD);
    }
    let mut list = vec![0u8; entries * 8];
    if !space.read(prp2, &mut list) {
        return Err(Status::DATA_TRANSFER_ERROR);
    }
    for e in list.chunks_exact(8) {
        let a = u64::from_le_bytes(e.try_into().expect("8 bytes"));
        if a % page != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        let n = left.min(PAGE_SIZE);
        segs.push((a, n));
        left -= n;
    }
    Ok(segs)
}

impl DeviceBacking for EmulatedController {
    fn id(&self) -> &str {
        "emulated"
    }

    fn read32(&self, offset: usize) -> u32 {
        let s = self.lock();
        match offset {
            register::CAP => self.cap().0 as u32,
            o if o == register::CAP + 4 => (self.cap().0 >> 32) as u32,
            register::VS => Vs::V1_4.0,
            register::CC => s.cc.0,
            register::CSTS => s.csts.0,
            register::AQA => s.aqa.0,
            _ => 0,
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut s = self.lock();
        match offset {
            register::CC => {
                let new = Cc(value);
                let was = s.cc;
                s.cc = new;
                if new.en() && !was.en() {
                    self.enable(&mut s);
                } else if !new.en() && was.en() {
                    self.disable(&mut s);
                }
                if new.shn() != Cc::SHN_NONE {
                    s.csts.set_shst(Csts::SHST_COMPLETE);
                }
            }
            register::AQA => s.aqa = Aqa(value),
            register::ASQ => s.asq = (s.asq & !0xFFFF_FFFF) | u64::from(value),
            o if o == register::ASQ + 4 => {
                s.asq = (s.asq & 0xFFFF_FFFF) | (u64::from(value) << 32);
            }
            register::ACQ => s.acq = (s.acq & !0xFFFF_FFFF) | u64::from(value),
            o if o == register::ACQ + 4 => {
                s.acq = (s.acq & 0xFFFF_FFFF) | (u64::from(value) << 32);
            }
            o => {
                // CQ head doorbells are ignored: the emulator never runs out of CQ space
                // because the driver never has more commands in flight than a CQ holds.
                if let Some((qid, false)) = register::doorbell_at(o, self.cap().dstrd()) {
                    self.ring_sq(&mut s, qid, value as u16);
                }
            }
        }
    }

    fn alloc_dma(&self, len: usize) -> Result<Arc<DmaRegion>, Error> {
        let mut s = self.lock();
        let region = Arc::new(
            DmaRegion::new(len, s.next_iova).map_err(|e| Error::io("allocate DMA memory", e))?,
        );
        s.next_iova += region.len().next_multiple_of(2 << 20) as u64;
        self.space.add_region(region.clone());
        Ok(region)
    }

    fn map_pool(&self, pool: &'static BufferPool) -> Result<PoolMap, Error> {
        let mut s = self.lock();
        let map = self.space.add_pool(pool, s.next_iova);
        for (_, len) in PoolMap::pool_regions(pool) {
            s.next_iova += len.next_multiple_of(PAGE_SIZE) as u64;
        }
        s.next_iova = s.next_iova.next_multiple_of(2 << 20);
        Ok(map)
    }

    fn max_interrupts(&self) -> u32 {
        self.cfg.msix
    }

    fn set_interrupts(&self, fds: &[Option<&EventFd>]) -> Result<(), Error> {
        let mut irqs = Vec::with_capacity(fds.len());
        for fd in fds {
            irqs.push(match fd {
                Some(fd) => Some(fd.try_clone().map_err(|e| Error::io("dup eventfd", e))?),
                None => None,
            });
        }
        self.lock().irqs = irqs;
        Ok(())
    }

    fn release(&self) {
        self.lock().irqs.clear();
    }
}
