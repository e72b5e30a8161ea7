//! The metadata engine: the one owner of a pool's metadata, living on the metadata
//! reactor. It runs one job at a time (control-plane calls, allocation batches from
//! channels, deallocations), commits each change as a new metadata generation — one
//! journal record, or a whole image when the log is full (a version-3 pool: a log
//! record for an allocation batch, a whole image for anything else) — and publishes
//! per-volume cluster views for the channels. The engine is one task of that reactor,
//! woken when a job or a channel's request arrives.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ferrox_reactor::{JoinHandle, Reactor};

use super::format::{check_name, Change, LogEntry, LogPos, Meta, VolMeta, NONE};
use super::io::{BaseIo, LocalFuture};
use super::{LvolError, PoolStats, Shared, VolShared, VolView, VolumeInfo, OWNED};
use crate::BdevError;

mod commit;
mod dealloc;
mod views;

pub use dealloc::{DeallocStats, STEP_VISITS};

use views::{parent_source, parent_sources};

thread_local! {
    /// The engines living on this (metadata) reactor, by store id.
    static ENGINES: RefCell<HashMap<u64, Rc<Engine>>> = RefCell::new(HashMap::new());
}

/// Clusters zeroed or copied at once by an allocation batch.
const INIT_PARALLEL: usize = 4;

/// Runs `f` with the engine of store `id`, when it lives on this thread.
pub(crate) fn with_engine<R>(id: u64, f: impl FnOnce(Option<&Rc<Engine>>) -> R) -> R {
    let e = ENGINES.with(|m| m.borrow().get(&id).cloned());
    f(e.as_ref())
}

/// A volume cluster an allocation needs, and the pool cluster it reads now (or NONE).
type Need = (usize, u32);

/// What a channel asks of the engine.
pub(crate) enum ChanReq {
    /// Give the volume its own cluster for each of these volume clusters.
    Alloc { vol: u64, clusters: Vec<u64> },
    /// Free the wholly unmapped volume clusters `first..end`.
    Dealloc { vol: u64, first: u64, end: u64 },
}

/// A channel's request and where its answer goes.
pub(crate) struct Request {
    pub req: u64,
    pub kind: ChanReq,
    pub reply: Sender<(u64, Result<(), BdevError>)>,
}

struct State {
    meta: Meta,
    /// Volume ids by name.
    names: HashMap<String, u64>,
    /// Per volume id, the volumes whose parent it is (by id).
    children: HashMap<u64, BTreeSet<u64>>,
    /// Where the next full image and the next log record go.
    log: LogPos,
    used: Vec<bool>,
    allocated: u64,
    /// Where the search for a free cluster starts.
    free_hint: usize,
    /// A metadata write or flush failed: what it left on disk (perhaps all of it) is
    /// unknown until a full commit succeeds, so commits are full images until then
    /// and clusters of failed changes wait in `quarantine`.
    unsure: bool,
    /// Clusters taken for changes whose commit failed: an image or record that did
    /// land may reference them, so they are reused only after the next full commit.
    quarantine: Vec<u32>,
    shared: HashMap<u64, Arc<VolShared>>,
    frozen: HashSet<u64>,
    deleting: HashSet<u64>,
}

pub(crate) struct Engine {
    sh: Arc<Shared>,
    io: BaseIo,
    st: RefCell<State>,
    jobs: RefCell<VecDeque<LocalFuture>>,
    allocs: RefCell<Vec<Request>>,
    /// Deallocations waiting: the next batch takes them all.
    deallocs: RefCell<Vec<Request>>,
    dealloc_stats: Cell<DeallocStats>,
    /// Deallocation requests waiting or being served.
    dealloc_held: Cell<usize>,
    /// The engine's task, waiting for work.
    idle: RefCell<Option<Waker>>,
    task: RefCell<Option<JoinHandle<()>>>,
}

