//! DMA memory the driver shares with a device: queue rings, PRP lists, admin data.
//!
//! A [`DmaRegion`] is an anonymous, page-aligned, zero-filled mapping with the I/O
//! virtual address (IOVA) the device sees it at. Its bytes are never handed out as
//! `&[u8]`/`&mut [u8]`: the device writes them behind the compiler's back, so every access
//! is an atomic (for the words that take part in a handshake, such as a completion's
//! phase tag) or a relaxed word-by-word copy ([`DmaRegion::read_obj`],
//! [`DmaRegion::write_obj`]), and out-of-range offsets panic (a driver bug).
//!
//! [`DmaSpace`] is the device's view: a table from IOVA ranges to host memory, used by
//! the in-process emulated controller to "DMA" into queue memory and pool buffers.
//! [`PoolMap`] translates a pool buffer's address to its IOVA on the submission path.
// UNSAFETY: DMA memory is raw memory shared with a device (or the emulator): this
// module maps it, and reads/writes it through atomics after checking every range.
#![expect(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use ferrox_reactor::{BufferPool, DmaBuf};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The NVMe memory page size the driver uses (CC.MPS = 0).
pub const PAGE_SIZE: usize = 4096;

/// A page-aligned anonymous mapping shared with a device at a fixed IOVA.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
}

// SAFETY: the region is plain memory that is only ever accessed through atomics (see
// the module documentation), so sharing it between threads cannot race in Rust's sense.
unsafe impl Send for DmaRegion {}
// SAFETY: as for `Send`: every access through `&DmaRegion` is atomic.
unsafe impl Sync for DmaRegion {}

impl std::fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaRegion")
            .field("len", &self.len)
            .field("iova", &format_args!("{:#x}", self.iova))
            .finish()
    }
}

impl DmaRegion {
    /// Maps `len` bytes (rounded up to pages), zero-filled and populated, to be seen by
    /// the device at `iova`. The caller maps it into the IOMMU.
    pub fn new(len: usize, iova: u64) -> std::io::Result<Self> {
        let len = len.max(1).next_multiple_of(PAGE_SIZE);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no existing memory; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { ptr, len, iova })
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The device's address of byte 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Host address of byte 0 (for the IOMMU mapping ioctl).
    pub(crate) fn host_addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn check(&self, off: usize, len: usize, align: usize) {
        assert!(
            off % align == 0 && off.checked_add(len).is_some_and(|end| end <= self.len),
            "DMA access {off:#x}+{len} outside a {}-byte region or misaligned",
            self.len
        );
    }

    /// The 16-bit word at `off` as an atomic (e.g. a completion's status and phase).
    pub fn atomic_u16(&self, off: usize) -> &AtomicU16 {
        self.check(off, 2, 2);
        // SAFETY: in bounds and 2-aligned (checked); the mapping lives as long as `self`
        // and is only accessed atomically.
        unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// The 32-bit word at `off` as an atomic.
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: as in `atomic_u16`, with 4-byte alignment checked.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: as in `atomic_u16`, with 8-byte alignment checked.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn atomic_u8(&self, off: usize) -> &AtomicU8 {
        self.check(off, 1, 1);
        // SAFETY: in bounds (checked); bytes need no alignment.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) }
    }

    /// Copies `src` to `off` with relaxed stores (publish with a fence or a doorbell).
    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        self.check(off, src.len(), 1);
        copy_in(|o| self.atomic_u64(o), |o| self.atomic_u8(o), off, src);
    }

    /// Copies `dst.len()` bytes from `off` with relaxed loads.
    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len(), 1);
        copy_out(|o| self.atomic_u64(o), |o| self.atomic_u8(o), off, dst);
    }

    /// Fills `len` bytes at `off` with `byte`.
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        self.check(off, len, 1);
        for o in off..off + len {
            self.atomic_u8(o).store(byte, Ordering::Relaxed);
        }
    }

    /// Writes a plain-data structure at `off`.
    pub fn write_obj<T: IntoBytes + Immutable>(&self, off: usize, value: &T) {
        self.write_bytes(off, value.as_bytes());
    }

    /// Reads a plain-data structure from `off`.
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, off: usize) -> T {
        let mut v = T::new_zeroed();
        self.read_bytes(off, v.as_mut_bytes());
        v
    }

    /// Stores a little-endian u64 (a PRP list entry).
    pub fn write_u64(&self, off: usize, value: u64) {
        self.atomic_u64(off).store(value, Ordering::Relaxed);
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `new`; no reference
        // into it outlives `self` (every accessor borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn copy_in<'a>(
    w64: impl Fn(usize) -> &'a AtomicU64,
    w8: impl Fn(usize) -> &'a AtomicU8,
    off: usize,
    src: &[u8],
) {
    let mut i = 0;
    while i < src.len() {
        let o = off + i;
        if o % 8 == 0 && src.len() - i >= 8 {
            let v = u64::from_le_bytes(src[i..i + 8].try_into().expect("8 bytes"));
            w64(o).store(v, Ordering::Relaxed);
            i += 8;
        } else {
            w8(o).store(src[i], Ordering::Relaxed);
            i += 1;
        }
    }
}

