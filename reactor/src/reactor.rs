//! One reactor: a pinned thread that runs pollers, timers and mailbox messages, and
//! reaps its io_uring, in a loop.
//!
//! # The adaptive-sleep handshake
//!
//! A reactor spins while any poller reports work. After `idle_threshold` of turns in
//! which nothing did, it parks:
//!
//! 1. it stores `parked = true` (SeqCst), then looks at the mailbox (and the queue of
//!    tasks woken from other threads) again; a message or wake that arrived before
//!    the store is seen here and the reactor does not park;
//! 2. it keeps a read of its eventfd armed in the ring, arms a one-shot poll for every
//!    poller's wake source (a socket) that is not armed yet, and waits in
//!    `io_uring_enter` until a completion arrives or the next timer is due;
//! 3. a sender (or a task's waker on another thread) pushes its message first, then
//!    loads `parked` (SeqCst) and writes the eventfd only when it is set.
//!
//! Both sides order "write mine, then read theirs" with SeqCst, so at least one of them
//! sees the other's write: either the reactor sees the message, or the sender sees
//! `parked` and wakes it. No wake-up is lost and a busy reactor pays no syscall.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::{ArrayQueue, SegQueue};
use io_uring::{opcode, types};

use crate::mailbox::Message;
use crate::pool::BufferPool;
use crate::ring::Ring;
use crate::sys::EventFd;
use crate::task::Tasks;

/// How a reactor waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Spin forever, like SPDK: lowest latency, one core burnt per reactor.
    Busy,
    /// Spin while there is work, park after the idle threshold.
    #[default]
    Adaptive,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "busy" => Ok(Self::Busy),
            "adaptive" => Ok(Self::Adaptive),
            _ => Err(format!(
                "poll mode {s:?}: expected \"busy\" or \"adaptive\""
            )),
        }
    }
}

/// What a poller did in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// It did work; keep spinning.
    Busy,
    /// Nothing to do.
    Idle,
    /// Finished: remove it.
    Done,
}

/// A file descriptor readiness that should wake a parked reactor for this poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeSource {
    pub fd: RawFd,
    /// `libc::POLLIN` and/or `libc::POLLOUT`.
    pub events: u32,
}

/// A function the reactor calls every loop turn.
pub trait Poller {
    fn poll(&self, r: &Reactor) -> PollStatus;
    /// What to wait on while parked (a socket); `None` when only ring completions,
    /// timers or messages can give this poller work.
    fn wake_source(&self) -> Option<WakeSource> {
        None
    }
    /// Called once when the reactor is asked to stop: close connections, fail queued
    /// work. The reactor keeps polling until the ring has no operation in flight.
    fn shutdown(&self, _r: &Reactor) {}
    fn name(&self) -> &'static str {
        "poller"
    }
}

/// Identifies a registered poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerId {
    slot: u32,
    generation: u32,
}

/// Identifies a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// Tunables of a reactor.
#[derive(Debug, Clone)]
pub struct ReactorOptions {
    pub poll_mode: PollMode,
    pub idle_threshold: Duration,
    pub mailbox_capacity: usize,
    pub ring_entries: u32,
    /// A loop turn longer than this is logged as a stall.
    pub stall_budget: Duration,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        Self {
            poll_mode: PollMode::Adaptive,
            idle_threshold: Duration::from_micros(100),
            mailbox_capacity: 1024,
            ring_entries: 256,
            stall_budget: Duration::from_millis(50),
        }
    }
}

/// Counters of one reactor, as published by it (at most a few hundred turns old).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactorStats {
    pub id: usize,
    pub core: usize,
    pub turns: u64,
    pub busy_turns: u64,
    pub idle_turns: u64,
    pub parks: u64,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub parked_ns: u64,
    pub messages: u64,
    pub completions: u64,
    pub stalls: u64,
    pub mailbox_full: u64,
}

#[derive(Default)]
pub(crate) struct AtomicStats {
    turns: AtomicU64,
    busy_turns: AtomicU64,
    idle_turns: AtomicU64,
    parks: AtomicU64,
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    parked_ns: AtomicU64,
    messages: AtomicU64,
    completions: AtomicU64,
    stalls: AtomicU64,
    pub(crate) mailbox_full: AtomicU64,
}

