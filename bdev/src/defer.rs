//! Completions that must not run inside `submit` wait here for the next loop turn.
//!
//! One queue per reactor thread, drained by a poller registered on first use.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use ferrox_reactor::{DmaBuf, PollStatus, Poller, Reactor};

use crate::{BdevError, Completion};

type Deferred = (Completion, Result<(), BdevError>, Option<DmaBuf>);

struct DeferQueue {
    q: RefCell<VecDeque<Deferred>>,
}

impl Poller for DeferQueue {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        // Take the current batch: completions may defer more, which run next turn.
        let n = self.q.borrow().len();
        if n == 0 {
            return PollStatus::Idle;
        }
        for _ in 0..n {
            let Some((c, res, buf)) = self.q.borrow_mut().pop_front() else {
                break;
            };
            c.complete(res, buf);
        }
        PollStatus::Busy
    }

    fn name(&self) -> &'static str {
        "bdev-defer"
    }
}

thread_local! {
    static QUEUE: RefCell<Option<Rc<DeferQueue>>> = const { RefCell::new(None) };
}

/// Completes `c` on the next loop turn of the current reactor.
pub fn defer_completion(
    r: &Reactor,
    c: Completion,
    result: Result<(), BdevError>,
    buf: Option<DmaBuf>,
) {
    let q = QUEUE.with(|slot| {
        slot.borrow_mut()
            .get_or_insert_with(|| {
                let q = Rc::new(DeferQueue {
                    q: RefCell::new(VecDeque::with_capacity(1024)),
                });
                r.add_poller(q.clone());
                q
            })
            .clone()
    });
    q.q.borrow_mut().push_back((c, result, buf));
}
