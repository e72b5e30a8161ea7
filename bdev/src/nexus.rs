//! `nexus`: a mirror [`BlockDevice`] over N children (in production one local lvol
//! and remote NVMe/TCP replicas; the nexus only sees `BlockDevice`s).
//!
//! # Architecture
//!
//! * [`Nexus`] (this file) holds what every reactor shares: the children and their
//!   [`ChildState`]s, the [`FaultRecorder`], the [`DirtyMap`] and the per-region write
//!   counters of the rebuild's range lock (`lock`). A child's state is an atomic
//!   read on every request; state *changes* (fault, rebuild start and end) take the
//!   child's small mutex and are rare.
//! * `io`: the per-reactor channel. Each request runs as a reactor task
//!   ([`Reactor::spawn_local`]) that submits to the children's own channels on the
//!   same reactor with [`crate::IoChannel::submit_async`] and completes the caller's request
//!   when it is done (so never inside `submit`).
//! * [`dirty`]: the dirty-region bitmap and its persistence ([`DirtyLog`]: in memory,
//!   or two checksummed, generation-numbered copies on a block device).
//! * `watchdog`: the children's requests' I/O timeout, one periodic sweep per
//!   channel instead of a timer per request.
//! * `rebuild`: copying a faulted child back from a healthy one, partial (dirty
//!   regions) or full, rate-limited, while host I/O continues.
//!
//! ## Child states
//!
//! ```text
//!   Healthy ──I/O error or timeout──► Faulted ──rebuild()──► Rebuilding ──copy done,
//!      ▲                                 ▲                      │        Healthy recorded──► Healthy
//!      │                                 └──I/O error, or the Healthy record fails──┘
//! ```
//!
//! * **Healthy** children receive every write, write zeroes, unmap and flush, and
//!   serve reads (the preferred child when it is healthy, else round robin over the
//!   healthy ones).
//! * **Faulted** children receive nothing and never serve a read again; only a rebuild
//!   brings them back.
//! * **Rebuilding** children receive every write (so they never fall behind the part
//!   already copied) but serve no read and do not count as a copy of the data: a write
//!   that reached only rebuilding children fails.
//!
//! ## Ordering rules (what is durable when)
//!
//! 1. **A fault is recorded before the request that exposed it completes.** A child
//!    that fails a request, or does not answer within [`NexusConfig::io_timeout`], is
//!    Faulted at once (in memory: no later request picks it); the request then awaits
//!    [`FaultRecorder::record`] for every faulted child not yet recorded. If recording
//!    fails the request fails with [`BdevError::NoPath`] (its data may be on the
//!    healthy children, but a write a faulted child missed is never acknowledged
//!    unless the fault is durable). Any later write that finds an unrecorded fault
//!    retries the record before it completes.
//! 2. **Dirty bits are durable before the write completes.** While any child is
//!    Faulted, a write (also write zeroes and unmap) marks its regions in the
//!    [`DirtyMap`] and awaits the [`DirtyLog`]'s store of a bitmap holding them
//!    *before* it is submitted to the children. A write that a child fails marks its
//!    regions too, before it completes. A region already durably dirty costs one
//!    atomic load; concurrent writers share one store (batched).
//! 3. **Acknowledged means on every healthy child.** A write completes successfully
//!    when every child it was sent to answered, at least one healthy child succeeded,
//!    and rules 1 and 2 hold for those that failed.
//! 4. **No healthy child, no I/O**: [`BdevError::NoPath`], at once (no hang), for the
//!    NVMe target to answer with a path status, so a multipath host tries another
//!    path (that mapping is not in `nvmeof` yet).
//!
//! ## Rebuild and the range lock
//!
//! The rule: *from the moment a child is Rebuilding, every host write goes to it as
//! well; the copy of one region excludes host writes to that region.* A host write
//! first counts itself in every region it touches (and waits while the region is
//! being copied), only then reads the children's states, and uncounts itself when it
//! has completed. The rebuild sets the child Rebuilding, then for each region: marks
//! the region as being copied, waits for the region's writers to drain, checks the
//! dirty bit (partial mode), copies the region source → child (from another healthy
//! child if the source fails; the source is faulted), clears the bit (when no other
//! child is faulted), and releases the region. So a write that started
//! before the child was Rebuilding (and skipped it) is finished — its dirty bit set —
//! before its region is looked at; a write that started later reaches the child
//! itself and cannot interleave with the copy of its region (the copy could otherwise
//! put the source's older bytes over the newer ones). All counters are `SeqCst`.
//!
//! ## After a restart
//!
//! The control plane re-applies its records with [`Nexus::restore_faulted`] and
//! [`Nexus::restore_generation`], and calls [`Nexus::load_dirty`] before serving I/O. Until the stored map is found, only a
//! full rebuild is allowed ([`NexusError::FullRebuildNeeded`]); a full rebuild that
//! leaves no child faulted makes the map whole again. The first store of a dirty
//! map always adds the stored one first, so a write before the load drops nothing.
//!
//! A child with a volatile write cache ([`BdevInfo::volatile_cache`]) that faults
//! may have lost writes it acknowledged before (still in its cache): regions the
//! dirty map never saw. It needs a full rebuild ([`ChildRecord::needs_full`]);
//! tracking the regions written since the last flush would keep it partial.
//!
//! One dirty map serves every faulted child: a region's bit is cleared only when the
//! child rebuilt is the only non-healthy one; with two children faulted, the second
//! rebuild copies (a superset of) what the first did.
//!
//! # What it doesn't implement
//!
//! Reconnecting remote children, replacing a child, more than one rebuild at a time
//! per nexus, a lock-free degraded path (while a child is faulted, writes to regions
//! not yet durably dirty take the dirty map's mutex), and an I/O path free of
//! allocation (each request is a boxed task, and a write is copied into one pool
//! buffer per extra child). The NVMe target does not map [`BdevError::NoPath`] to a
//! path status yet (it answers Internal Error). Unmapped blocks read back as zeroes
//! only if every child's unmap zeroes (malloc and lvol do; a remote drive's
//! deallocate may not, until a rebuild copies them).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use ferrox_reactor::Reactor;

