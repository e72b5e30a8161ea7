//! Rebuilding a faulted child from a healthy one (the rule is in the nexus docs).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_reactor::task::sleep_until;
use ferrox_reactor::{DmaBuf, Reactor};

use super::watchdog::Watchdog;
use super::{lock, ChildState, Nexus, NexusError};
use crate::{BdevError, IoChannel, IoOp};

/// Lag behind the rate's schedule that a rebuild may catch up at full speed.
const PACE_SLACK: Duration = Duration::from_millis(100);

/// What a rebuild copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// Only the dirty regions.
    Partial,
    /// Everything (a new child, or a lost or too old dirty log).
    Full,
}

/// Where a rebuild is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildPhase {
    Running,
    Done,
    Failed(String),
}

/// A rebuild's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildStatus {
    pub child: usize,
    pub source: usize,
    pub mode: RebuildMode,
    pub phase: RebuildPhase,
    /// Bytes copied so far.
    pub copied: u64,
    /// Bytes to copy (partial: the dirty regions when it started; regions dirtied by
    /// writes in flight then are copied too, beyond this figure).
    pub total: u64,
    pub started: Instant,
    /// When it ended.
    pub finished: Option<Instant>,
    /// The rate limit when last looked at, bytes/s.
    pub rate: u64,
}

impl RebuildStatus {
    /// Time left at the rate so far (`None` before the first byte or once ended).
    pub fn eta(&self) -> Option<Duration> {
        if self.phase != RebuildPhase::Running || self.copied == 0 {
            return None;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let left = self.total.saturating_sub(self.copied) as f64;
        Some(Duration::from_secs_f64(left * secs / self.copied as f64))
    }
}

impl Nexus {
    /// Rebuilds faulted child `child` from a healthy one while host I/O continues;
    /// runs on the calling reactor (await it in a task). On success the child is
    /// Healthy (recorded first) and its regions' dirty bits are cleared.
    pub async fn rebuild(
        self: Arc<Self>,
        child: usize,
        mode: RebuildMode,
    ) -> Result<RebuildStatus, NexusError> {
        let name = self.info.name.clone();
        if child >= self.children.len() {
            return Err(self.no_child(child));
        }
        let state = self.child_state(child);
        if state != ChildState::Faulted {
            return Err(NexusError::NotFaulted { name, child, state });
        }
        if mode == RebuildMode::Partial {
            if let Some(why) = self.why_full(child)? {
                return Err(NexusError::FullRebuildNeeded { name, child, why });
            }
        }
        // A fault is recorded before the child may be rebuilt.
        self.ensure_recorded()
            .await
            .map_err(|source| NexusError::Record {
                name: name.clone(),
                source,
            })?;
        let source = self
            .pick_source()
            .ok_or_else(|| NexusError::NoSource(name.clone()))?;
        let region_bytes = self.region_size();
        let total = match mode {
            RebuildMode::Partial => self.dirty.count() * region_bytes,
            RebuildMode::Full => self.info.num_blocks * u64::from(self.info.block_size),
        };
        {
            let mut st = lock(&self.rebuild);
            if st
                .as_ref()
                .is_some_and(|s| s.phase == RebuildPhase::Running)
            {
                return Err(NexusError::RebuildRunning(name));
            }
            *st = Some(RebuildStatus {
                child,
                source,
                mode,
                phase: RebuildPhase::Running,
                copied: 0,
                total,
                started: Instant::now(),
                finished: None,
                rate: self.rebuild_rate(),
            });
        }
        let res = self.copy_all(child, source, mode).await;
        let res = match res {
            Ok(()) => self.finish_rebuild(child).await,
            Err(e) => Err(e),
        };
        let status = {
            let mut st = lock(&self.rebuild);
            let s = st.as_mut().expect("the rebuild's status");
            s.finished = Some(Instant::now());
            s.phase = match &res {
                Ok(()) => RebuildPhase::Done,
                Err(why) => RebuildPhase::Failed(why.clone()),
            };
            s.clone()
        };
        match res {
            Ok(()) => {
                // Everything copied and nobody faulted: the map is whole again.
                if mode == RebuildMode::Full && !self.child_states().contains(&ChildState::Faulted)
                {
                    self.dirty_complete.store(true, Ordering::SeqCst);
                }
                Ok(status)
            }
            Err(why) => {
                // A child left Rebuilding is faulted again: it is not a copy. The
                // faults are recorded now, not at the next write (best effort: a
                // write retries).
                let _ = self.fault(child, &BdevError::Io(libc::ECANCELED));
                if let Err(e) = self.ensure_recorded().await {
                    tracing::warn!(nexus = %name, "{e}");
                }
                Err(NexusError::RebuildFailed { name, child, why })
            }
        }
    }

