//! The user-space NVMe PCIe driver for Ferrox: VFIO, DMA memory, the driver, an emulated
//! controller to test it against, and the `nvme` block device that lets a reactor drive a
//! local drive.
//!
//! # Architecture
//!
//! The NVMe vocabulary (commands, completions, statuses, Identify structures, the
//! controller registers and their offsets) lives in `ferrox-nvme-spec`, re-exported here
//! as [`spec`]; this crate is what moves those bytes to and from a PCIe device. It is
//! layered so that only two modules hold unsafe code:
//!
//! - [`dma`] (unsafe): DMA memory shared with a device, accessed only through atomics
//!   and bounds-checked copies; the IOVA translation of pool buffers.
//! - [`vfio`] (unsafe): the VFIO container/group/device, BAR0 MMIO, DMA mapping, MSI-X
//!   vectors signalling the reactor's [`EventFd`](ferrox_reactor::EventFd);
//!   bindgen-generated UAPI bindings and the ioctl numbers.
//! - [`backing`]: the [`backing::DeviceBacking`] trait, the hardware seam, implemented by
//!   [`vfio::VfioDevice`] and by [`emu::EmulatedController`], an in-process controller
//!   with fault injection that the tests drive the real driver against. Both sides name
//!   BAR0 through [`spec::register`], the one register map.
//! - [`driver`]: controller bring-up, admin commands, reset, shutdown, and the I/O queue
//!   pairs (one per reactor): SQEs written locally and one doorbell per batch,
//!   phase-first completions, PRP lists without allocation, CIDs from a slab with a
//!   generation, per-command timeouts ending in Abort and a controller reset.
//! - [`bdev`]: each namespace as a `ferrox_bdev::BlockDevice` named `nvme<N>n<nsid>`,
//!   with adaptive polling that parks on the queue's MSI-X eventfd.
//!
//! # What it doesn't implement
//!
//! - No NVMe over Fabrics: that is `ferrox-nvmeof`, which depends on the spec crate and
//!   not on this one.
//! - No SGLs, CMB/HMB, namespace management, async events, multiple PRP list pages (one
//!   list page: 2 MiB per command), shared or weighted queues, metadata or protection
//!   information formats, hot-plug.
//! - The VFIO side uses the container/group API (no iommufd), with IOVAs allocated by a
//!   simple bump allocator.
//! - The emulator models only what the driver issues (Identify CNS 0/1/2, Number of
//!   Queues, queue creation and deletion, Abort; Read, Write, Flush, Write Zeroes,
//!   Dataset Management), with doorbell stride 0.
pub mod backing;
pub mod bdev;
pub mod dma;
pub mod driver;
pub mod emu;
mod error;
pub mod vfio;

pub use error::Error;
/// The NVMe specification types, re-exported so that a user of the driver names them
/// as `ferrox_nvme::spec::Command` without a second dependency.
pub use ferrox_nvme_spec as spec;
