//! Tasks: `async` code run by the reactor it was spawned on.
//!
//! [`Reactor::spawn_local`] takes a `'static` future (it need not be `Send`) and
//! returns a [`JoinHandle`]. The reactor polls a task only when it was woken: its
//! waker pushes the task's id onto the reactor's ready queue (a `RefCell` on the
//! reactor's own thread, no syscall), or, from any other thread, onto the reactor's
//! shared wake queue followed by the mailbox's kick (the sleep handshake of the
//! `reactor` module, with that queue checked alongside the mailbox before parking).
//! A turn in which a task was polled counts as work; a task that waits (on a timer, an
//! I/O completion, a reply) costs nothing, and the reactor parks as if it did not exist.
//!
//! Timers are futures ([`sleep`], [`timeout`]) on the reactor's timer heap, a file
//! descriptor's readiness is one ([`ready`], a one-shot io_uring poll); a reply from
//! another reactor is [`ReactorHandle::call`](crate::ReactorHandle::call)'s
//! [`Reply`](crate::Reply), which is a future; a bdev request is a future in `bdev`.
//!
//! A panic in a task unwinds out of the reactor's loop, as a panic in a poller does.
//! Tasks still alive when the reactor is asked to stop are dropped (after the pollers'
//! `shutdown`), on the reactor's thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::reactor::{Reactor, Shared, TimerId};

mod fd;

pub use fd::{ready, FdReady};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Wakes one task: `Send + Sync`, usable from any thread.
struct TaskWaker {
    id: u64,
    /// Set while the id is in a ready queue: a task is queued at most once.
    queued: AtomicBool,
    reactor: Arc<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let pushed = crate::reactor::with_current_of(&self.reactor, |r| {
            r.tasks.ready.borrow_mut().push_back(self.id);
        });
        if !pushed {
            self.reactor.woken.push(self.id);
            self.reactor.kick();
        }
    }
}

struct Task {
    /// `None` while the task is being polled.
    fut: Option<LocalFuture>,
    waker: Waker,
    flag: Arc<TaskWaker>,
}

/// A reactor's tasks and its ready queue.
#[derive(Default)]
pub(crate) struct Tasks {
    map: RefCell<HashMap<u64, Task>>,
    ready: RefCell<VecDeque<u64>>,
    next: Cell<u64>,
    pub(crate) fd_polls: RefCell<Option<(crate::ring::HandlerId, Rc<fd::FdPolls>)>>,
}

impl Tasks {
    fn spawn(&self, shared: &Arc<Shared>, fut: LocalFuture) -> Waker {
        let id = self.next.get();
        self.next.set(id + 1);
        let flag = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(true),
            reactor: shared.clone(),
        });
        let waker = Waker::from(flag.clone());
        self.map.borrow_mut().insert(
            id,
            Task {
                fut: Some(fut),
                waker: waker.clone(),
                flag,
            },
        );
        self.ready.borrow_mut().push_back(id);
        waker
    }

    /// A task is queued to run.
    pub(crate) fn has_ready(&self, shared: &Shared) -> bool {
        !self.ready.borrow().is_empty() || !shared.woken.is_empty()
    }

    /// Tasks alive (spawned, not finished or dropped).
    pub(crate) fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Polls every task that was ready at the start of the call (a task that wakes
    /// itself runs again next turn). Returns whether one was polled.
    pub(crate) fn run(&self, shared: &Shared) -> bool {
        {
            let mut ready = self.ready.borrow_mut();
            while let Some(id) = shared.woken.pop() {
                ready.push_back(id);
            }
        }
        let n = self.ready.borrow().len();
        let mut ran = false;
        for _ in 0..n {
            let Some(id) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            let (mut fut, waker) = {
                let mut map = self.map.borrow_mut();
                let Some(t) = map.get_mut(&id) else {
                    continue; // finished or dropped since it was woken
                };
                t.flag.queued.store(false, Ordering::Release);
                let Some(fut) = t.fut.take() else {
                    continue;
                };
                (fut, t.waker.clone())
            };
            ran = true;
            let done = fut
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready();
            if done {
                let t = self.map.borrow_mut().remove(&id);
                drop((t, fut));
            } else if let Some(t) = self.map.borrow_mut().get_mut(&id) {
                t.fut = Some(fut);
            }
        }
        ran
    }

    /// Drops every task (outside the borrows: a future's drop may wake or spawn).
    pub(crate) fn clear(&self) {
        loop {
            let map = std::mem::take(&mut *self.map.borrow_mut());
            if map.is_empty() {
                break;
            }
            drop(map);
        }
        self.ready.borrow_mut().clear();
    }
}

