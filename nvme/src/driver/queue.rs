//! One I/O queue pair, owned by one reactor.
//!
//! # Rings
//!
//! Submission writes the SQE into queue memory with relaxed stores and advances the
//! local `tail`; [`IoQueue::commit`] publishes a batch with one SeqCst fence (the
//! device must see the entries before the doorbell: on x86 the MMIO store is ordered
//! after earlier stores, and the fence keeps the compiler from reordering) and one SQ
//! tail doorbell write. Completions are read phase-first: the status word (which holds
//! the phase tag) is loaded with Acquire, pairing with the device writing the entry
//! before flipping the tag, and only then is the rest of the entry read. One CQ head
//! doorbell is written per [`IoQueue::poll`] that found entries.
//!
//! # Commands in flight
//!
//! A slab of `depth - 1` slots, pre-sized at creation: the CID is the slot index (low
//! 10 bits) plus a 6-bit generation bumped on each reuse, so a late completion for a
//! recycled slot is recognised and dropped. Each slot owns one 4 KiB page of queue
//! memory for its PRP list (or Dataset Management range), so building a PRP list never
//! allocates. Because at most `depth - 1` commands are in flight, the SQ cannot overflow.
#![forbid(unsafe_code)]

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrox_reactor::{DmaBuf, EventFd};

use super::Controller;
use crate::dma::{DmaRegion, PAGE_SIZE};
use crate::spec::{AdminOpcode, Command, Completion, DsmRange};
use crate::Error;

const INDEX_BITS: u16 = 10;
const INDEX_MASK: u16 = (1 << INDEX_BITS) - 1;

/// Data of a command.
#[derive(Debug, Clone, Copy)]
pub enum Data {
    /// No data.
    None,
    /// Bytes of a pool buffer.
    Buf(BufRef),
    /// One Dataset Management range.
    Dsm(DsmRange),
}

/// Where a pool buffer's data is, taken before the buffer moves into the command's
/// context (the buffer itself stays owned by the command until it completes).
#[derive(Debug, Clone, Copy)]
pub struct BufRef {
    addr: usize,
    capacity: usize,
    len: usize,
}

impl BufRef {
    /// The first `buf.len()` bytes of `buf`.
    pub fn of(buf: &DmaBuf) -> Self {
        Self {
            addr: buf.as_ptr() as usize,
            capacity: buf.capacity(),
            len: buf.len(),
        }
    }
}

struct Pending<T> {
    ctx: T,
    opcode: u8,
    deadline: Instant,
}

struct Slot<T> {
    generation: u16,
    pending: Option<Pending<T>>,
}

/// An I/O submission/completion queue pair; see the module documentation.
pub struct IoQueue<T> {
    ctrl: Arc<Controller>,
    qid: u16,
    depth: u16,
    mem: Arc<DmaRegion>,
    cq_off: usize,
    prp_off: usize,
    sq_db: usize,
    cq_db: usize,
    tail: u16,
    committed_tail: u16,
    head: u16,
    phase: bool,
    slots: Vec<Slot<T>>,
    free: Vec<u16>,
    epoch: u64,
    irq: Option<EventFd>,
    dead: bool,
}