    /// Records the child Healthy, then makes it so, then stores the cleared bits.
    async fn finish_rebuild(&self, child: usize) -> Result<(), String> {
        if self.child_state(child) != ChildState::Rebuilding {
            return Err("the child failed during the rebuild".into());
        }
        self.record(child, ChildState::Healthy)
            .await
            .map_err(|e| e.to_string())?;
        {
            let mut m = lock(&self.children[child].meta);
            if self.children[child]
                .state
                .compare_exchange(
                    ChildState::Rebuilding.as_u8(),
                    ChildState::Healthy.as_u8(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_err()
            {
                return Err("the child failed during the rebuild".into());
            }
            m.needs_full = false;
        }
        tracing::info!(nexus = %self.info.name, child, "child rebuilt");
        // Clears need not be durable for correctness; store them to keep the next
        // partial rebuild short.
        if let Err(e) = self.dirty.persist().await {
            tracing::warn!(nexus = %self.info.name, "storing the cleared dirty map: {e}");
        }
        Ok(())
    }

    async fn copy_all(&self, child: usize, source: usize, mode: RebuildMode) -> Result<(), String> {
        let r = Reactor::try_current().expect("a rebuild runs on a reactor");
        let open = |i: usize| {
            IoChannel::open(self.children[i].dev.clone(), &r)
                .map_err(|e| format!("opening child {i}: {e}"))
        };
        let dst = open(child)?;
        let mut src = (source, open(source)?);
        let dog = Watchdog::start(&r, self.watchdog_tick());
        {
            let _m = lock(&self.children[child].meta);
            self.children[child]
                .state
                .store(ChildState::Rebuilding.as_u8(), Ordering::SeqCst);
        }
        tracing::info!(nexus = %self.info.name, child, source, ?mode, "rebuild started");
        let bs = u64::from(self.info.block_size);
        let piece = (r.pool().max_size() as u64)
            .min(u64::from(self.info.max_transfer))
            .min(self.region_blocks * bs)
            / bs;
        if piece == 0 {
            return Err("no buffer class holds one block".into());
        }
        let started = Instant::now();
        let mut next_at = started;
        for region in 0..self.dirty.regions() {
            if self.child_state(child) != ChildState::Rebuilding {
                return Err("the child failed during the rebuild".into());
            }
            // A region neither dirty nor being written needs no look under the lock
            // (a write that skipped the child set its bit before it uncounted).
            if mode == RebuildMode::Partial
                && self.locks.writers(region) == 0
                && !self.dirty.is_dirty(region)
            {
                continue;
            }
            let _copy = self.locks.copy(region).await;
            if mode == RebuildMode::Partial && !self.dirty.is_dirty(region) {
                continue;
            }
            let first = region * self.region_blocks;
            let end = (first + self.region_blocks).min(self.info.num_blocks);
            let mut lba = first;
            while lba < end {
                let n = piece.min(end - lba);
                // A source that fails is faulted; the copy goes on from another
                // healthy child (each failure faults one: at most N tries).
                let buf = loop {
                    let why = if self.child_state(src.0) == ChildState::Healthy {
                        match self.read_piece(&dog, &src.1, src.0, lba, n).await {
                            Ok(buf) => break buf,
                            Err(why) => why,
                        }
                    } else {
                        format!("the source, child {}, failed", src.0)
                    };
                    let Some(next) = self.pick_source() else {
                        return Err(why);
                    };
                    tracing::warn!(nexus = %self.info.name, child, "{why}; rebuilding from child {next}");
                    src = (next, open(next)?);
                    if let Some(s) = lock(&self.rebuild).as_mut() {
                        s.source = next;
                    }
                };
                self.write_piece(&dog, &dst, child, lba, n, buf).await?;
                lba += n;
                let bytes = n * bs;
                let rate = self.rebuild_rate();
                if let Some(s) = lock(&self.rebuild).as_mut() {
                    s.copied += bytes;
                    s.rate = rate;
                }
                // Pace: each piece books bytes/rate of time on a running schedule, so a
                // timer that fires late is made up by the next pieces; at most
                // PACE_SLACK of lag (time spent waiting for writers, say) is caught up.
                let now = Instant::now();
                next_at = next_at.max(now - PACE_SLACK.min(now - started))
                    + Duration::from_secs_f64(bytes as f64 / rate as f64);
                if next_at > now {
                    sleep_until(next_at).await;
                }
            }
            // Bits stay set while another child is faulted: it still needs them.
            let others = (0..self.children.len())
                .any(|i| i != child && self.child_state(i) == ChildState::Faulted);
            if !others {
                self.dirty.clear(region);
            }
        }
        // The copies reach stable media before the child counts as a copy.
        let deadline = Instant::now() + self.io_timeout;
        match dog.run(deadline, dst.submit_async(IoOp::Flush)).await {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(e), _)) => Err(self.piece_failed(child, "flushing", 0, e)),
            Err(_) => Err(self.piece_failed(child, "flushing", 0, BdevError::Io(libc::ETIMEDOUT))),
        }
    }

