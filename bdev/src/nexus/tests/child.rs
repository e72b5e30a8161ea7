//! A test child: a RAM disk that can be told to fail, stall, hold one read's
//! completion, or come back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use ferrox_reactor::{DmaBuf, Reactor};

use crate::malloc::MallocBdev;
use crate::{
    defer_completion, BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoChannel, IoOp,
    IoSink,
};

const OK: u8 = 0;
const FAIL: u8 = 1;
const STALL: u8 = 2;
const NONE: u64 = u64::MAX;

pub struct TestChild {
    pub mem: Arc<MallocBdev>,
    info: BdevInfo,
    mode: AtomicU8,
    /// Bytes of writes, write zeroes and unmaps that reached the disk.
    pub written: AtomicU64,
    /// Reads that reached the disk.
    pub reads: AtomicU64,
    /// A read starting at this LBA is done at once but its completion held.
    hold_read: AtomicU64,
    /// Completions wait up to this many reactor turns (random; 0: none), so
    /// requests of other tasks run between a request's effect and its completion.
    jitter: AtomicU64,
}

type Held = (Completion, Result<(), BdevError>, Option<DmaBuf>);

thread_local! {
    /// Held read completions and stalled requests, by child name.
    static HELD: RefCell<HashMap<String, Vec<Held>>> = RefCell::new(HashMap::new());
    static STALLED: RefCell<HashMap<String, Vec<(IoOp, Completion)>>> = RefCell::new(HashMap::new());
}

impl TestChild {
    pub fn new(name: &str, blocks: u64) -> Arc<Self> {
        let mem = MallocBdev::new(name, blocks, 512).unwrap();
        let mut info = mem.info().clone();
        info.name = name.to_string();
        Arc::new(Self {
            mem,
            info,
            mode: AtomicU8::new(OK),
            written: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            hold_read: AtomicU64::new(NONE),
            jitter: AtomicU64::new(0),
        })
    }

    /// Like [`TestChild::new`], reporting a volatile write cache.
    pub fn new_volatile(name: &str, blocks: u64) -> Arc<Self> {
        let mem = MallocBdev::new(name, blocks, 512).unwrap();
        let mut info = mem.info().clone();
        info.name = name.to_string();
        info.volatile_cache = true;
        Arc::new(Self {
            mem,
            info,
            mode: AtomicU8::new(OK),
            written: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            hold_read: AtomicU64::new(NONE),
            jitter: AtomicU64::new(0),
        })
    }

    pub fn fail(&self) {
        self.mode.store(FAIL, Ordering::SeqCst);
    }

    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
    }

    /// Serves requests again; stalled ones fail (on the calling reactor).
    pub fn come_back(&self) {
        self.mode.store(OK, Ordering::SeqCst);
        let stalled = STALLED.with(|s| s.borrow_mut().remove(&self.info.name));
        Reactor::with(|r| {
            for (op, done) in stalled.unwrap_or_default() {
                defer_completion(r, done, Err(BdevError::Io(libc::EIO)), op.into_buf());
            }
        });
    }

    pub fn set_jitter(&self, turns: u64) {
        self.jitter.store(turns, Ordering::SeqCst);
    }

    pub fn hold_read_at(&self, lba: u64) {
        self.hold_read.store(lba, Ordering::SeqCst);
    }

    /// Read completions held now (on the calling reactor).
    pub fn held(&self) -> usize {
        HELD.with(|h| h.borrow().get(&self.info.name).map_or(0, Vec::len))
    }

    /// Stops holding and completes the held reads.
    pub fn release(&self) {
        self.hold_read.store(NONE, Ordering::SeqCst);
        let held = HELD.with(|h| h.borrow_mut().remove(&self.info.name));
        Reactor::with(|r| {
            for (done, res, buf) in held.unwrap_or_default() {
                defer_completion(r, done, res, buf);
            }
        });
    }
}

impl BlockDevice for TestChild {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let inner = IoChannel::open(self.mem.clone(), r)?;
        Ok(Rc::new(Rc::new(TestChan {
            dev: self,
            inner,
            holding: RefCell::new(HashMap::new()),
            next: std::cell::Cell::new(0),
            rng: std::cell::Cell::new(0x9e37_79b9_7f4a_7c15),
        })))
    }
}

struct TestChan {
    dev: Arc<TestChild>,
    inner: IoChannel,
    /// Requests passed to the disk, by tag: their completion and whether to hold it.
    holding: RefCell<HashMap<u64, (Completion, bool)>>,
    next: std::cell::Cell<u64>,
    rng: std::cell::Cell<u64>,
}

impl IoSink for TestChan {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let (done, hold) = self.holding.borrow_mut().remove(&tag).expect("a known tag");
        if hold {
            HELD.with(|h| {
                h.borrow_mut()
                    .entry(self.dev.info.name.clone())
                    .or_default()
                    .push((done, result, buf))
            });
        } else {
            let jitter = self.dev.jitter.load(Ordering::SeqCst);
            if jitter == 0 {
                return done.complete(result, buf);
            }
            // xorshift64
            let mut x = self.rng.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng.set(x);
            let turns = x % (jitter + 1);
            Reactor::with(|r| {
                r.spawn_local(async move {
                    for _ in 0..turns {
                        ferrox_reactor::task::yield_now().await;
                    }
                    done.complete(result, buf);
                })
            });
        }
    }
}

impl ChannelImpl for Rc<TestChan> {
    fn submit(&self, op: IoOp, done: Completion) {
        let d = &self.dev;
        match d.mode.load(Ordering::SeqCst) {
            FAIL => {
                return Reactor::with(|r| {
                    defer_completion(r, done, Err(BdevError::Io(libc::EIO)), op.into_buf())
                })
            }
            STALL => {
                STALLED.with(|s| {
                    s.borrow_mut()
                        .entry(d.info.name.clone())
                        .or_default()
                        .push((op, done))
                });
                return;
            }
            _ => {}
        }
        let bs = u64::from(d.info.block_size);
        let hold = match &op {
            IoOp::Read { lba, .. } => {
                d.reads.fetch_add(1, Ordering::SeqCst);
                *lba == d.hold_read.load(Ordering::SeqCst)
            }
            IoOp::Write { blocks, .. }
            | IoOp::WriteZeroes { blocks, .. }
            | IoOp::Unmap { blocks, .. } => {
                d.written.fetch_add(blocks * bs, Ordering::SeqCst);
                false
            }
            IoOp::Flush => false,
        };
        let tag = self.next.get();
        self.next.set(tag + 1);
        self.holding.borrow_mut().insert(tag, (done, hold));
        let sink: Rc<dyn IoSink> = self.clone();
        if let Err((e, op)) = self.inner.submit(op, Completion { sink, tag }) {
            let (done, _) = self.holding.borrow_mut().remove(&tag).expect("just added");
            Reactor::with(|r| defer_completion(r, done, Err(e), op.into_buf()));
        }
    }

    fn in_flight(&self) -> usize {
        self.holding.borrow().len()
    }
}
