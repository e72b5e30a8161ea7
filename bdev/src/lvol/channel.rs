//! Volumes as block devices: [`LvolBdev`] and its per-reactor channel.
//!
//! A channel keeps an `Arc` of its volume's cluster view and the generation it was
//! taken at. Each request first increments the volume's in-flight counter, then
//! compares generations (both `SeqCst`; the engine's freeze is the other half), and
//! refreshes the view only when the generation moved: the steady-state path takes no
//! lock. A request that maps to one run of pool clusters is forwarded with its own
//! buffer; one that spans several runs goes through bounce buffers (one per piece,
//! from the reactor's pool). Requests that need clusters the volume does not own
//! drop their in-flight count and wait for the engine's answer; requests that meet a
//! frozen view wait for the next generation. The channel's poller retries them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use ferrox_reactor::{DmaBuf, PollStatus, Poller, PollerId, Reactor};

use super::engine::{with_engine, ChanReq, Request};

mod unmaps;

use super::format::NONE;
use super::{Shared, VolShared, VolView, VolumeInfo, OWNED};
use crate::{
    defer_completion, BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoChannel, IoOp,
    IoSink, Ops,
};
pub use unmaps::MAX_UNMAPS;
use unmaps::{Queued, Started, UNMAP_TAG};

/// A logical volume, usable wherever a [`BlockDevice`] is.
pub struct LvolBdev {
    sh: Arc<Shared>,
    vol: Arc<VolShared>,
    info: BdevInfo,
    snapshot: bool,
}

impl std::fmt::Debug for LvolBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvolBdev")
            .field("info", &self.info)
            .finish()
    }
}

impl LvolBdev {
    pub(crate) fn new(sh: Arc<Shared>, vol: Arc<VolShared>, v: &VolumeInfo) -> Arc<Self> {
        let base = sh.base.info();
        let l = &sh.label;
        let mut ops = Ops::FLUSH | Ops::STABLE_UUID;
        if base.ops.contains(Ops::FUA) {
            ops |= Ops::FUA;
        }
        if base.ops.contains(Ops::WRITE_ZEROES) {
            ops |= Ops::WRITE_ZEROES | Ops::UNMAP;
        }
        let info = BdevInfo {
            name: format!("{}/{}", l.name, v.name),
            uuid: v.uuid,
            block_size: l.block_size,
            num_blocks: v.size / u64::from(l.block_size),
            optimal_io_boundary: (l.cluster_size / u64::from(l.block_size)) as u32,
            max_transfer: base.max_transfer,
            ops,
            volatile_cache: base.volatile_cache,
        };
        Arc::new(Self {
            sh,
            vol,
            info,
            snapshot: v.snapshot,
        })
    }

    /// A read-only snapshot: writes fail with `Unsupported`.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }
}

impl BlockDevice for LvolBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        // Count first, then look (SeqCst): a delete that published "deleted" before
        // this increment is seen here, a later one sees the count.
        self.vol.channels.fetch_add(1, Ordering::SeqCst);
        let view = self.vol.view();
        if view.deleted {
            self.vol.channels.fetch_sub(1, Ordering::SeqCst);
            return Err(BdevError::Closed);
        }
        let base = match IoChannel::open(self.sh.base.clone(), r) {
            Ok(b) => b,
            Err(e) => {
                self.vol.channels.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        let bs = u64::from(self.sh.label.block_size);
        let piece = (r.pool().max_size() as u64).min(u64::from(self.info.max_transfer)) / bs;
        let (tx, rx) = mpsc::channel();
        let st = Rc::new_cyclic(|me| ChanState {
            me: me.clone(),
            sh: self.sh.clone(),
            vol: self.vol.clone(),
            base,
            bs: bs as usize,
            cluster_blocks: self.sh.label.cluster_size / bs,
            data_lba: self.sh.label.data_offset / bs,
            piece_blocks: piece.max(1),
            gen: Cell::new(self.vol.gen.load(Ordering::SeqCst)),
            view: RefCell::new(view),
            slots: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            waiting: RefCell::new(Vec::new()),
            tx,
            rx,
            next_req: Cell::new(1),
            in_flight: Cell::new(0),
            poller: Cell::new(None),
            closed: Cell::new(false),
            unmaps: Cell::new(0),
            unmap_queue: RefCell::new(VecDeque::new()),
            unmap_done: RefCell::new(Vec::new()),
        });
        st.poller.set(Some(r.add_poller(st.clone())));
        Ok(Rc::new(LvolChannel(st)))
    }
}

