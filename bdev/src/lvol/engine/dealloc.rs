//! Deallocation: the whole clusters of unmaps, batched. Every channel request waiting
//! is taken at once, its cluster ranges merged per volume (overlaps and repeats cost
//! nothing), and each volume is walked over what it owns in those ranges — empty
//! stretches of a thin volume are skipped a chunk summary at a time — in bounded
//! steps with a reactor turn between them. The freed clusters are committed by one
//! whole image, patched into the metadata in place (no copy of it), and the view is
//! patched, not rebuilt.

use std::collections::HashMap;

use ferrox_reactor::task::yield_now;

use super::super::format::{LogEntry, NONE};
use super::super::{LvolError, Scan, OWNED};
use super::views::parent_source;
use super::{ChanReq, Engine, Request};
use crate::BdevError;

/// View entries (or chunk summaries) one step looks at before the engine lets the
/// reactor run a turn.
pub const STEP_VISITS: u64 = 1 << 14;

/// What deallocations have cost so far (counts for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeallocStats {
    /// Batches run (each takes every deallocation waiting).
    pub batches: u64,
    /// Channel requests served.
    pub requests: u64,
    /// View entries and chunk summaries looked at.
    pub visited: u64,
    /// Steps taken (a reactor turn between two), counted as each starts.
    pub steps: u64,
    /// The most view entries and chunk summaries one step looked at.
    pub max_step_visits: u64,
    /// The most requests one batch served.
    pub max_batch: u64,
    /// The most deallocation requests the engine held at once (waiting or being
    /// served): bounded by the channels' [`MAX_UNMAPS`](super::super::MAX_UNMAPS).
    pub max_held: u64,
    /// Clusters freed.
    pub freed: u64,
    /// The largest scratch a volume's walk held, in bytes: its merged ranges, the
    /// owned clusters found in one step, and the clusters to free.
    pub peak_scratch_bytes: u64,
}

