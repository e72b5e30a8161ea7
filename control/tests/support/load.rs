//! A closed-loop I/O load on a published volume through the NVMe/TCP host library:
//! `qd` 4 KiB requests kept in flight on a host reactor (alternating writes and reads
//! over the volume), until stopped. Progress is observable with a bounded wait.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ferrox_bdev::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_nvmeof::host::{HostOptions, NvmfBdev};
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, DmaBuf, PoolConfig, ReactorGroup, ReactorHandle,
    ReactorOptions,
};

/// Blocks per request (4 KiB of 512-byte blocks).
const BLOCKS: u64 = 8;

/// What the load counted, shared with the test thread.
#[derive(Default)]
pub struct LoadStats {
    /// Completed requests (ok or not), for progress waits.
    done: Mutex<u64>,
    cv: Condvar,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    stop: AtomicBool,
    stopped: Mutex<bool>,
    stopped_cv: Condvar,
}

impl LoadStats {
    pub fn completed(&self) -> u64 {
        *self.done.lock().unwrap()
    }

    /// Waits until more than `seen` requests completed; `false` when `bound` passed
    /// first (the load stalled for that long).
    pub fn wait_beyond(&self, seen: u64, bound: Duration) -> bool {
        let g = self.done.lock().unwrap();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, bound, |d| *d <= seen)
            .unwrap();
        *g > seen
    }
}

struct Driver {
    me: Weak<Driver>,
    pool: &'static BufferPool,
    chan: IoChannel,
    blocks: u64,
    next: Cell<u64>,
    in_flight: Cell<usize>,
    stats: Arc<LoadStats>,
    spare: RefCell<Vec<DmaBuf>>,
}

impl Driver {
    fn submit_one(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let n = self.next.get();
        self.next.set(n + 1);
        // A stride that visits the whole volume in a scattered order.
        let slots = (self.blocks / BLOCKS).max(1);
        let lba = (n.wrapping_mul(7919) % slots) * BLOCKS;
        let buf = match self.spare.borrow_mut().pop() {
            Some(b) => b,
            None => match self.pool.alloc(4096) {
                Some(b) => b,
                None => return self.fail("buffer pool exhausted".into()),
            },
        };
        let op = if n.is_multiple_of(2) {
            IoOp::Write {
                lba,
                blocks: BLOCKS,
                buf,
                fua: false,
            }
        } else {
            IoOp::Read {
                lba,
                blocks: BLOCKS,
                buf,
            }
        };
        let done = Completion { sink: me, tag: 0 };
        self.in_flight.set(self.in_flight.get() + 1);
        if let Err((e, _)) = self.chan.submit(op, done) {
            self.in_flight.set(self.in_flight.get() - 1);
            self.fail(format!("submit: {e}"));
        }
    }

    fn fail(&self, msg: String) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.stats.first_error.lock().unwrap().get_or_insert(msg);
    }
}

thread_local! {
    /// Keeps the driver alive on its reactor until the load stops.
    static DRIVER: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
}

impl IoSink for Driver {
    fn io_done(&self, _tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        self.in_flight.set(self.in_flight.get() - 1);
        match result {
            Ok(()) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.fail(format!("I/O: {e}")),
        }
        if let Some(b) = buf {
            self.spare.borrow_mut().push(b);
        }
        *self.stats.done.lock().unwrap() += 1;
        self.stats.cv.notify_all();
        if self.stats.stop.load(Ordering::Relaxed) {
            if self.in_flight.get() == 0 {
                DRIVER.with(|d| d.borrow_mut().take());
                *self.stats.stopped.lock().unwrap() = true;
                self.stats.stopped_cv.notify_all();
            }
            return;
        }
        self.submit_one();
    }
}

/// A host reactor group (on the last core) and a load running on it.
pub struct Load {
    pub stats: Arc<LoadStats>,
    group: Option<ReactorGroup>,
}

/// A host reactor group on the last core, with buffers for the load.
pub fn host_group() -> ReactorGroup {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 512,
            },
            ClassConfig {
                size: 128 << 10,
                count: 16,
            },
        ],
        hugepages: false,
    })
    .unwrap();
    let core = *available_cores().last().unwrap();
    ReactorGroup::start(&[core], &ReactorOptions::default(), pool).unwrap()
}

/// Connects to `nqn` at `listener` ("ip:port").
pub fn connect(listener: &str, nqn: &str) -> Arc<dyn BlockDevice> {
    let opts = HostOptions {
        queue_depth: 32,
        kato_ms: 5000,
        io_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    NvmfBdev::connect(&format!("nvme+tcp://{listener}/{nqn}"), &opts).expect("connect the host")
}

impl Load {
    /// Starts `qd` requests in flight on `dev`.
    pub fn start(dev: Arc<dyn BlockDevice>, qd: usize) -> Self {
        let group = host_group();
        let stats = Arc::new(LoadStats::default());
        let st = stats.clone();
        start_on(&group.handles()[0], dev, qd, st);
        Self {
            stats,
            group: Some(group),
        }
    }

    /// Stops submitting and waits (bounded) for the requests in flight.
    pub fn stop(mut self) -> Arc<LoadStats> {
        self.stats.stop.store(true, Ordering::Relaxed);
        let g = self.stats.stopped.lock().unwrap();
        let (g, _) = self
            .stats
            .stopped_cv
            .wait_timeout_while(g, Duration::from_secs(60), |s| !*s)
            .unwrap();
        assert!(
            *g,
            "the load's requests did not complete within 60 s of stop"
        );
        drop(g);
        if let Some(g) = self.group.take() {
            g.shutdown();
        }
        self.stats.clone()
    }
}

fn start_on(h: &ReactorHandle, dev: Arc<dyn BlockDevice>, qd: usize, stats: Arc<LoadStats>) {
    h.send(move |r| {
        let blocks = dev.info().num_blocks;
        let chan = IoChannel::open(dev, r).expect("open a channel");
        let pool = r.pool();
        let d = Rc::new_cyclic(|me| Driver {
            me: me.clone(),
            pool,
            chan,
            blocks,
            next: Cell::new(0),
            in_flight: Cell::new(0),
            stats,
            spare: RefCell::new(Vec::new()),
        });
        DRIVER.with(|x| *x.borrow_mut() = Some(d.clone()));
        for _ in 0..qd {
            d.submit_one();
        }
    })
    .unwrap();
}
