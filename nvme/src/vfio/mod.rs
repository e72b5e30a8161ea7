//! A PCIe NVMe function driven through VFIO (the container/group API of Linux 6.1).
//!
//! Opening follows `vfio_nvme_identify.py`: container (`/dev/vfio/vfio`), API version,
//! type1v2 IOMMU extension, group (`/dev/vfio/<group>`) viable, group → container,
//! `VFIO_SET_IOMMU`, device fd, BAR0 region info and mmap, bus mastering through the
//! config region. DMA memory gets IOVAs from a bump allocator starting at
//! [`IOVA_BASE`], away from the x86 MSI window. Every failure a user can fix comes back
//! as [`Error::Setup`] with a one-line hint.
// UNSAFETY: VFIO is ioctls on raw file descriptors with pointers to C structures,
// and BAR0 is device memory accessed through volatile loads and stores of an mmap.
#![expect(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use ferrox_reactor::{BufferPool, EventFd};

use crate::backing::DeviceBacking;
use crate::dma::{DmaRegion, PoolMap, PAGE_SIZE};
use crate::Error;

#[allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    reason = "bindgen output, regenerated rather than edited"
)]
pub mod bindings;
pub mod ioctl;

use bindings::*;

/// First IOVA handed out (below the 0xFEE0_0000 MSI window, above low memory).
pub const IOVA_BASE: u64 = 0x1000_0000;