/// Sorts and merges cluster ranges `(first, end)`: overlapping or touching ranges
/// become one, empty ones go.
pub(super) fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.retain(|&(a, b)| a < b);
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl Engine {
    /// Frees the whole clusters the requests ask for, one volume at a time, and
    /// answers each request.
    pub(super) async fn dealloc_batch(&self, reqs: Vec<Request>) {
        let mut by_vol: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for r in &reqs {
            if let ChanReq::Dealloc { vol, first, end } = r.kind {
                by_vol.entry(vol).or_default().push((first, end));
            }
        }
        {
            let mut s = self.dealloc_stats.get();
            s.batches += 1;
            s.requests += reqs.len() as u64;
            s.max_batch = s.max_batch.max(reqs.len() as u64);
            self.dealloc_stats.set(s);
        }
        let mut results: HashMap<u64, Result<(), BdevError>> = HashMap::new();
        let mut vols: Vec<u64> = by_vol.keys().copied().collect();
        vols.sort_unstable();
        for vol in vols {
            let ranges = merge_ranges(by_vol.remove(&vol).expect("listed"));
            let res = self.dealloc(vol, &ranges).await;
            results.insert(vol, res);
        }
        for r in reqs {
            let res = match r.kind {
                ChanReq::Dealloc { vol, .. } => results.get(&vol).cloned().unwrap_or(Ok(())),
                ChanReq::Alloc { .. } => Ok(()),
            };
            let _ = r.reply.send((r.req, res));
            self.dealloc_held.set(self.dealloc_held.get() - 1);
        }
    }

    /// A deallocation request arrived: it waits for the next batch.
    pub(super) fn dealloc_request(&self, req: Request) {
        self.deallocs.borrow_mut().push(req);
        let held = self.dealloc_held.get() + 1;
        self.dealloc_held.set(held);
        let mut s = self.dealloc_stats.get();
        s.max_held = s.max_held.max(held as u64);
        self.dealloc_stats.set(s);
        self.wake();
    }

    /// Frees the clusters volume `vol` owns in the merged `ranges` with no ancestor
    /// data beneath (there, the zeroed cluster must stay to hide it).
    async fn dealloc(&self, vol: u64, ranges: &[(u64, u64)]) -> Result<(), BdevError> {
        let Some(vs) = self.st.borrow().shared.get(&vol).cloned() else {
            return Ok(());
        };
        if !self.st.borrow().meta.vols.contains_key(&vol) {
            return Ok(());
        }
        self.freeze(vol).await;
        // Frozen: no allocation for this volume can run, and the engine runs no other
        // job while this one yields, so the published view matches the metadata.
        let view = vs.view();
        let mut freed: Vec<(usize, u32)> = Vec::new();
        // Owned clusters found in this step, resolved together at its end.
        let mut found: Vec<usize> = Vec::new();
        let mut step_visits = 0;
        self.step_started();
        for &(first, end) in ranges {
            let mut at = first as usize;
            loop {
                let mut seen = 0;
                let left = STEP_VISITS.saturating_sub(step_visits);
                let next = view.entries.scan(at, end as usize, true, &mut seen, left);
                self.count_visits(seen);
                step_visits += seen;
                let vc = match next {
                    Scan::End => break,
                    Scan::Paused(i) => {
                        at = i;
                        self.frees(vol, &mut found, &mut freed);
                        self.next_step(step_visits).await;
                        step_visits = 0;
                        continue;
                    }
                    Scan::Found(vc) => vc,
                };
                at = vc + 1;
                debug_assert!(view.entries.get(vc) & OWNED != 0);
                found.push(vc);
                if step_visits >= STEP_VISITS {
                    self.frees(vol, &mut found, &mut freed);
                    self.next_step(step_visits).await;
                    step_visits = 0;
                }
            }
        }
        self.frees(vol, &mut found, &mut freed);
        {
            self.step_done(step_visits);
            let mut s = self.dealloc_stats.get();
            s.freed += freed.len() as u64;
            let scratch = (std::mem::size_of_val(ranges)
                + freed.capacity() * std::mem::size_of::<(usize, u32)>()
                + found.capacity() * std::mem::size_of::<usize>()) as u64;
            s.peak_scratch_bytes = s.peak_scratch_bytes.max(scratch);
            self.dealloc_stats.set(s);
        }
        let res = if freed.is_empty() {
            Ok(())
        } else {
            self.commit_freed(vol, &freed).await
        };
        self.st.borrow_mut().frozen.remove(&vol);
        if res.is_ok() {
            let pcs: Vec<u32> = freed.iter().map(|&(_, p)| p).collect();
            self.release(&pcs);
            let changes: Vec<(usize, u32)> = freed.iter().map(|&(vc, _)| (vc, NONE)).collect();
            self.publish_allocs(vol, &changes);
        } else {
            self.publish_allocs(vol, &[]);
        }
        res.map_err(|e| e.to_bdev())
    }

    /// Moves the volume clusters of `found` that free a pool cluster into `freed`
    /// (with it): those owned with no ancestor data beneath (there, the zeroed
    /// cluster must stay to hide it).
    fn frees(&self, vol: u64, found: &mut Vec<usize>, freed: &mut Vec<(usize, u32)>) {
        let st = self.st.borrow();
        let Some(v) = st.meta.vols.get(&vol) else {
            found.clear();
            return;
        };
        for vc in found.drain(..) {
            let p = v.map.get(vc).copied().unwrap_or(NONE);
            if p != NONE && parent_source(&st.meta.vols, v, vc) == NONE {
                freed.push((vc, p));
            }
        }
    }

    /// Ends a bounded step: lets the reactor serve others for a turn.
    async fn next_step(&self, visits: u64) {
        self.step_done(visits);
        yield_now().await;
        self.step_started();
    }

    fn step_started(&self) {
        let mut s = self.dealloc_stats.get();
        s.steps += 1;
        self.dealloc_stats.set(s);
    }

    fn step_done(&self, visits: u64) {
        let mut s = self.dealloc_stats.get();
        s.max_step_visits = s.max_step_visits.max(visits);
        self.dealloc_stats.set(s);
    }

    fn count_visits(&self, n: u64) {
        let mut s = self.dealloc_stats.get();
        s.visited += n;
        self.dealloc_stats.set(s);
    }

    /// Commits the metadata with volume `vol`'s clusters `freed` unmapped: a
    /// journal record of the frees, or a whole image on a pool before version 4.
    async fn commit_freed(&self, vol: u64, freed: &[(usize, u32)]) -> Result<(), LvolError> {
        let mut c = self.st.borrow().change();
        c.frees = freed
            .iter()
            .map(|&(vc, pc)| LogEntry {
                vol,
                vc: vc as u32,
                pc,
            })
            .collect();
        self.commit_change(c).await
    }
}