struct LvolChannel(Rc<ChanState>);

impl ChannelImpl for LvolChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        let st = &self.0;
        st.in_flight.set(st.in_flight.get() + 1);
        if let IoOp::Unmap { .. } = op {
            return st.submit_unmap(op, done);
        }
        st.start(op, done);
    }

    fn in_flight(&self) -> usize {
        self.0.in_flight.get()
    }

    fn close(&self) {
        self.0.close();
    }
}

/// Why a request is parked in the channel.
enum Wait {
    /// The view was frozen at this generation.
    Frozen(u64),
    /// Out of bounce buffers: try again next turn.
    Retry,
    /// Asked the engine; `then_retry` runs the request again on success, otherwise
    /// success completes it.
    Reply {
        req: u64,
        sent: bool,
        ask: Ask,
        result: Option<Result<(), BdevError>>,
        then_retry: bool,
    },
}

/// What a parked request asked the engine for.
#[derive(Clone)]
enum Ask {
    /// Own clusters for these volume clusters (at most a request's worth).
    Alloc(Vec<u64>),
    /// Free the volume clusters `first..end` (whole clusters of one unmap): a range,
    /// never a list as long as the range.
    Dealloc(u64, u64),
}

struct Waiting {
    op: IoOp,
    done: Completion,
    why: Wait,
}

/// A request in progress on the base device, in `pieces` base requests.
struct Slot {
    done: Completion,
    left: u32,
    err: Option<BdevError>,
    /// The caller's buffer, when pieces went through bounce buffers (or direct
    /// requests once their buffer came back).
    user_buf: Option<DmaBuf>,
    /// Byte offset into `user_buf` of each read piece (bounce reads copy back).
    read_at: Vec<usize>,
    holds_active: bool,
    /// An unmap whose zeroing is done next asks for its whole clusters to be freed.
    unmap: Option<(u64, u64)>,
}

const PIECE_BITS: u32 = 20;

struct ChanState {
    me: Weak<ChanState>,
    sh: Arc<Shared>,
    vol: Arc<VolShared>,
    base: IoChannel,
    bs: usize,
    cluster_blocks: u64,
    data_lba: u64,
    piece_blocks: u64,
    gen: Cell<u64>,
    view: RefCell<Arc<VolView>>,
    slots: RefCell<Vec<Option<Slot>>>,
    free_slots: RefCell<Vec<u32>>,
    waiting: RefCell<Vec<Waiting>>,
    tx: Sender<(u64, Result<(), BdevError>)>,
    rx: Receiver<(u64, Result<(), BdevError>)>,
    next_req: Cell<u64>,
    in_flight: Cell<usize>,
    poller: Cell<Option<PollerId>>,
    closed: Cell<bool>,
    /// Unmaps started and not yet completed (at most [`MAX_UNMAPS`]).
    unmaps: Cell<usize>,
    /// Unmaps waiting for one of those to complete, in submission order.
    unmap_queue: RefCell<VecDeque<Queued>>,
    /// The callers' completions of started unmaps (and of those riding on them), by
    /// `UNMAP_TAG` index.
    unmap_done: RefCell<Vec<Option<Started>>>,
}

fn owned(e: u32) -> bool {
    e != NONE && e & OWNED != 0
}

/// A stretch of a request: `blocks` blocks at block offset `at` of the request, at
/// base LBA `pba` (or zeroes).
#[derive(Debug, Clone, Copy)]
struct Run {
    at: u64,
    blocks: u64,
    pba: Option<u64>,
}

impl ChanState {
    fn sink(&self) -> Rc<dyn IoSink> {
        self.me
            .upgrade()
            .expect("a channel outlives its requests' submission")
    }

    fn refresh(&self) -> Arc<VolView> {
        let g = self.vol.gen.load(Ordering::SeqCst);
        if g != self.gen.get() {
            *self.view.borrow_mut() = self.vol.view();
            self.gen.set(g);
        }
        self.view.borrow().clone()
    }

    fn active_done(&self) {
        self.vol.active_done();
    }