impl<T> std::fmt::Debug for IoQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueue")
            .field("qid", &self.qid)
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<T> IoQueue<T> {
    /// Creates an I/O queue pair on `ctrl` (Create I/O CQ, then SQ), with interrupts on
    /// the MSI-X vector of the same number when `interrupts` and the controller has one.
    pub fn create(ctrl: &Arc<Controller>, interrupts: bool) -> Result<Self, Error> {
        let qid = ctrl.take_qid()?;
        let mqes = u32::from(crate::spec::Cap(ctrl.backing().read64(0)).mqes()) + 1;
        let depth =
            u32::from(ctrl.options().queue_depth).clamp(2, mqes.min(1 << INDEX_BITS)) as u16;
        let sq_bytes = (usize::from(depth) * 64).next_multiple_of(PAGE_SIZE);
        let cq_bytes = (usize::from(depth) * 16).next_multiple_of(PAGE_SIZE);
        let slots = usize::from(depth) - 1;
        let mem = match ctrl
            .backing()
            .alloc_dma(sq_bytes + cq_bytes + slots * PAGE_SIZE)
        {
            Ok(m) => m,
            Err(e) => {
                ctrl.put_qid(qid);
                return Err(e);
            }
        };
        let irq = if interrupts {
            ctrl.irq(qid).and_then(|fd| fd.try_clone().ok())
        } else {
            None
        };
        let mut q = Self {
            ctrl: ctrl.clone(),
            qid,
            depth,
            mem,
            cq_off: sq_bytes,
            prp_off: sq_bytes + cq_bytes,
            sq_db: ctrl.doorbell(qid, false),
            cq_db: ctrl.doorbell(qid, true),
            tail: 0,
            committed_tail: 0,
            head: 0,
            phase: true,
            slots: (0..slots)
                .map(|_| Slot {
                    generation: 0,
                    pending: None,
                })
                .collect(),
            free: (0..slots as u16).rev().collect(),
            epoch: ctrl.epoch(),
            irq,
            dead: false,
        };
        if let Err(e) = q.create_on_device() {
            ctrl.put_qid(qid);
            return Err(e);
        }
        tracing::debug!(
            id = ctrl.id(),
            qid,
            depth,
            interrupts = q.irq.is_some(),
            "I/O queue pair created"
        );
        Ok(q)
    }

    fn create_on_device(&mut self) -> Result<(), Error> {
        let mut cq = Command::new(AdminOpcode::CREATE_CQ.0, 0);
        cq.cdw10 = u32::from(self.qid) | (u32::from(self.depth - 1) << 16);
        // PC (physically contiguous), IEN when an eventfd is routed, IV = qid.
        cq.cdw11 = 1
            | (u32::from(self.irq.is_some()) << 1)
            | (u32::from(if self.irq.is_some() { self.qid } else { 0 }) << 16);
        self.ctrl.admin_cmd(
            cq,
            Some(self.mem.iova() + self.cq_off as u64),
            "Create I/O Completion Queue",
        )?;
        let mut sq = Command::new(AdminOpcode::CREATE_SQ.0, 0);
        sq.cdw10 = u32::from(self.qid) | (u32::from(self.depth - 1) << 16);
        sq.cdw11 = 1 | (u32::from(self.qid) << 16);
        self.ctrl
            .admin_cmd(sq, Some(self.mem.iova()), "Create I/O Submission Queue")?;
        Ok(())
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Commands submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// No slot is free: wait for completions.
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// The controller this queue belongs to.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.ctrl
    }

    /// The eventfd the queue's MSI-X vector signals, if interrupts are on.
    pub fn interrupt(&self) -> Option<&EventFd> {
        self.irq.as_ref()
    }

    /// Writes a command into the SQ (not yet visible to the device: see [`Self::commit`]).
    /// The CID and data pointer are filled in here; `ctx` comes back with the completion.
    pub fn submit(&mut self, mut cmd: Command, data: Data, ctx: T) -> Result<(), (Error, T)> {
        if self.dead || self.epoch != self.ctrl.epoch() {
            return Err((Error::Reset, ctx));
        }
        let Some(index) = self.free.pop() else {
            return Err((Error::QueueFull, ctx));
        };
        let prp_page = self.prp_off + usize::from(index) * PAGE_SIZE;
        let prp_iova = self.mem.iova() + prp_page as u64;
        cmd.dptr = match data {
            Data::None => [0, 0],
            Data::Dsm(range) => {
                self.mem.write_obj(prp_page, &range);
                [prp_iova, 0]
            }
            Data::Buf(buf) => match self.prps(buf, prp_page, prp_iova) {
                Some(d) => d,
                None => {
                    self.free.push(index);
                    return Err((Error::BadBuffer, ctx));
                }
            },
        };
        let slot = &mut self.slots[usize::from(index)];
        slot.generation = (slot.generation + 1) & (u16::MAX >> INDEX_BITS);
        cmd.cid = index | (slot.generation << INDEX_BITS);
        let deadline = Instant::now() + self.ctrl.options().io_timeout;
        slot.pending = Some(Pending {
            ctx,
            opcode: cmd.opcode,
            deadline,
        });
        self.mem.write_obj(usize::from(self.tail) * 64, &cmd);
        self.tail = (self.tail + 1) % self.depth;
        Ok(())
    }

    /// PRP1/PRP2 for `len` bytes of `buf`, writing a PRP list into the slot's page when
    /// the data spans more than two memory pages. `None` if the buffer is not mapped.
    fn prps(&self, buf: BufRef, list_off: usize, list_iova: u64) -> Option<[u64; 2]> {
        let len = buf.len;
        if len > buf.capacity || len > (PAGE_SIZE / 8 + 1) * PAGE_SIZE {
            return None;
        }
        let iova = self.ctrl.pool_map().iova_of(buf.addr, buf.capacity)?;
        let page = PAGE_SIZE as u64;
        let first = (page - iova % page).min(len as u64);
        let rest = len as u64 - first;
        let next = iova + first;
        Some(if rest == 0 {
            [iova, 0]
        } else if rest <= page {
            [iova, next]
        } else {
            let pages = rest.div_ceil(page) as usize;
            for i in 0..pages {
                self.mem.write_u64(list_off + i * 8, next + i as u64 * page);
            }
            [iova, list_iova]
        })
    }

    /// Rings the SQ doorbell once for everything submitted since the last commit.
    /// Returns whether it wrote the doorbell.
    pub fn commit(&mut self) -> bool {
        if self.tail == self.committed_tail {
            return false;
        }
        // Orders the SQE stores before the doorbell store that lets the device read them.
        fence(Ordering::SeqCst);
        self.ctrl
            .backing()
            .write32(self.sq_db, u32::from(self.tail));
        self.committed_tail = self.tail;
        true
    }

    /// Whether the CQ head holds a new entry (no side effects).
    pub fn has_completion(&self) -> bool {
        let off = self.cq_off + usize::from(self.head) * 16;
        // Acquire pairs with the device's write of the entry before its phase tag.
        (self.mem.atomic_u16(off + 14).load(Ordering::Acquire) & 1 != 0) == self.phase
    }

    /// Reaps completions into `out` as (context, `Ok(cqe)` or the error); returns how
    /// many. Also handles a controller reset done elsewhere (everything in flight fails
    /// with [`Error::Reset`] and the queues are re-created).
    pub fn poll(&mut self, out: &mut Vec<(T, Result<Completion, Error>)>) -> usize {
        if self.epoch != self.ctrl.epoch() {
            return self.recreate(out, None);
        }
        let mut n = 0;
        while self.has_completion() {
            let cqe: Completion = self.mem.read_obj(self.cq_off + usize::from(self.head) * 16);
            self.head += 1;
            if self.head == self.depth {
                self.head = 0;
                self.phase = !self.phase;
            }
            let index = cqe.cid & INDEX_MASK;
            let Some(slot) = self.slots.get_mut(usize::from(index)) else {
                continue;
            };
            if slot.generation != cqe.cid >> INDEX_BITS {
                tracing::warn!(
                    qid = self.qid,
                    cid = cqe.cid,
                    "completion for a stale command id dropped"
                );
                continue;
            }
            let Some(p) = slot.pending.take() else {
                continue;
            };
            self.free.push(index);
            let st = cqe.status();
            let r = if st.is_success() {
                Ok(cqe)
            } else {
                Err(Error::Command {
                    id: self.ctrl.id().into(),
                    what: "I/O command",
                    status: st,
                })
            };
            out.push((p.ctx, r));
            n += 1;
        }
        if n > 0 {
            self.ctrl
                .backing()
                .write32(self.cq_db, u32::from(self.head));
        }
        n
    }

    /// Fails commands past their deadline: the first one is aborted and the controller
    /// reset; it completes with [`Error::IoTimeout`], the rest with [`Error::Reset`].
    pub fn check_timeouts(
        &mut self,
        now: Instant,
        out: &mut Vec<(T, Result<Completion, Error>)>,
    ) -> usize {
        let expired = self
            .slots
            .iter()
            .position(|s| s.pending.as_ref().is_some_and(|p| now > p.deadline));
        let Some(index) = expired else { return 0 };
        let slot = &self.slots[index];
        let cid = index as u16 | (slot.generation << INDEX_BITS);
        let opcode = slot.pending.as_ref().map_or(0, |p| p.opcode);
        let ms = self.ctrl.options().io_timeout.as_millis() as u64;
        tracing::error!(
            id = self.ctrl.id(),
            qid = self.qid,
            cid,
            opcode,
            ms,
            "I/O command timed out; aborting it and resetting the controller"
        );
        match self.ctrl.abort(self.qid, cid) {
            Ok(aborted) => tracing::warn!(qid = self.qid, cid, aborted, "Abort completed"),
            Err(e) => tracing::warn!(qid = self.qid, cid, error = %e, "Abort failed"),
        }
        if let Err(e) = self.ctrl.reset() {
            tracing::error!(id = self.ctrl.id(), error = %e, "controller reset failed; queue is dead");
        }
        self.recreate(
            out,
            Some((
                index as u16,
                Error::IoTimeout {
                    qid: self.qid,
                    cid,
                    opcode,
                    ms,
                },
            )),
        )
    }

    /// After a reset: fails every command in flight and re-creates the queues.
    fn recreate(
        &mut self,
        out: &mut Vec<(T, Result<Completion, Error>)>,
        mut timed_out: Option<(u16, Error)>,
    ) -> usize {
        let mut n = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(p) = slot.pending.take() {
                let e = match timed_out.take_if(|(t, _)| usize::from(*t) == i) {
                    Some((_, e)) => e,
                    None => Error::Reset,
                };
                out.push((p.ctx, Err(e)));
                self.free.push(i as u16);
                n += 1;
            }
        }
        self.epoch = self.ctrl.epoch();
        self.mem.fill(0, self.prp_off, 0);
        self.tail = 0;
        self.committed_tail = 0;
        self.head = 0;
        self.phase = true;
        if let Err(e) = self.create_on_device() {
            tracing::error!(id = self.ctrl.id(), qid = self.qid, error = %e, "cannot re-create the I/O queue after a reset");
            self.dead = true;
        }
        n
    }

    /// The earliest deadline of a command in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.pending.as_ref().map(|p| p.deadline))
            .min()
    }

    /// Prepares to sleep on the interrupt: drains the eventfd, then reports whether a
    /// completion is already waiting (if so the caller must not sleep; see the bdev
    /// module's parking handshake).
    pub fn arm_interrupt(&self) -> bool {
        if let Some(fd) = &self.irq {
            fd.drain();
        }
        self.has_completion()
    }
}

impl<T> Drop for IoQueue<T> {
    fn drop(&mut self) {
        if self.dead || self.epoch != self.ctrl.epoch() {
            self.ctrl.put_qid(self.qid);
            return;
        }
        let mut sq = Command::new(AdminOpcode::DELETE_SQ.0, 0);
        sq.cdw10 = u32::from(self.qid);
        let mut cq = Command::new(AdminOpcode::DELETE_CQ.0, 0);
        cq.cdw10 = u32::from(self.qid);
        let ok = self
            .ctrl
            .admin_cmd(sq, None, "Delete I/O Submission Queue")
            .and_then(|_| self.ctrl.admin_cmd(cq, None, "Delete I/O Completion Queue"));
        if let Err(e) = ok {
            tracing::warn!(qid = self.qid, error = %e, "deleting an I/O queue failed");
        }
        self.ctrl.put_qid(self.qid);
    }
}
