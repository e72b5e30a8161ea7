//! The rebuild's range lock: host writes count themselves per region, the rebuild
//! copies one region at a time with that region's writers drained.
//!
//! The handshake (every access `SeqCst`): a writer increments `writers[r]`, then
//! loads `copying`; the copier stores `copying = r`, then loads `writers[r]`. In the
//! single total order one of them sees the other: either the writer sees `r` being
//! copied (it backs off, decrements, and waits for the copy to end) or the copier
//! sees the writer (it waits for the count to reach zero). Wakers sit behind a mutex
//! touched only when one side waits for the other.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

use super::lock as mutex;

const NONE: u64 = u64::MAX;

#[derive(Default)]
struct Waits {
    writers: Vec<Waker>,
    copier: Option<Waker>,
}

pub(super) struct RegionLocks {
    writers: Box<[AtomicU32]>,
    copying: AtomicU64,
    waits: Mutex<Waits>,
}

/// Writers counted in regions `first..next`; uncounted on drop.
pub(super) struct WriteGuard<'a> {
    locks: &'a RegionLocks,
    first: u64,
    next: u64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        for r in self.first..self.next {
            self.locks.leave(r);
        }
    }
}

/// The region being copied; released on drop.
pub(super) struct CopyGuard<'a> {
    locks: &'a RegionLocks,
}

impl Drop for CopyGuard<'_> {
    fn drop(&mut self) {
        self.locks.copying.store(NONE, Ordering::SeqCst);
        let w = std::mem::take(&mut mutex(&self.locks.waits).writers);
        w.into_iter().for_each(Waker::wake);
    }
}

impl RegionLocks {
    pub(super) fn new(regions: u64) -> Self {
        Self {
            writers: (0..regions).map(|_| AtomicU32::new(0)).collect(),
            copying: AtomicU64::new(NONE),
            waits: Mutex::new(Waits::default()),
        }
    }

    fn leave(&self, r: u64) {
        self.writers[r as usize].fetch_sub(1, Ordering::SeqCst);
        if self.copying.load(Ordering::SeqCst) == r {
            if let Some(w) = mutex(&self.waits).copier.take() {
                w.wake();
            }
        }
    }

    /// Counts a writer in regions `first..=last`, waiting while one is copied.
    pub(super) async fn write(&self, first: u64, last: u64) -> WriteGuard<'_> {
        let mut g = WriteGuard {
            locks: self,
            first,
            next: first,
        };
        while g.next <= last {
            let r = g.next;
            self.writers[r as usize].fetch_add(1, Ordering::SeqCst);
            if self.copying.load(Ordering::SeqCst) != r {
                g.next += 1;
                continue;
            }
            self.leave(r);
            std::future::poll_fn(|cx| {
                let mut w = mutex(&self.waits);
                if self.copying.load(Ordering::SeqCst) == r {
                    w.writers.push(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
        g
    }

    /// Takes region `r` for copying once its writers have drained.
    pub(super) async fn copy(&self, r: u64) -> CopyGuard<'_> {
        self.copying.store(r, Ordering::SeqCst);
        let g = CopyGuard { locks: self };
        std::future::poll_fn(|cx| {
            let mut w = mutex(&self.waits);
            if self.writers[r as usize].load(Ordering::SeqCst) == 0 {
                Poll::Ready(())
            } else {
                w.copier = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        g
    }

    /// Writers counted in region `r` now.
    pub(super) fn writers(&self, r: u64) -> u32 {
        self.writers[r as usize].load(Ordering::SeqCst)
    }
}
