//! A volume's cluster view as the channels hold it: chunks shared between
//! generations, with per-chunk counts so that walks skip what is empty.

use std::sync::Arc;

use super::{format, OWNED};

/// Entries per [`ViewMap`] chunk (16 KiB).
const VIEW_CHUNK: usize = 4096;

/// A volume's cluster view in shared chunks, so that publishing an allocation copies
/// the chunks it changes, not a view as large as the volume. Each chunk carries how
/// many of its entries are not `NONE` and how many are [`OWNED`], so that walks over
/// what a range holds skip empty chunks: a thin volume's unmap costs what it holds.
#[derive(Debug, Clone)]
pub(crate) struct ViewMap {
    chunks: Vec<Arc<[u32]>>,
    /// Per chunk: (entries not `NONE`, entries [`OWNED`]).
    counts: Vec<(u32, u32)>,
    len: usize,
}

/// Where a bounded [`ViewMap::scan`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    Found(usize),
    /// The visit limit was reached; go on from here.
    Paused(usize),
    End,
}

fn chunk_counts(c: &[u32]) -> (u32, u32) {
    let mapped = c.iter().filter(|&&e| e != format::NONE).count() as u32;
    let owned = c
        .iter()
        .filter(|&&e| e != format::NONE && e & OWNED != 0)
        .count() as u32;
    (mapped, owned)
}

impl ViewMap {
    pub fn from_vec(v: Vec<u32>) -> Self {
        let chunks: Vec<Arc<[u32]>> = v.chunks(VIEW_CHUNK).map(Arc::from).collect();
        Self {
            counts: chunks.iter().map(|c| chunk_counts(c)).collect(),
            chunks,
            len: v.len(),
        }
    }

    /// Entries (volume clusters).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entry `i` (which must exist).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.chunks[i / VIEW_CHUNK][i % VIEW_CHUNK]
    }

    /// The first entry in `from..end` (clamped to the map) that is not `NONE` (or,
    /// with `owned`, that is [`OWNED`]), skipping chunks with none. `visited` counts
    /// the entries and chunk summaries looked at.
    pub fn next_in(
        &self,
        from: usize,
        end: usize,
        owned: bool,
        visited: &mut u64,
    ) -> Option<usize> {
        match self.scan(from, end, owned, visited, u64::MAX) {
            Scan::Found(i) => Some(i),
            Scan::End | Scan::Paused(_) => None,
        }
    }

    /// Like [`ViewMap::next_in`], but stops once `visited` reaches `limit`, saying
    /// where to go on from.
    pub fn scan(
        &self,
        from: usize,
        end: usize,
        owned: bool,
        visited: &mut u64,
        limit: u64,
    ) -> Scan {
        let end = end.min(self.len);
        let mut i = from;
        while i < end {
            if *visited >= limit {
                return Scan::Paused(i);
            }
            let c = i / VIEW_CHUNK;
            let (m, o) = self.counts[c];
            *visited += 1;
            let chunk_end = ((c + 1) * VIEW_CHUNK).min(end);
            if (if owned { o } else { m }) == 0 {
                i = chunk_end;
                continue;
            }
            let chunk = &self.chunks[c];
            while i < chunk_end {
                let e = chunk[i % VIEW_CHUNK];
                *visited += 1;
                if e != format::NONE && (!owned || e & OWNED != 0) {
                    return Scan::Found(i);
                }
                i += 1;
            }
        }
        Scan::End
    }

    /// This view with entries `(index, value)` changed; untouched chunks are shared.
    pub fn patched(&self, changes: &[(usize, u32)]) -> Self {
        let mut chunks = self.chunks.clone();
        let mut counts = self.counts.clone();
        let mut copied = std::collections::HashSet::new();
        for &(i, v) in changes {
            let c = i / VIEW_CHUNK;
            if copied.insert(c) {
                chunks[c] = Arc::from(&chunks[c][..]);
            }
            Arc::get_mut(&mut chunks[c]).expect("a chunk copied for this patch")[i % VIEW_CHUNK] =
                v;
        }
        for &c in &copied {
            counts[c] = chunk_counts(&chunks[c]);
        }
        Self {
            chunks,
            counts,
            len: self.len,
        }
    }
}
