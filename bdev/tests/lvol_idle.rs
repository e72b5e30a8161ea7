#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! The metadata reactor does not spin while a job waits: with a commit's flush held
//! back (a slow `fdatasync`), or a freeze waiting for a write held on another reactor,
//! the reactor parks, and the job finishes once the request is let through.

mod lvol_util;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ferrox_bdev::lvol::LvolStore;
use ferrox_bdev::{BdevInfo, BlockDevice, ChannelImpl, Completion, IoChannel, IoOp};
use ferrox_reactor::{Reactor, ReactorHandle};
use lvol_util::*;

const CS: u64 = 4096;

/// A device that keeps flushes back while `hold` is set (and writes on reactor
/// `hold_writes_on - 1`), until `release` runs on the reactor that holds them.
struct HeldBdev {
    inner: Arc<dyn BlockDevice>,
    hold: AtomicBool,
    hold_writes_on: AtomicUsize,
    held_count: AtomicU64,
    /// The reactor's park count when the flush was held.
    parks_at_hold: AtomicU64,
}

thread_local! {
    static HELD: RefCell<Vec<(Rc<IoChannel>, IoOp, Completion)>> = const { RefCell::new(Vec::new()) };
}

struct HeldChan {
    dev: Arc<HeldBdev>,
    inner: Rc<IoChannel>,
}

impl BlockDevice for HeldBdev {
    fn info(&self) -> &BdevInfo {
        self.inner.info()
    }

    fn open_channel(
        self: Arc<Self>,
        r: &Reactor,
    ) -> Result<Rc<dyn ChannelImpl>, ferrox_bdev::BdevError> {
        let inner = Rc::new(IoChannel::open(self.inner.clone(), r)?);
        Ok(Rc::new(HeldChan { dev: self, inner }))
    }
}

impl ChannelImpl for HeldChan {
    fn submit(&self, op: IoOp, done: Completion) {
        let here = Reactor::with(|r| r.id()) + 1;
        let write_held = matches!(op, IoOp::Write { .. })
            && self.dev.hold_writes_on.load(Ordering::SeqCst) == here;
        if write_held || matches!(op, IoOp::Flush) && self.dev.hold.load(Ordering::SeqCst) {
            HELD.with(|h| h.borrow_mut().push((self.inner.clone(), op, done)));
            let parks = Reactor::with(|r| r.stats().parks);
            self.dev.parks_at_hold.store(parks, Ordering::SeqCst);
            self.dev.held_count.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Err((e, op)) = self.inner.submit(op, done) {
            panic!("base refused {op:?}: {e}");
        }
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

fn release(h: &ReactorHandle) {
    h.call(|_| {
        for (chan, op, done) in HELD.with(|h| std::mem::take(&mut *h.borrow_mut())) {
            chan.submit(op, done).map_err(|(e, _)| e).unwrap();
        }
    })
    .unwrap()
    .wait()
    .unwrap();
}

/// Waits (bounded, without sleeping) until `f` holds.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::yield_now();
    }
}

fn held_bdev() -> Arc<HeldBdev> {
    Arc::new(HeldBdev {
        inner: malloc("m", 2 << 20),
        hold: AtomicBool::new(false),
        hold_writes_on: AtomicUsize::new(0),
        held_count: AtomicU64::new(0),
        parks_at_hold: AtomicU64::new(0),
    })
}

#[test]
fn the_metadata_reactor_parks_while_a_commit_waits_for_its_flush() {
    let g = group(1);
    let meta = g.handles()[0].clone();
    let dev = held_bdev();
    let store = LvolStore::create(dev.clone(), "pool", CS, meta.clone()).unwrap();

    dev.hold.store(true, Ordering::SeqCst);
    let s2 = store.clone();
    let job = std::thread::spawn(move || s2.create_volume("v", 16 * CS, true));
    wait_until("the commit's flush is held", || {
        dev.held_count.load(Ordering::SeqCst) == 1
    });
    // The job waits for its flush: nothing else to do, so the reactor must park
    // (the engine used to poll the job every turn and report work).
    let p0 = dev.parks_at_hold.load(Ordering::SeqCst);
    wait_until("the reactor parked while the flush was held", || {
        meta.stats().parks > p0
    });
    assert!(!job.is_finished(), "the job waits for its flush");

    dev.hold.store(false, Ordering::SeqCst);
    release(&meta);
    let info = job.join().unwrap().unwrap();
    assert_eq!(info.name, "v");
    assert_eq!(store.list().unwrap().len(), 1);

    // And an idle pool lets its reactor park again (counted from a turn it was awake).
    let p1 = meta.call(|r| r.stats().parks).unwrap().wait().unwrap();
    wait_until("the idle pool's reactor parked", || meta.stats().parks > p1);
}

#[test]
fn a_freeze_waiting_for_io_on_another_reactor_lets_the_metadata_reactor_park() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let dev = held_bdev();
    let store = LvolStore::create(dev.clone(), "pool", CS, meta.clone()).unwrap();
    store.create_volume("v", 16 * CS, true).unwrap();
    let v = store.volume("v").unwrap();
    // Allocate the cluster first: the held write then needs nothing from the engine.
    write(&io, v.clone(), 0, pattern(1, CS as usize)).unwrap();

    dev.hold_writes_on.store(io.id() + 1, Ordering::SeqCst);
    let (io2, v2) = (io.clone(), v.clone());
    let writer = std::thread::spawn(move || write(&io2, v2, 0, pattern(2, CS as usize)));
    wait_until("the write is held", || {
        dev.held_count.load(Ordering::SeqCst) == 1
    });
    // The metadata reactor parks (only a message wakes it), then gets the snapshot.
    let p0 = meta.call(|r| r.stats().parks).unwrap().wait().unwrap();
    wait_until("the metadata reactor parked", || meta.stats().parks > p0);
    let s2 = store.clone();
    let snap = std::thread::spawn(move || s2.snapshot("v", "s"));
    // The snapshot's freeze waits for the held write: the reactor must park again.
    wait_until("the metadata reactor parked during the freeze", || {
        meta.stats().parks > p0 + 1
    });
    assert!(!snap.is_finished(), "the freeze waits for the write");

    // The write ends on the I/O reactor, which wakes the freeze across reactors.
    dev.hold_writes_on.store(0, Ordering::SeqCst);
    release(&io);
    writer.join().unwrap().unwrap();
    wait_until("the snapshot finished", || snap.is_finished());
    assert_eq!(snap.join().unwrap().unwrap().name, "s");
}