fn ioctl_ptr<T>(fd: RawFd, req: libc::c_ulong, arg: &mut T) -> std::io::Result<i32> {
    // SAFETY: `arg` is a live, exclusive structure of the type the request expects
    // (each caller pairs the request with its structure, `argsz` filled in); the kernel
    // reads/writes at most `size_of::<T>()` bytes of it during the call.
    let r = unsafe { libc::ioctl(fd, req as _, std::ptr::from_mut(arg)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ioctl_val(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<i32> {
    // SAFETY: the request takes an integer argument, no memory is passed.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

struct Bar {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: BAR0 is device memory accessed only with volatile 32-bit loads and stores,
// which the device serialises; no Rust references into it exist.
unsafe impl Send for Bar {}
// SAFETY: as for `Send`.
unsafe impl Sync for Bar {}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `VfioDevice::open`; nothing borrows it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One NVMe PCI function owned through VFIO.
pub struct VfioDevice {
    bdf: String,
    container: File,
    group: File,
    device: File,
    bar: Bar,
    config_offset: u64,
    msix: u32,
    /// Next free IOVA and every mapping made, for the unmap at release.
    dma: Mutex<DmaState>,
}

/// Next free IOVA, every mapping made (IOVA, size), and the regions kept alive.
type DmaState = (u64, Vec<(u64, u64)>, Vec<Arc<DmaRegion>>);

impl std::fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDevice")
            .field("bdf", &self.bdf)
            .finish()
    }
}

fn setup(
    bdf: &str,
    what: impl Into<String>,
    hint: impl Into<String>,
    e: Option<std::io::Error>,
) -> Error {
    Error::Setup {
        bdf: bdf.to_string(),
        what: what.into(),
        hint: hint.into(),
        source: e,
    }
}

fn open_rw(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl VfioDevice {
    /// Opens `bdf` (e.g. `0000:00:04.0`), which must be bound to vfio-pci.
    pub fn open(bdf: &str) -> Result<Self, Error> {
        let sys = format!("/sys/bus/pci/devices/{bdf}");
        if !Path::new(&sys).exists() {
            return Err(setup(
                bdf,
                "no such PCI device",
                "list NVMe functions with: lspci -D -d ::0108",
                None,
            ));
        }
        let driver = std::fs::read_link(format!("{sys}/driver")).ok();
        let unbind = if driver.is_some() {
            format!("echo {bdf} > {sys}/driver/unbind; ")
        } else {
            String::new()
        };
        let bind_hint = format!(
            "{unbind}modprobe vfio-pci; echo vfio-pci > {sys}/driver_override; echo {bdf} > /sys/bus/pci/drivers_probe"
        );
        let driver = driver
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if driver.as_deref() != Some("vfio-pci") {
            let now = driver.map_or("no driver".to_string(), |d| format!("driver {d}"));
            return Err(setup(
                bdf,
                format!("not bound to vfio-pci ({now})"),
                bind_hint,
                None,
            ));
        }
        let group = std::fs::read_link(format!("{sys}/iommu_group")).map_err(|e| {
            setup(bdf, "no IOMMU group", "boot with intel_iommu=on iommu=pt (an IOMMU is required; this kernel has no VFIO no-IOMMU mode)", Some(e))
        })?;
        let group = group
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let perm_hint =
            format!("run as root, or: chown $USER /dev/vfio/{group} && ulimit -l unlimited");
        let container = open_rw("/dev/vfio/vfio").map_err(|e| {
            let hint = if e.kind() == ErrorKind::NotFound {
                "modprobe vfio-pci".to_string()
            } else {
                perm_hint.clone()
            };
            setup(bdf, "cannot open /dev/vfio/vfio", hint, Some(e))
        })?;
        let cfd = container.as_raw_fd();
        let version = ioctl_val(cfd, ioctl::VFIO_GET_API_VERSION, 0)
            .map_err(|e| Error::io("VFIO_GET_API_VERSION", e))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(setup(
                bdf,
                format!("VFIO API version {version}, expected {VFIO_API_VERSION}"),
                "use a kernel with the VFIO type1 API",
                None,
            ));
        }
        let iommu = if ioctl_val(cfd, ioctl::VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU.into())
            .unwrap_or(0)
            > 0
        {
            VFIO_TYPE1v2_IOMMU
        } else if ioctl_val(cfd, ioctl::VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU.into()).unwrap_or(0)
            > 0
        {
            VFIO_TYPE1_IOMMU
        } else {
            return Err(setup(
                bdf,
                "the VFIO container offers no type1 IOMMU",
                "modprobe vfio_iommu_type1",
                None,
            ));
        };
        let gpath = format!("/dev/vfio/{group}");
        let gfile = open_rw(&gpath).map_err(|e| {
            let hint = if e.kind() == ErrorKind::PermissionDenied {
                perm_hint.clone()
            } else {
                bind_hint.clone()
            };
            setup(bdf, format!("cannot open {gpath}"), hint, Some(e))
        })?;
        let gfd = gfile.as_raw_fd();
        let mut status = vfio_group_status {
            argsz: size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        ioctl_ptr(gfd, ioctl::VFIO_GROUP_GET_STATUS, &mut status)
            .map_err(|e| Error::io("VFIO_GROUP_GET_STATUS", e))?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(setup(
                bdf,
                format!("IOMMU group {group} is not viable (another device in it is bound to a host driver)"),
                format!("bind every device in /sys/kernel/iommu_groups/{group}/devices to vfio-pci (or unbind it)"),
                None,
            ));
        }
        let mut c = cfd;
        ioctl_ptr(gfd, ioctl::VFIO_GROUP_SET_CONTAINER, &mut c)
            .map_err(|e| Error::io("VFIO_GROUP_SET_CONTAINER", e))?;
        ioctl_val(cfd, ioctl::VFIO_SET_IOMMU, iommu.into()).map_err(|e| {
            setup(bdf, "VFIO_SET_IOMMU failed", "the platform needs interrupt remapping (intel-iommu,intremap=on) or: modprobe vfio_iommu_type1 allow_unsafe_interrupts=1", Some(e))
        })?;
        let mut name = bdf.as_bytes().to_vec();
        name.push(0);
        // SAFETY: the request takes a NUL-terminated device name, which `name` is and
        // which outlives the call; the result is checked.
        let dfd = unsafe { libc::ioctl(gfd, ioctl::VFIO_GROUP_GET_DEVICE_FD as _, name.as_ptr()) };
        if dfd < 0 {
            return Err(setup(
                bdf,
                "VFIO_GROUP_GET_DEVICE_FD failed",
                "is the device already opened by another process?",
                Some(std::io::Error::last_os_error()),
            ));
        }
        // SAFETY: `dfd` is a fresh descriptor returned to us alone.
        let device = File::from(unsafe { OwnedFd::from_raw_fd(dfd) });
        let mut info = vfio_device_info {
            argsz: size_of::<vfio_device_info>() as u32,
            ..Default::default()
        };
        ioctl_ptr(dfd, ioctl::VFIO_DEVICE_GET_INFO, &mut info)
            .map_err(|e| Error::io("VFIO_DEVICE_GET_INFO", e))?;
        let region = |index: u32| -> Result<vfio_region_info, Error> {
            let mut r = vfio_region_info {
                argsz: size_of::<vfio_region_info>() as u32,
                index,
                ..Default::default()
            };
            ioctl_ptr(dfd, ioctl::VFIO_DEVICE_GET_REGION_INFO, &mut r)
                .map_err(|e| Error::io("VFIO_DEVICE_GET_REGION_INFO", e))?;
            Ok(r)
        };
        let bar0 = region(VFIO_PCI_BAR0_REGION_INDEX)?;
        if bar0.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 || bar0.size < 0x2000 {
            return Err(setup(
                bdf,
                format!("BAR0 ({} bytes) cannot be mmap'ed", bar0.size),
                "use a kernel whose vfio-pci allows mmap of BAR0",
                None,
            ));
        }
        let len = bar0.size as usize;
        // SAFETY: a shared mapping of the device fd's BAR0 range as VFIO reported it;
        // the result is checked. It is only accessed with volatile 32-bit operations.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dfd,
                bar0.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io("mmap BAR0", std::io::Error::last_os_error()));
        }
        let bar = Bar {
            ptr: NonNull::new(p.cast()).expect("mmap returned non-null"),
            len,
        };
        let config_offset = region(VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        let mut irq = vfio_irq_info {
            argsz: size_of::<vfio_irq_info>() as u32,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        let msix = match ioctl_ptr(dfd, ioctl::VFIO_DEVICE_GET_IRQ_INFO, &mut irq) {
            Ok(_) if irq.flags & VFIO_IRQ_INFO_EVENTFD != 0 => irq.count,
            _ => 0,
        };
        // Memory space and bus master enable (PCI command register bits 1 and 2).
        let mut cmd = [0u8; 2];
        device
            .read_exact_at(&mut cmd, config_offset + 4)
            .map_err(|e| Error::io("read PCI command register", e))?;
        let cmd = u16::from_le_bytes(cmd) | 0x6;
        device
            .write_all_at(&cmd.to_le_bytes(), config_offset + 4)
            .map_err(|e| Error::io("enable bus mastering", e))?;
        tracing::info!(
            bdf,
            group,
            regions = info.num_regions,
            msix,
            bar0 = len,
            "VFIO device open"
        );
        Ok(Self {
            bdf: bdf.to_string(),
            container,
            group: gfile,
            device,
            bar,
            config_offset,
            msix,
            dma: Mutex::new((IOVA_BASE, Vec::new(), Vec::new())),
        })
    }

    fn map(&self, host: usize, len: usize) -> Result<u64, Error> {
        let mut d = self.dma.lock().unwrap_or_else(|e| e.into_inner());
        self.map_locked(&mut d, host, len)
    }

    fn map_locked(&self, d: &mut DmaState, host: usize, len: usize) -> Result<u64, Error> {
        let iova = d.0;
        let mut m = vfio_iommu_type1_dma_map {
            argsz: size_of::<vfio_iommu_type1_dma_map>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: host as u64,
            iova,
            size: len as u64,
        };
        ioctl_ptr(
            self.container.as_raw_fd(),
            ioctl::VFIO_IOMMU_MAP_DMA,
            &mut m,
        )
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                "raise the locked-memory limit: ulimit -l unlimited (or run as root)"
            } else {
                "check dmesg for IOMMU errors"
            };
            setup(
                &self.bdf,
                format!("VFIO_IOMMU_MAP_DMA of {len} bytes"),
                hint,
                Some(e),
            )
        })?;
        d.0 += len.next_multiple_of(2 << 20) as u64;
        d.1.push((iova, len as u64));
        Ok(iova)
    }

    fn bar_check(&self, offset: usize) {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.bar.len,
            "BAR0 access at {offset:#x} out of range"
        );
    }
}