/// Stops the engine when its task is dropped: by [`Engine::stop`], or by the
/// reactor at shutdown (so the engine and its base channel go while it still runs).
struct StopOnDrop(u64);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        Engine::stop(self.0);
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn io_err(during: &'static str) -> impl Fn(BdevError) -> LvolError {
    move |source| LvolError::Io { during, source }
}

impl State {
    /// The id of volume `name`.
    fn find(&self, name: &str) -> Result<u64, LvolError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| LvolError::NotFound(name.to_string()))
    }

    /// The volume with id `id` (which must exist).
    fn vol(&self, id: u64) -> &VolMeta {
        self.meta.vols.get(&id).expect("a known volume")
    }

    /// A change that changes nothing yet: the current `next_id` and `clean_from`.
    fn change(&self) -> Change {
        Change {
            next_id: self.meta.next_id,
            clean_from: self.meta.clean_from,
            ..Change::default()
        }
    }

    /// Refuses one more volume named `name` when the name is taken or the pool full.
    fn check_new(&self, name: &str, max: usize) -> Result<(), LvolError> {
        if self.names.contains_key(name) {
            return Err(LvolError::Exists(name.to_string()));
        }
        if self.meta.vols.len() >= max {
            return Err(LvolError::MetadataFull(format!(
                "this pool holds at most {max} volumes (snapshots and clones included)"
            )));
        }
        Ok(())
    }

    fn index(&mut self, v: &VolMeta) {
        self.names.insert(v.name.clone(), v.id);
        if let Some(p) = v.parent {
            self.children.entry(p).or_default().insert(v.id);
        }
    }

    fn unindex(&mut self, v: &VolMeta) {
        if self.names.get(&v.name) == Some(&v.id) {
            self.names.remove(&v.name);
        }
        if let Some(c) = v.parent.and_then(|p| self.children.get_mut(&p)) {
            c.remove(&v.id);
        }
    }
}

impl Engine {
    /// Builds the engine for loaded metadata and registers it on this reactor.
    pub fn start(r: &Reactor, sh: Arc<Shared>, io: BaseIo, meta: Meta, log: LogPos) -> Rc<Self> {
        let mut used = vec![false; sh.label.clusters as usize];
        let mut allocated = 0;
        for v in meta.vols.values() {
            for &p in v.map.iter().filter(|&&p| p != NONE) {
                used[p as usize] = true;
                allocated += 1;
            }
        }
        let ids: Vec<u64> = meta.vols.keys().copied().collect();
        let mut names = HashMap::with_capacity(meta.vols.len());
        let mut children: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        for v in meta.vols.values() {
            names.insert(v.name.clone(), v.id);
            if let Some(p) = v.parent {
                children.entry(p).or_default().insert(v.id);
            }
        }
        let eng = Rc::new(Self {
            sh: sh.clone(),
            io,
            st: RefCell::new(State {
                meta,
                names,
                children,
                log,
                used,
                allocated,
                free_hint: 0,
                unsure: false,
                quarantine: Vec::new(),
                shared: HashMap::new(),
                frozen: HashSet::new(),
                deleting: HashSet::new(),
            }),
            jobs: RefCell::new(VecDeque::new()),
            allocs: RefCell::new(Vec::new()),
            deallocs: RefCell::new(Vec::new()),
            dealloc_stats: Cell::new(DeallocStats::default()),
            dealloc_held: Cell::new(0),
            idle: RefCell::new(None),
            task: RefCell::new(None),
        });
        for id in ids {
            eng.add_shared(id);
        }
        ENGINES.with(|m| m.borrow_mut().insert(sh.id, eng.clone()));
        let (e, guard) = (eng.clone(), StopOnDrop(sh.id));
        let task = r.spawn_local(async move {
            let _guard = guard;
            loop {
                let job = std::future::poll_fn(|cx| e.next_job(cx)).await;
                job.await;
            }
        });
        *eng.task.borrow_mut() = Some(task);
        eng
    }

