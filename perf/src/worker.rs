//! The per-core worker: a [`Poller`] that keeps `qd` requests in flight on its
//! reactor's channel and records what completes.
//!
//! Everything the I/O path touches is allocated in [`Worker::start`]: one slot per
//! queue entry, each owning a pool buffer between requests, the free-slot stack, both
//! histograms and the timeline. A completion ([`IoSink::io_done`], on the reactor)
//! records the request, checks `--verify` data (every byte, and against the
//! [`Tracker`]'s last acknowledged write), and resubmits into the same slot.
//! The poller only notices the end of the job and sends the [`CoreResult`] home.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::Replier;
use ferrox_reactor::{DmaBuf, PollStatus, Poller, Reactor};

use crate::parse::Dist;
use crate::plan::Progress;
use crate::rng::{XorShift, Zipf};
use crate::stats::{CoreResult, MAX_MISMATCHES};
use crate::verify::{self, Ticket, Tracker, ANY, SECTOR};

/// Which pass a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `--verify` before reads: one sequential write pass over the range.
    Fill,
    /// The measured workload.
    Workload,
    /// `--verify` after a write-only workload: one sequential read pass.
    ReadBack,
}

/// `--verify` settings of a job.
#[derive(Clone)]
pub struct Verify {
    pub seed: u64,
    /// A sector of zeros is an error (the range was filled first).
    pub expect_written: bool,
    /// The run's knowledge of what each block holds, shared by every pass.
    pub tracker: Arc<Tracker>,
}

impl std::fmt::Debug for Verify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verify")
            .field("seed", &self.seed)
            .field("expect_written", &self.expect_written)
            .finish_non_exhaustive()
    }
}

/// One core's share of a job (block units).
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: JobKind,
    pub index: u32,
    pub cores: u32,
    pub read_pct: u8,
    pub random: bool,
    pub dist: Dist,
    pub block_size: u32,
    pub bs_blocks: u64,
    pub align_blocks: u64,
    pub slots: u64,
    /// Random requests start at slots `own.0..own.1` (all of them, except with
    /// `--verify` on several cores: then each core has its own, so that it alone
    /// writes their blocks).
    pub own: (u64, u64),
    /// Sequential passes walk `part.0..part.1`.
    pub part: (u64, u64),
    pub qd: u32,
    pub ramp: Duration,
    pub time: Option<Duration>,
    pub ios: Option<u64>,
    pub verify: Option<Verify>,
    pub seed: u64,
    pub interval: Duration,
    pub timeline_cap: usize,
    pub progress: Arc<Progress>,
}

impl JobSpec {
    fn one_pass(&self) -> bool {
        self.kind != JobKind::Workload
    }

