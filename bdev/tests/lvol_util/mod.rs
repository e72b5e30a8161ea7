//! Shared by the lvol integration tests: reactors, a request runner, a crash-countdown
//! block device, and a simple in-memory model of a pool.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore};
use ferrox_bdev::{
    defer_completion, BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoChannel, IoOp,
};
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, Reactor, ReactorGroup, ReactorHandle,
    ReactorOptions,
};

pub fn pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 512,
            },
            ClassConfig {
                size: 128 << 10,
                count: 64,
            },
        ],
        hugepages: false,
    })
    .unwrap()
}

pub fn group(n: usize) -> ReactorGroup {
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(n).collect();
    ReactorGroup::start(&cores, &ReactorOptions::default(), pool()).unwrap()
}

pub fn malloc(name: &str, bytes: u64) -> Arc<dyn BlockDevice> {
    ferrox_bdev::malloc::MallocBdev::new(name, bytes / 512, 512).unwrap()
}

pub use ferrox_bdev::testing::{run, Req};

pub fn write(
    h: &ReactorHandle,
    dev: Arc<dyn BlockDevice>,
    lba: u64,
    data: Vec<u8>,
) -> Result<(), BdevError> {
    run(h, dev, vec![Req::Write(lba, data)])
        .remove(0)
        .map(|_| ())
}

pub fn read(
    h: &ReactorHandle,
    dev: Arc<dyn BlockDevice>,
    lba: u64,
    blocks: u64,
) -> Result<Vec<u8>, BdevError> {
    run(h, dev, vec![Req::Read(lba, blocks)])
        .remove(0)
        .map(|b| b.expect("a read returns its buffer"))
}

/// Fills a whole device with a byte pattern (old data a format must not leak).
pub fn dirty(h: &ReactorHandle, dev: Arc<dyn BlockDevice>) {
    let nb = dev.info().num_blocks;
    let reqs: Vec<Req> = (0..nb)
        .step_by(128)
        .map(|l| Req::Write(l, vec![0xd7; 512 * 128.min(nb - l) as usize]))
        .collect();
    for batch in reqs.chunks(32) {
        for o in run(h, dev.clone(), batch.to_vec()) {
            o.unwrap();
        }
    }
}

/// Reads a whole device, 64 KiB per request.
pub fn read_all(h: &ReactorHandle, dev: Arc<dyn BlockDevice>) -> Result<Vec<u8>, BdevError> {
    let nb = dev.info().num_blocks;
    let reqs: Vec<Req> = (0..nb)
        .step_by(128)
        .map(|l| Req::Read(l, 128.min(nb - l)))
        .collect();
    let mut out = Vec::new();
    // 32 at a time: the test pool has 64 large buffers.
    for batch in reqs.chunks(32) {
        for o in run(h, dev.clone(), batch.to_vec()) {
            out.extend(o?.expect("a read returns its buffer"));
        }
    }
    Ok(out)
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A block device that stops persisting after its `limit`-th write-like request
/// (write, write zeroes, unmap): later ones complete successfully and change
/// nothing, as if the power had gone while the host kept running. A torn one also
/// persists the first block of the write the power cut interrupts.
pub struct CrashBdev {
    inner: Arc<dyn BlockDevice>,
    limit: u64,
    torn: bool,
    writes: AtomicU64,
    cut: AtomicBool,
}

impl CrashBdev {
    pub fn new(inner: Arc<dyn BlockDevice>, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            inner,
            limit,
            torn: false,
            writes: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        })
    }

    /// Like [`Self::new`], and the interrupted write of several blocks lands its
    /// first block only.
    pub fn torn(inner: Arc<dyn BlockDevice>, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            inner,
            limit,
            torn: true,
            writes: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        })
    }

    /// Whether some write has been dropped already.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
}

