//! Cross-thread messages to a reactor, and the one-shot replies that come back.
//!
//! A mailbox is a bounded crossbeam `ArrayQueue` of closures. A full mailbox is
//! reported to the sender ([`MailboxFull`], with the message handed back), never
//! dropped or grown. A reply is a one-shot slot that a plain thread can block on
//! ([`Reply::wait`]) and an async task (the tokio control plane) can `.await`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::Reactor;

/// A message: runs once on the receiving reactor's thread.
pub type Message = Box<dyn FnOnce(&Reactor) + Send>;

/// The mailbox was full; the message is handed back so the sender can retry.
pub struct MailboxFull(pub Message);

impl std::fmt::Debug for MailboxFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailboxFull")
    }
}

impl std::fmt::Display for MailboxFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reactor mailbox is full")
    }
}

impl std::error::Error for MailboxFull {}

/// Why a reply never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reactor stopped before answering")]
    Canceled,
    #[error("no reply within the timeout")]
    TimedOut,
    #[error("the reactor's mailbox is full")]
    MailboxFull,
}

struct Slot<T> {
    value: Option<T>,
    closed: bool,
    waker: Option<Waker>,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
}

/// The sending half of a one-shot reply. Dropping it unanswered cancels the reply.
pub struct Replier<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// The receiving half: block with [`Reply::wait`] or `.await` it.
pub struct Reply<T> {
    shared: Arc<Shared<T>>,
}

/// A connected one-shot pair.
pub fn oneshot<T>() -> (Replier<T>, Reply<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            closed: false,
            waker: None,
        }),
        cv: Condvar::new(),
    });
    (
        Replier {
            shared: Some(shared.clone()),
        },
        Reply { shared },
    )
}

impl<T> Replier<T> {
    pub fn send(mut self, value: T) {
        if let Some(s) = self.shared.take() {
            Self::finish(&s, Some(value));
        }
    }

    fn finish(s: &Shared<T>, value: Option<T>) {
        let waker = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.value = value;
            slot.closed = true;
            slot.waker.take()
        };
        s.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Replier<T> {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            Self::finish(&s, None);
        }
    }
}

impl<T> Reply<T> {
    /// Blocks the calling (non-reactor) thread until the reply arrives.
    pub fn wait(self) -> Result<T, ReplyError> {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        while !slot.closed {
            slot = self.shared.cv.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        slot.value.take().ok_or(ReplyError::Canceled)
    }

    /// Like [`Reply::wait`], giving up after `timeout`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, ReplyError> {
        let slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (mut slot, _) = self
            .shared
            .cv
            .wait_timeout_while(slot, timeout, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        if !slot.closed {
            return Err(ReplyError::TimedOut);
        }
        slot.value.take().ok_or(ReplyError::Canceled)
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, ReplyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.closed {
            return Poll::Ready(slot.value.take().ok_or(ReplyError::Canceled));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