impl DeviceBacking for VfioDevice {
    fn id(&self) -> &str {
        &self.bdf
    }

    fn read32(&self, offset: usize) -> u32 {
        self.bar_check(offset);
        // SAFETY: in bounds and 4-aligned (checked) inside the live BAR0 mapping.
        unsafe { std::ptr::read_volatile(self.bar.ptr.as_ptr().add(offset).cast::<u32>()) }
    }

    fn write32(&self, offset: usize, value: u32) {
        self.bar_check(offset);
        // SAFETY: as in `read32`.
        unsafe { std::ptr::write_volatile(self.bar.ptr.as_ptr().add(offset).cast::<u32>(), value) }
    }

    fn alloc_dma(&self, len: usize) -> Result<Arc<DmaRegion>, Error> {
        let mut d = self.dma.lock().unwrap_or_else(|e| e.into_inner());
        let region =
            Arc::new(DmaRegion::new(len, d.0).map_err(|e| Error::io("allocate DMA memory", e))?);
        let iova = self.map_locked(&mut d, region.host_addr(), region.len())?;
        debug_assert_eq!(iova, region.iova());
        d.2.push(region.clone());
        Ok(region)
    }

    fn map_pool(&self, pool: &'static BufferPool) -> Result<PoolMap, Error> {
        let mut map = PoolMap::default();
        for (host, len) in PoolMap::pool_regions(pool) {
            let iova = self.map(host, len)?;
            map.push(host, len, iova);
        }
        Ok(map)
    }