impl BlockDevice for CrashBdev {
    fn info(&self) -> &BdevInfo {
        self.inner.info()
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let inner = IoChannel::open(self.inner.clone(), r)?;
        Ok(Rc::new(CrashChan { dev: self, inner }))
    }
}

struct CrashChan {
    dev: Arc<CrashBdev>,
    inner: IoChannel,
}

impl ChannelImpl for CrashChan {
    fn submit(&self, op: IoOp, done: Completion) {
        if matches!(
            op,
            IoOp::Write { .. } | IoOp::WriteZeroes { .. } | IoOp::Unmap { .. }
        ) {
            let n = self.dev.writes.fetch_add(1, Ordering::SeqCst);
            if n == self.dev.limit && self.dev.torn {
                if let IoOp::Write {
                    lba,
                    blocks,
                    mut buf,
                    fua,
                } = op
                {
                    self.dev.cut.store(true, Ordering::SeqCst);
                    if blocks > 1 {
                        // The first block lands; the caller is told the whole did.
                        let bs = self.dev.info().block_size as usize;
                        buf.set_len(bs);
                        let first = IoOp::Write {
                            lba,
                            blocks: 1,
                            buf,
                            fua,
                        };
                        if let Err((e, op)) = self.inner.submit(first, done.clone_for_test()) {
                            Reactor::with(|r| defer_completion(r, done, Err(e), op.into_buf()));
                        }
                        return;
                    }
                    return Reactor::with(|r| defer_completion(r, done, Ok(()), Some(buf)));
                }
            }
            if n >= self.dev.limit {
                self.dev.cut.store(true, Ordering::SeqCst);
                return Reactor::with(|r| defer_completion(r, done, Ok(()), op.into_buf()));
            }
        }
        if let Err((e, op)) = self.inner.submit(op, done.clone_for_test()) {
            Reactor::with(|r| defer_completion(r, done, Err(e), op.into_buf()));
        }
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

/// A block device whose flushes fail on request, after the writes before them have
/// landed: a metadata commit that reports an error although it reached the disk.
pub struct FlakyBdev {
    inner: Arc<dyn BlockDevice>,
    pub fail_flushes: AtomicU64,
}

impl FlakyBdev {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_flushes: AtomicU64::new(0),
        })
    }
}

impl BlockDevice for FlakyBdev {
    fn info(&self) -> &BdevInfo {
        self.inner.info()
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let inner = IoChannel::open(self.inner.clone(), r)?;
        Ok(Rc::new(FlakyChan { dev: self, inner }))
    }
}

struct FlakyChan {
    dev: Arc<FlakyBdev>,
    inner: IoChannel,
}

impl ChannelImpl for FlakyChan {
    fn submit(&self, op: IoOp, done: Completion) {
        if matches!(op, IoOp::Flush)
            && self
                .dev
                .fail_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Reactor::with(|r| {
                defer_completion(r, done, Err(BdevError::Io(libc::EIO)), None)
            });
        }
        if let Err((e, op)) = self.inner.submit(op, done.clone_for_test()) {
            Reactor::with(|r| defer_completion(r, done, Err(e), op.into_buf()));
        }
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

trait CloneForTest {
    fn clone_for_test(&self) -> Completion;
}

impl CloneForTest for Completion {
    fn clone_for_test(&self) -> Completion {
        Completion {
            sink: self.sink.clone(),
            tag: self.tag,
        }
    }
}

/// The model: every volume's bytes and its parent, nothing else.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub cluster: u64,
    pub vols: BTreeMap<String, MVol>,
}

#[derive(Clone, Debug)]
pub struct MVol {
    pub data: Vec<u8>,
    pub parent: Option<String>,
    pub snapshot: bool,
}

impl Model {
    pub fn new(cluster: u64) -> Self {
        Self {
            cluster,
            vols: BTreeMap::new(),
        }
    }

    pub fn round(&self, size: u64) -> usize {
        (size.div_ceil(self.cluster) * self.cluster) as usize
    }

