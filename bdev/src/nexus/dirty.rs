//! The dirty-region map and its persistence.
//!
//! [`DirtyMap`] keeps one bit per region in memory (`bits`, behind a mutex taken only
//! while a child is faulted or rebuilt) and a lock-free copy of the bits known to be
//! durable (`durable`, always a subset of `bits`): a write whose regions are all
//! durably dirty skips the mutex. Marking sets bits and awaits a store of a bitmap
//! that holds them; one task stores at a time, with a snapshot of everything set so
//! far, and every writer waiting meanwhile is covered by the next store (batching).
//! Clearing is not made durable at once: a stale dirty bit only costs a copy.
//!
//! [`DirtyLog`] is where the bitmap goes: [`MemDirtyLog`] (memory, for tests and
//! nexuses that need no restart), or [`BdevDirtyLog`], two copies on a reserved area
//! of a block device:
//!
//! ```text
//! slot 0 at `lba`, slot 1 at `lba + slot_blocks`; generation g is written to slot g % 2
//!   0..8    magic "FXNXDLOG"
//!   8..16   generation (u64 LE, > 0)
//!   16..24  regions (u64 LE)
//!   24..28  crc32c of bytes 0..24 and of the bitmap
//!   28..32  zero
//!   32..    bitmap: ceil(regions / 64) u64 LE words, bit r % 64 of word r / 64
//! ```
//!
//! A store writes the next generation into the slot *not* holding the newest one and
//! flushes, so a torn store leaves the previous copy intact; a load takes the valid
//! slot (magic, region count, checksum) with the highest generation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use ferrox_reactor::Reactor;

use super::{lock, LocalFuture};
use crate::{BdevError, BlockDevice, IoChannel, IoOp};

/// Why the dirty log failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirtyLogError {
    #[error("{what} at block {lba}: {source}")]
    Io {
        what: &'static str,
        lba: u64,
        #[source]
        source: BdevError,
    },
    #[error("a bitmap of {regions} regions needs {need} blocks, the slot has {have}")]
    TooSmall { regions: u64, need: u64, have: u64 },
    #[error("the log area (blocks {lba}.., 2 × {slot_blocks}) is beyond the device's {num_blocks} blocks")]
    OutOfRange {
        lba: u64,
        slot_blocks: u64,
        num_blocks: u64,
    },
    #[error("no buffer of {0} bytes in the reactor's pool")]
    NoBuffer(usize),
    #[error("{0}")]
    Failed(String),
}

/// Persists the dirty bitmap.
pub trait DirtyLog: Send + Sync {
    /// Stores `bits` (one per region, `regions` of them) durably.
    fn store<'a>(
        &'a self,
        bits: &'a [u64],
        regions: u64,
    ) -> LocalFuture<'a, Result<(), DirtyLogError>>;
    /// The last stored bitmap, if any.
    fn load(&self, regions: u64) -> LocalFuture<'_, Result<Option<Vec<u64>>, DirtyLogError>>;
}

/// A dirty log in memory: survives nothing, counts its stores, can be told to fail.
#[derive(Default)]
pub struct MemDirtyLog {
    bits: Mutex<Option<Vec<u64>>>,
    stores: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
}

impl MemDirtyLog {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stores done so far.
    pub fn stores(&self) -> u64 {
        self.stores.load(Ordering::SeqCst)
    }

    /// The last bitmap stored.
    pub fn stored(&self) -> Option<Vec<u64>> {
        lock(&self.bits).clone()
    }

    /// Makes later stores fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

impl DirtyLog for MemDirtyLog {
    fn store<'a>(
        &'a self,
        bits: &'a [u64],
        _regions: u64,
    ) -> LocalFuture<'a, Result<(), DirtyLogError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(DirtyLogError::Failed(
                    "the memory log is set to fail".into(),
                ));
            }
            *lock(&self.bits) = Some(bits.to_vec());
            self.stores.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn load(&self, _regions: u64) -> LocalFuture<'_, Result<Option<Vec<u64>>, DirtyLogError>> {
        Box::pin(async move { Ok(lock(&self.bits).clone()) })
    }
}

const MAGIC: &[u8; 8] = b"FXNXDLOG";
const HEADER: usize = 32;

fn words(regions: u64) -> usize {
    regions.div_ceil(64) as usize
}

