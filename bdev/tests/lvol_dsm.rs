#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Deallocation (a DSM's unmaps) on a huge thin volume: the ranges are merged, the
//! work follows what is allocated rather than the virtual size, it runs in bounded
//! steps that let the reactor serve other I/O, and a bounded number run at once.

mod lvol_util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::lvol::{LvolBdev, LvolStore, DEALLOC_STEP_VISITS, MAX_UNMAPS};
use ferrox_bdev::{BdevError, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::{oneshot, Replier};
use ferrox_reactor::{DmaBuf, PollStatus, Poller, Reactor, ReactorGroup, ReactorHandle};
use lvol_util::*;

const CS: u64 = 1 << 20;
const BS: u64 = 512;
/// Blocks per cluster.
const CB: u64 = CS / BS;
/// The thin volume's virtual size: 4 TiB, 4 Mi clusters.
const VIRT: u64 = 4 << 40;
/// View entries per chunk summary (the engine's `VIEW_CHUNK`).
const CHUNK: u64 = 4096;

struct Setup {
    _g: ReactorGroup,
    h: ReactorHandle,
    store: Arc<LvolStore>,
    big: Arc<LvolBdev>,
    other: Arc<LvolBdev>,
}

/// One reactor for the engine and the I/O: "the same reactor".
fn setup(base_bytes: u64) -> Setup {
    let g = group(1);
    let h = g.handles()[0].clone();
    let store = LvolStore::create(malloc("base", base_bytes), "pool", CS, h.clone()).unwrap();
    store.create_volume("big", VIRT, true).unwrap();
    store.create_volume("other", 4 * CS, true).unwrap();
    let big = store.volume("big").unwrap();
    let other = store.volume("other").unwrap();
    Setup {
        _g: g,
        h,
        store,
        big,
        other,
    }
}

/// Writes 4 KiB at the head and at the tail of each volume cluster in `cs`.
fn fill(h: &ReactorHandle, dev: Arc<LvolBdev>, cs: &[u64]) {
    let reqs: Vec<Req> = cs
        .iter()
        .flat_map(|&c| {
            [
                Req::Write(c * CB, pattern(2 * c, 4096)),
                Req::Write(c * CB + CB - 8, pattern(2 * c + 1, 4096)),
            ]
        })
        .collect();
    for o in run(h, dev, reqs) {
        o.unwrap();
    }
}

/// What the head and tail of cluster `c` read: data written by `fill`, or zeroes.
fn head_tail(h: &ReactorHandle, dev: Arc<LvolBdev>, c: u64) -> (bool, bool) {
    let out = run(
        h,
        dev,
        vec![Req::Read(c * CB, 8), Req::Read(c * CB + CB - 8, 8)],
    );
    let got: Vec<Vec<u8>> = out.into_iter().map(|o| o.unwrap().unwrap()).collect();
    let is = |i: usize, seed: u64| {
        if got[i] == pattern(seed, 4096) {
            true
        } else {
            assert!(
                got[i].iter().all(|&b| b == 0),
                "cluster {c}: neither data nor zeroes"
            );
            false
        }
    };
    (is(0, 2 * c), is(1, 2 * c + 1))
}

fn owned(store: &LvolStore, name: &str) -> u64 {
    store
        .list()
        .unwrap()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap()
        .allocated_clusters
}

#[test]
fn a_dsm_of_64_whole_volume_ranges_costs_what_is_allocated() {
    let s = setup(64 << 20);
    let last = VIRT / CS - 1;
    let held = [0, 1, 5, 4095, 4096, 1 << 20, last];
    fill(&s.h, s.big.clone(), &held);
    fill(&s.h, s.other.clone(), &[0, 3]);
    let before = s.store.stats().unwrap().allocated_clusters;
    let nb = VIRT / BS;
    // 64 ranges, each over (nearly) the whole volume: 32 identical, 32 shifted.
    let reqs: Vec<Req> = (0..64u64)
        .map(|i| {
            if i % 2 == 0 {
                Req::Unmap(0, nb)
            } else {
                let at = i * CB + 3;
                Req::Unmap(at, nb - at)
            }
        })
        .collect();
    for o in run(&s.h, s.big.clone(), reqs) {
        o.unwrap();
    }
    let ds = s.store.dealloc_stats().unwrap();
    eprintln!("{ds:?}");
    assert_eq!(ds.freed, held.len() as u64);
    // The first MAX_UNMAPS start at once; of those queued, the first whole-volume
    // one covers every later range, which complete with it.
    assert_eq!(ds.requests, MAX_UNMAPS as u64 + 1, "{ds:?}");
    // Every batch walks its merged ranges once: chunk summaries over the volume, plus
    // the chunks that hold clusters — never a visit per virtual cluster per range.
    let chunks = VIRT / CS / CHUNK;
    let bound = ds.batches * (chunks + 64) + held.len() as u64 * (CHUNK + 1);
    assert!(ds.visited <= bound, "{} visits, bound {bound}", ds.visited);
    assert!(ds.visited < VIRT / CS / 16);
    // Scratch: merged ranges and the freed clusters, not a list per range.
    assert!(ds.peak_scratch_bytes <= 64 * 16 + 64 * 16, "{ds:?}");
    // Bounded steps, and a bounded number of deallocations at once.
    assert!(
        ds.max_step_visits <= DEALLOC_STEP_VISITS + CHUNK + 1,
        "{ds:?}"
    );
    assert!(ds.max_batch <= MAX_UNMAPS as u64, "{ds:?}");
    assert!(ds.max_held <= MAX_UNMAPS as u64, "{ds:?}");
    // The data: freed clusters read as zeroes, the other volume is untouched.
    assert_eq!(owned(&s.store, "big"), 0);
    assert_eq!(
        s.store.stats().unwrap().allocated_clusters,
        before - held.len() as u64
    );
    for &c in &held {
        assert_eq!(
            head_tail(&s.h, s.big.clone(), c),
            (false, false),
            "cluster {c}"
        );
    }
    for c in [0, 3] {
        assert_eq!(head_tail(&s.h, s.other.clone(), c), (true, true));
    }
    check_accounting(&s.store).unwrap();
}

#[test]
fn overlapping_partial_ranges_free_whole_clusters_only() {
    let s = setup(64 << 20);
    let last = VIRT / CS - 1;
    let held = [0, 1, 5, 4095, 4096, last];
    fill(&s.h, s.big.clone(), &held);
    let reqs = vec![
        // Clusters 1..4, three times over.
        Req::Unmap(CB, 3 * CB),
        Req::Unmap(CB, 3 * CB),
        Req::Unmap(CB + 5, 3 * CB - 5),
        // The tail of cluster 4 and the head of cluster 5: zeroed, not freed.
        Req::Unmap(5 * CB - 8, 16),
        // Cluster 4095, whole and overlapped.
        Req::Unmap(4095 * CB, CB),
        Req::Unmap(4095 * CB + 1, CB - 1),
        Req::Unmap(4094 * CB, 2 * CB),
    ];
    for o in run(&s.h, s.big.clone(), reqs) {
        o.unwrap();
    }
    assert_eq!(s.store.dealloc_stats().unwrap().freed, 2);
    assert_eq!(owned(&s.store, "big"), held.len() as u64 - 2);
    assert_eq!(head_tail(&s.h, s.big.clone(), 1), (false, false));
    assert_eq!(head_tail(&s.h, s.big.clone(), 4095), (false, false));
    assert_eq!(head_tail(&s.h, s.big.clone(), 5), (false, true));
    for c in [0, 4096, last] {
        assert_eq!(
            head_tail(&s.h, s.big.clone(), c),
            (true, true),
            "cluster {c}"
        );
    }
    check_accounting(&s.store).unwrap();
}

/// Counts the unmaps and the read of the ordering test.
#[derive(Default)]
struct Seen {
    unmaps_done: Cell<usize>,
    read_done: Cell<bool>,
    /// Clusters the engine had freed when the read completed.
    freed_at_read: Cell<Option<u64>>,
    read_ok: Cell<bool>,
}

struct Sink {
    seen: Rc<Seen>,
    store: Arc<LvolStore>,
}

const READ_TAG: u64 = u64::MAX;

/// Whether the read was sent, what was freed when it completed, whether it
/// succeeded, and how many unmaps completed.
type Outcome = (bool, Option<u64>, bool, usize);

impl IoSink for Sink {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, _buf: Option<DmaBuf>) {
        if tag == READ_TAG {
            let ds = self
                .store
                .dealloc_stats_here()
                .expect("on the metadata reactor");
            self.seen.freed_at_read.set(Some(ds.freed));
            self.seen.read_ok.set(result.is_ok());
            self.seen.read_done.set(true);
        } else {
            result.expect("an unmap");
            self.seen.unmaps_done.set(self.seen.unmaps_done.get() + 1);
        }
    }
}