    fn max_interrupts(&self) -> u32 {
        self.msix
    }

    fn set_interrupts(&self, fds: &[Option<&EventFd>]) -> Result<(), Error> {
        let hdr = size_of::<vfio_irq_set>();
        let mut buf = vec![0u8; hdr + 4 * fds.len()];
        let set = vfio_irq_set {
            argsz: buf.len() as u32,
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: fds.len() as u32,
            ..Default::default()
        };
        for (i, w) in [set.argsz, set.flags, set.index, set.start, set.count]
            .iter()
            .enumerate()
        {
            buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        for (i, fd) in fds.iter().enumerate() {
            buf[hdr + i * 4..hdr + i * 4 + 4]
                .copy_from_slice(&fd.map_or(-1, |f| f.as_raw_fd()).to_ne_bytes());
        }
        // SAFETY: `buf` is a `vfio_irq_set` header followed by `count` eventfds, `argsz`
        // bytes long, alive and exclusive for the call.
        let r = unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                ioctl::VFIO_DEVICE_SET_IRQS as _,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(Error::io(
                "VFIO_DEVICE_SET_IRQS (MSI-X)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn release(&self) {
        let mut set = vfio_irq_set {
            argsz: size_of::<vfio_irq_set>() as u32,
            flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        let _ = ioctl_ptr(
            self.device.as_raw_fd(),
            ioctl::VFIO_DEVICE_SET_IRQS,
            &mut set,
        );
        let mut d = self.dma.lock().unwrap_or_else(|e| e.into_inner());
        for (iova, size) in d.1.drain(..) {
            let mut u = vfio_iommu_type1_dma_unmap {
                argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
                flags: 0,
                iova,
                size,
                ..Default::default()
            };
            let _ = ioctl_ptr(
                self.container.as_raw_fd(),
                ioctl::VFIO_IOMMU_UNMAP_DMA,
                &mut u,
            );
        }
        let _ = (&self.group, self.config_offset, PAGE_SIZE);
        tracing::info!(bdf = self.bdf, "VFIO device released");
    }
}

#[cfg(test)]
mod tests;