/// A dirty log in two checksummed copies on a block device; see the module docs.
pub struct BdevDirtyLog {
    dev: Arc<dyn BlockDevice>,
    lba: u64,
    slot_blocks: u64,
    /// The newest generation stored or loaded.
    generation: AtomicU64,
    /// The slots were read: a store never numbers its copy below one on the device.
    loaded: std::sync::atomic::AtomicBool,
}

impl BdevDirtyLog {
    /// A log in blocks `lba..lba + 2 * slot_blocks` of `dev`, for `regions` regions.
    pub fn new(
        dev: Arc<dyn BlockDevice>,
        lba: u64,
        slot_blocks: u64,
        regions: u64,
    ) -> Result<Arc<Self>, DirtyLogError> {
        let info = dev.info();
        let bs = u64::from(info.block_size);
        let need = (HEADER as u64 + words(regions) as u64 * 8).div_ceil(bs);
        if need > slot_blocks {
            return Err(DirtyLogError::TooSmall {
                regions,
                need,
                have: slot_blocks,
            });
        }
        if slot_blocks
            .checked_mul(2)
            .and_then(|b| b.checked_add(lba))
            .is_none_or(|end| end > info.num_blocks)
        {
            return Err(DirtyLogError::OutOfRange {
                lba,
                slot_blocks,
                num_blocks: info.num_blocks,
            });
        }
        Ok(Arc::new(Self {
            dev,
            lba,
            slot_blocks,
            generation: AtomicU64::new(0),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The newest generation stored or loaded (0: none).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn encode(generation: u64, bits: &[u64], regions: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + bits.len() * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&regions.to_le_bytes());
        let mut body = Vec::with_capacity(bits.len() * 8);
        for w in bits {
            body.extend_from_slice(&w.to_le_bytes());
        }
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
        out
    }

    /// The generation and bitmap of a slot's bytes, if it is a valid copy.
    fn decode(b: &[u8], regions: u64) -> Option<(u64, Vec<u64>)> {
        let n = words(regions);
        if b.len() < HEADER + n * 8 || &b[0..8] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let generation = u64_at(8);
        if u64_at(16) != regions || generation == 0 {
            return None;
        }
        let crc = u32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
        let body = &b[HEADER..HEADER + n * 8];
        if crc32c::crc32c_append(crc32c::crc32c(&b[0..24]), body) != crc {
            return None;
        }
        let bits = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Some((generation, bits))
    }

    /// Blocks per request: what the device and the pool take.
    fn piece_blocks(&self) -> u64 {
        let bs = u64::from(self.dev.info().block_size);
        let max = Reactor::with(|r| r.pool().max_size() as u64)
            .min(u64::from(self.dev.info().max_transfer));
        (max / bs).max(1)
    }

    async fn write_slot(&self, slot: u64, bytes: &[u8]) -> Result<(), DirtyLogError> {
        let r = Reactor::try_current().expect("the dirty log runs on a reactor");
        let chan = IoChannel::open(self.dev.clone(), &r).map_err(|source| DirtyLogError::Io {
            what: "opening the log device",
            lba: self.lba,
            source,
        })?;
        let bs = self.dev.info().block_size as usize;
        let blocks = bytes.len().div_ceil(bs) as u64;
        let base = self.lba + slot * self.slot_blocks;
        let piece = self.piece_blocks();
        let mut at = 0;
        while at < blocks {
            let n = piece.min(blocks - at);
            let len = n as usize * bs;
            let mut buf = r.pool().alloc(len).ok_or(DirtyLogError::NoBuffer(len))?;
            let s = buf.as_mut_slice();
            s.fill(0);
            let from = at as usize * bs;
            let end = bytes.len().min(from + len);
            if from < end {
                s[..end - from].copy_from_slice(&bytes[from..end]);
            }
            let (res, _) = chan
                .submit_async(IoOp::Write {
                    lba: base + at,
                    blocks: n,
                    buf,
                    fua: false,
                })
                .await;
            res.map_err(|source| DirtyLogError::Io {
                what: "writing the dirty log",
                lba: base + at,
                source,
            })?;
            at += n;
        }
        let (res, _) = chan.submit_async(IoOp::Flush).await;
        res.map_err(|source| DirtyLogError::Io {
            what: "flushing the dirty log",
            lba: base,
            source,
        })
    }

    async fn read_slot(&self, slot: u64, len: usize) -> Result<Vec<u8>, DirtyLogError> {
        let r = Reactor::try_current().expect("the dirty log runs on a reactor");
        let chan = IoChannel::open(self.dev.clone(), &r).map_err(|source| DirtyLogError::Io {
            what: "opening the log device",
            lba: self.lba,
            source,
        })?;
        let bs = self.dev.info().block_size as usize;
        let blocks = len.div_ceil(bs) as u64;
        let base = self.lba + slot * self.slot_blocks;
        let piece = self.piece_blocks();
        let mut out = Vec::with_capacity(blocks as usize * bs);
        let mut at = 0;
        while at < blocks {
            let n = piece.min(blocks - at);
            let len = n as usize * bs;
            let buf = r.pool().alloc(len).ok_or(DirtyLogError::NoBuffer(len))?;
            let (res, buf) = chan
                .submit_async(IoOp::Read {
                    lba: base + at,
                    blocks: n,
                    buf,
                })
                .await;
            res.map_err(|source| DirtyLogError::Io {
                what: "reading the dirty log",
                lba: base + at,
                source,
            })?;
            out.extend_from_slice(buf.expect("a read hands its buffer back").as_slice());
            at += n;
        }
        Ok(out)
    }
}

impl DirtyLog for BdevDirtyLog {
    fn store<'a>(
        &'a self,
        bits: &'a [u64],
        regions: u64,
    ) -> LocalFuture<'a, Result<(), DirtyLogError>> {
        Box::pin(async move {
            if !self.loaded.load(Ordering::SeqCst) {
                self.load(regions).await?;
            }
            let generation = self.generation.load(Ordering::SeqCst) + 1;
            let bytes = Self::encode(generation, bits, regions);
            self.write_slot(generation % 2, &bytes).await?;
            self.generation.store(generation, Ordering::SeqCst);
            Ok(())
        })
    }

    fn load(&self, regions: u64) -> LocalFuture<'_, Result<Option<Vec<u64>>, DirtyLogError>> {
        Box::pin(async move {
            let len = HEADER + words(regions) * 8;
            let mut best: Option<(u64, Vec<u64>)> = None;
            for slot in 0..2 {
                let b = self.read_slot(slot, len).await?;
                if let Some((g, bits)) = Self::decode(&b, regions) {
                    if best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                        best = Some((g, bits));
                    }
                }
            }
            self.loaded.store(true, Ordering::SeqCst);
            Ok(best.map(|(g, bits)| {
                self.generation.store(g, Ordering::SeqCst);
                bits
            }))
        })
    }
}

