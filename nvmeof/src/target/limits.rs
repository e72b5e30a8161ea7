//! How many connections the target holds, in all and per peer address, so that no
//! host (one that is allowed nothing included: every host may reach discovery) can
//! take every file descriptor and keep the others out.
//!
//! The listener asks for a [`ConnPermit`] before it starts a connection; a connection
//! over a limit is closed as soon as it is accepted. The permit lives as long as the
//! connection's socket and gives its place back when dropped. Refusals are counted
//! ([`ConnLimits::refused`]) and logged at most once every [`LOG_EVERY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default cap on the connections of the whole target.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default cap on the connections from one peer address. A kernel host opens one
/// admin and up to one I/O queue per CPU for each controller, so this leaves room
/// for several controllers of a large host.
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 1024;
/// Refusals are logged at most once per this interval (with the count since).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The target's connection limits and the connections counted against them.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: AtomicUsize,
    max_per_peer: AtomicUsize,
    /// Open connections by peer address; the sum is the total.
    open: Mutex<Counts>,
    refused: AtomicU64,
    log: Mutex<RateLog>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

#[derive(Debug, Default)]
struct RateLog {
    last: Option<Instant>,
    /// Refusals not yet logged.
    pending: u64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The target holds its maximum of connections.
    Total(usize),
    /// The peer address holds its maximum of connections.
    PerPeer(usize),
    /// The process is out of file descriptors (EMFILE/ENFILE).
    NoDescriptors,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Total(n) => write!(f, "the target holds its maximum of {n} connections"),
            Self::PerPeer(n) => write!(f, "the peer address holds its maximum of {n} connections"),
            Self::NoDescriptors => write!(f, "the process is out of file descriptors"),
        }
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_HOST)
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_peer: usize) -> Self {
        Self {
            max_total: AtomicUsize::new(max_total),
            max_per_peer: AtomicUsize::new(max_per_peer),
            open: Mutex::default(),
            refused: AtomicU64::new(0),
            log: Mutex::default(),
        }
    }

    /// Sets both caps for connections accepted from now on (open ones stay).
    pub fn set(&self, max_total: usize, max_per_peer: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_peer.store(max_per_peer, Ordering::Relaxed);
    }

    /// (whole target, per peer address).
    pub fn caps(&self) -> (usize, usize) {
        (
            self.max_total.load(Ordering::Relaxed),
            self.max_per_peer.load(Ordering::Relaxed),
        )
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections refused since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection from `peer`, or says which limit it is over (and counts
    /// and logs the refusal).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refusal> {
        let (max_total, max_per_peer) = self.caps();
        let verdict = {
            let mut c = self.lock();
            let mine = c.by_peer.get(&peer).copied().unwrap_or(0);
            if c.total >= max_total {
                Err(Refusal::Total(max_total))
            } else if mine >= max_per_peer {
                Err(Refusal::PerPeer(max_per_peer))
            } else {
                c.total += 1;
                *c.by_peer.entry(peer).or_insert(0) += 1;
                Ok(())
            }
        };
        match verdict {
            Ok(()) => Ok(ConnPermit {
                limits: self.clone(),
                peer,
            }),
            Err(r) => {
                self.refuse(Some(peer), r);
                Err(r)
            }
        }
    }

    /// Counts a refusal and logs it, at most once per [`LOG_EVERY`].
    pub fn refuse(&self, peer: Option<IpAddr>, why: Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.pending += 1;
        let now = Instant::now();
        if log.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        let n = std::mem::take(&mut log.pending);
        log.last = Some(now);
        drop(log);
        match peer {
            Some(p) => tracing::warn!(
                peer = %p,
                refused = n,
                "refusing NVMe/TCP connections: {why} (logged at most every {LOG_EVERY:?})"
            ),
            None => tracing::warn!(
                refused = n,
                "refusing NVMe/TCP connections: {why} (logged at most every {LOG_EVERY:?})"
            ),
        }
    }

    fn release(&self, peer: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&peer);
            }
        }
    }
}

/// One connection's place under the limits, given back when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    peer: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.release(self.peer);
    }
}

/// Default cap on the discovery controllers held from one peer address. A kernel
/// host holds one per persistent discovery connection, and one-shot `nvme
/// discover` runs one at a time.
pub const DEFAULT_MAX_DISCOVERY_PER_HOST: usize = 16;

/// Discovery controllers held by each peer address, under a cap: every host may
/// reach the discovery subsystem, so it is counted apart from the controllers of
/// subsystems that allow the host.
#[derive(Debug)]
pub struct DiscoveryLimits {
    max_per_peer: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        Self {
            max_per_peer: AtomicUsize::new(DEFAULT_MAX_DISCOVERY_PER_HOST),
            open: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }
}

impl DiscoveryLimits {
    /// Sets the cap for discovery controllers created from now on.
    pub fn set(&self, max_per_peer: usize) {
        self.max_per_peer.store(max_per_peer, Ordering::Relaxed);
    }

    pub fn cap(&self) -> usize {
        self.max_per_peer.load(Ordering::Relaxed)
    }

    /// Discovery Connects refused for the cap since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Discovery controllers held now by `peer`.
    pub fn held(&self, peer: IpAddr) -> usize {
        self.lock().get(&peer).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more discovery controller of `peer`, unless it holds the cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<DiscoveryPermit> {
        let max = self.cap();
        let mut open = self.lock();
        let n = open.entry(peer).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&peer);
            }
            drop(open);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(DiscoveryPermit {
            limits: self.clone(),
            peer,
        })
    }
}

/// One discovery controller's place under [`DiscoveryLimits`], given back when
/// dropped (its admin connection closed).
#[derive(Debug)]
pub struct DiscoveryPermit {
    limits: Arc<DiscoveryLimits>,
    peer: IpAddr,
}

impl Drop for DiscoveryPermit {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests;