    fn new_slot(&self, s: Slot) -> u64 {
        let mut slots = self.slots.borrow_mut();
        let i = match self.free_slots.borrow_mut().pop() {
            Some(i) => {
                slots[i as usize] = Some(s);
                i
            }
            None => {
                slots.push(Some(s));
                (slots.len() - 1) as u32
            }
        };
        u64::from(i) << PIECE_BITS
    }

    fn slot(&self, done: Completion, holds_active: bool) -> Slot {
        Slot {
            done,
            left: 1,
            err: None,
            user_buf: None,
            read_at: Vec::new(),
            holds_active,
            unmap: None,
        }
    }

    /// Completes a piece on the next loop turn (never inside `submit`).
    fn defer(&self, tag: u64, res: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let c = Completion {
            sink: self.sink(),
            tag,
        };
        Reactor::with(|r| defer_completion(r, c, res, buf));
    }

    /// Fails a request (on the next loop turn).
    fn fail(&self, done: Completion, e: BdevError, buf: Option<DmaBuf>) {
        let mut s = self.slot(done, false);
        s.err = Some(e);
        s.user_buf = buf;
        let tag = self.new_slot(s);
        self.defer(tag, Ok(()), None);
    }

    fn base_submit(&self, op: IoOp, tag: u64) {
        let c = Completion {
            sink: self.sink(),
            tag,
        };
        if let Err((e, op)) = self.base.submit(op, c) {
            self.defer(tag, Err(e), op.into_buf());
        }
    }

    fn park(&self, op: IoOp, done: Completion, why: Wait) {
        self.waiting.borrow_mut().push(Waiting { op, done, why });
    }

    fn ask(&self, op: IoOp, done: Completion, ask: Ask, then_retry: bool) {
        let req = self.next_req.get();
        self.next_req.set(req + 1);
        let sent = self.send_req(req, &ask);
        let why = Wait::Reply {
            req,
            sent,
            ask,
            result: None,
            then_retry,
        };
        self.park(op, done, why);
    }

    fn send_req(&self, req: u64, ask: &Ask) -> bool {
        let vol = self.vol.id;
        let kind = match *ask {
            Ask::Dealloc(first, end) => ChanReq::Dealloc { vol, first, end },
            Ask::Alloc(ref clusters) => ChanReq::Alloc {
                vol,
                clusters: clusters.clone(),
            },
        };
        let request = Request {
            req,
            kind,
            reply: self.tx.clone(),
        };
        let id = self.sh.id;
        self.sh
            .meta
            .send(move |_r| {
                with_engine(id, |e| match e {
                    Some(e) => e.request(request),
                    None => {
                        let _ = request.reply.send((request.req, Err(BdevError::Closed)));
                    }
                })
            })
            .is_ok()
    }

