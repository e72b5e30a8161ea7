//! A file descriptor's readiness as a future: a one-shot io_uring poll whose
//! completion wakes the task.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types};

use crate::reactor::Reactor;
use crate::ring::{CqHandler, HandlerId};

enum Slot {
    Free,
    Waiting(Option<Waker>),
    Done(i32),
    /// Its future was dropped: the slot is free once the (cancelled) poll completes.
    Orphan,
}

/// The polls of one reactor's tasks, and their completion handler.
#[derive(Default)]
pub(crate) struct FdPolls {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl FdPolls {
    fn alloc(&self, w: Waker) -> u32 {
        let mut slots = self.slots.borrow_mut();
        if let Some(i) = self.free.borrow_mut().pop() {
            slots[i as usize] = Slot::Waiting(Some(w));
            return i;
        }
        slots.push(Slot::Waiting(Some(w)));
        (slots.len() - 1) as u32
    }

    fn release(&self, i: u32) {
        self.slots.borrow_mut()[i as usize] = Slot::Free;
        self.free.borrow_mut().push(i);
    }
}

impl CqHandler for FdPolls {
    fn complete(&self, tag: u32, result: i32, _flags: u32) {
        let waker = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(tag as usize) else {
                return;
            };
            match std::mem::replace(s, Slot::Done(result)) {
                Slot::Waiting(w) => w,
                Slot::Orphan => {
                    drop(slots);
                    self.release(tag);
                    None
                }
                other => {
                    *s = other;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The reactor's poll handler, registered with its ring on first use.
pub(crate) fn polls(r: &Reactor) -> (HandlerId, Rc<FdPolls>) {
    let mut p = r.tasks.fd_polls.borrow_mut();
    p.get_or_insert_with(|| {
        let h = Rc::new(FdPolls::default());
        (r.ring().register_handler(h.clone()), h)
    })
    .clone()
}

/// Completes when `fd` is ready for `events` ([`ready`]).
pub struct FdReady {
    fd: RawFd,
    events: u32,
    slot: Option<u32>,
}

/// Waits until `fd` is ready for `events` (`libc::POLLIN` and/or `libc::POLLOUT`),
/// without keeping the reactor busy; resolves to the events that are set. `fd` must
/// stay open until the future completes or is dropped. Reactor threads only.
pub fn ready(fd: RawFd, events: u32) -> FdReady {
    FdReady {
        fd,
        events,
        slot: None,
    }
}

impl Future for FdReady {
    type Output = io::Result<u32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Reactor::with(|r| {
            let (hid, polls) = polls(r);
            let Some(i) = self.slot else {
                let i = polls.alloc(cx.waker().clone());
                let sqe = opcode::PollAdd::new(types::Fd(self.fd), self.events)
                    .build()
                    .user_data(hid.user_data(i));
                r.ring().push_pointerless(&sqe);
                self.slot = Some(i);
                return Poll::Pending;
            };
            let mut slots = polls.slots.borrow_mut();
            match &mut slots[i as usize] {
                Slot::Done(res) => {
                    let res = *res;
                    drop(slots);
                    polls.release(i);
                    self.slot = None;
                    Poll::Ready(if res < 0 {
                        Err(io::Error::from_raw_os_error(-res))
                    } else {
                        Ok(res as u32)
                    })
                }
                Slot::Waiting(w) => {
                    *w = Some(cx.waker().clone());
                    Poll::Pending
                }
                Slot::Free | Slot::Orphan => unreachable!("a live poll's slot"),
            }
        })
    }
}

impl Drop for FdReady {
    fn drop(&mut self) {
        let Some(i) = self.slot else {
            return;
        };
        let Some(r) = Reactor::try_current() else {
            return;
        };
        let (hid, polls) = polls(&r);
        let done = {
            let mut slots = polls.slots.borrow_mut();
            let s = &mut slots[i as usize];
            if matches!(s, Slot::Done(_)) {
                true
            } else {
                *s = Slot::Orphan;
                false
            }
        };
        if done {
            polls.release(i);
        } else {
            r.cancel_op(hid.user_data(i));
        }
    }
}