/// The part of a reactor other threads see.
pub(crate) struct Shared {
    pub(crate) id: usize,
    pub(crate) core: usize,
    pub(crate) mailbox: ArrayQueue<Message>,
    /// Tasks woken from other threads (see the `task` module); checked with the mailbox.
    pub(crate) woken: SegQueue<u64>,
    /// Set by the reactor before it parks; see the module documentation.
    pub(crate) parked: AtomicBool,
    pub(crate) wake: EventFd,
    pub(crate) stats: AtomicStats,
}

impl Shared {
    pub(crate) fn new(id: usize, core: usize, capacity: usize) -> std::io::Result<Self> {
        Ok(Self {
            id,
            core,
            mailbox: ArrayQueue::new(capacity),
            woken: SegQueue::new(),
            parked: AtomicBool::new(false),
            wake: EventFd::new()?,
            stats: AtomicStats::default(),
        })
    }

    /// Wakes the reactor if it is parked (the sender's half of the handshake).
    pub(crate) fn kick(&self) {
        // Pairs with the reactor's SeqCst store of `parked` followed by its mailbox
        // check: our push happened before this fence.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.wake.notify();
        }
    }

    pub(crate) fn snapshot(&self) -> ReactorStats {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReactorStats {
            id: self.id,
            core: self.core,
            turns: l(&s.turns),
            busy_turns: l(&s.busy_turns),
            idle_turns: l(&s.idle_turns),
            parks: l(&s.parks),
            busy_ns: l(&s.busy_ns),
            idle_ns: l(&s.idle_ns),
            parked_ns: l(&s.parked_ns),
            messages: l(&s.messages),
            completions: l(&s.completions),
            stalls: l(&s.stalls),
            mailbox_full: l(&s.mailbox_full),
        }
    }
}

struct PollerEntry {
    poller: Rc<dyn Poller>,
    generation: u32,
    /// A poll SQE for the wake source is in the ring.
    armed: bool,
}

type TimerFn = Box<dyn FnMut(&Reactor)>;

struct Timer {
    period: Option<Duration>,
    f: TimerFn,
}

// Tags of the reactor's own ring operations (handler id 0).
const TAG_EVENTFD: u32 = 0;
const TAG_POLL: u32 = 1 << 31;
const TAG_CANCEL: u32 = 1 << 30;
const POLL_GEN_BITS: u32 = 11;
const POLL_GEN_MASK: u32 = (1 << POLL_GEN_BITS) - 1;

#[derive(Default)]
struct LocalStats {
    turns: u64,
    busy_turns: u64,
    idle_turns: u64,
    parks: u64,
    busy_ns: u64,
    idle_ns: u64,
    parked_ns: u64,
    messages: u64,
    stalls: u64,
}

