//! Test support shared by every crate's block-device tests (feature `testing`): run a
//! batch of requests on a reactor and get the outcomes back in order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferrox_reactor::mailbox::{oneshot, Replier};
use ferrox_reactor::{DmaBuf, PollStatus, Poller, Reactor, ReactorHandle};

use crate::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};

mod sparse;

pub use sparse::SparseBdev;

/// A request as tests describe it (LBAs and block counts in device blocks).
#[derive(Clone, Debug)]
pub enum Req {
    Read(u64, u64),
    Write(u64, Vec<u8>),
    /// A write with FUA.
    Fua(u64, Vec<u8>),
    Flush,
    Zero(u64, u64),
    Unmap(u64, u64),
}

/// A request's result: read data for reads (and the written buffer for writes).
pub type Outcome = Result<Option<Vec<u8>>, BdevError>;

struct Collector {
    results: RefCell<Vec<Option<Outcome>>>,
    left: Cell<usize>,
    reply: RefCell<Option<Replier<Vec<Outcome>>>>,
    /// A channel to close before answering (so the caller may delete the device).
    chan: RefCell<Option<IoChannel>>,
}

impl IoSink for Collector {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let out = result.map(|()| buf.map(|b| b.as_slice().to_vec()));
        self.results.borrow_mut()[tag as usize] = Some(out);
        self.left.set(self.left.get() - 1);
    }
}

impl Poller for Collector {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        if self.left.get() > 0 {
            return PollStatus::Idle;
        }
        if let Some(tx) = self.reply.borrow_mut().take() {
            let v = self
                .results
                .borrow_mut()
                .drain(..)
                .map(|o| o.expect("every request completed"))
                .collect();
            self.chan.borrow_mut().take();
            tx.send(v);
        }
        PollStatus::Done
    }
}

thread_local! {
    static KEPT: RefCell<HashMap<String, IoChannel>> = RefCell::new(HashMap::new());
}

fn submit_all(r: &Reactor, chan: &IoChannel, reqs: Vec<Req>, c: &Rc<Collector>) {
    let bs = chan.info().block_size as usize;
    for (i, req) in reqs.into_iter().enumerate() {
        let data_op = |lba: u64, data: Vec<u8>, fua: bool| {
            let mut buf = r.pool().alloc(data.len()).expect("a test buffer");
            buf.as_mut_slice().copy_from_slice(&data);
            IoOp::Write {
                lba,
                blocks: (data.len() / bs) as u64,
                buf,
                fua,
            }
        };
        let op = match req {
            Req::Read(lba, blocks) => IoOp::Read {
                lba,
                blocks,
                buf: r.pool().alloc(blocks as usize * bs).expect("a test buffer"),
            },
            Req::Write(lba, data) => data_op(lba, data, false),
            Req::Fua(lba, data) => data_op(lba, data, true),
            Req::Flush => IoOp::Flush,
            Req::Zero(lba, blocks) => IoOp::WriteZeroes { lba, blocks },
            Req::Unmap(lba, blocks) => IoOp::Unmap { lba, blocks },
        };
        let done = Completion {
            sink: c.clone(),
            tag: i as u64,
        };
        if let Err((e, _op)) = chan.submit(op, done) {
            c.results.borrow_mut()[i] = Some(Err(e));
            c.left.set(c.left.get() - 1);
        }
    }
}

fn start(h: &ReactorHandle, dev: Arc<dyn BlockDevice>, reqs: Vec<Req>, keep: bool) -> Vec<Outcome> {
    let (tx, rx) = oneshot();
    h.send(move |r| {
        let n = reqs.len();
        let c = Rc::new(Collector {
            results: RefCell::new(vec![None; n]),
            left: Cell::new(n),
            reply: RefCell::new(Some(tx)),
            chan: RefCell::new(None),
        });
        if keep {
            KEPT.with(|k| {
                let mut k = k.borrow_mut();
                let name = dev.info().name.clone();
                let chan = k
                    .entry(name)
                    .or_insert_with(|| IoChannel::open(dev, r).expect("open a channel"));
                submit_all(r, chan, reqs, &c);
            });
        } else {
            let chan = IoChannel::open(dev, r).expect("open a channel");
            submit_all(r, &chan, reqs, &c);
            *c.chan.borrow_mut() = Some(chan);
        }
        r.add_poller(c);
    })
    .expect("the reactor takes the batch");
    rx.wait_timeout(Duration::from_secs(60))
        .expect("the batch completes")
}

/// Opens a channel on reactor `h`, submits every request at once, waits for all of
/// them, closes the channel, and returns the outcomes in order.
pub fn run(h: &ReactorHandle, dev: Arc<dyn BlockDevice>, reqs: Vec<Req>) -> Vec<Outcome> {
    start(h, dev, reqs, false)
}

/// Like [`run`], on a channel kept open on that reactor across calls (per device
/// name): for tests of what a channel does between batches (reconnects, caches).
pub fn run_kept(h: &ReactorHandle, dev: Arc<dyn BlockDevice>, reqs: Vec<Req>) -> Vec<Outcome> {
    start(h, dev, reqs, true)
}