use crate::{BdevError, BdevInfo, BlockDevice, ChannelImpl, Ops};

pub mod dirty;
mod io;
mod lock;
mod rebuild;
mod watchdog;

pub use dirty::{BdevDirtyLog, DirtyLog, DirtyLogError, DirtyMap, MemDirtyLog};
pub use rebuild::{RebuildMode, RebuildPhase, RebuildStatus};

/// A future run on the reactor that awaits it (not `Send`).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Default dirty-region granularity.
pub const DEFAULT_REGION_SIZE: u64 = 1 << 20;
/// Default per-child I/O timeout.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default rebuild rate, bytes per second.
pub const DEFAULT_REBUILD_RATE: u64 = 100 << 20;
/// Slowest rebuild rate accepted (a slower one would take days for a small volume).
pub const MIN_REBUILD_RATE: u64 = 1 << 20;
/// Fastest rebuild rate accepted (beyond any device or link).
pub const MAX_REBUILD_RATE: u64 = 64 << 30;
/// Most children of one nexus.
pub const MAX_CHILDREN: usize = 16;

/// The state of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    Healthy,
    Faulted,
    Rebuilding,
}

impl ChildState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Healthy,
            1 => Self::Faulted,
            _ => Self::Rebuilding,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Faulted => 1,
            Self::Rebuilding => 2,
        }
    }
}

/// A change of a child's state that must be durable before the nexus acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRecord {
    pub nexus: String,
    pub child: usize,
    pub child_name: String,
    /// The new state: `Faulted` (before a request that skipped the child completes),
    /// or `Healthy` (after a rebuild, before the child serves reads).
    pub state: ChildState,
    /// Increases with every record of this nexus.
    pub generation: u64,
    /// A fault only a full rebuild repairs (give it back to
    /// [`Nexus::restore_faulted`] after a restart).
    pub needs_full: bool,
}