struct DirtyState {
    bits: Vec<u64>,
    /// Bumped by every bit newly set.
    seq: u64,
    /// `seq` of the newest stored snapshot.
    stored: u64,
    storing: bool,
    waiters: Vec<Waker>,
}

/// Which regions were written while a child was faulted; see the module docs.
pub struct DirtyMap {
    regions: u64,
    /// The log's stored map was read and added (`Some(found)`), once: before the
    /// first store, so a store never drops bits stored before a restart.
    merged: Mutex<Option<bool>>,
    durable: Box<[AtomicU64]>,
    st: Mutex<DirtyState>,
    log: Arc<dyn DirtyLog>,
}

impl DirtyMap {
    pub(super) fn new(regions: u64, log: Arc<dyn DirtyLog>) -> Self {
        let n = words(regions);
        Self {
            regions,
            merged: Mutex::new(None),
            durable: (0..n).map(|_| AtomicU64::new(0)).collect(),
            st: Mutex::new(DirtyState {
                bits: vec![0; n],
                seq: 0,
                stored: 0,
                storing: false,
                waiters: Vec::new(),
            }),
            log,
        }
    }

    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Adds the log's stored map, once; whether the log held one. Called by the task
    /// that stores and by [`super::Nexus::load_dirty`]; merging is idempotent, so
    /// two that race only read the log twice.
    pub(super) async fn merge_stored(&self) -> Result<bool, DirtyLogError> {
        if let Some(found) = *lock(&self.merged) {
            return Ok(found);
        }
        let stored = self.log.load(self.regions).await?;
        let found = stored.is_some();
        if let Some(bits) = stored {
            self.merge(&bits);
        }
        *lock(&self.merged) = Some(found);
        Ok(found)
    }