    pub fn children(&self, name: &str) -> Vec<String> {
        self.vols
            .iter()
            .filter(|(_, v)| v.parent.as_deref() == Some(name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn create(&mut self, name: &str, size: u64) {
        let data = vec![0; self.round(size)];
        self.vols.insert(
            name.into(),
            MVol {
                data,
                parent: None,
                snapshot: false,
            },
        );
    }

    pub fn snapshot(&mut self, vol: &str, snap: &str) {
        let v = self.vols.get_mut(vol).unwrap();
        let s = MVol {
            data: v.data.clone(),
            parent: v.parent.take(),
            snapshot: true,
        };
        v.parent = Some(snap.into());
        self.vols.insert(snap.into(), s);
    }

    pub fn clone_of(&mut self, snap: &str, name: &str) {
        let data = self.vols[snap].data.clone();
        self.vols.insert(
            name.into(),
            MVol {
                data,
                parent: Some(snap.into()),
                snapshot: false,
            },
        );
    }

    pub fn delete(&mut self, name: &str) {
        let v = self.vols.remove(name).unwrap();
        for c in self.vols.values_mut() {
            if c.parent.as_deref() == Some(name) {
                c.parent = v.parent.clone();
            }
        }
    }

    pub fn resize(&mut self, name: &str, size: u64) {
        let n = self.round(size);
        self.vols.get_mut(name).unwrap().data.resize(n, 0);
    }
}

/// Checks the pool's volumes against the model: same set, sizes, parents, bytes.
pub fn check_against(store: &LvolStore, model: &Model, h: &ReactorHandle) -> Result<(), String> {
    let list = store.list().map_err(|e| e.to_string())?;
    let names: Vec<&String> = list.iter().map(|v| &v.name).collect();
    let want: Vec<&String> = model.vols.keys().collect();
    let mut sorted = names.clone();
    sorted.sort();
    if sorted != want {
        return Err(format!("volumes {sorted:?}, model {want:?}"));
    }
    for v in &list {
        let m = &model.vols[&v.name];
        if v.size != m.data.len() as u64 || v.parent != m.parent || v.snapshot != m.snapshot {
            return Err(format!(
                "volume {v:?} vs model size {} parent {:?}",
                m.data.len(),
                m.parent
            ));
        }
        let dev = store.volume(&v.name).map_err(|e| e.to_string())?;
        let got = read_all(h, dev).map_err(|e| e.to_string())?;
        if got != m.data {
            let at = got.iter().zip(&m.data).position(|(a, b)| a != b);
            return Err(format!("volume {} differs at byte {at:?}", v.name));
        }
    }
    check_accounting(store)
}

/// Allocated clusters add up: pool = sum of volumes, free = total - allocated.
pub fn check_accounting(store: &LvolStore) -> Result<(), String> {
    let s = store.stats().map_err(|e| e.to_string())?;
    let sum: u64 = store
        .list()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.allocated_clusters)
        .sum();
    if s.allocated_clusters != sum || s.free_clusters + s.allocated_clusters != s.total_clusters {
        return Err(format!("accounting: {s:?}, volumes own {sum}"));
    }
    Ok(())
}

pub fn is_no_space(e: &LvolError) -> bool {
    matches!(e, LvolError::NoSpace { .. })
}

/// Writes `data` in requests of at most 64 KiB, all at once.
pub fn write_big(
    h: &ReactorHandle,
    dev: Arc<dyn BlockDevice>,
    lba: u64,
    data: &[u8],
) -> Result<(), BdevError> {
    let reqs: Vec<Req> = data
        .chunks(64 << 10)
        .enumerate()
        .map(|(i, c)| Req::Write(lba + i as u64 * 128, c.to_vec()))
        .collect();
    for o in run(h, dev, reqs) {
        o?;
    }
    Ok(())
}

/// One step of a workload, against the pool and the model at once.
#[derive(Clone, Debug)]
pub enum Step {
    Create {
        name: String,
        size: u64,
        thin: bool,
    },
    Write {
        vol: String,
        lba: u64,
        blocks: u64,
        seed: u64,
    },
    Read {
        vol: String,
        lba: u64,
        blocks: u64,
    },
    Zero {
        vol: String,
        lba: u64,
        blocks: u64,
    },
    Unmap {
        vol: String,
        lba: u64,
        blocks: u64,
    },
    /// Unmaps of several ranges submitted at once (a DSM deallocate): overlapping
    /// ranges, deallocated in batches.
    Dsm {
        vol: String,
        ranges: Vec<(u64, u64)>,
    },
    Snapshot {
        vol: String,
        snap: String,
    },
    Clone {
        snap: String,
        name: String,
    },
    Resize {
        vol: String,
        size: u64,
    },
    Delete {
        vol: String,
    },
    Inflate {
        vol: String,
    },
}

/// Checks an outcome: a predicted failure (`must_fail`) must happen, and any error
/// must be one `ok` accepts.
fn expect<T: std::fmt::Debug>(
    step: &Step,
    r: &Result<T, LvolError>,
    must_fail: bool,
    ok: impl Fn(&LvolError) -> bool,
) -> Result<(), String> {
    match r {
        Err(e) if !ok(e) => Err(format!("{step:?}: unexpected {e}")),
        Ok(v) if must_fail => Err(format!("{step:?}: should have failed, got {v:?}")),
        _ => Ok(()),
    }
}

/// Runs `step` on the pool (I/O from reactor `h`) and on the model, checking that
/// they agree: errors the model predicts, and every read's bytes.
pub fn apply(
    store: &LvolStore,
    h: &ReactorHandle,
    m: &mut Model,
    step: &Step,
) -> Result<(), String> {
    let io_range = |vol: &str, lba: u64, blocks: u64| -> Option<(usize, usize)> {
        let v = m.vols.get(vol)?;
        Some((
            (lba * 512) as usize,
            ((lba + blocks) * 512).min(v.data.len() as u64) as usize,
        ))
    };
    match step {
        Step::Create { name, size, thin } => {
            let r = store.create_volume(name, *size, *thin);
            expect(step, &r, m.vols.contains_key(name), |e| {
                is_no_space(e) || (m.vols.contains_key(name) && matches!(e, LvolError::Exists(_)))
            })?;
            if r.is_ok() {
                m.create(name, *size);
            }
        }
        Step::Write {
            vol,
            lba,
            blocks,
            seed,
        } => {
            let Some((a, b)) = io_range(vol, *lba, *blocks) else {
                return Ok(());
            };
            let data = pattern(*seed, b - a);
            let dev = store.volume(vol).map_err(|e| e.to_string())?;
            let r = write(h, dev, *lba, data.clone());
            let snap = m.vols[vol].snapshot;
            match r {
                Ok(()) if !snap => m.vols.get_mut(vol).unwrap().data[a..b].copy_from_slice(&data),
                Err(BdevError::Unsupported(_)) if snap => {}
                Err(BdevError::NoSpace) => {}
                other => return Err(format!("{step:?}: {other:?}")),
            }
        }
        Step::Zero { vol, lba, blocks } | Step::Unmap { vol, lba, blocks } => {
            let Some((a, b)) = io_range(vol, *lba, *blocks) else {
                return Ok(());
            };
            let dev = store.volume(vol).map_err(|e| e.to_string())?;
            let n = (b - a) as u64 / 512;
            let req = if matches!(step, Step::Zero { .. }) {
                Req::Zero(*lba, n)
            } else {
                Req::Unmap(*lba, n)
            };
            let r = run(h, dev, vec![req]).remove(0);
            let snap = m.vols[vol].snapshot;
            match r {
                Ok(_) if !snap => m.vols.get_mut(vol).unwrap().data[a..b].fill(0),
                Err(BdevError::Unsupported(_)) if snap => {}
                Err(BdevError::NoSpace) => {}
                other => return Err(format!("{step:?}: {other:?}")),
            }
        }
        Step::Dsm { vol, ranges } => {
            if !m.vols.contains_key(vol) {
                return Ok(());
            }
            let dev = store.volume(vol).map_err(|e| e.to_string())?;
            let spans: Vec<(usize, usize)> = ranges
                .iter()
                .filter_map(|&(lba, blocks)| io_range(vol, lba, blocks))
                .collect();
            let reqs = spans
                .iter()
                .map(|&(a, b)| Req::Unmap(a as u64 / 512, (b - a) as u64 / 512))
                .collect();
            let snap = m.vols[vol].snapshot;
            for ((a, b), r) in spans.into_iter().zip(run(h, dev, reqs)) {
                match r {
                    Ok(_) if !snap => m.vols.get_mut(vol).unwrap().data[a..b].fill(0),
                    Err(BdevError::Unsupported(_)) if snap => {}
                    Err(BdevError::NoSpace) => {}
                    other => return Err(format!("{step:?}: {other:?}")),
                }
            }
        }
        Step::Read { vol, lba, blocks } => {
            let Some((a, b)) = io_range(vol, *lba, *blocks) else {
                return Ok(());
            };
            let dev = store.volume(vol).map_err(|e| e.to_string())?;
            let got =
                read(h, dev, *lba, (b - a) as u64 / 512).map_err(|e| format!("{step:?}: {e}"))?;
            if got != m.vols[vol].data[a..b] {
                return Err(format!("{step:?}: data differs from the model"));
            }
        }
        Step::Snapshot { vol, snap } => {
            let Some(v) = m.vols.get(vol) else {
                return Ok(());
            };
            let ro = v.snapshot;
            let exists = m.vols.contains_key(snap);
            let r = store.snapshot(vol, snap);
            expect(step, &r, ro || exists, |e| {
                (ro && matches!(e, LvolError::ReadOnly(_)))
                    || (exists && matches!(e, LvolError::Exists(_)))
            })?;
            if r.is_ok() {
                m.snapshot(vol, snap);
            }
        }
        Step::Clone { snap, name } => {
            let Some(s) = m.vols.get(snap) else {
                return Ok(());
            };
            let not_snap = !s.snapshot;
            let exists = m.vols.contains_key(name);
            let r = store.clone_volume(snap, name);
            expect(step, &r, not_snap || exists, |e| {
                (not_snap && matches!(e, LvolError::NotSnapshot(_)))
                    || (exists && matches!(e, LvolError::Exists(_)))
            })?;
            if r.is_ok() {
                m.clone_of(snap, name);
            }
        }
        Step::Resize { vol, size } => {
            let Some(v) = m.vols.get(vol) else {
                return Ok(());
            };
            let ro = v.snapshot;
            let r = store.resize(vol, *size, true);
            expect(step, &r, ro, |e| {
                is_no_space(e) || (ro && matches!(e, LvolError::ReadOnly(_)))
            })?;
            if r.is_ok() {
                m.resize(vol, *size);
            }
        }
        Step::Delete { vol } => {
            if !m.vols.contains_key(vol) {
                return Ok(());
            }
            let many = m.children(vol).len() > 1;
            let r = store.delete(vol);
            expect(step, &r, many, |e| {
                many && matches!(e, LvolError::HasClones(..))
            })?;
            if r.is_ok() {
                m.delete(vol);
            }
        }
        Step::Inflate { vol } => {
            let Some(v) = m.vols.get(vol) else {
                return Ok(());
            };
            let ro = v.snapshot;
            let r = store.inflate(vol);
            expect(step, &r, ro, |e| {
                is_no_space(e) || (ro && matches!(e, LvolError::ReadOnly(_)))
            })?;
            if r.is_ok() {
                m.vols.get_mut(vol).unwrap().parent = None;
            }
        }
    }
    Ok(())
}