/// Why a record failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording the child state failed: {0}")]
pub struct RecordError(pub String);

/// Makes child state changes durable (the control plane writes etcd with the
/// volume's generation). The future runs on the reactor of the request that exposed
/// the change.
pub trait FaultRecorder: Send + Sync {
    fn record(&self, rec: ChildRecord) -> LocalFuture<'static, Result<(), RecordError>>;
}

/// Settings of a nexus.
#[derive(Debug, Clone)]
pub struct NexusConfig {
    /// Dirty-region granularity in bytes: a power of two, at least a block.
    pub region_size: u64,
    /// A child that does not answer a request within this time is faulted.
    pub io_timeout: Duration,
    /// The child reads go to while it is healthy (the local replica).
    pub preferred: Option<usize>,
    /// Rebuild rate in bytes per second.
    pub rebuild_rate: u64,
}

impl Default for NexusConfig {
    fn default() -> Self {
        Self {
            region_size: DEFAULT_REGION_SIZE,
            io_timeout: DEFAULT_IO_TIMEOUT,
            preferred: Some(0),
            rebuild_rate: DEFAULT_REBUILD_RATE,
        }
    }
}

/// Errors of building a nexus and of its control operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NexusError {
    #[error("nexus {0:?}: no children")]
    NoChildren(String),
    #[error("nexus {name:?}: {count} children, at most {MAX_CHILDREN}")]
    TooManyChildren { name: String, count: usize },
    #[error("nexus {name:?}: child {child:?} has {got}-byte blocks, child {first:?} {want}")]
    BlockSize {
        name: String,
        first: String,
        want: u32,
        child: String,
        got: u32,
    },
    #[error("nexus {name:?}: region size {size} must be a power of two of at least one {block_size}-byte block")]
    RegionSize {
        name: String,
        size: u64,
        block_size: u32,
    },
    #[error("nexus {name:?}: I/O timeout {timeout:?} must be from 1 ms to 1 hour")]
    IoTimeout { name: String, timeout: Duration },
    #[error("rebuild rate {rate} bytes/s: {why}")]
    RebuildRate { rate: u64, why: &'static str },
    #[error("nexus {name:?} has no child {child} (it has {count})")]
    NoSuchChild {
        name: String,
        child: usize,
        count: usize,
    },
    #[error("nexus {name:?}: child {child} is {state:?}, only a faulted child is rebuilt")]
    NotFaulted {
        name: String,
        child: usize,
        state: ChildState,
    },
    #[error("nexus {0:?}: no healthy child to rebuild from")]
    NoSource(String),
    #[error("nexus {0:?}: a rebuild is already running")]
    RebuildRunning(String),
    #[error("nexus {name:?}: rebuild of child {child} stopped: {why}")]
    RebuildFailed {
        name: String,
        child: usize,
        why: String,
    },
    #[error("nexus {name:?}: {source}")]
    Record {
        name: String,
        #[source]
        source: RecordError,
    },
    #[error("nexus {name:?}: child {child} needs a full rebuild: {why}")]
    FullRebuildNeeded {
        name: String,
        child: usize,
        why: &'static str,
    },
    #[error("nexus {name:?}: dirty log: {source}")]
    DirtyLog {
        name: String,
        #[source]
        source: DirtyLogError,
    },
}

struct ChildMeta {
    /// The current fault is durably recorded.
    recorded: bool,
    /// Counts faults, so a record finishing after the child was rebuilt and faulted
    /// again does not mark the new fault recorded.
    epoch: u64,
    /// Only a full rebuild brings the child back: it has a volatile write cache,
    /// which may have lost writes it acknowledged before the fault (regions the
    /// dirty map never saw).
    needs_full: bool,
}

pub(crate) struct Child {
    dev: Arc<dyn BlockDevice>,
    /// A [`ChildState`]; read on every request.
    state: AtomicU8,
    meta: Mutex<ChildMeta>,
}

#[derive(Default)]
struct Gate {
    busy: bool,
    waiters: Vec<Waker>,
}