    /// A healthy child to copy from: the preferred one, else the first.
    fn pick_source(&self) -> Option<usize> {
        self.preferred
            .filter(|&p| self.child_state(p) == ChildState::Healthy)
            .or_else(|| {
                (0..self.children.len()).find(|&i| self.child_state(i) == ChildState::Healthy)
            })
    }

    async fn read_piece(
        &self,
        dog: &Watchdog,
        src: &IoChannel,
        source: usize,
        lba: u64,
        blocks: u64,
    ) -> Result<DmaBuf, String> {
        let len = (blocks * u64::from(self.info.block_size)) as usize;
        let buf = Reactor::with(|r| r.pool().alloc(len)).ok_or("no buffer for the copy")?;
        let deadline = Instant::now() + self.io_timeout;
        let read = dog
            .run(deadline, src.submit_async(IoOp::Read { lba, blocks, buf }))
            .await;
        match read {
            Ok((Ok(()), Some(buf))) => Ok(buf),
            Ok((Err(e), _)) => Err(self.piece_failed(source, "reading", lba, e)),
            Ok((Ok(()), None)) => Err("a read came back without its buffer".into()),
            Err(_) => {
                let e = BdevError::Io(libc::ETIMEDOUT);
                Err(self.piece_failed(source, "reading", lba, e))
            }
        }
    }

    async fn write_piece(
        &self,
        dog: &Watchdog,
        dst: &IoChannel,
        child: usize,
        lba: u64,
        blocks: u64,
        buf: DmaBuf,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.io_timeout;
        let write = dog
            .run(
                deadline,
                dst.submit_async(IoOp::Write {
                    lba,
                    blocks,
                    buf,
                    fua: false,
                }),
            )
            .await;
        match write {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(e), _)) => Err(self.piece_failed(child, "writing", lba, e)),
            Err(_) => Err(self.piece_failed(child, "writing", lba, BdevError::Io(libc::ETIMEDOUT))),
        }
    }

    /// Faults the child a copy failed on and says what happened.
    fn piece_failed(&self, i: usize, what: &str, lba: u64, e: BdevError) -> String {
        self.fault(i, &e);
        format!("{what} child {i} at block {lba}: {e}")
    }
}
