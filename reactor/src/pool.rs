//! DMA-able buffer pools.
//!
//! A pool is a few size classes (4 KiB and 128 KiB by default), each one contiguous
//! mapping carved into fixed-size, aligned buffers: from 2 MiB hugepages when the system
//! has them, otherwise from ordinary pages (locked when the limits allow). A buffer is an
//! owned handle, [`DmaBuf`], that moves between layers by value and returns itself to
//! the pool when dropped. Each thread keeps a small cache of free buffer indices per
//! class, so the hot path touches no shared cache line; the caches refill from and
//! spill to a lock-free global queue in batches.
//!
//! Exhaustion is reported as `None` from [`BufferPool::alloc`]: callers queue the work
//! and retry (back-pressure), the pool never allocates behind their back.
//!
//! A pool lives as long as the process (it is leaked on creation, like SPDK's env
//! memory), which is what lets a `DmaBuf` be a plain handle with no reference count.
// UNSAFETY: buffers are raw slices of an mmap'ed region; this module guarantees each
// index is handed to at most one `DmaBuf` at a time, which makes its slices exclusive.
#![expect(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::sys::Mapping;

/// One size class: `count` buffers of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassConfig {
    pub size: usize,
    pub count: usize,
}

/// Pool layout and placement.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub classes: Vec<ClassConfig>,
    /// Try MAP_HUGETLB first.
    pub hugepages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            classes: vec![
                ClassConfig {
                    size: 4096,
                    count: 4096,
                },
                // In-capsule writes (up to 8 KiB) take these, so they never wait
                // behind large transfers for a 128 KiB buffer.
                ClassConfig {
                    size: 8192,
                    count: 1024,
                },
                ClassConfig {
                    size: 128 << 10,
                    count: 512,
                },
            ],
            hugepages: true,
        }
    }
}

struct Class {
    size: usize,
    count: usize,
    /// Indices a thread cache takes or gives back at once; a cache holds at most two
    /// batches, so at most a small share of a class can sit idle in other threads.
    batch: usize,
    mem: Mapping,
    free: ArrayQueue<u32>,
}

/// A set of size classes of DMA-able buffers; see the module documentation.
pub struct BufferPool {
    classes: Vec<Class>,
    exhausted: AtomicU64,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BufferPool");
        for c in &self.classes {
            d.field("size", &c.size)
                .field("count", &c.count)
                .field("huge", &c.mem.huge)
                .field("locked", &c.mem.locked);
        }
        d.finish()
    }
}

/// Largest per-thread refill/spill batch.
const BATCH: usize = 32;

struct LocalCache {
    pool: usize,
    class: usize,
    free: Vec<u32>,
}

struct LocalCaches(Vec<LocalCache>);

impl Drop for LocalCaches {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // `pool` is the address of a leaked, never-freed BufferPool.
            let pool = pool_from_addr(c.pool);
            for i in c.free.drain(..) {
                let _ = pool.classes[c.class].free.push(i);
            }
        }
    }
}

thread_local! {
    static CACHES: RefCell<LocalCaches> = const { RefCell::new(LocalCaches(Vec::new())) };
}

fn pool_from_addr(addr: usize) -> &'static BufferPool {
    // SAFETY: addresses in the caches come from `&'static BufferPool` references
    // (pools are leaked in `BufferPool::new` and never dropped).
    unsafe { &*(addr as *const BufferPool) }
}

/// Statistics of one size class.
#[derive(Debug, Clone, Copy)]
pub struct ClassStats {
    pub size: usize,
    pub count: usize,
    pub free_global: usize,
    pub hugepages: bool,
    pub locked: bool,
}