    /// Routes one request (new, or retried by the poller).
    fn start(&self, op: IoOp, done: Completion) {
        if self.closed.get() {
            return self.fail(done, BdevError::Closed, op.into_buf());
        }
        if let IoOp::Flush = op {
            let tag = self.new_slot(self.slot(done, false));
            return self.base_submit(IoOp::Flush, tag);
        }
        // Count first, then read the generation: the engine's freeze relies on it.
        self.vol.active.fetch_add(1, Ordering::SeqCst);
        let v = self.refresh();
        if v.deleted {
            self.active_done();
            return self.fail(done, BdevError::Closed, op.into_buf());
        }
        if v.frozen {
            self.active_done();
            return self.park(op, done, Wait::Frozen(self.gen.get()));
        }
        let (lba, blocks) = match &op {
            IoOp::Read { lba, blocks, .. }
            | IoOp::Write { lba, blocks, .. }
            | IoOp::WriteZeroes { lba, blocks }
            | IoOp::Unmap { lba, blocks } => (*lba, *blocks),
            IoOp::Flush => unreachable!("handled above"),
        };
        if lba.checked_add(blocks).is_none_or(|e| e > v.num_blocks) {
            self.active_done();
            let e = BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: v.num_blocks,
            };
            return self.fail(done, e, op.into_buf());
        }
        let cb = self.cluster_blocks;
        let clusters = lba / cb..=(lba + blocks - 1) / cb;
        if !matches!(op, IoOp::Read { .. }) {
            if v.read_only {
                self.active_done();
                return self.fail(
                    done,
                    BdevError::Unsupported("writes to a snapshot"),
                    op.into_buf(),
                );
            }
            let missing: Vec<u64> = if matches!(op, IoOp::Write { .. }) {
                // Writes need every cluster (a write is at most a transfer long).
                clusters
                    .filter(|&c| !owned(v.entries.get(c as usize)))
                    .collect()
            } else {
                // Zeroing needs only those with ancestor data: walk what the range
                // holds, skipping empty chunks, not every cluster of the range.
                let (mut at, end) = (*clusters.start() as usize, *clusters.end() as usize + 1);
                let mut out = Vec::new();
                let mut seen = 0;
                while let Some(c) = v.entries.next_in(at, end, false, &mut seen) {
                    if !owned(v.entries.get(c)) {
                        out.push(c as u64);
                    }
                    at = c + 1;
                }
                out
            };
            if !missing.is_empty() {
                self.active_done();
                return self.ask(op, done, Ask::Alloc(missing), true);
            }
        }
        match op {
            IoOp::Read { buf, .. } => self.read(&v, lba, blocks, buf, done),
            IoOp::Write { buf, fua, .. } => self.write(&v, lba, blocks, buf, fua, done),
            IoOp::WriteZeroes { .. } => self.zero(&v, lba, blocks, None, done),
            IoOp::Unmap { .. } => self.zero(&v, lba, blocks, Some((lba, blocks)), done),
            IoOp::Flush => unreachable!("handled above"),
        }
    }

    /// The runs of `lba..lba+blocks`, merging neighbours that are contiguous on the
    /// base device (or both zeroes).
    fn runs(&self, v: &VolView, lba: u64, blocks: u64) -> Vec<Run> {
        let cb = self.cluster_blocks;
        let mut runs: Vec<Run> = Vec::new();
        let mut at = 0;
        while at < blocks {
            let cur = lba + at;
            let (c, off) = (cur / cb, cur % cb);
            let n = (cb - off).min(blocks - at);
            let e = v.entries.get(c as usize);
            let pba = (e != NONE).then(|| self.data_lba + u64::from(e & !OWNED) * cb + off);
            match runs.last_mut() {
                Some(r)
                    if match (r.pba, pba) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a + r.blocks == b,
                        _ => false,
                    } =>
                {
                    r.blocks += n;
                }
                _ => runs.push(Run { at, blocks: n, pba }),
            }
            at += n;
        }
        runs
    }

    /// The runs of `lba..lba+blocks` that map to pool clusters (what zeroing writes),
    /// found by walking what the range holds: empty chunks of the view are skipped,
    /// so a huge range over a thin volume costs what it holds.
    fn data_runs(&self, v: &VolView, lba: u64, blocks: u64) -> Vec<Run> {
        let cb = self.cluster_blocks;
        let (first, end) = (lba / cb, (lba + blocks).div_ceil(cb));
        let mut runs: Vec<Run> = Vec::new();
        let mut at = first as usize;
        let mut seen = 0;
        while let Some(c) = v.entries.next_in(at, end as usize, false, &mut seen) {
            at = c + 1;
            let c = c as u64;
            let from = (c * cb).max(lba);
            let to = ((c + 1) * cb).min(lba + blocks);
            let e = v.entries.get(c as usize);
            let pba = self.data_lba + u64::from(e & !OWNED) * cb + (from - c * cb);
            let (off, n) = (from - lba, to - from);
            match runs.last_mut() {
                Some(r) if r.pba.is_some_and(|p| p + r.blocks == pba) && r.at + r.blocks == off => {
                    r.blocks += n;
                }
                _ => runs.push(Run {
                    at: off,
                    blocks: n,
                    pba: Some(pba),
                }),
            }
        }
        runs
    }

    /// Splits runs into pieces no larger than a bounce buffer.
    fn pieces(&self, runs: &[Run]) -> Vec<Run> {
        let mut out = Vec::new();
        for r in runs {
            let mut at = 0;
            while at < r.blocks {
                let n = self.piece_blocks.min(r.blocks - at);
                out.push(Run {
                    at: r.at + at,
                    blocks: n,
                    pba: r.pba.map(|p| p + at),
                });
                at += n;
            }
        }
        out
    }

    fn bounces(&self, pieces: &[Run]) -> Option<Vec<DmaBuf>> {
        let pool = Reactor::with(|r| r.pool());
        pieces
            .iter()
            .map(|p| pool.alloc(p.blocks as usize * self.bs))
            .collect()
    }

    fn read(&self, v: &VolView, lba: u64, blocks: u64, mut buf: DmaBuf, done: Completion) {
        let runs = self.runs(v, lba, blocks);
        if let [r] = runs.as_slice() {
            let tag = self.new_slot(self.slot(done, true));
            return match r.pba {
                Some(pba) => self.base_submit(
                    IoOp::Read {
                        lba: pba,
                        blocks,
                        buf,
                    },
                    tag,
                ),
                None => {
                    buf.as_mut_slice().fill(0);
                    self.defer(tag, Ok(()), Some(buf))
                }
            };
        }
        let data: Vec<Run> = runs.iter().filter(|r| r.pba.is_some()).copied().collect();
        let pieces = self.pieces(&data);
        let Some(bounces) = self.bounces(&pieces) else {
            self.active_done();
            let op = IoOp::Read { lba, blocks, buf };
            return self.park(op, done, Wait::Retry);
        };
        for r in runs.iter().filter(|r| r.pba.is_none()) {
            let (a, n) = (r.at as usize * self.bs, r.blocks as usize * self.bs);
            buf.as_mut_slice()[a..a + n].fill(0);
        }
        let mut s = self.slot(done, true);
        s.left = pieces.len() as u32;
        s.read_at = pieces.iter().map(|p| p.at as usize * self.bs).collect();
        s.user_buf = Some(buf);
        let tag = self.new_slot(s);
        for (i, (p, b)) in pieces.iter().zip(bounces).enumerate() {
            let op = IoOp::Read {
                lba: p.pba.expect("data pieces"),
                blocks: p.blocks,
                buf: b,
            };
            self.base_submit(op, tag | i as u64);
        }
    }

    fn write(&self, v: &VolView, lba: u64, blocks: u64, buf: DmaBuf, fua: bool, done: Completion) {
        let runs = self.runs(v, lba, blocks);
        if let [r] = runs.as_slice() {
            let tag = self.new_slot(self.slot(done, true));
            let op = IoOp::Write {
                lba: r.pba.expect("owned clusters"),
                blocks,
                buf,
                fua,
            };
            return self.base_submit(op, tag);
        }
        let pieces = self.pieces(&runs);
        let Some(mut bounces) = self.bounces(&pieces) else {
            self.active_done();
            let op = IoOp::Write {
                lba,
                blocks,
                buf,
                fua,
            };
            return self.park(op, done, Wait::Retry);
        };
        for (p, b) in pieces.iter().zip(&mut bounces) {
            let a = p.at as usize * self.bs;
            b.as_mut_slice()
                .copy_from_slice(&buf.as_slice()[a..a + p.blocks as usize * self.bs]);
        }
        let mut s = self.slot(done, true);
        s.left = pieces.len() as u32;
        s.user_buf = Some(buf);
        let tag = self.new_slot(s);
        for (i, (p, b)) in pieces.iter().zip(bounces).enumerate() {
            let op = IoOp::Write {
                lba: p.pba.expect("owned clusters"),
                blocks: p.blocks,
                buf: b,
                fua,
            };
            self.base_submit(op, tag | i as u64);
        }
    }

    fn zero(
        &self,
        v: &VolView,
        lba: u64,
        blocks: u64,
        unmap: Option<(u64, u64)>,
        done: Completion,
    ) {
        let runs = self.data_runs(v, lba, blocks);
        let mut s = self.slot(done, true);
        s.unmap = unmap;
        s.left = runs.len().max(1) as u32;
        let tag = self.new_slot(s);
        if runs.is_empty() {
            return self.defer(tag, Ok(()), None);
        }
        for (i, r) in runs.iter().enumerate() {
            let op = IoOp::WriteZeroes {
                lba: r.pba.expect("filtered"),
                blocks: r.blocks,
            };
            self.base_submit(op, tag | i as u64);
        }
    }

    /// A request's last piece is done.
    fn finish(&self, s: Slot) {
        if s.holds_active {
            self.active_done();
        }
        if let (Some((lba, blocks)), None) = (s.unmap, &s.err) {
            let cb = self.cluster_blocks;
            let (first, end) = (lba.div_ceil(cb), (lba + blocks) / cb);
            if first < end && !self.closed.get() {
                let op = IoOp::Unmap { lba, blocks };
                return self.ask(op, s.done, Ask::Dealloc(first, end), false);
            }
        }
        self.in_flight.set(self.in_flight.get() - 1);
        let res = s.err.map_or(Ok(()), Err);
        s.done.complete(res, s.user_buf);
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.vol.channels.fetch_sub(1, Ordering::SeqCst);
        let parked = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in parked {
            self.fail(w.done, BdevError::Closed, w.op.into_buf());
        }
        let queued = std::mem::take(&mut *self.unmap_queue.borrow_mut());
        for q in queued {
            for r in q.riders {
                self.fail(r, BdevError::Closed, None);
            }
            self.fail(q.done, BdevError::Closed, q.op.into_buf());
        }
        if let (Some(p), Some(r)) = (self.poller.take(), Reactor::try_current()) {
            r.remove_poller(p);
        }
    }
}