    pub fn is_dirty(&self, r: u64) -> bool {
        lock(&self.st).bits[(r / 64) as usize] & (1 << (r % 64)) != 0
    }

    /// The dirty regions, ascending.
    pub fn dirty_regions(&self) -> Vec<u64> {
        let st = lock(&self.st);
        (0..self.regions)
            .filter(|r| st.bits[(r / 64) as usize] & (1 << (r % 64)) != 0)
            .collect()
    }

    pub fn count(&self) -> u64 {
        lock(&self.st)
            .bits
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    fn durably_dirty(&self, first: u64, last: u64) -> bool {
        (first..=last)
            .all(|r| self.durable[(r / 64) as usize].load(Ordering::SeqCst) & (1 << (r % 64)) != 0)
    }

    /// Marks regions `first..=last` dirty and returns once a stored bitmap holds them.
    pub(super) async fn mark(&self, first: u64, last: u64) -> Result<(), DirtyLogError> {
        if self.durably_dirty(first, last) {
            return Ok(());
        }
        let target = {
            let mut st = lock(&self.st);
            let mut new = false;
            for r in first..=last {
                let (w, b) = ((r / 64) as usize, 1u64 << (r % 64));
                new |= st.bits[w] & b == 0;
                st.bits[w] |= b;
            }
            if new {
                st.seq += 1;
            }
            // Bits already set may not be stored yet: wait for everything set so far.
            st.seq
        };
        self.store_until(target).await
    }

    /// Stores the bitmap until a store covers change `target`.
    async fn store_until(&self, target: u64) -> Result<(), DirtyLogError> {
        loop {
            let job = std::future::poll_fn(|cx| {
                let mut st = lock(&self.st);
                if st.stored >= target {
                    Poll::Ready(None)
                } else if !st.storing {
                    st.storing = true;
                    Poll::Ready(Some((st.seq, st.bits.clone())))
                } else {
                    st.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let Some((seq, bits)) = job else {
                return Ok(());
            };
            let res = match self.merge_stored().await {
                // Stored before a restart: in the snapshot too.
                Ok(_) => {
                    let bits: Vec<u64> = {
                        let st = lock(&self.st);
                        bits.iter().zip(&st.bits).map(|(a, b)| a | b).collect()
                    };
                    self.log.store(&bits, self.regions).await
                }
                Err(e) => Err(e),
            };
            let waiters = {
                let mut st = lock(&self.st);
                st.storing = false;
                if res.is_ok() {
                    st.stored = st.stored.max(seq);
                    // Durable: stored and still set (a bit cleared meanwhile is not).
                    for (i, w) in bits.iter().enumerate() {
                        self.durable[i].store(w & st.bits[i], Ordering::SeqCst);
                    }
                }
                std::mem::take(&mut st.waiters)
            };
            waiters.into_iter().for_each(Waker::wake);
            res?;
        }
    }

    /// Adds a stored bitmap (after a restart): its bits are durable already.
    fn merge(&self, stored: &[u64]) {
        let mut st = lock(&self.st);
        for (i, w) in stored.iter().enumerate().take(st.bits.len()) {
            st.bits[i] |= w;
            self.durable[i].fetch_or(*w, Ordering::SeqCst);
        }
        // Bits past the last region (a bitmap of another size) are dropped.
        let tail = self.regions % 64;
        if tail != 0 {
            let last = st.bits.len() - 1;
            st.bits[last] &= (1u64 << tail) - 1;
            self.durable[last].fetch_and((1u64 << tail) - 1, Ordering::SeqCst);
        }
    }

    /// Clears region `r` (its copy is in sync); durable with the next store.
    pub(super) fn clear(&self, r: u64) {
        let mut st = lock(&self.st);
        let (w, b) = ((r / 64) as usize, 1u64 << (r % 64));
        st.bits[w] &= !b;
        self.durable[w].fetch_and(!b, Ordering::SeqCst);
    }

    /// Stores the current bitmap (after clears).
    pub(super) async fn persist(&self) -> Result<(), DirtyLogError> {
        let target = {
            let mut st = lock(&self.st);
            st.seq += 1;
            st.seq
        };
        self.store_until(target).await
    }
}