fn copy_out<'a>(
    r64: impl Fn(usize) -> &'a AtomicU64,
    r8: impl Fn(usize) -> &'a AtomicU8,
    off: usize,
    dst: &mut [u8],
) {
    let mut i = 0;
    while i < dst.len() {
        let o = off + i;
        if o % 8 == 0 && dst.len() - i >= 8 {
            dst[i..i + 8].copy_from_slice(&r64(o).load(Ordering::Relaxed).to_le_bytes());
            i += 8;
        } else {
            dst[i] = r8(o).load(Ordering::Relaxed);
            i += 1;
        }
    }
}

/// Where each region of a buffer pool sits in IOVA space. Immutable once built, so the
/// submission path translates with a short scan and no lock.
#[derive(Debug, Clone, Default)]
pub struct PoolMap {
    /// (host address, length, IOVA) per pool class.
    entries: Vec<(usize, usize, u64)>,
}

impl PoolMap {
    /// Records that `len` bytes at host address `host` are mapped at `iova`.
    pub fn push(&mut self, host: usize, len: usize, iova: u64) {
        self.entries.push((host, len, iova));
    }

    /// The IOVA of `buf`'s first byte, `None` if its pool was not mapped.
    pub fn iova(&self, buf: &DmaBuf) -> Option<u64> {
        self.iova_of(buf.as_ptr() as usize, buf.capacity())
    }

    /// The IOVA of host address `addr`, whose `len` bytes must lie in one mapped region.
    pub fn iova_of(&self, addr: usize, len: usize) -> Option<u64> {
        self.entries
            .iter()
            .find(|(h, l, _)| addr >= *h && addr + len <= h + l)
            .map(|(h, _, iova)| iova + (addr - h) as u64)
    }

    /// The host regions of `pool` (one per size class): what a backing maps.
    pub fn pool_regions(pool: &'static BufferPool) -> Vec<(usize, usize)> {
        pool.iovecs()
            .iter()
            .map(|v| (v.iov_base as usize, v.iov_len))
            .collect()
    }
}

enum Target {
    Region(Arc<DmaRegion>),
    /// Memory of a `'static` buffer pool: (host address, length).
    Pool(usize),
}

/// The device's side of DMA: IOVA ranges and the host memory behind them. Used by the
/// emulated controller; a real device has the IOMMU instead.
#[derive(Default)]
pub struct DmaSpace {
    ranges: RwLock<Vec<(u64, usize, Target)>>,
}

impl DmaSpace {
    /// Makes `region` reachable at its IOVA.
    pub fn add_region(&self, region: Arc<DmaRegion>) {
        let (iova, len) = (region.iova(), region.len());
        self.ranges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((iova, len, Target::Region(region)));
    }

    /// Makes the pool's class regions reachable, the first at `iova`, the next ones
    /// after it (page aligned); returns the translation table for the driver.
    pub fn add_pool(&self, pool: &'static BufferPool, mut iova: u64) -> PoolMap {
        let mut map = PoolMap::default();
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        for (host, len) in PoolMap::pool_regions(pool) {
            ranges.push((iova, len, Target::Pool(host)));
            map.push(host, len, iova);
            iova += len.next_multiple_of(PAGE_SIZE) as u64;
        }
        map
    }

    /// Forgets every range (a controller reset does not do this; a detach does).
    pub fn clear(&self) {
        self.ranges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Device write: copies `src` to `iova`. `false` when the range is not mapped (an
    /// IOMMU fault on real hardware).
    pub fn write(&self, iova: u64, src: &[u8]) -> bool {
        self.access(iova, src.len(), |t, off| match t {
            Target::Region(r) => r.write_bytes(off, src),
            Target::Pool(host) => {
                // SAFETY: `access` checked `off + src.len()` lies inside the pool region
                // starting at `host`, which is mapped for the process lifetime (pools are
                // leaked). The buffer belongs to an in-flight command, whose owner does not
                // touch it until the completion, as with a real device's DMA.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), (host + off) as *mut u8, src.len())
                }
            }
        })
    }

    /// Device read: copies from `iova` into `dst`; `false` when not mapped.
    pub fn read(&self, iova: u64, dst: &mut [u8]) -> bool {
        self.access(iova, dst.len(), |t, off| match t {
            Target::Region(r) => r.read_bytes(off, dst),
            Target::Pool(host) => {
                // SAFETY: as in `write`: in bounds of a process-lifetime mapping.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (host + off) as *const u8,
                        dst.as_mut_ptr(),
                        dst.len(),
                    )
                }
            }
        })
    }

    fn access(&self, iova: u64, len: usize, f: impl FnOnce(&Target, usize)) -> bool {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        for (base, rlen, t) in ranges.iter() {
            if iova >= *base && iova - base + len as u64 <= *rlen as u64 {
                f(t, (iova - base) as usize);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