/// A mirror over N children; see the module documentation.
pub struct Nexus {
    info: BdevInfo,
    children: Box<[Child]>,
    recorder: Arc<dyn FaultRecorder>,
    dirty: DirtyMap,
    locks: lock::RegionLocks,
    region_blocks: u64,
    io_timeout: Duration,
    preferred: Option<usize>,
    rebuild_rate: AtomicU64,
    generation: AtomicU64,
    /// Faulted children whose fault is not recorded yet.
    unrecorded: AtomicUsize,
    /// One task records at a time; the others wait and then look again.
    record_gate: Mutex<Gate>,
    rebuild: Mutex<Option<RebuildStatus>>,
    /// The dirty map holds every region written since any child was faulted (false
    /// after a restart restored a fault, until the stored map is loaded).
    dirty_complete: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a rebuild rate.
pub fn validate_rebuild_rate(rate: u64) -> Result<(), NexusError> {
    if rate == 0 {
        return Err(NexusError::RebuildRate {
            rate,
            why: "must be more than zero",
        });
    }
    if rate < MIN_REBUILD_RATE {
        return Err(NexusError::RebuildRate {
            rate,
            why: "below the 1 MiB/s minimum",
        });
    }
    if rate > MAX_REBUILD_RATE {
        return Err(NexusError::RebuildRate {
            rate,
            why: "above the 64 GiB/s maximum",
        });
    }
    Ok(())
}

impl Nexus {
    /// A nexus named `name` over `children`, all healthy. Its size is the smallest
    /// child's; every child must have the same block size.
    pub fn new(
        name: &str,
        children: Vec<Arc<dyn BlockDevice>>,
        cfg: NexusConfig,
        recorder: Arc<dyn FaultRecorder>,
        log: Arc<dyn DirtyLog>,
    ) -> Result<Arc<Self>, NexusError> {
        let first = children
            .first()
            .ok_or_else(|| NexusError::NoChildren(name.to_string()))?
            .info()
            .clone();
        if children.len() > MAX_CHILDREN {
            return Err(NexusError::TooManyChildren {
                name: name.to_string(),
                count: children.len(),
            });
        }
        let bs = first.block_size;
        let mut num_blocks = u64::MAX;
        let mut max_transfer = u32::MAX;
        let mut ops = Ops::FLUSH | Ops::FUA | Ops::WRITE_ZEROES | Ops::UNMAP;
        let mut volatile_cache = false;
        for c in &children {
            let i = c.info();
            if i.block_size != bs {
                return Err(NexusError::BlockSize {
                    name: name.to_string(),
                    first: first.name.clone(),
                    want: bs,
                    child: i.name.clone(),
                    got: i.block_size,
                });
            }
            num_blocks = num_blocks.min(i.num_blocks);
            max_transfer = max_transfer.min(i.max_transfer);
            ops &= i.ops;
            volatile_cache |= i.volatile_cache;
        }
        if !cfg.region_size.is_power_of_two() || cfg.region_size < u64::from(bs) {
            return Err(NexusError::RegionSize {
                name: name.to_string(),
                size: cfg.region_size,
                block_size: bs,
            });
        }
        if cfg.io_timeout < Duration::from_millis(1) || cfg.io_timeout > Duration::from_secs(3600) {
            return Err(NexusError::IoTimeout {
                name: name.to_string(),
                timeout: cfg.io_timeout,
            });
        }
        validate_rebuild_rate(cfg.rebuild_rate)?;
        if let Some(p) = cfg.preferred {
            if p >= children.len() {
                return Err(NexusError::NoSuchChild {
                    name: name.to_string(),
                    child: p,
                    count: children.len(),
                });
            }
        }
        let region_blocks = cfg.region_size / u64::from(bs);
        let regions = num_blocks.div_ceil(region_blocks);
        let info = BdevInfo {
            name: name.to_string(),
            uuid: crate::random_uuid(),
            block_size: bs,
            num_blocks,
            optimal_io_boundary: 0,
            max_transfer,
            ops,
            volatile_cache,
        };
        Ok(Arc::new(Self {
            info,
            children: children
                .into_iter()
                .map(|dev| Child {
                    dev,
                    state: AtomicU8::new(ChildState::Healthy.as_u8()),
                    meta: Mutex::new(ChildMeta {
                        recorded: true,
                        epoch: 0,
                        needs_full: false,
                    }),
                })
                .collect(),
            recorder,
            dirty: DirtyMap::new(regions, log),
            locks: lock::RegionLocks::new(regions),
            region_blocks,
            io_timeout: cfg.io_timeout,
            preferred: cfg.preferred,
            rebuild_rate: AtomicU64::new(cfg.rebuild_rate),
            generation: AtomicU64::new(0),
            unrecorded: AtomicUsize::new(0),
            record_gate: Mutex::new(Gate::default()),
            rebuild: Mutex::new(None),
            dirty_complete: std::sync::atomic::AtomicBool::new(true),
        }))
    }

