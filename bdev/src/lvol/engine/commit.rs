//! Committing metadata: initialising new clusters before anything references them,
//! whole images into the slot the log does not extend, allocation batches as log
//! records, and what a failed metadata write leaves uncertain.

use super::super::format::{encode_meta, encode_record, record_len, LogEntry, LogPos, Meta, NONE};
use super::super::io::{try_join_all, IoFuture};
use super::super::LvolError;
use super::{io_err, Engine, INIT_PARALLEL};

/// Maps each entry's volume cluster to its pool cluster in `meta`.
fn apply_entries(meta: &mut Meta, entries: &[LogEntry]) {
    for e in entries {
        let v = meta
            .vols
            .iter_mut()
            .find(|v| v.id == e.vol)
            .expect("allocations are for live volumes");
        debug_assert_eq!(v.map[e.vc as usize], NONE);
        v.map[e.vc as usize] = e.pc;
    }
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
            self.commit_alloc(&[], clean.max(top)).await?;
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

    /// Writes `meta` as the next generation, a whole image, into the slot not holding
    /// the image the log extends, flushes, and only then installs it in memory. The
    /// log starts again after it (its records extend the older image and are ignored).
    pub(super) async fn commit(&self, mut meta: Meta) -> Result<(), LvolError> {
        meta.generation = self.st.borrow().meta.generation + 1;
        let img = encode_meta(&meta, &self.sh.label)?;
        let slot = 1 - self.st.borrow().log.base_slot;
        let off = self.sh.label.slot_offset[slot];
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
        st.log = LogPos {
            base_slot: slot,
            base_generation: meta.generation,
            tail: 0,
        };
        st.meta = meta;
        st.unsure = false;
        let q = std::mem::take(&mut st.quarantine);
        drop(st);
        self.release(&q);
        Ok(())
    }

    /// Commits the current metadata with `entries` mapped and `clean_from` (never
    /// lower than now): as one record appended to the log and flushed, or as a whole
    /// image when the pool has no log, the log is full, or an earlier metadata write
    /// failed. The metadata in memory changes only once the commit succeeded.
    pub(super) async fn commit_alloc(
        &self,
        entries: &[LogEntry],
        clean_from: u64,
    ) -> Result<(), LvolError> {
        let label = &self.sh.label;
        let (generation, pos, unsure) = {
            let st = self.st.borrow();
            debug_assert!(clean_from >= st.meta.clean_from);
            (st.meta.generation + 1, st.log, st.unsure)
        };
        let len = record_len(entries.len(), label);
        if label.log_size == 0 || pos.tail + len > label.log_size || unsure {
            let mut meta = self.meta();
            apply_entries(&mut meta, entries);
            meta.clean_from = meta.clean_from.max(clean_from);
            return self.commit(meta).await;
        }
        let clean_from = clean_from.max(self.st.borrow().meta.clean_from);
        let rec = encode_record(generation, pos.base_generation, clean_from, entries, label);
        let written = match self.io.write(label.log_offset + pos.tail, &rec).await {
            Ok(()) => self
                .io
                .flush()
                .await
                .map_err(io_err("flushing the allocation log")),
            Err(e) => Err(io_err("writing the allocation log")(e)),
        };
        let mut st = self.st.borrow_mut();
        if let Err(e) = written {
            // The record may have landed: only a full image may follow it.
            st.unsure = true;
            return Err(e);
        }
        apply_entries(&mut st.meta, entries);
        st.meta.clean_from = st.meta.clean_from.max(clean_from);
        st.meta.generation = generation;
        st.log.tail += len;
        Ok(())
    }
}
