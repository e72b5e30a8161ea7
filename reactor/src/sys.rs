//! Thin wrappers over the few raw syscalls the reactor needs: eventfd and anonymous
//! memory mappings.
// UNSAFETY: this module owns raw file descriptors and mmap'ed memory; every call is a
// direct libc syscall whose arguments are checked here.
#![expect(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// A non-blocking, close-on-exec eventfd: what wakes a parked reactor, and what a
/// device's MSI-X vector signals (`ferrox-nvme` hands these to VFIO and polls them).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd with its counter at zero.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, waking whoever waits on the descriptor.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local; EAGAIN (counter saturated) means a
        // wake-up is already pending, which is all we want.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}

impl EventFd {
    /// Resets the counter (after a wake-up was seen); returns what it was (0 when
    /// nothing was signalled).
    pub fn drain(&self) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live local; EAGAIN just means it was zero.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut v).cast(), 8) };
        if n == 8 {
            v
        } else {
            0
        }
    }

    /// Another descriptor for the same eventfd (close-on-exec).
    pub fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Self)
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An anonymous, page-aligned mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    pub huge: bool,
    pub locked: bool,
}

// SAFETY: the mapping is plain memory; ownership of disjoint parts is handed out by
// the buffer pool, which is what makes concurrent use sound.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; the mapping itself has no interior state.
unsafe impl Sync for Mapping {}

const HUGE_2M: usize = 2 << 20;

impl Mapping {
    /// Maps `len` bytes, from 2 MiB hugepages when `try_huge` and the system has them,
    /// otherwise from ordinary pages, and tries to lock them in memory.
    pub fn new(len: usize, try_huge: bool) -> io::Result<Self> {
        let mut huge = false;
        let mut ptr = libc::MAP_FAILED;
        let base = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if try_huge && len.is_multiple_of(HUGE_2M) {
            // SAFETY: anonymous mapping with no address hint; result checked below.
            ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    base | libc::MAP_HUGETLB,
                    -1,
                    0,
                )
            };
            huge = ptr != libc::MAP_FAILED;
        }
        if ptr == libc::MAP_FAILED {
            // SAFETY: as above, without hugepages.
            ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    base,
                    -1,
                    0,
                )
            };
        }
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ptr..ptr+len` is the mapping just created; mlock only pins it.
        let locked = huge || unsafe { libc::mlock(ptr, len) } == 0;
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
            huge,
            locked,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; no handle outlives the
        // mapping because the pool that owns it is never dropped while buffers live.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `mem` with transparent huge
/// pages: far fewer TLB misses for large memory read at random (a RAM disk). Only a
/// hint — ignored where THP is off; returns whether the kernel took it.
pub fn advise_huge_pages<T>(mem: &[T]) -> bool {
    const HUGE: usize = 2 << 20;
    let start = mem.as_ptr() as usize;
    let end = start + std::mem::size_of_val(mem);
    let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if b <= a {
        return false;
    }
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs pages in [a, b), which lies
    // inside memory the caller borrows; it never changes their content or mapping.
    unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) == 0 }
}

/// Number of CPUs the kernel reports as configured.
pub fn configured_cpus() -> usize {
    // SAFETY: sysconf takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Raises this process's soft limit on open file descriptors to its hard limit, and
/// returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct from a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl = raised;
        }
    }
    Ok(rl.rlim_cur)
}

/// CPU seconds (user + system) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage struct into the pointed-to memory.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
