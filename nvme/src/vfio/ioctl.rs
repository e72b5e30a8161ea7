//! VFIO ioctl request numbers. `<linux/vfio.h>` defines them with the function-like
//! `_IO(VFIO_TYPE, VFIO_BASE + n)` macro, which bindgen cannot evaluate, so they are
//! computed here from the header's `VFIO_TYPE` and `VFIO_BASE` (bindgen does emit those)
//! and checked against a C compiler's expansion in the tests.

use super::bindings::{VFIO_BASE, VFIO_TYPE};

/// `_IO(type, nr)` from `<asm-generic/ioctl.h>`: direction and size bits are zero.
const fn io(nr: u32) -> libc::c_ulong {
    (((VFIO_TYPE as u32) << 8) | (VFIO_BASE + nr)) as libc::c_ulong
}

/// `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: libc::c_ulong = io(0);
/// `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: libc::c_ulong = io(1);
/// `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: libc::c_ulong = io(2);
/// `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: libc::c_ulong = io(3);
/// `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = io(4);
/// `VFIO_GROUP_UNSET_CONTAINER`.
pub const VFIO_GROUP_UNSET_CONTAINER: libc::c_ulong = io(5);
/// `VFIO_GROUP_GET_DEVICE_FD`.
pub const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = io(6);
/// `VFIO_DEVICE_GET_INFO`.
pub const VFIO_DEVICE_GET_INFO: libc::c_ulong = io(7);
/// `VFIO_DEVICE_GET_REGION_INFO`.
pub const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO`.
pub const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = io(9);
/// `VFIO_DEVICE_SET_IRQS`.
pub const VFIO_DEVICE_SET_IRQS: libc::c_ulong = io(10);
/// `VFIO_DEVICE_RESET`.
pub const VFIO_DEVICE_RESET: libc::c_ulong = io(11);
/// `VFIO_IOMMU_GET_INFO`.
pub const VFIO_IOMMU_GET_INFO: libc::c_ulong = io(12);
/// `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: libc::c_ulong = io(13);
/// `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = io(14);

/// Every number above with its C name, for the tests.
pub const ALL: &[(&str, libc::c_ulong)] = &[
    ("VFIO_GET_API_VERSION", VFIO_GET_API_VERSION),
    ("VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION),
    ("VFIO_SET_IOMMU", VFIO_SET_IOMMU),
    ("VFIO_GROUP_GET_STATUS", VFIO_GROUP_GET_STATUS),
    ("VFIO_GROUP_SET_CONTAINER", VFIO_GROUP_SET_CONTAINER),
    ("VFIO_GROUP_UNSET_CONTAINER", VFIO_GROUP_UNSET_CONTAINER),
    ("VFIO_GROUP_GET_DEVICE_FD", VFIO_GROUP_GET_DEVICE_FD),
    ("VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO),
    ("VFIO_DEVICE_GET_REGION_INFO", VFIO_DEVICE_GET_REGION_INFO),
    ("VFIO_DEVICE_GET_IRQ_INFO", VFIO_DEVICE_GET_IRQ_INFO),
    ("VFIO_DEVICE_SET_IRQS", VFIO_DEVICE_SET_IRQS),
    ("VFIO_DEVICE_RESET", VFIO_DEVICE_RESET),
    ("VFIO_IOMMU_GET_INFO", VFIO_IOMMU_GET_INFO),
    ("VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA),
    ("VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA),
];
