//! A submitted request as a future, for tasks on a reactor
//! ([`Reactor::spawn_local`](ferrox_reactor::Reactor::spawn_local)).
//!
//! [`IoChannel::submit_async`] submits at once and returns [`Submitted`]; the
//! request's completion stores its result and wakes the task that awaits it (on the
//! reactor's own thread: no syscall). Dropping `Submitted` does not cancel the request.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ferrox_reactor::DmaBuf;

use crate::{BdevError, Completion, IoChannel, IoOp, IoSink};

/// A request's result and its buffer (a read's data, a write's buffer handed back).
pub type IoResult = (Result<(), BdevError>, Option<DmaBuf>);

#[derive(Default)]
struct Slot {
    result: RefCell<Option<IoResult>>,
    waker: RefCell<Option<Waker>>,
}

impl IoSink for Slot {
    fn io_done(&self, _tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        *self.result.borrow_mut() = Some((result, buf));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A submitted request; resolves when it completes.
pub struct Submitted(Rc<Slot>);

impl Future for Submitted {
    type Output = IoResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult> {
        if let Some(v) = self.0.result.borrow_mut().take() {
            return Poll::Ready(v);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl IoChannel {
    /// Submits `op` and returns a future of its completion. A request that fails the
    /// device's checks resolves at once with the reason (and its buffer).
    pub fn submit_async(&self, op: IoOp) -> Submitted {
        let slot = Rc::new(Slot::default());
        let done = Completion {
            sink: slot.clone(),
            tag: 0,
        };
        if let Err((e, op)) = self.submit(op, done) {
            *slot.result.borrow_mut() = Some((Err(e), op.into_buf()));
        }
        Submitted(slot)
    }
}

#[cfg(test)]
mod tests;
