//! Per-volume cluster views: what each volume cluster reads (its own cluster, an
//! ancestor's, or zeroes), computed from the committed metadata and handed to the
//! channels; freezing a volume goes through its view.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use super::super::format::{Meta, VolMeta, NONE};
use super::super::{ViewMap, VolView, OWNED};
use super::Engine;

/// What each volume cluster of `parent` reads, as seen by `v` (no OWNED bits).
pub(super) fn parent_sources(meta: &Meta, v: &VolMeta) -> Vec<u32> {
    let n = v.map.len();
    let mut out = vec![NONE; n];
    let Some(p) = v.parent.and_then(|p| meta.vols.get(&p)) else {
        return out;
    };
    let ps = sources(meta, p);
    let lim = (v.backing as usize).min(n).min(ps.len());
    for (o, s) in out[..lim].iter_mut().zip(&ps) {
        *o = if *s == NONE { NONE } else { s & !OWNED };
    }
    out
}

/// What each volume cluster of `v` reads: its own cluster (with [`OWNED`]), an
/// ancestor's, or [`NONE`] (zeroes).
pub(super) fn sources(meta: &Meta, v: &VolMeta) -> Vec<u32> {
    let mut out = parent_sources(meta, v);
    for (o, &m) in out.iter_mut().zip(&v.map) {
        if m != NONE {
            *o = m | OWNED;
        }
    }
    out
}

/// What volume cluster `vc` of `v` reads from its ancestors (no OWNED bit), or
/// [`NONE`]: the same as `parent_sources(meta, v)[vc]`, without building the whole map.
/// `vols` finds a volume by id.
pub(super) fn parent_source(vols: &BTreeMap<u64, VolMeta>, v: &VolMeta, vc: usize) -> u32 {
    let mut cur = v;
    loop {
        let Some(p) = cur.parent.and_then(|p| vols.get(&p)) else {
            return NONE;
        };
        if vc as u64 >= cur.backing || vc >= p.map.len() {
            return NONE;
        }
        if p.map[vc] != NONE {
            return p.map[vc];
        }
        cur = p;
    }
}

impl Engine {
    /// Computes volume `id`'s view from the committed metadata and hands it to the
    /// channels: the map first, then the generation they watch (see `VolShared`).
    pub(super) fn publish(&self, id: u64) {
        let st = self.st.borrow();
        let Some(vs) = st.shared.get(&id) else { return };
        let view = match st.meta.vols.get(&id) {
            Some(v) if !st.deleting.contains(&id) => VolView {
                frozen: st.frozen.contains(&id),
                deleted: false,
                read_only: v.read_only,
                num_blocks: v.size / u64::from(self.sh.label.block_size),
                entries: ViewMap::from_vec(sources(&st.meta, v)),
            },
            _ => VolView::deleted(),
        };
        *vs.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
        vs.gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Publishes volume `id`'s view after an allocation changed only `changes`
    /// (volume cluster, new entry): the current view with those entries replaced, its
    /// other chunks shared — not a new view as large as the volume.
    pub(super) fn publish_allocs(&self, id: u64, changes: &[(usize, u32)]) {
        let st = self.st.borrow();
        let Some(vs) = st.shared.get(&id).cloned() else {
            return;
        };
        let v = match st.meta.vols.get(&id) {
            Some(v) if !st.deleting.contains(&id) => v,
            _ => {
                drop(st);
                return self.publish(id);
            }
        };
        // The engine is the only writer of views: take the current one, patch it
        // without holding the lock the channels refresh through, then store it.
        let cur = vs.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let num_blocks = v.size / u64::from(self.sh.label.block_size);
        if cur.deleted || cur.entries.len() != v.map.len() || cur.num_blocks != num_blocks {
            drop(st);
            return self.publish(id);
        }
        let view = VolView {
            frozen: st.frozen.contains(&id),
            deleted: false,
            read_only: v.read_only,
            num_blocks,
            entries: cur.entries.patched(changes),
        };
        debug_assert!(
            {
                let full = sources(&st.meta, v);
                (0..full.len()).all(|i| view.entries.get(i) == full[i])
            },
            "a patched view differs from the metadata"
        );
        *vs.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
        vs.gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops new I/O to volume `id` and waits until none is in flight.
    pub(super) async fn freeze(&self, id: u64) {
        self.st.borrow_mut().frozen.insert(id);
        // The view is current: only its flag changes (its chunks are shared).
        self.publish_allocs(id, &[]);
        let Some(vs) = self.st.borrow().shared.get(&id).cloned() else {
            return;
        };
        // Pairs with the channel's `active += 1` (SeqCst) before it reads `gen`: either
        // we see its I/O here, or it sees the frozen view and holds the request. The
        // I/O drains on other reactors: the one that ends it wakes us (`active_done`).
        std::future::poll_fn(|cx| {
            *vs.drained.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            vs.draining.store(true, Ordering::SeqCst);
            if vs.active.load(Ordering::SeqCst) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        vs.draining.store(false, Ordering::SeqCst);
        vs.drained.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(super) fn unfreeze(&self, id: u64) {
        self.st.borrow_mut().frozen.remove(&id);
        self.publish(id);
    }
}