    pub fn children(&self) -> usize {
        self.children.len()
    }

    pub fn child_state(&self, i: usize) -> ChildState {
        ChildState::from_u8(self.children[i].state.load(Ordering::SeqCst))
    }

    pub fn child_states(&self) -> Vec<ChildState> {
        (0..self.children.len())
            .map(|i| self.child_state(i))
            .collect()
    }

    /// The dirty-region map (regions written while a child was faulted).
    pub fn dirty(&self) -> &DirtyMap {
        &self.dirty
    }

    /// After a restart: marks `child` Faulted as the control plane recorded it
    /// (nothing is recorded again), with the record's [`ChildRecord::needs_full`].
    /// Until [`Nexus::load_dirty`] finds the stored map, only a full rebuild is
    /// allowed.
    pub fn restore_faulted(&self, child: usize, needs_full: bool) -> Result<(), NexusError> {
        let c = self
            .children
            .get(child)
            .ok_or_else(|| self.no_child(child))?;
        let mut m = lock(&c.meta);
        m.needs_full = needs_full;
        self.dirty_complete.store(false, Ordering::SeqCst);
        c.state.store(ChildState::Faulted.as_u8(), Ordering::SeqCst);
        Ok(())
    }

    /// After a restart: continues the record generations from the last one the
    /// control plane holds (never goes back).
    pub fn restore_generation(&self, last: u64) {
        self.generation.fetch_max(last, Ordering::SeqCst);
    }

    /// After a restart: adds the stored dirty map to this one. `Ok(false)` if the log
    /// holds none (lost, or never written): faulted children then need a full
    /// rebuild.
    pub async fn load_dirty(&self) -> Result<bool, NexusError> {
        let found = self
            .dirty
            .merge_stored()
            .await
            .map_err(|source| NexusError::DirtyLog {
                name: self.info.name.clone(),
                source,
            })?;
        if !found {
            return Ok(false);
        }
        self.dirty_complete.store(true, Ordering::SeqCst);
        Ok(true)
    }

    /// The rebuild child `child` needs: partial while the dirty map is complete and
    /// the child did not need a full one when it faulted.
    pub fn rebuild_mode(&self, child: usize) -> Result<RebuildMode, NexusError> {
        Ok(match self.why_full(child)? {
            None => RebuildMode::Partial,
            Some(_) => RebuildMode::Full,
        })
    }

    /// Why only a full rebuild brings `child` back, if so.
    fn why_full(&self, child: usize) -> Result<Option<&'static str>, NexusError> {
        let c = self
            .children
            .get(child)
            .ok_or_else(|| self.no_child(child))?;
        Ok(if lock(&c.meta).needs_full {
            Some("its volatile write cache may have lost writes acknowledged before the fault")
        } else if !self.dirty_complete.load(Ordering::SeqCst) {
            Some("the dirty map does not cover its fault (not loaded, or lost)")
        } else {
            None
        })
    }