    /// The pass number in write generations.
    fn pass(&self) -> u64 {
        match self.kind {
            JobKind::Fill => 0,
            JobKind::Workload | JobKind::ReadBack => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Measure,
    /// No new requests; finish when nothing is in flight.
    Drain,
}

struct Slot {
    buf: RefCell<Option<DmaBuf>>,
    start: Cell<Instant>,
    lba: Cell<u64>,
    blocks: Cell<u64>,
    write: Cell<bool>,
    measured: Cell<bool>,
    /// `--verify`: the write's generation, and what the request saw of its blocks
    /// when it started.
    generation: Cell<u64>,
    ticket: Cell<Ticket>,
}

/// The poller and sink of one core's job; see the module documentation.
pub struct Worker {
    spec: JobSpec,
    chan: RefCell<Option<IoChannel>>,
    me: RefCell<Option<Rc<dyn IoSink>>>,
    slots: Box<[Slot]>,
    free: RefCell<Vec<u32>>,
    rng: Cell<XorShift>,
    zipf: Option<Zipf>,
    next_seq: Cell<u64>,
    phase: Cell<Phase>,
    inflight: Cell<u32>,
    issued: Cell<u64>,
    writes: Cell<u64>,
    started: Instant,
    measure_start: Cell<Instant>,
    last_done: Cell<Instant>,
    result: RefCell<CoreResult>,
    timeline_used: Cell<usize>,
    reply: RefCell<Option<Replier<Result<CoreResult, String>>>>,
}

impl Worker {
    /// Opens the channel, allocates everything, submits the first `qd` requests and
    /// registers the poller. Failures are answered on `reply`.
    pub fn start(
        r: &Reactor,
        dev: Arc<dyn BlockDevice>,
        spec: JobSpec,
        reply: Replier<Result<CoreResult, String>>,
    ) {
        let chan = match IoChannel::open(dev, r) {
            Ok(c) => c,
            Err(e) => return reply.send(Err(format!("cannot open a channel: {e}"))),
        };
        let bytes = (spec.bs_blocks * u64::from(spec.block_size)) as usize;
        let now = Instant::now();
        let mut slots = Vec::with_capacity(spec.qd as usize);
        for _ in 0..spec.qd {
            let Some(buf) = r.pool().alloc(bytes) else {
                return reply.send(Err(format!(
                    "the buffer pool has no {} {bytes}-byte buffers for reactor {}",
                    spec.qd,
                    r.id()
                )));
            };
            slots.push(Slot {
                buf: RefCell::new(Some(buf)),
                start: Cell::new(now),
                lba: Cell::new(0),
                blocks: Cell::new(0),
                write: Cell::new(false),
                measured: Cell::new(false),
                generation: Cell::new(ANY),
                ticket: Cell::new(Ticket::default()),
            });
        }
        let zipf = match spec.dist {
            Dist::Zipf { theta } if spec.random => Some(Zipf::new(spec.own.1 - spec.own.0, theta)),
            _ => None,
        };
        let mut result = CoreResult::new(r.id(), r.core(), spec.interval.as_secs_f64());
        result.timeline = vec![0; spec.timeline_cap.max(1)];
        result.verify.first_errors.reserve(MAX_MISMATCHES);
        let phase = if spec.ramp.is_zero() {
            Phase::Measure
        } else {
            Phase::Ramp
        };
        let w = Rc::new(Worker {
            free: RefCell::new((0..spec.qd).rev().collect()),
            rng: Cell::new(XorShift::new(spec.seed)),
            zipf,
            next_seq: Cell::new(spec.part.0),
            phase: Cell::new(phase),
            inflight: Cell::new(0),
            issued: Cell::new(0),
            writes: Cell::new(0),
            started: now,
            measure_start: Cell::new(now),
            last_done: Cell::new(now),
            result: RefCell::new(result),
            timeline_used: Cell::new(0),
            reply: RefCell::new(Some(reply)),
            chan: RefCell::new(Some(chan)),
            me: RefCell::new(None),
            slots: slots.into_boxed_slice(),
            spec,
        });
        *w.me.borrow_mut() = Some(w.clone());
        w.fill_queue(now);
        r.add_poller(w);
    }

    /// Moves between phases by time and counts.
    fn advance(&self, now: Instant) {
        let s = &self.spec;
        match self.phase.get() {
            Phase::Ramp if now >= self.started + s.ramp => {
                self.phase.set(Phase::Measure);
                self.measure_start.set(now);
                self.last_done.set(now);
            }
            Phase::Measure => {
                let timed_out = s.time.is_some_and(|t| now >= self.measure_start.get() + t);
                let counted = s.ios.is_some_and(|n| self.issued.get() >= n);
                let passed = s.one_pass() && self.next_seq.get() >= s.part.1;
                if timed_out || counted || passed {
                    self.phase.set(Phase::Drain);
                }
            }
            _ => {}
        }
    }

    /// Submits into every free slot while the phase allows.
    fn fill_queue(&self, now: Instant) {
        loop {
            self.advance(now);
            if self.phase.get() == Phase::Drain {
                return;
            }
            let Some(i) = self.free.borrow_mut().pop() else {
                return;
            };
            self.submit(i, now);
        }
    }

    /// The next request's first block and length.
    fn next_target(&self) -> (u64, u64) {
        let s = &self.spec;
        if s.random {
            let mut rng = self.rng.get();
            let idx = s.own.0
                + match &self.zipf {
                    Some(z) => z.sample(&mut rng) - 1,
                    None => rng.below(s.own.1 - s.own.0),
                };
            self.rng.set(rng);
            return (idx * s.align_blocks, s.bs_blocks);
        }
        let lba = self.next_seq.get();
        let blocks = s.bs_blocks.min(s.part.1 - lba);
        let mut next = lba + blocks;
        if !s.one_pass() && next + s.bs_blocks > s.part.1 {
            next = s.part.0; // wrap: sequential workloads loop over their slice
        }
        self.next_seq.set(next);
        (lba, blocks)
    }

    fn submit(&self, i: u32, now: Instant) {
        let s = &self.spec;
        let slot = &self.slots[i as usize];
        let write = match s.read_pct {
            100 => false,
            0 => true,
            p => {
                let mut rng = self.rng.get();
                let w = rng.below(100) >= u64::from(p);
                self.rng.set(rng);
                w
            }
        };
        let (lba, blocks) = self.next_target();
        let Some(mut buf) = slot.buf.borrow_mut().take() else {
            return; // unreachable: a free slot owns its buffer
        };
        buf.set_len((blocks * u64::from(s.block_size)) as usize);
        if let Some(v) = &s.verify {
            if write {
                let n = self.writes.get();
                self.writes.set(n + 1);
                let generation = verify::generation(s.index, s.pass(), n);
                let sector = lba * u64::from(s.block_size) / SECTOR as u64;
                verify::stamp(buf.as_mut_slice(), sector, generation, v.seed);
                slot.generation.set(generation);
                slot.ticket.set(v.tracker.start_write(lba, blocks));
            } else {
                slot.ticket.set(v.tracker.start_read(lba, blocks));
            }
        }
        slot.lba.set(lba);
        slot.blocks.set(blocks);
        slot.write.set(write);
        slot.start.set(now);
        let measured = self.phase.get() == Phase::Measure;
        slot.measured.set(measured);
        if measured {
            self.issued.set(self.issued.get() + 1);
        }
        let op = if write {
            IoOp::Write {
                lba,
                blocks,
                buf,
                fua: false,
            }
        } else {
            IoOp::Read { lba, blocks, buf }
        };
        let sink = self.me.borrow().clone();
        let chan = self.chan.borrow();
        let (Some(sink), Some(chan)) = (sink, chan.as_ref()) else {
            return;
        };
        self.inflight.set(self.inflight.get() + 1);
        if let Err((e, op)) = chan.submit(
            op,
            Completion {
                sink,
                tag: u64::from(i),
            },
        ) {
            // Refused before it started (geometry): a bug or a device that shrank.
            // Give the slot back and stop: retrying would refuse again.
            self.inflight.set(self.inflight.get() - 1);
            self.track_write_end(slot, false);
            *slot.buf.borrow_mut() = op.into_buf();
            self.free.borrow_mut().push(i);
            self.io_error(&e, lba);
            self.phase.set(Phase::Drain);
        }
    }

    fn io_error(&self, e: &BdevError, lba: u64) {
        let mut res = self.result.borrow_mut();
        res.io_errors += 1;
        if res.first_io_error.is_none() {
            res.first_io_error = Some(format!("LBA {lba}: {e}"));
        }
    }

    /// `--verify`: a write ended (`ok`: acknowledged).
    fn track_write_end(&self, slot: &Slot, ok: bool) {
        if let (Some(v), true) = (&self.spec.verify, slot.write.get()) {
            let (lba, blocks) = (slot.lba.get(), slot.blocks.get());
            v.tracker
                .end_write(lba, blocks, slot.ticket.get(), slot.generation.get(), ok);
        }
    }

    fn record(&self, slot: &Slot, buf: &DmaBuf, now: Instant) {
        let s = &self.spec;
        let mut res = self.result.borrow_mut();
        let res = &mut *res;
        if !slot.write.get() {
            if let Some(v) = &s.verify {
                let (lba, blocks) = (slot.lba.get(), slot.blocks.get());
                let sector = lba * u64::from(s.block_size) / SECTOR as u64;
                // With no write to these blocks in flight while the read was, each
                // sector must hold the last write acknowledged there.
                let quiet = v.tracker.read_was_quiet(lba, blocks, slot.ticket.get());
                let expected = |sector| {
                    if quiet {
                        v.tracker.expected(sector)
                    } else {
                        ANY
                    }
                };
                match verify::check(
                    buf.as_slice(),
                    sector,
                    v.seed,
                    s.cores,
                    v.expect_written,
                    expected,
                ) {
                    Ok(c) => {
                        res.verify.checked_sectors += c.sectors;
                        res.verify.tracked_sectors += c.tracked;
                    }
                    Err((bad, problem)) => {
                        res.verify.errors += 1;
                        if res.verify.first_errors.len() < MAX_MISMATCHES {
                            res.verify.first_errors.push(verify::mismatch(
                                bad,
                                s.block_size,
                                problem,
                            ));
                        }
                    }
                }
            }
        }
        if !slot.measured.get() {
            return;
        }
        let lat = now.saturating_duration_since(slot.start.get()).as_nanos() as u64;
        let dir = if slot.write.get() {
            &mut res.write
        } else {
            &mut res.read
        };
        dir.ios += 1;
        dir.bytes += slot.blocks.get() * u64::from(s.block_size);
        dir.hist.saturating_record(lat.max(1));
        let since = now.saturating_duration_since(self.measure_start.get());
        let cap = res.timeline.len();
        let b = ((since.as_nanos() / s.interval.as_nanos().max(1)) as usize).min(cap - 1);
        res.timeline[b] += 1;
        self.timeline_used.set(self.timeline_used.get().max(b + 1));
        self.last_done.set(now);
        s.progress.done[s.index as usize].store(res.read.ios + res.write.ios, Ordering::Relaxed);
    }

    /// Sends the result home and drops the channel and the self-reference.
    fn finish(&self) {
        let Some(tx) = self.reply.borrow_mut().take() else {
            return;
        };
        self.chan.borrow_mut().take();
        self.me.borrow_mut().take();
        let mut res = std::mem::replace(&mut *self.result.borrow_mut(), CoreResult::new(0, 0, 1.0));
        res.seconds = self
            .last_done
            .get()
            .saturating_duration_since(self.measure_start.get())
            .as_secs_f64();
        res.timeline.truncate(self.timeline_used.get());
        tx.send(Ok(res));
    }
}

impl IoSink for Worker {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let now = Instant::now();
        let slot = &self.slots[tag as usize];
        self.inflight.set(self.inflight.get() - 1);
        self.track_write_end(slot, result.is_ok());
        match (&result, buf) {
            (Ok(()), Some(buf)) => {
                self.record(slot, &buf, now);
                *slot.buf.borrow_mut() = Some(buf);
            }
            (res, buf) => {
                let e = res.clone().err().unwrap_or(BdevError::Closed);
                self.io_error(&e, slot.lba.get());
                match buf {
                    Some(b) => *slot.buf.borrow_mut() = Some(b),
                    // The buffer is gone with the failed request: stop this core.
                    None => {
                        self.phase.set(Phase::Drain);
                        return;
                    }
                }
            }
        }
        self.free.borrow_mut().push(tag as u32);
        self.fill_queue(now);
    }
}

impl Poller for Worker {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        if self.reply.borrow().is_none() {
            return PollStatus::Done;
        }
        if self.phase.get() != Phase::Drain {
            // Time passes even when no completion arrives (e.g. a stuck device).
            self.advance(Instant::now());
            return PollStatus::Idle;
        }
        if self.inflight.get() > 0 {
            return PollStatus::Idle;
        }
        self.finish();
        PollStatus::Done
    }

    fn shutdown(&self, _r: &Reactor) {
        // The reactor is stopping under us: stop issuing and let in-flight I/O drain;
        // dropping the reply tells the main thread the job was cancelled.
        self.phase.set(Phase::Drain);
        self.reply.borrow_mut().take();
        self.chan.borrow_mut().take();
        self.me.borrow_mut().take();
    }

    fn name(&self) -> &'static str {
        "ferrox-perf-worker"
    }
}