/// The reactor running on the current thread. Not `Send`: everything it owns belongs
/// to its core.
pub struct Reactor {
    shared: Arc<Shared>,
    ring: Ring,
    pool: &'static BufferPool,
    fixed_buffers: bool,
    opts: ReactorOptions,
    pollers: RefCell<Vec<Option<PollerEntry>>>,
    poller_gen: Cell<u32>,
    timers: RefCell<HashMap<u64, Timer>>,
    timer_heap: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    next_timer: Cell<u64>,
    running_timer: Cell<Option<(u64, bool)>>,
    eventfd_armed: Cell<bool>,
    stopping: Cell<bool>,
    now: Cell<Instant>,
    stats: RefCell<LocalStats>,
    pub(crate) tasks: Tasks,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

impl Reactor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pool: &'static BufferPool,
        opts: ReactorOptions,
    ) -> std::io::Result<Rc<Self>> {
        let ring = Ring::new(opts.ring_entries)?;
        let fixed_buffers = ring.register_buffers(&pool.iovecs());
        let r = Rc::new(Self {
            shared,
            ring,
            pool,
            fixed_buffers,
            opts,
            pollers: RefCell::new(Vec::new()),
            poller_gen: Cell::new(0),
            timers: RefCell::new(HashMap::new()),
            timer_heap: RefCell::new(BinaryHeap::new()),
            next_timer: Cell::new(1),
            running_timer: Cell::new(None),
            eventfd_armed: Cell::new(false),
            stopping: Cell::new(false),
            now: Cell::new(Instant::now()),
            stats: RefCell::new(LocalStats::default()),
            tasks: Tasks::default(),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(r.clone()));
        Ok(r)
    }

    /// Runs `f` with the current thread's reactor; panics on a non-reactor thread.
    pub fn with<R>(f: impl FnOnce(&Reactor) -> R) -> R {
        let r = CURRENT
            .with(|c| c.borrow().clone())
            .expect("Reactor::with called outside a reactor thread");
        f(&r)
    }

    /// The current thread's reactor, if it is one.
    pub fn try_current() -> Option<Rc<Reactor>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    pub fn id(&self) -> usize {
        self.shared.id
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A handle to this reactor, to send work (or a reply) back to it.
    pub fn handle(&self) -> crate::ReactorHandle {
        crate::ReactorHandle::new(self.shared.clone())
    }

    pub fn core(&self) -> usize {
        self.shared.core
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn pool(&self) -> &'static BufferPool {
        self.pool
    }

    /// The pool's regions are registered with this reactor's ring as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    pub fn poll_mode(&self) -> PollMode {
        self.opts.poll_mode
    }

    /// The time at the start of this loop turn.
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// The reactor is draining for shutdown.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub fn stats(&self) -> ReactorStats {
        self.publish_stats();
        self.shared.snapshot()
    }

    pub fn add_poller(&self, poller: Rc<dyn Poller>) -> PollerId {
        let generation = self.poller_gen.get().wrapping_add(1);
        self.poller_gen.set(generation);
        let entry = PollerEntry {
            poller,
            generation,
            armed: false,
        };
        let mut ps = self.pollers.borrow_mut();
        let slot = match ps.iter().position(Option::is_none) {
            Some(i) => {
                ps[i] = Some(entry);
                i
            }
            None => {
                ps.push(Some(entry));
                ps.len() - 1
            }
        };
        PollerId {
            slot: slot as u32,
            generation,
        }
    }

    /// Removes a poller (no-op when already gone) and cancels its armed wake-up.
    pub fn remove_poller(&self, id: PollerId) {
        let mut ps = self.pollers.borrow_mut();
        let Some(slot) = ps.get_mut(id.slot as usize) else {
            return;
        };
        if slot.as_ref().is_some_and(|e| e.generation == id.generation) {
            let e = slot.take().expect("checked");
            if e.armed {
                let ud = poll_user_data(id.slot, e.generation);
                self.push_own(
                    &opcode::AsyncCancel::new(ud)
                        .build()
                        .user_data(u64::from(TAG_CANCEL)),
                );
            }
        }
    }

    /// Runs `f` once after `after`.
    pub fn add_timer(&self, after: Duration, f: impl FnMut(&Reactor) + 'static) -> TimerId {
        self.insert_timer(after, None, Box::new(f))
    }

    /// Runs `f` every `period`, first after one period.
    pub fn add_periodic(&self, period: Duration, f: impl FnMut(&Reactor) + 'static) -> TimerId {
        self.insert_timer(period, Some(period), Box::new(f))
    }

    fn insert_timer(&self, after: Duration, period: Option<Duration>, f: TimerFn) -> TimerId {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        self.timers.borrow_mut().insert(id, Timer { period, f });
        let due = Instant::now() + after;
        self.timer_heap.borrow_mut().push(Reverse((due, id)));
        TimerId(id)
    }

    /// Timers armed and neither fired (one-shot) nor cancelled.
    pub fn pending_timers(&self) -> usize {
        self.timers.borrow().len()
    }

    pub fn cancel_timer(&self, id: TimerId) {
        if self.timers.borrow_mut().remove(&id.0).is_none() {
            if let Some((running, _)) = self.running_timer.get() {
                if running == id.0 {
                    self.running_timer.set(Some((running, true)));
                }
            }
        }
    }

    fn run_timers(&self, now: Instant) -> bool {
        let mut ran = false;
        loop {
            let id = {
                let mut heap = self.timer_heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse((due, _))) if *due <= now => heap.pop().expect("peeked").0 .1,
                    _ => break,
                }
            };
            let Some(mut t) = self.timers.borrow_mut().remove(&id) else {
                continue; // cancelled
            };
            ran = true;
            self.running_timer.set(Some((id, false)));
            (t.f)(self);
            let cancelled = matches!(self.running_timer.take(), Some((_, true)));
            if let (Some(p), false) = (t.period, cancelled) {
                self.timers.borrow_mut().insert(id, t);
                self.timer_heap.borrow_mut().push(Reverse((now + p, id)));
            }
        }
        ran
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timers = self.timers.borrow();
        let mut heap = self.timer_heap.borrow_mut();
        while let Some(Reverse((due, id))) = heap.peek() {
            if timers.contains_key(id) {
                return Some(*due);
            }
            heap.pop();
        }
        None
    }

    /// Cancels the ring operation with `user_data` (its completion still arrives).
    pub(crate) fn cancel_op(&self, user_data: u64) {
        self.push_own(
            &opcode::AsyncCancel::new(user_data)
                .build()
                .user_data(u64::from(TAG_CANCEL)),
        );
    }

    fn push_own(&self, sqe: &io_uring::squeue::Entry) {
        self.ring.push_pointerless(sqe);
    }

    fn on_own_completion(&self, tag: u32, res: i32) {
        if tag == TAG_EVENTFD {
            self.eventfd_armed.set(false);
            self.shared.wake.drain();
        } else if tag & TAG_POLL != 0 {
            let slot = (tag & !TAG_POLL) >> POLL_GEN_BITS;
            let generation = tag & POLL_GEN_MASK;
            if let Some(Some(e)) = self.pollers.borrow_mut().get_mut(slot as usize) {
                if e.generation & POLL_GEN_MASK == generation {
                    e.armed = false;
                }
            }
            let _ = res;
        }
    }

    fn run_mailbox(&self) -> u64 {
        let mut n = 0;
        while n < 64 {
            let Some(msg) = self.shared.mailbox.pop() else {
                break;
            };
            msg(self);
            n += 1;
        }
        n
    }

    fn run_pollers(&self) -> bool {
        let mut busy = false;
        let len = self.pollers.borrow().len();
        for i in 0..len {
            let (p, generation) = match self.pollers.borrow().get(i) {
                Some(Some(e)) => (e.poller.clone(), e.generation),
                _ => continue,
            };
            match p.poll(self) {
                PollStatus::Busy => busy = true,
                PollStatus::Idle => {}
                PollStatus::Done => {
                    self.remove_poller(PollerId {
                        slot: i as u32,
                        generation,
                    });
                    busy = true;
                }
            }
        }
        busy
    }

    /// Runs the loop until asked to stop and drained.
    pub(crate) fn run(&self, stop: &AtomicBool) {
        let mut idle_since: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let start = Instant::now();
            self.now.set(start);
            let mut busy = false;

            let msgs = self.run_mailbox();
            busy |= msgs > 0;
            busy |= self
                .ring
                .reap(&mut |tag, res, _| self.on_own_completion(tag, res))
                > 0;
            busy |= self.run_pollers();
            busy |= self.run_timers(start);
            busy |= self.tasks.run(&self.shared);
            self.ring.flush();

            let end = Instant::now();
            let spent = (end - start).as_nanos() as u64;
            {
                let mut s = self.stats.borrow_mut();
                s.turns += 1;
                s.messages += msgs;
                if busy {
                    s.busy_turns += 1;
                    s.busy_ns += spent;
                } else {
                    s.idle_turns += 1;
                    s.idle_ns += spent;
                }
                if end - start > self.opts.stall_budget {
                    s.stalls += 1;
                    tracing::warn!(
                        reactor = self.id(),
                        turn_ms = (end - start).as_millis() as u64,
                        "reactor stall: one loop turn exceeded the budget"
                    );
                }
                if s.turns.is_multiple_of(256) {
                    drop(s);
                    self.publish_stats();
                }
            }

            if stop.load(Ordering::Acquire) && !self.stopping.get() {
                self.begin_stop();
                drain_deadline = Some(end + Duration::from_secs(5));
            }
            if let Some(deadline) = drain_deadline {
                let own = u64::from(self.eventfd_armed.get()) + self.armed_polls();
                if self.ring.in_flight() <= own || end > deadline {
                    break;
                }
                continue; // spin while draining
            }

            if busy {
                idle_since = None;
            } else if self.opts.poll_mode == PollMode::Adaptive {
                let since = *idle_since.get_or_insert(end);
                if end - since >= self.opts.idle_threshold {
                    self.park();
                    idle_since = None;
                }
            }
        }
        self.publish_stats();
        // Drop tasks, pollers and timers on this thread, before the ring goes away.
        self.tasks.clear();
        self.pollers.borrow_mut().clear();
        self.timers.borrow_mut().clear();
        CURRENT.with(|c| c.borrow_mut().take());
    }

    fn armed_polls(&self) -> u64 {
        self.pollers
            .borrow()
            .iter()
            .flatten()
            .filter(|e| e.armed)
            .count() as u64
    }

    fn begin_stop(&self) {
        self.stopping.set(true);
        let pollers: Vec<Rc<dyn Poller>> = self
            .pollers
            .borrow()
            .iter()
            .flatten()
            .map(|e| e.poller.clone())
            .collect();
        for p in pollers {
            p.shutdown(self);
        }
        self.tasks.clear();
        // Cancel the armed wake-up polls, and drain waits for them: an armed poll keeps
        // its socket alive in the kernel until the ring is gone (a closed listener
        // would keep its port bound for a while after the reactor stopped).
        let armed: Vec<u64> = self
            .pollers
            .borrow()
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| {
                e.as_ref()
                    .filter(|e| e.armed)
                    .map(|e| poll_user_data(slot as u32, e.generation))
            })
            .collect();
        for ud in armed {
            self.push_own(
                &opcode::AsyncCancel::new(ud)
                    .build()
                    .user_data(u64::from(TAG_CANCEL)),
            );
        }
        // Messages still queued are dropped, which cancels their replies.
        while self.shared.mailbox.pop().is_some() {}
    }

    fn park(&self) {
        let t0 = Instant::now();
        self.shared.parked.store(true, Ordering::SeqCst);
        // Pairs with `Shared::kick`: a message pushed before our store is visible now.
        fence(Ordering::SeqCst);
        if !self.shared.mailbox.is_empty() || self.tasks.has_ready(&self.shared) {
            self.shared.parked.store(false, Ordering::Relaxed);
            return;
        }
        if !self.eventfd_armed.get() {
            let sqe =
                opcode::PollAdd::new(types::Fd(self.shared.wake.as_raw_fd()), libc::POLLIN as u32)
                    .build()
                    .user_data(u64::from(TAG_EVENTFD));
            self.push_own(&sqe);
            self.eventfd_armed.set(true);
        }
        let mut to_arm = Vec::new();
        for (i, e) in self.pollers.borrow_mut().iter_mut().enumerate() {
            let Some(e) = e else { continue };
            if e.armed {
                continue;
            }
            if let Some(ws) = e.poller.wake_source() {
                to_arm.push((poll_user_data(i as u32, e.generation), ws));
                e.armed = true;
            }
        }
        for (ud, ws) in to_arm {
            let sqe = opcode::PollAdd::new(types::Fd(ws.fd), ws.events)
                .build()
                .user_data(ud);
            self.push_own(&sqe);
        }
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        self.stats.borrow_mut().parks += 1;
        // Parking costs a syscall anyway; publishing first keeps the figures fresh
        // for whoever watches an idle reactor.
        self.publish_stats();
        self.ring.wait(timeout);
        self.shared.parked.store(false, Ordering::Relaxed);
        self.stats.borrow_mut().parked_ns += t0.elapsed().as_nanos() as u64;
    }

    fn publish_stats(&self) {
        let s = self.stats.borrow();
        let a = &self.shared.stats;
        let st = |x: &AtomicU64, v: u64| x.store(v, Ordering::Relaxed);
        st(&a.turns, s.turns);
        st(&a.busy_turns, s.busy_turns);
        st(&a.idle_turns, s.idle_turns);
        st(&a.parks, s.parks);
        st(&a.busy_ns, s.busy_ns);
        st(&a.idle_ns, s.idle_ns);
        st(&a.parked_ns, s.parked_ns);
        st(&a.messages, s.messages);
        st(&a.completions, self.ring.completions());
        st(&a.stalls, s.stalls);
    }
}

/// Runs `f` with the current thread's reactor when it is the one `shared` belongs to
/// (and not being torn down); returns whether it ran.
pub(crate) fn with_current_of(shared: &Arc<Shared>, f: impl FnOnce(&Reactor)) -> bool {
    CURRENT
        .try_with(|c| match c.try_borrow().as_deref() {
            Ok(Some(r)) if Arc::ptr_eq(&r.shared, shared) => {
                f(r);
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

fn poll_user_data(slot: u32, generation: u32) -> u64 {
    u64::from(TAG_POLL | (slot << POLL_GEN_BITS) | (generation & POLL_GEN_MASK))
}