/// Submits the read on `other` once the engine is part way through the walk (a
/// step has started and nothing is freed yet), and reports when everything is done.
struct Watch {
    sink: Rc<Sink>,
    other: IoChannel,
    _big: IoChannel,
    /// Reactor turns left before giving up (every loop bounded).
    turns: Cell<u64>,
    read_sent: Cell<bool>,
    reply: RefCell<Option<Replier<Outcome>>>,
}

impl Poller for Watch {
    fn poll(&self, r: &Reactor) -> PollStatus {
        let seen = &self.sink.seen;
        let ds = self
            .sink
            .store
            .dealloc_stats_here()
            .expect("on the metadata reactor");
        if !self.read_sent.get() && ds.steps > 0 && ds.freed == 0 {
            self.read_sent.set(true);
            let buf = r.pool().alloc(4096).expect("a buffer");
            let op = IoOp::Read {
                lba: 0,
                blocks: 8,
                buf,
            };
            let done = Completion {
                sink: self.sink.clone(),
                tag: READ_TAG,
            };
            self.other
                .submit(op, done)
                .map_err(|(e, _)| e)
                .expect("a read");
        }
        let t = self.turns.get();
        self.turns.set(t.saturating_sub(1));
        let all = seen.unmaps_done.get() == 64 && (seen.read_done.get() || !self.read_sent.get());
        if all || t == 0 {
            if let Some(tx) = self.reply.borrow_mut().take() {
                tx.send((
                    self.read_sent.get(),
                    seen.freed_at_read.get(),
                    seen.read_ok.get(),
                    seen.unmaps_done.get(),
                ));
            }
            return PollStatus::Done;
        }
        PollStatus::Busy
    }
}