    /// The next job: a queued control-plane job first, else everything channels asked
    /// to allocate since the last batch (one batch, one commit).
    fn next_job(self: &Rc<Self>, cx: &mut Context<'_>) -> Poll<LocalFuture> {
        if let Some(j) = self.jobs.borrow_mut().pop_front() {
            return Poll::Ready(j);
        }
        if !self.allocs.borrow().is_empty() {
            let reqs = std::mem::take(&mut *self.allocs.borrow_mut());
            let e = self.clone();
            return Poll::Ready(Box::pin(async move { e.alloc_batch(reqs).await }));
        }
        if !self.deallocs.borrow().is_empty() {
            let reqs = std::mem::take(&mut *self.deallocs.borrow_mut());
            let e = self.clone();
            return Poll::Ready(Box::pin(async move { e.dealloc_batch(reqs).await }));
        }
        *self.idle.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn wake(&self) {
        if let Some(w) = self.idle.borrow_mut().take() {
            w.wake();
        }
    }

    /// Unregisters the engine; queued and running jobs are dropped (their callers see
    /// a cancelled reply, channels see `Closed`).
    pub fn stop(id: u64) {
        let Some(eng) = ENGINES.with(|m| m.borrow_mut().remove(&id)) else {
            return;
        };
        if let Some(t) = eng.task.borrow_mut().take() {
            t.abort();
        }
        let jobs = std::mem::take(&mut *eng.jobs.borrow_mut());
        drop(jobs);
        let allocs = std::mem::take(&mut *eng.allocs.borrow_mut());
        let deallocs = std::mem::take(&mut *eng.deallocs.borrow_mut());
        for req in allocs.into_iter().chain(deallocs) {
            let _ = req.reply.send((req.req, Err(BdevError::Closed)));
        }
    }

    /// Queues a control-plane job.
    pub fn push_job(&self, job: LocalFuture) {
        self.jobs.borrow_mut().push_back(job);
        self.wake();
    }

    /// Takes a channel's request.
    pub fn request(self: &Rc<Self>, req: Request) {
        match req.kind {
            ChanReq::Alloc { .. } => {
                self.allocs.borrow_mut().push(req);
                self.wake();
            }
            ChanReq::Dealloc { .. } => self.dealloc_request(req),
        }
    }

    fn cluster_off(&self, p: u32) -> u64 {
        self.sh.label.data_offset + u64::from(p) * self.sh.label.cluster_size
    }

    fn add_shared(&self, id: u64) {
        let vs = Arc::new(VolShared {
            id,
            gen: Default::default(),
            view: Mutex::new(Arc::new(VolView::deleted())),
            active: Default::default(),
            channels: Default::default(),
            draining: Default::default(),
            drained: Default::default(),
        });
        self.st.borrow_mut().shared.insert(id, vs);
        self.publish(id);
    }

    /// Marks `n` free clusters used (lowest first).
    fn reserve(&self, n: usize) -> Result<Vec<u32>, LvolError> {
        let mut st = self.st.borrow_mut();
        let free = st.used.len() as u64 - st.allocated;
        if (n as u64) > free {
            return Err(LvolError::NoSpace {
                needed: n as u64,
                free,
            });
        }
        // Lowest free clusters first (they are the clean ones: see `clean_from`),
        // searching on from where the last search ended.
        let mut out = Vec::with_capacity(n);
        let len = st.used.len();
        let start = st.free_hint.min(len);
        for i in (start..len).chain(0..start) {
            if out.len() == n {
                break;
            }
            if !st.used[i] {
                st.used[i] = true;
                out.push(i as u32);
            }
        }
        st.free_hint = out.last().map_or(start, |&p| p as usize + 1);
        st.allocated += n as u64;
        Ok(out)
    }

    /// Returns the clusters of a change that failed to the free set, unless a failed
    /// metadata write may have recorded them: then they wait for the next full commit.
    fn release_failed(&self, clusters: &[u32]) {
        let mut st = self.st.borrow_mut();
        if st.unsure {
            st.quarantine.extend_from_slice(clusters);
            return;
        }
        drop(st);
        self.release(clusters);
    }

    /// Returns clusters to the free set: reserved ones that were never committed, or
    /// ones whose freeing has been committed.
    fn release(&self, clusters: &[u32]) {
        let mut st = self.st.borrow_mut();
        for &p in clusters {
            debug_assert!(st.used[p as usize]);
            st.used[p as usize] = false;
            st.free_hint = st.free_hint.min(p as usize);
        }
        st.allocated -= clusters.len() as u64;
    }

    /// Gives each requesting volume its own clusters. Costs what the batch needs,
    /// not what the volumes hold: nothing copies the metadata or a volume's whole view.
    async fn alloc_batch(&self, reqs: Vec<Request>) {
        let mut work = Vec::new();
        let mut reserved = Vec::new();
        let mut results = Vec::with_capacity(reqs.len());
        let mut entries = Vec::new();
        // Per volume: the view entries this batch changes.
        let mut touched: HashMap<u64, Vec<(usize, u32)>> = HashMap::new();
        let mut taken: HashSet<(u64, usize)> = HashSet::new();
        // What each request needs: its unmapped clusters and what each reads now,
        // worked out under one borrow (writable volumes are never parents, so their
        // sources stay put in a batch).
        let needs: Vec<(u64, Result<Vec<Need>, BdevError>)> = {
            let st = self.st.borrow();
            let vols = &st.meta.vols;
            reqs.iter()
                .filter_map(|r| match r.kind {
                    ChanReq::Alloc { vol, ref clusters } => Some((vol, clusters)),
                    ChanReq::Dealloc { .. } => None,
                })
                .map(|(vol, clusters)| {
                    let need = match vols.get(&vol) {
                        None => Err(BdevError::Closed),
                        Some(v) if v.read_only => {
                            Err(BdevError::Unsupported("writes to a snapshot"))
                        }
                        Some(v) => Ok(clusters
                            .iter()
                            .map(|&vc| vc as usize)
                            .filter(|&vc| vc < v.map.len() && v.map[vc] == NONE)
                            .map(|vc| (vc, parent_source(vols, v, vc)))
                            .collect()),
                    };
                    (vol, need)
                })
                .collect()
        };
        for (vol, needs) in needs {
            let needs = match needs {
                Ok(n) => n,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let mut res = Ok(());
            for (vc, src) in needs {
                if taken.contains(&(vol, vc)) {
                    continue; // the same cluster twice in this request
                }
                match self.reserve(1) {
                    Ok(p) => {
                        // Later requests of the batch for it are served by this one.
                        taken.insert((vol, vc));
                        entries.push(LogEntry {
                            vol,
                            vc: vc as u32,
                            pc: p[0],
                        });
                        work.push((p[0], src));
                        reserved.push(p[0]);
                        touched.entry(vol).or_default().push((vc, p[0] | OWNED));
                    }
                    Err(_) => {
                        res = Err(BdevError::NoSpace);
                        break;
                    }
                }
            }
            results.push(res);
        }
        if !work.is_empty() {
            let mut clean = self.st.borrow().meta.clean_from;
            let done = match self
                .init_clusters(&work, &mut clean, "initialising clusters")
                .await
            {
                Ok(()) => {
                    let mut c = self.st.borrow().change();
                    c.clean_from = clean;
                    c.entries = entries;
                    self.commit_change(c).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "lvol: allocation batch failed");
                self.release_failed(&reserved);
                for r in &mut results {
                    if r.is_ok() {
                        *r = Err(e.to_bdev());
                    }
                }
            } else {
                for (v, changes) in touched {
                    self.publish_allocs(v, &changes);
                }
            }
        }
        for (r, res) in reqs.iter().zip(results) {
            let _ = r.reply.send((r.req, res));
        }
    }

    pub async fn create_volume(
        &self,
        name: String,
        size: u64,
        thin: bool,
    ) -> Result<VolumeInfo, LvolError> {
        check_name(&name)?;
        let cs = self.sh.label.cluster_size;
        if size == 0 {
            return Err(LvolError::Invalid("a volume needs a non-zero size".into()));
        }
        let n = size.div_ceil(cs);
        let mut c = {
            let st = self.st.borrow();
            st.check_new(&name, self.sh.label.max_volumes())?;
            st.change()
        };
        if n >= u64::from(NONE >> 1) {
            return Err(LvolError::Invalid(format!("size {size} is too large")));
        }
        let mut map = vec![NONE; n as usize];
        let reserved = if thin {
            Vec::new()
        } else {
            self.reserve(n as usize)?
        };
        map[..reserved.len()].copy_from_slice(&reserved);
        let work: Vec<(u32, u32)> = reserved.iter().map(|&p| (p, NONE)).collect();
        let id = c.next_id;
        c.next_id += 1;
        c.upserts.push(VolMeta {
            id,
            uuid: crate::random_uuid(),
            name,
            size: n * cs,
            parent: None,
            backing: 0,
            created: now_secs(),
            thin,
            read_only: false,
            map,
        });
        let res = match self
            .init_clusters(&work, &mut c.clean_from, "zeroing a thick volume")
            .await
        {
            Ok(()) => self.commit_change(c).await,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            self.release_failed(&reserved);
            return Err(e);
        }
        self.add_shared(id);
        Ok(self.info_of(id))
    }

    pub async fn snapshot(&self, vol: String, snap: String) -> Result<VolumeInfo, LvolError> {
        check_name(&snap)?;
        let vid = {
            let st = self.st.borrow();
            let vid = st.find(&vol)?;
            if st.vol(vid).read_only {
                return Err(LvolError::ReadOnly(vol));
            }
            st.check_new(&snap, self.sh.label.max_volumes())?;
            vid
        };
        self.freeze(vid).await;
        let (c, sid) = {
            let st = self.st.borrow();
            let mut c = st.change();
            let sid = c.next_id;
            c.next_id += 1;
            let mut v = st.vol(vid).clone();
            let n = v.map.len();
            // The snapshot takes the volume's clusters; the volume reads through it.
            let s = VolMeta {
                id: sid,
                uuid: crate::random_uuid(),
                name: snap,
                size: v.size,
                parent: v.parent,
                backing: v.backing,
                created: now_secs(),
                thin: v.thin,
                read_only: true,
                map: std::mem::replace(&mut v.map, vec![NONE; n]),
            };
            v.parent = Some(sid);
            v.backing = n as u64;
            c.upserts = vec![s, v];
            (c, sid)
        };
        let res = self.commit_change(c).await;
        if res.is_ok() {
            self.add_shared(sid);
        }
        self.unfreeze(vid);
        res.map(|()| self.info_of(sid))
    }

    pub async fn clone_volume(&self, snap: String, name: String) -> Result<VolumeInfo, LvolError> {
        check_name(&name)?;
        let c = {
            let st = self.st.borrow();
            let sid = st.find(&snap)?;
            let s = st.vol(sid);
            if !s.read_only {
                return Err(LvolError::NotSnapshot(snap));
            }
            st.check_new(&name, self.sh.label.max_volumes())?;
            let mut c = st.change();
            let n = s.map.len();
            c.upserts.push(VolMeta {
                id: c.next_id,
                uuid: crate::random_uuid(),
                name,
                size: s.size,
                parent: Some(s.id),
                backing: n as u64,
                created: now_secs(),
                thin: true,
                read_only: false,
                map: vec![NONE; n],
            });
            c.next_id += 1;
            c
        };
        let id = c.upserts[0].id;
        self.commit_change(c).await?;
        self.add_shared(id);
        Ok(self.info_of(id))
    }

    pub async fn resize(
        &self,
        vol: String,
        size: u64,
        force: bool,
    ) -> Result<VolumeInfo, LvolError> {
        let cs = self.sh.label.cluster_size;
        let (mut c, mut v) = {
            let st = self.st.borrow();
            let id = st.find(&vol)?;
            if st.vol(id).read_only {
                return Err(LvolError::ReadOnly(vol));
            }
            (st.change(), st.vol(id).clone())
        };
        if size == 0 || size.div_ceil(cs) >= u64::from(NONE >> 1) {
            return Err(LvolError::Invalid(format!("volume size {size}")));
        }
        let n = size.div_ceil(cs) as usize;
        let (id, old) = (v.id, v.map.len());
        if n > old {
            let reserved = if v.thin {
                Vec::new()
            } else {
                self.reserve(n - old)?
            };
            v.map.extend(reserved.iter().copied());
            v.map.resize(n, NONE);
            v.size = n as u64 * cs;
            let work: Vec<(u32, u32)> = reserved.iter().map(|&p| (p, NONE)).collect();
            c.upserts.push(v);
            let res = match self
                .init_clusters(&work, &mut c.clean_from, "zeroing new clusters")
                .await
            {
                Ok(()) => self.commit_change(c).await,
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                self.release_failed(&reserved);
                return Err(e);
            }
            self.publish(id);
        } else if n < old {
            let dropped: Vec<u32> = v.map[n..].iter().copied().filter(|&p| p != NONE).collect();
            if !dropped.is_empty() && !force {
                return Err(LvolError::WouldDropData {
                    name: vol,
                    size,
                    clusters: dropped.len() as u64,
                });
            }
            v.map.truncate(n);
            v.size = n as u64 * cs;
            v.backing = v.backing.min(n as u64);
            c.upserts.push(v);
            self.freeze(id).await;
            let res = self.commit_change(c).await;
            if res.is_ok() {
                self.release(&dropped);
            }
            self.unfreeze(id);
            res?;
        }
        Ok(self.info_of(id))
    }

    pub async fn delete(&self, name: String) -> Result<(), LvolError> {
        let (vid, children) = {
            let st = self.st.borrow();
            let vid = st.find(&name)?;
            let children: Vec<u64> = st
                .children
                .get(&vid)
                .map(|c| c.iter().copied().collect())
                .unwrap_or_default();
            (vid, children)
        };
        if children.len() > 1 {
            return Err(LvolError::HasClones(name, children.len()));
        }
        // Publish "deleted" first, then look for channels: a channel opened after the
        // publish sees it; one opened before is counted here (both SeqCst).
        self.st.borrow_mut().deleting.insert(vid);
        self.publish(vid);
        let vs = self.st.borrow().shared.get(&vid).cloned();
        let open = vs.as_ref().map_or(0, |v| v.channels.load(Ordering::SeqCst));
        if open > 0 {
            self.st.borrow_mut().deleting.remove(&vid);
            self.publish(vid);
            return Err(LvolError::Busy(name, format!("{open} open channel(s)")));
        }
        let child = children.first().copied();
        if let Some(c) = child {
            self.freeze(c).await;
        }
        let (c, freed) = {
            let st = self.st.borrow();
            let mut c = st.change();
            let mut vmap = st.vol(vid).map.clone();
            let v = st.vol(vid);
            if let Some(mut ch) = child.map(|c| st.vol(c).clone()) {
                // Merge: the child takes every cluster it reads from the deleted parent.
                let lim = (ch.backing as usize).min(ch.map.len()).min(vmap.len());
                for (cm, vm) in ch.map[..lim].iter_mut().zip(&mut vmap[..lim]) {
                    if *cm == NONE && *vm != NONE {
                        *cm = std::mem::replace(vm, NONE);
                    }
                }
                ch.parent = v.parent;
                ch.backing = ch.backing.min(v.backing);
                c.upserts.push(ch);
            }
            c.deletes.push(vid);
            let freed: Vec<u32> = vmap.into_iter().filter(|&p| p != NONE).collect();
            (c, freed)
        };
        let res = self.commit_change(c).await;
        {
            let mut st = self.st.borrow_mut();
            st.deleting.remove(&vid);
            if res.is_ok() {
                st.shared.remove(&vid);
            }
        }
        if res.is_ok() {
            self.release(&freed);
            if let Some(vs) = vs {
                *vs.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(VolView::deleted());
                vs.gen.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            self.publish(vid);
        }
        if let Some(c) = child {
            self.unfreeze(c);
        }
        res
    }

    pub async fn inflate(&self, name: String) -> Result<VolumeInfo, LvolError> {
        let vid = {
            let st = self.st.borrow();
            let vid = st.find(&name)?;
            let v = st.vol(vid);
            if v.read_only {
                return Err(LvolError::ReadOnly(name));
            }
            if v.parent.is_none() {
                drop(st);
                return Ok(self.info_of(vid));
            }
            vid
        };
        self.freeze(vid).await;
        let (mut c, mut v, ps) = {
            let st = self.st.borrow();
            let v = st.vol(vid);
            (st.change(), v.clone(), parent_sources(&st.meta, v))
        };
        let need: Vec<usize> = (0..v.map.len())
            .filter(|&i| v.map[i] == NONE && ps[i] != NONE)
            .collect();
        let reserved = match self.reserve(need.len()) {
            Ok(r) => r,
            Err(e) => {
                self.unfreeze(vid);
                return Err(e);
            }
        };
        let mut work = Vec::with_capacity(need.len());
        for (&i, &p) in need.iter().zip(&reserved) {
            v.map[i] = p;
            work.push((p, ps[i]));
        }
        v.parent = None;
        v.backing = 0;
        c.upserts.push(v);
        let res = match self
            .init_clusters(&work, &mut c.clean_from, "copying clusters")
            .await
        {
            Ok(()) => self.commit_change(c).await,
            Err(e) => Err(e),
        };
        if res.is_err() {
            self.release_failed(&reserved);
        }
        self.unfreeze(vid);
        res.map(|()| self.info_of(vid))
    }

    /// The volume's shared state and its current size in blocks.
    pub fn lookup(&self, name: &str) -> Result<(Arc<VolShared>, VolumeInfo), LvolError> {
        let st = self.st.borrow();
        let id = st.find(name)?;
        let vs = st
            .shared
            .get(&id)
            .cloned()
            .expect("every volume has shared state");
        drop(st);
        Ok((vs, self.info_of(id)))
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let ids: Vec<u64> = self.st.borrow().meta.vols.keys().copied().collect();
        ids.into_iter().map(|id| self.info_of(id)).collect()
    }

    pub fn dealloc_stats(&self) -> DeallocStats {
        self.dealloc_stats.get()
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.st.borrow();
        let l = &self.sh.label;
        PoolStats {
            name: l.name.clone(),
            uuid: l.uuid,
            cluster_size: l.cluster_size,
            total_clusters: l.clusters,
            allocated_clusters: st.allocated,
            free_clusters: l.clusters - st.allocated,
            volumes: st.meta.vols.len(),
            max_volumes: l.max_volumes(),
            generation: st.meta.generation,
        }
    }

    fn info_of(&self, id: u64) -> VolumeInfo {
        let st = self.st.borrow();
        let v = st.vol(id);
        let children: Vec<&VolMeta> = st
            .children
            .get(&id)
            .into_iter()
            .flatten()
            .map(|c| st.vol(*c))
            .collect();
        let owned = v.owned() as u64;
        let freed_on_delete = match children.as_slice() {
            [] => owned,
            [c] => {
                let lim = (c.backing as usize).min(c.map.len());
                (0..v.map.len())
                    .filter(|&i| v.map[i] != NONE && !(i < lim && c.map[i] == NONE))
                    .count() as u64
            }
            _ => 0,
        };
        VolumeInfo {
            name: v.name.clone(),
            uuid: v.uuid,
            size: v.size,
            thin: v.thin,
            snapshot: v.read_only,
            parent: v
                .parent
                .and_then(|p| st.meta.vols.get(&p))
                .map(|p| p.name.clone()),
            clones: children.iter().map(|c| c.name.clone()).collect(),
            created: v.created,
            allocated_clusters: owned,
            freed_on_delete,
        }
    }
}
