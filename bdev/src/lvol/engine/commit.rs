//! Committing metadata: initialising new clusters before anything references them,
//! changes as log records (journal records; on a version-3 pool, allocation batches
//! only), whole images into the slot the log does not extend (the compaction, or
//! every other change of a version-3 pool), and what a failed metadata write leaves
//! uncertain.

use std::collections::HashSet;
use std::ops::Bound;

use ferrox_reactor::task::yield_now;

use super::super::format::{
    encode_change, encode_record, Change, ImageBuilder, LogPos, JOURNAL_VERSION, NONE,
};
use super::super::io::{try_join_all, IoFuture};
use super::super::LvolError;
use super::{io_err, Engine, State, INIT_PARALLEL};

/// Volumes a whole image encodes between two reactor turns.
const IMAGE_STEP: usize = 4096;

/// Installs committed change `c` as generation `generation` in memory: deleted
/// volumes go, upserted ones replace theirs, allocations are mapped.
fn apply_change(st: &mut State, c: Change, generation: u64) {
    for id in c.deletes {
        if let Some(v) = st.meta.vols.remove(&id) {
            st.unindex(&v);
            st.children.remove(&id);
        }
    }
    for v in c.upserts {
        if let Some(old) = st.meta.vols.remove(&v.id) {
            st.unindex(&old);
        }
        st.index(&v);
        st.meta.vols.insert(v.id, v);
    }
    for e in c.frees {
        let v = st
            .meta
            .vols
            .get_mut(&e.vol)
            .expect("frees are of live volumes");
        debug_assert_eq!(v.map[e.vc as usize], e.pc);
        v.map[e.vc as usize] = NONE;
    }
    for e in c.entries {
        let v = st
            .meta
            .vols
            .get_mut(&e.vol)
            .expect("allocations are for live volumes");
        debug_assert_eq!(v.map[e.vc as usize], NONE);
        v.map[e.vc as usize] = e.pc;
    }
    st.meta.next_id = st.meta.next_id.max(c.next_id);
    st.meta.clean_from = st.meta.clean_from.max(c.clean_from);
    st.meta.generation = generation;
}

impl Engine {
    /// Fills new clusters: a copy of `src` where it is not [`NONE`], else zeroes —
    /// except clean clusters (at or above the committed `clean_from`), which read as
    /// zeroes already; then flushes, so the metadata that references them can be
    /// committed. `clean_from`, for the generation about to be committed, is raised
    /// above every new cluster. A copy into a clean cluster first commits the raised
    /// `clean_from` alone: a crash after the copy must not leave data in a cluster the
    /// pool still believes clean.
    pub(super) async fn init_clusters(
        &self,
        work: &[(u32, u32)],
        clean_from: &mut u64,
        during: &'static str,
    ) -> Result<(), LvolError> {
        let Some(top) = work.iter().map(|&(d, _)| u64::from(d) + 1).max() else {
            return Ok(());
        };
        let clean = self.st.borrow().meta.clean_from;
        if work
            .iter()
            .any(|&(d, s)| s != NONE && u64::from(d) >= clean)
        {
            let mut c = self.st.borrow().change();
            c.clean_from = clean.max(top);
            self.commit_change(c).await?;
        }
        *clean_from = (*clean_from).max(top);
        let todo: Vec<(u32, u32)> = work
            .iter()
            .copied()
            .filter(|&(d, s)| s != NONE || u64::from(d) < clean)
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let cs = self.sh.label.cluster_size;
        // A few clusters at a time: enough to keep a real device busy, few enough not
        // to drain the buffer pool the data path also uses.
        for group in todo.chunks(INIT_PARALLEL) {
            let jobs = group
                .iter()
                .map(|&(dst, src)| {
                    let (d, s) = (self.cluster_off(dst), self.cluster_off(src));
                    let io = &self.io;
                    Box::pin(async move {
                        if src == NONE {
                            io.zero(d, cs).await
                        } else {
                            io.copy(s, d, cs).await
                        }
                    }) as IoFuture<'_>
                })
                .collect();
            try_join_all(jobs).await.map_err(io_err(during))?;
        }
        self.io.flush().await.map_err(io_err(during))
    }