/// Why a [`JoinHandle`] resolved without the task's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the task was aborted or dropped before it finished")]
pub struct Cancelled;

/// A timer future ran out first ([`timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

struct JoinInner<T> {
    result: RefCell<Option<Result<T, Cancelled>>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> JoinInner<T> {
    fn finish(&self, v: Result<T, Cancelled>) {
        *self.result.borrow_mut() = Some(v);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Resolves to a task's output (or [`Cancelled`]). Dropping it detaches the task.
pub struct JoinHandle<T> {
    inner: Rc<JoinInner<T>>,
    abort: AbortHandle,
}

impl<T> JoinHandle<T> {
    /// Asks the task to stop: its future is dropped the next time the reactor runs
    /// it, unpolled, and the handle resolves to [`Cancelled`].
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// A `Send + Sync` handle that can abort the task from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// The task finished (or was cancelled) and its result waits in the handle.
    pub fn is_finished(&self) -> bool {
        self.inner.result.borrow().is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(v) = self.inner.result.borrow_mut().take() {
            return Poll::Ready(v);
        }
        *self.inner.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Aborts one task, from any thread ([`JoinHandle::abort`]).
#[derive(Clone)]
pub struct AbortHandle {
    flag: Arc<AtomicBool>,
    task: Waker,
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle")
            .field("aborted", &self.flag.load(Ordering::Relaxed))
            .finish()
    }
}

impl AbortHandle {
    pub fn abort(&self) {
        self.flag.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Completes with `None`, dropping the inner future unpolled, once the flag is set.
struct Abortable<F> {
    fut: Pin<Box<F>>,
    flag: Arc<AtomicBool>,
}

impl<F: Future> Future for Abortable<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.flag.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        self.fut.as_mut().poll(cx).map(Some)
    }
}

/// Sets the handle's result to `Cancelled` when the task is dropped unfinished.
struct Finish<T>(Rc<JoinInner<T>>);

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        if self.0.result.borrow().is_none() {
            self.0.finish(Err(Cancelled));
        }
    }
}

impl Reactor {
    /// Runs `fut` on this reactor as a task. It is polled when woken, never from
    /// another thread; see the `task` module.
    pub fn spawn_local<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let inner = Rc::new(JoinInner {
            result: RefCell::new(None),
            waker: RefCell::new(None),
        });
        let flag = Arc::new(AtomicBool::new(false));
        let finish = Finish(inner.clone());
        let abortable = Abortable {
            fut: Box::pin(fut),
            flag: flag.clone(),
        };
        let task = async move {
            let out = abortable.await;
            finish.0.finish(out.ok_or(Cancelled));
        };
        let waker = self.tasks.spawn(self.shared(), Box::pin(task));
        JoinHandle {
            inner,
            abort: AbortHandle { flag, task: waker },
        }
    }

    /// Tasks alive on this reactor.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }
}

/// Runs `fut` as a task on the current thread's reactor; panics elsewhere.
pub fn spawn_local<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    Reactor::with(|r| r.spawn_local(fut))
}

struct SleepState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Completes at a deadline, on the current reactor's timers ([`sleep`]).
pub struct Sleep {
    deadline: Instant,
    timer: Option<TimerId>,
    state: Rc<SleepState>,
}

/// Waits `d` without keeping the reactor busy: the reactor parks until its timer.
/// Must be polled on a reactor thread.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Waits until `deadline` ([`sleep`]).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        timer: None,
        state: Rc::new(SleepState {
            fired: Cell::new(false),
            waker: RefCell::new(None),
        }),
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if self.state.fired.get() || now >= self.deadline {
            return Poll::Ready(());
        }
        {
            let mut w = self.state.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if self.timer.is_none() {
            let st = self.state.clone();
            let after = self.deadline - now;
            let id = Reactor::with(|r| {
                r.add_timer(after, move |_| {
                    st.fired.set(true);
                    if let Some(w) = st.waker.borrow_mut().take() {
                        w.wake();
                    }
                })
            });
            self.timer = Some(id);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(id), false) = (self.timer, self.state.fired.get()) {
            if let Some(r) = Reactor::try_current() {
                r.cancel_timer(id);
            }
        }
    }
}

/// Runs `fut` for at most `d`; on the deadline it is dropped and `Elapsed` returned.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = sleep(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    })
    .await
}

/// Lets the reactor run one turn (completions, pollers, other tasks) before going on.
/// The task stays ready, so the turn counts as work: for short waits only.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