    /// How often a reactor's watchdog looks for requests past the I/O timeout.
    fn watchdog_tick(&self) -> Duration {
        (self.io_timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    /// Bytes per dirty region.
    pub fn region_size(&self) -> u64 {
        self.region_blocks * u64::from(self.info.block_size)
    }

    /// The generation of the last record.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Sets the rebuild rate (bytes/s), also for a rebuild in progress.
    pub fn set_rebuild_rate(&self, rate: u64) -> Result<(), NexusError> {
        validate_rebuild_rate(rate)?;
        self.rebuild_rate.store(rate, Ordering::SeqCst);
        Ok(())
    }

    pub fn rebuild_rate(&self) -> u64 {
        self.rebuild_rate.load(Ordering::SeqCst)
    }

    /// The running or last rebuild's progress.
    pub fn rebuild_status(&self) -> Option<RebuildStatus> {
        lock(&self.rebuild).clone()
    }

    fn no_child(&self, child: usize) -> NexusError {
        NexusError::NoSuchChild {
            name: self.info.name.clone(),
            child,
            count: self.children.len(),
        }
    }

    /// Faults child `i` after `why` (no-op if it already is). Returns whether this
    /// call faulted it.
    fn fault(&self, i: usize, why: &BdevError) -> bool {
        let c = &self.children[i];
        let mut m = lock(&c.meta);
        if self.child_state(i) == ChildState::Faulted {
            return false;
        }
        m.recorded = false;
        m.epoch += 1;
        m.needs_full |= c.dev.info().volatile_cache;
        self.unrecorded.fetch_add(1, Ordering::SeqCst);
        c.state.store(ChildState::Faulted.as_u8(), Ordering::SeqCst);
        tracing::warn!(nexus = %self.info.name, child = i, name = %c.dev.info().name, "child faulted: {why}");
        true
    }

    async fn record(&self, child: usize, state: ChildState) -> Result<(), RecordError> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let rec = ChildRecord {
            nexus: self.info.name.clone(),
            child,
            child_name: self.children[child].dev.info().name.clone(),
            state,
            generation,
            needs_full: state == ChildState::Faulted && lock(&self.children[child].meta).needs_full,
        };
        self.recorder.record(rec).await
    }

    /// Records every fault not recorded yet (rule 1); `Err` if one record failed.
    async fn ensure_recorded(&self) -> Result<(), RecordError> {
        if self.unrecorded.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        std::future::poll_fn(|cx| {
            let mut g = lock(&self.record_gate);
            if g.busy {
                g.waiters.push(cx.waker().clone());
                Poll::Pending
            } else {
                g.busy = true;
                Poll::Ready(())
            }
        })
        .await;
        let _open = defer_fn(|| {
            let waiters = {
                let mut g = lock(&self.record_gate);
                g.busy = false;
                std::mem::take(&mut g.waiters)
            };
            waiters.into_iter().for_each(Waker::wake);
        });
        for i in 0..self.children.len() {
            if self.unrecorded.load(Ordering::SeqCst) == 0 {
                break;
            }
            let epoch = {
                let m = lock(&self.children[i].meta);
                if m.recorded || self.child_state(i) != ChildState::Faulted {
                    continue;
                }
                m.epoch
            };
            self.record(i, ChildState::Faulted).await?;
            let mut m = lock(&self.children[i].meta);
            if m.epoch == epoch && !m.recorded {
                m.recorded = true;
                self.unrecorded.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Regions `first..=last` that blocks `lba..lba+blocks` touch.
    fn regions_of(&self, lba: u64, blocks: u64) -> (u64, u64) {
        (
            lba / self.region_blocks,
            (lba + blocks - 1) / self.region_blocks,
        )
    }
}

/// Runs a closure when dropped.
struct DeferFn<F: FnMut()>(F);

impl<F: FnMut()> Drop for DeferFn<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn defer_fn<F: FnMut()>(f: F) -> DeferFn<F> {
    DeferFn(f)
}

impl BlockDevice for Nexus {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(io::NexusChannel::open(self, r))
    }
}

#[cfg(test)]
mod tests;