impl BufferPool {
    /// Maps every class and returns the process-lifetime pool.
    pub fn new(cfg: &PoolConfig) -> std::io::Result<&'static BufferPool> {
        let mut classes = Vec::with_capacity(cfg.classes.len());
        let mut sorted = cfg.classes.clone();
        sorted.sort_by_key(|c| c.size);
        for c in sorted {
            if c.size == 0 || !c.size.is_power_of_two() || c.size < 512 || c.count == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "buffer class size {} count {}: size must be a power of two >= 512 and count > 0",
                        c.size, c.count
                    ),
                ));
            }
            let mem = Mapping::new(c.size * c.count, cfg.hugepages)?;
            let free = ArrayQueue::new(c.count);
            for i in 0..c.count {
                let _ = free.push(i as u32);
            }
            classes.push(Class {
                size: c.size,
                count: c.count,
                batch: (c.count / 16).clamp(1, BATCH),
                mem,
                free,
            });
        }
        let pool = Box::leak(Box::new(BufferPool {
            classes,
            exhausted: AtomicU64::new(0),
        }));
        tracing::info!(pool = ?pool, "buffer pool ready");
        Ok(pool)
    }

    /// A buffer of at least `len` bytes with `len()` set to `len`, or `None` when every
    /// class that fits is empty (back-pressure: retry later).
    pub fn alloc(&'static self, len: usize) -> Option<DmaBuf> {
        for (ci, class) in self.classes.iter().enumerate() {
            if class.size < len {
                continue;
            }
            if let Some(index) = self.take(ci) {
                return Some(DmaBuf {
                    pool: self,
                    class: ci as u8,
                    index,
                    len: len as u32,
                });
            }
        }
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Largest buffer this pool can hand out.
    pub fn max_size(&self) -> usize {
        self.classes.last().map_or(0, |c| c.size)
    }

    /// How many times `alloc` found no buffer.
    pub fn exhausted_count(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    pub fn class_stats(&self) -> Vec<ClassStats> {
        self.classes
            .iter()
            .map(|c| ClassStats {
                size: c.size,
                count: c.count,
                free_global: c.free.len(),
                hugepages: c.mem.huge,
                locked: c.mem.locked,
            })
            .collect()
    }

    /// One iovec per class, in class order: the table to register with io_uring as
    /// fixed buffers (buffer index == class index).
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        self.classes
            .iter()
            .map(|c| libc::iovec {
                iov_base: c.mem.as_ptr().cast(),
                iov_len: c.mem.len(),
            })
            .collect()
    }

    fn addr(&'static self) -> usize {
        self as *const _ as usize
    }

    fn take(&'static self, ci: usize) -> Option<u32> {
        let me = self.addr();
        CACHES
            .try_with(|caches| {
                let mut caches = caches.borrow_mut();
                let cache = match caches
                    .0
                    .iter_mut()
                    .position(|c| c.pool == me && c.class == ci)
                {
                    Some(p) => &mut caches.0[p],
                    None => {
                        caches.0.push(LocalCache {
                            pool: me,
                            class: ci,
                            free: Vec::with_capacity(BATCH * 2),
                        });
                        caches.0.last_mut().expect("just pushed")
                    }
                };
                if cache.free.is_empty() {
                    let global = &self.classes[ci].free;
                    for _ in 0..self.classes[ci].batch {
                        match global.pop() {
                            Some(i) => cache.free.push(i),
                            None => break,
                        }
                    }
                }
                cache.free.pop()
            })
            .unwrap_or_else(|_| self.classes[ci].free.pop())
    }

    fn give(&'static self, ci: usize, index: u32) {
        let me = self.addr();
        let cached = CACHES.try_with(|caches| {
            let mut caches = caches.borrow_mut();
            if let Some(cache) = caches.0.iter_mut().find(|c| c.pool == me && c.class == ci) {
                cache.free.push(index);
                let batch = self.classes[ci].batch;
                if cache.free.len() >= batch * 2 {
                    let global = &self.classes[ci].free;
                    for i in cache.free.drain(batch..) {
                        let _ = global.push(i);
                    }
                }
                true
            } else {
                false
            }
        });
        if cached != Ok(true) {
            let _ = self.classes[ci].free.push(index);
        }
    }
}

/// An owned, aligned buffer from a [`BufferPool`]. Moving it moves the I/O's data;
/// dropping it returns it to the pool.
pub struct DmaBuf {
    pool: &'static BufferPool,
    class: u8,
    index: u32,
    len: u32,
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("class", &self.class)
            .field("index", &self.index)
            .field("len", &self.len)
            .finish()
    }
}

impl DmaBuf {
    fn class(&self) -> &Class {
        &self.pool.classes[self.class as usize]
    }

    /// Bytes in use (what an I/O transfers).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the underlying buffer.
    pub fn capacity(&self) -> usize {
        self.class().size
    }

    /// Sets the bytes in use; panics beyond the capacity (a caller bug).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "DmaBuf::set_len beyond capacity");
        self.len = len as u32;
    }

    /// The fixed-buffer index this buffer lives in when the pool is registered.
    pub fn fixed_index(&self) -> u16 {
        u16::from(self.class)
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.as_mut_ptr_inner()
    }

    /// Raw pointer for handing the buffer to the kernel; the caller keeps `self`
    /// alive (and unaliased) until the kernel is done with it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr_inner()
    }

    fn as_mut_ptr_inner(&self) -> *mut u8 {
        let c = self.class();
        // SAFETY: index < count, so the offset stays inside the class mapping.
        unsafe { c.mem.as_ptr().add(self.index as usize * c.size) }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the index is owned by this handle alone (the pool hands each index
        // out once), the range lies inside the mapping, and the mapping outlives the
        // 'static pool.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len as usize) }
    }

    /// The bytes in use, mutably. Exclusive because `self` is borrowed mutably and no
    /// other handle to this index exists; while an I/O is in flight the buffer is owned
    /// by that I/O, not by the caller.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len as usize;
        // SAFETY: see `as_slice`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.pool.give(self.class as usize, self.index);
    }
}

#[cfg(test)]
mod tests;