#[test]
fn a_read_during_a_huge_deallocation_completes_before_it() {
    let s = setup(128 << 20);
    // One cluster at the end of each of 48 view chunks: walking them takes several
    // steps, however few clusters they are.
    let held: Vec<u64> = (0..48).map(|k| k * CHUNK * 16 + CHUNK - 1).collect();
    fill(&s.h, s.big.clone(), &held);
    fill(&s.h, s.other.clone(), &[0]);
    let nb = VIRT / BS;
    let (tx, rx) = oneshot();
    let (store, big, other) = (s.store.clone(), s.big.clone(), s.other.clone());
    s.h.send(move |r| {
        let seen = Rc::new(Seen::default());
        let sink = Rc::new(Sink { seen, store });
        let bigc = IoChannel::open(big, r).expect("a channel");
        let otherc = IoChannel::open(other, r).expect("a channel");
        for i in 0..64 {
            let done = Completion {
                sink: sink.clone(),
                tag: i,
            };
            let op = IoOp::Unmap { lba: 0, blocks: nb };
            bigc.submit(op, done).map_err(|(e, _)| e).expect("an unmap");
        }
        r.add_poller(Rc::new(Watch {
            sink,
            other: otherc,
            _big: bigc,
            turns: Cell::new(10_000_000),
            read_sent: Cell::new(false),
            reply: RefCell::new(Some(tx)),
        }));
    })
    .unwrap();
    let (sent, freed_at_read, read_ok, unmaps) = rx
        .wait_timeout(Duration::from_secs(120))
        .expect("the test's poller answers");
    assert_eq!(unmaps, 64, "every unmap completed");
    assert!(sent, "the walk was seen part way (it yields between steps)");
    assert!(read_ok);
    // The read completed while the walk was still going: nothing freed yet.
    assert_eq!(freed_at_read, Some(0));
    let ds = s.store.dealloc_stats().unwrap();
    assert_eq!(ds.freed, held.len() as u64);
    assert!(ds.steps >= 3, "{ds:?}");
    assert_eq!(owned(&s.store, "big"), 0);
}

#[test]
fn disjoint_ranges_wait_their_turn_and_all_free() {
    let s = setup(64 << 20);
    // 64 disjoint one-cluster ranges, 16 of them over held clusters.
    let ranges: Vec<u64> = (0..64).map(|k| k * 1000 + 7).collect();
    let held: Vec<u64> = ranges.iter().copied().step_by(4).collect();
    fill(&s.h, s.big.clone(), &held);
    let reqs = ranges.iter().map(|&c| Req::Unmap(c * CB, CB)).collect();
    for o in run(&s.h, s.big.clone(), reqs) {
        o.unwrap();
    }
    let ds = s.store.dealloc_stats().unwrap();
    assert_eq!(ds.requests, 64, "{ds:?}");
    assert_eq!(ds.freed, held.len() as u64);
    // No more than a channel's bound reached the engine at once.
    assert!(ds.max_held <= MAX_UNMAPS as u64, "{ds:?}");
    assert_eq!(owned(&s.store, "big"), 0);
    for &c in &held {
        assert_eq!(
            head_tail(&s.h, s.big.clone(), c),
            (false, false),
            "cluster {c}"
        );
    }
    check_accounting(&s.store).unwrap();
}