impl IoSink for ChanState {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        if tag & UNMAP_TAG != 0 {
            return self.unmap_finished((tag & !UNMAP_TAG) as usize, result, buf);
        }
        let (si, piece) = (
            (tag >> PIECE_BITS) as usize,
            (tag & ((1 << PIECE_BITS) - 1)) as usize,
        );
        let finished = {
            let mut slots = self.slots.borrow_mut();
            let s = slots[si].as_mut().expect("a live slot");
            if let Err(e) = result {
                s.err.get_or_insert(e);
            }
            if let Some(b) = buf {
                match (&mut s.user_buf, s.read_at.get(piece)) {
                    (None, _) => s.user_buf = Some(b),
                    (Some(u), Some(&at)) => {
                        u.as_mut_slice()[at..at + b.len()].copy_from_slice(b.as_slice());
                    }
                    // A write's bounce buffer: done with it.
                    (Some(_), None) => {}
                }
            }
            s.left -= 1;
            if s.left == 0 {
                self.free_slots.borrow_mut().push(si as u32);
                slots[si].take()
            } else {
                None
            }
        };
        if let Some(s) = finished {
            self.finish(s);
        }
    }
}

impl Poller for ChanState {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        let mut replies = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            replies.push(m);
        }
        if replies.is_empty() && self.waiting.borrow().is_empty() {
            return PollStatus::Idle;
        }
        let g = self.vol.gen.load(Ordering::SeqCst);
        let parked = std::mem::take(&mut *self.waiting.borrow_mut());
        let mut keep = Vec::new();
        for mut w in parked {
            if let Wait::Reply {
                req,
                ref mut result,
                ..
            } = w.why
            {
                if let Some((_, res)) = replies.iter().find(|(r, _)| *r == req) {
                    *result = Some(res.clone());
                }
            }
            match w.why {
                Wait::Frozen(g0) if g0 == g => keep.push(w),
                Wait::Frozen(_) | Wait::Retry => self.start(w.op, w.done),
                Wait::Reply {
                    result: Some(Ok(())),
                    then_retry: true,
                    ..
                } => self.start(w.op, w.done),
                Wait::Reply {
                    result: Some(Ok(())),
                    ..
                } => {
                    // A deallocation done: the unmap completes.
                    self.in_flight.set(self.in_flight.get() - 1);
                    w.done.complete(Ok(()), None);
                }
                Wait::Reply {
                    result: Some(Err(e)),
                    ..
                } => {
                    let mut s = self.slot(w.done, false);
                    s.err = Some(e);
                    s.user_buf = w.op.into_buf();
                    self.finish(s);
                }
                Wait::Reply {
                    req,
                    sent: false,
                    ref ask,
                    ..
                } => {
                    if self.send_req(req, ask) {
                        if let Wait::Reply { sent, .. } = &mut w.why {
                            *sent = true;
                        }
                    }
                    keep.push(w);
                }
                Wait::Reply { .. } => keep.push(w),
            }
        }
        self.waiting.borrow_mut().extend(keep);
        PollStatus::Busy
    }

    fn shutdown(&self, _r: &Reactor) {
        self.close();
    }

    fn name(&self) -> &'static str {
        "lvol-channel"
    }
}
