//! Pinned per-core reactors: pollers, timers, mailboxes, one io_uring each, and the
//! DMA-able buffer pools that I/O moves through.
//!
//! # Architecture
//!
//! A [`ReactorGroup`] starts one thread per configured core and pins it there. Each
//! thread runs a [`Reactor`]: a loop that drains its mailbox (closures sent from any
//! thread through a [`ReactorHandle`]), reaps its io_uring and routes each completion
//! to the [`CqHandler`] named in the SQE's `user_data`, calls every registered
//! [`Poller`], and fires due timers. In [`PollMode::Adaptive`] a reactor that found
//! nothing to do for the idle threshold parks in `io_uring_enter`, woken by its
//! eventfd (mailbox), the sockets its pollers name, I/O completions and timers; the
//! handshake is documented in the `reactor` module. [`Reactor::spawn_local`] runs
//! `async` tasks on a reactor, polled only when woken (see the [`task`] module).
//!
//! Everything a reactor owns is `!Send` and lives on its thread; cross-core work is a
//! message. [`BufferPool`] hands out [`DmaBuf`] handles from per-thread caches.
//!
//! # What it doesn't implement
//!
//! SQPOLL rings (probed and reported, not used: a reactor already polls), provided
//! buffer rings and SEND_ZC (probed for the transport's later use), and a
//! sampling stall profiler (stalls are counted and logged, without a backtrace).

mod group;
pub mod mailbox;
pub mod pool;
mod reactor;
pub mod ring;
mod sys;
pub mod task;

pub use group::{available_cores, parse_cores, ReactorGroup, ReactorHandle};
pub use mailbox::{MailboxFull, Reply, ReplyError};
pub use pool::{BufferPool, ClassConfig, DmaBuf, PoolConfig};
pub use reactor::{
    PollMode, PollStatus, Poller, PollerId, Reactor, ReactorOptions, ReactorStats, TimerId,
    WakeSource,
};
pub use ring::{CqHandler, HandlerId, Ring, RingFeatures};
pub use sys::{advise_huge_pages, process_cpu_seconds, raise_nofile_limit, EventFd};
pub use task::{sleep, spawn_local, timeout, AbortHandle, JoinHandle};

/// Errors starting reactors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "core {core} does not exist or is not allowed for this process (available: {available:?})"
    )]
    NoSuchCore { core: usize, available: Vec<usize> },
    #[error("bad core list {spec:?}: {why}")]
    BadCores { spec: String, why: String },
    #[error("cannot pin a reactor thread to core {core}")]
    Pin { core: usize },
    #[error("a reactor thread died while starting")]
    ThreadDied,
    #[error("reactor set-up failed: {0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
