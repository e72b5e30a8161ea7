//! The unmaps of a channel: at most [`MAX_UNMAPS`] run at once, more wait in order,
//! and a waiting one whose range lies within an earlier waiting one's completes with
//! it instead of doing the work again (a DSM's repeated or nested ranges).

use ferrox_reactor::DmaBuf;

use super::ChanState;
use crate::{BdevError, Completion, IoOp};

/// Unmaps a channel runs at once; more wait in `unmap_queue` and start in order as
/// earlier ones complete, so a flood of deallocations holds a bounded amount of
/// state (a DSM command's ranges arrive here as one unmap each).
pub const MAX_UNMAPS: usize = 8;

/// Tags of unmap completions routed through the channel (to count them), apart
/// from slot tags.
pub(super) const UNMAP_TAG: u64 = 1 << 63;

/// Queued unmaps a new one looks through for one covering its range.
const DEDUP_WINDOW: usize = 256;

/// An unmap waiting for a place among the [`MAX_UNMAPS`] running ones, with those
/// submitted after it whose range lies within its own: they complete with it.
pub(super) struct Queued {
    pub op: IoOp,
    pub done: Completion,
    pub riders: Vec<Completion>,
}

/// A running unmap's caller, and the callers riding on it.
pub(super) type Started = (Completion, Vec<Completion>);

fn unmap_range(op: &IoOp) -> (u64, u64) {
    match *op {
        IoOp::Unmap { lba, blocks } => (lba, lba + blocks),
        _ => unreachable!("only unmaps queue"),
    }
}

impl ChanState {
    /// Starts an unmap, or queues it behind [`MAX_UNMAPS`] running ones. Its
    /// completion comes back through this channel (tag `UNMAP_TAG | i`) to count it.
    ///
    /// A queued unmap whose range lies within one queued before it (a DSM's repeated
    /// or nested ranges) does no work of its own: it completes with that one. Both
    /// wait for the same start, so that one's zeroing covers what this one asked.
    pub(super) fn submit_unmap(&self, op: IoOp, done: Completion) {
        if self.unmaps.get() >= MAX_UNMAPS {
            let mut q = self.unmap_queue.borrow_mut();
            let (a, b) = unmap_range(&op);
            let skip = q.len().saturating_sub(DEDUP_WINDOW);
            let cover = q.iter_mut().skip(skip).find(|e| {
                let (qa, qb) = unmap_range(&e.op);
                qa <= a && b <= qb
            });
            match cover {
                Some(e) => e.riders.push(done),
                None => q.push_back(Queued {
                    op,
                    done,
                    riders: Vec::new(),
                }),
            }
            return;
        }
        self.start_unmap(op, done, Vec::new());
    }

    fn start_unmap(&self, op: IoOp, done: Completion, riders: Vec<Completion>) {
        self.unmaps.set(self.unmaps.get() + 1);
        let i = {
            let mut d = self.unmap_done.borrow_mut();
            match d.iter().position(Option::is_none) {
                Some(i) => {
                    d[i] = Some((done, riders));
                    i
                }
                None => {
                    d.push(Some((done, riders)));
                    d.len() - 1
                }
            }
        };
        let c = Completion {
            sink: self.sink(),
            tag: UNMAP_TAG | i as u64,
        };
        self.start(op, c);
    }

    /// An unmap completed: start the next queued one, then answer its caller and
    /// those riding on it.
    pub(super) fn unmap_finished(&self, i: usize, res: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let (done, riders) = self.unmap_done.borrow_mut()[i]
            .take()
            .expect("a started unmap");
        self.unmaps.set(self.unmaps.get() - 1);
        // The next queued one takes the place first: an unmap submitted from a
        // completion below queues behind those waiting (a queue only exists while
        // all places are taken).
        let next = self.unmap_queue.borrow_mut().pop_front();
        if let Some(q) = next {
            self.start_unmap(q.op, q.done, q.riders);
        }
        let res2 = res.clone();
        done.complete(res, buf);
        for r in riders {
            self.in_flight.set(self.in_flight.get() - 1);
            r.complete(res2.clone(), None);
        }
    }
}