    /// Commits change `c` as the next generation: one record appended to the log
    /// and flushed (a journal record, or on a version-3 pool an allocation record),
    /// or a whole image when the record does not fit the log, the pool's log cannot
    /// carry it, or an earlier metadata write failed. The metadata in memory changes
    /// only once the commit succeeded.
    pub(super) async fn commit_change(&self, mut c: Change) -> Result<(), LvolError> {
        let label = &self.sh.label;
        let (generation, pos, unsure, next_id) = {
            let st = self.st.borrow();
            debug_assert!(c.clean_from >= st.meta.clean_from);
            c.clean_from = c.clean_from.max(st.meta.clean_from);
            c.next_id = c.next_id.max(st.meta.next_id);
            (st.meta.generation + 1, st.log, st.unsure, st.meta.next_id)
        };
        let rec = if unsure || label.log_size == 0 {
            None
        } else if label.version >= JOURNAL_VERSION {
            Some(encode_change(generation, pos.base_generation, &c, label))
        } else if c.deletes.is_empty()
            && c.upserts.is_empty()
            && c.frees.is_empty()
            && c.next_id == next_id
        {
            Some(encode_record(
                generation,
                pos.base_generation,
                c.clean_from,
                &c.entries,
                label,
            ))
        } else {
            None
        };
        let Some(rec) = rec.filter(|r| pos.tail + r.len() as u64 <= label.log_size) else {
            return self.commit_image(c, generation).await;
        };
        let written = match self.io.write(label.log_offset + pos.tail, &rec).await {
            Ok(()) => self
                .io
                .flush()
                .await
                .map_err(io_err("flushing the metadata log")),
            Err(e) => Err(io_err("writing the metadata log")(e)),
        };
        let mut st = self.st.borrow_mut();
        if let Err(e) = written {
            // The record may have landed: only a full image may follow it.
            st.unsure = true;
            return Err(e);
        }
        apply_change(&mut st, c, generation);
        st.log.tail += rec.len() as u64;
        Ok(())
    }

    /// Writes the metadata with change `c` applied as generation `generation`, a
    /// whole image, into the slot not holding the image the log extends, flushes, and
    /// only then installs it in memory. The log starts again after it (its records
    /// extend the older image and are ignored). Costs what the pool holds: the
    /// compaction of the log, or every commit of a pool before version 4.
    async fn commit_image(&self, mut c: Change, generation: u64) -> Result<(), LvolError> {
        let label = &self.sh.label;
        let (changed, slot, vols) = {
            let st = self.st.borrow();
            // Frees and allocations go into the records of their volumes.
            let frees = std::mem::take(&mut c.frees).into_iter().map(|e| (e, NONE));
            let allocs = std::mem::take(&mut c.entries)
                .into_iter()
                .map(|e| (e, e.pc));
            for (e, to) in frees.chain(allocs) {
                let i = match c.upserts.iter().position(|v| v.id == e.vol) {
                    Some(i) => i,
                    None => {
                        c.upserts.push(st.vol(e.vol).clone());
                        c.upserts.len() - 1
                    }
                };
                c.upserts[i].map[e.vc as usize] = to;
            }
            let changed: HashSet<u64> = c
                .deletes
                .iter()
                .copied()
                .chain(c.upserts.iter().map(|v| v.id))
                .collect();
            (changed, 1 - st.log.base_slot, st.meta.vols.len())
        };
        // The volumes the change leaves alone, a step at a time with a reactor turn
        // between steps: the engine runs no other job meanwhile, so the metadata
        // stays put, and the reactor's other work is not held up by a large image.
        let mut image = ImageBuilder::new(vols + c.upserts.len());
        let mut from = Bound::Unbounded;
        loop {
            let more = {
                let st = self.st.borrow();
                let step = st
                    .meta
                    .vols
                    .range((from, Bound::Unbounded))
                    .take(IMAGE_STEP);
                let mut last = None;
                for (_, v) in step {
                    last = Some(v.id);
                    if !changed.contains(&v.id) {
                        image.push(v, label);
                    }
                }
                last.filter(|&id| {
                    st.meta
                        .vols
                        .range((Bound::Excluded(id), Bound::Unbounded))
                        .next()
                        .is_some()
                })
            };
            match more {
                Some(id) => {
                    from = Bound::Excluded(id);
                    yield_now().await;
                }
                None => break,
            }
        }
        for v in &c.upserts {
            image.push(v, label);
        }
        let img = image.finish(generation, c.next_id, c.clean_from, label)?;
        let off = label.slot_offset[slot];
        let written = match self.io.write(off, &img).await {
            Ok(()) => self.io.flush().await.map_err(io_err("flushing metadata")),
            Err(e) => Err(io_err("writing metadata")(e)),
        };
        let mut st = self.st.borrow_mut();
        if let Err(e) = written {
            // The image may have landed anyway: the next commit must be a full image
            // over it (same slot, a generation at least as high), never a record
            // extending the older base, which a landed newer image would hide.
            st.unsure = true;
            return Err(e);
        }
        apply_change(&mut st, c, generation);
        st.log = LogPos {
            base_slot: slot,
            base_generation: generation,
            tail: 0,
        };
        st.unsure = false;
        let q = std::mem::take(&mut st.quarantine);
        drop(st);
        self.release(&q);
        Ok(())
    }
}
