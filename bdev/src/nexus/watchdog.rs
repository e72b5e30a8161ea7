//! Per-request deadlines without a timer per request.
//!
//! A reactor timer per child request (`task::timeout`) costs a heap entry that stays
//! until its deadline even when the request completes first (cancelled timers are
//! dropped lazily): at 400k requests/s and a 30 s timeout, millions of entries. A
//! [`Watchdog`] instead keeps the deadlines of the requests in flight in a small slab
//! and one periodic timer sweeps it, waking the tasks whose deadline passed; a
//! request times out between its deadline and one tick later.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ferrox_reactor::{Reactor, TimerId};

/// A deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

/// A request's deadline and the task to wake when it passes.
type Slot = Option<(Instant, Option<Waker>)>;

pub(super) struct Watchdog {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    timer: Cell<Option<TimerId>>,
}

/// Frees a slot when its request is done (or abandoned).
struct SlotGuard<'a> {
    dog: &'a Watchdog,
    key: usize,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.dog.slots.borrow_mut()[self.key] = None;
        self.dog.free.borrow_mut().push(self.key);
    }
}

impl Watchdog {
    /// A watchdog on reactor `r` sweeping every `tick`.
    pub(super) fn start(r: &Reactor, tick: Duration) -> Rc<Self> {
        let dog = Rc::new(Self {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timer: Cell::new(None),
        });
        let weak: Weak<Self> = Rc::downgrade(&dog);
        let id = r.add_periodic(tick, move |_| {
            if let Some(d) = weak.upgrade() {
                d.sweep(Instant::now());
            }
        });
        dog.timer.set(Some(id));
        dog
    }

    /// Stops the periodic sweep (when the watchdog is dropped: the channel or the
    /// rebuild that owns it is gone).
    fn stop(&self) {
        if let (Some(id), Some(r)) = (self.timer.take(), Reactor::try_current()) {
            r.cancel_timer(id);
        }
    }

    /// Slots allocated (in use or free), for tests.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.borrow().len()
    }

    fn sweep(&self, now: Instant) {
        let due: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .flatten()
            .filter(|(d, _)| *d <= now)
            .filter_map(|(_, w)| w.take())
            .collect();
        due.into_iter().for_each(Waker::wake);
    }

    /// Runs `fut` until it completes or `deadline` passes (then it is dropped).
    pub(super) async fn run<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let key = {
            let mut slots = self.slots.borrow_mut();
            let key = self.free.borrow_mut().pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            slots[key] = Some((deadline, None));
            key
        };
        let _guard = SlotGuard { dog: self, key };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Err(Elapsed));
            }
            if let Some((_, w)) = self.slots.borrow_mut()[key].as_mut() {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}
