//! NVMe base specification 2.0 and NVMe over Fabrics types for the Ferrox target, and
//! the user-space NVMe PCIe driver (VFIO) that lets a reactor drive a local drive.
//!
//! # Architecture
//!
//! This crate is the byte-exact vocabulary every other Ferrox crate speaks when it talks
//! NVMe. It holds no state, performs no I/O and allocates nothing: it is plain data plus
//! the arithmetic to pick fields out of it.
//!
//! - [`spec`] holds the wire and data structures: the 64-byte submission queue entry
//!   ([`spec::Command`]), the 16-byte completion queue entry ([`spec::Completion`]),
//!   status codes ([`spec::Status`]), opcodes, the Fabrics Connect/Property commands,
//!   controller properties (CAP, VS, CC, CSTS), Identify data structures, log pages,
//!   features, Dataset Management ranges and NQN validation.
//! - Every structure that crosses the wire is `#[repr(C)]`, derives zerocopy's
//!   `FromBytes`/`IntoBytes`/`Immutable`/`KnownLayout`, and has its size (and, for the
//!   big ones, key field offsets) checked at compile time against the specification.
//! - Multi-byte fields are stored as native `u16`/`u32`/`u64`, which equal the
//!   little-endian wire format on the only targets we build for (a big-endian build is a
//!   compile error). Fields that the specification places at unaligned offsets or that are
//!   128 bits wide are stored as byte arrays with typed getters and setters.
//! - Opcodes, status codes, identifiers and the like are *open* newtypes
//!   (`pub struct AdminOpcode(pub u8)` with associated constants), so an unknown value
//!   from a host parses and can be answered with a spec status instead of a panic.
//!
//!
//! The driver side, layered so that only two modules hold unsafe code:
//!
//! - [`dma`] (unsafe): DMA memory shared with a device, accessed only through atomics
//!   and bounds-checked copies; the IOVA translation of pool buffers.
//! - [`vfio`] (unsafe): the VFIO container/group/device, BAR0 MMIO, DMA mapping, MSI-X
//!   eventfds; bindgen-generated UAPI bindings and the ioctl numbers.
//! - [`backing`]: the [`backing::DeviceBacking`] trait, the hardware seam, implemented by
//!   [`vfio::VfioDevice`] and by [`emu::EmulatedController`], an in-process controller
//!   with fault injection that the tests drive the real driver against.
//! - [`driver`]: controller bring-up, admin commands, reset, shutdown, and the I/O queue
//!   pairs (one per reactor): SQEs written locally and one doorbell per batch,
//!   phase-first completions, PRP lists without allocation, CIDs from a slab with a
//!   generation, per-command timeouts ending in Abort and a controller reset.
//! - [`bdev`]: each namespace as a `ferrox_bdev::BlockDevice` named `nvme<N>n<nsid>`,
//!   with adaptive polling that parks on the queue's MSI-X eventfd.
//!
//! # What it doesn't implement
//!
//! - No PCIe register file beyond the properties NVMe-oF exposes (no doorbells, AQA/ASQ/ACQ
//!   wrappers, CMB/PMR or boot-partition registers).
//! - No PRP lists, keyed SGL data blocks (RDMA) or SGL segment chains: only the single
//!   16-byte SGL descriptor NVMe/TCP puts in SGL1.
//! - No Zoned Namespace, Key Value, reservation, directive, sanitize, telemetry or
//!   persistent-event-log structures; DH-HMAC-CHAP authentication payloads are not modelled
//!   (the AUTHREQ bits of the Connect response are).
//! - Driver: no SGLs, CMB/HMB, namespace management, async events, multiple PRP list
//!   pages (one list page: 2 MiB per command), shared or weighted queues, metadata or
//!   protection information formats, hot-plug; the VFIO side uses the container/group API
//!   (no iommufd), with IOVAs allocated by a simple bump allocator.
//! - No validation of command semantics (whether an LBA range fits a namespace, whether a
//!   feature may be set): that is the target's job, which answers with a [`spec::Status`].
pub mod backing;
pub mod bdev;
pub mod dma;
pub mod driver;
pub mod emu;
mod error;
pub mod spec;
pub mod vfio;

pub use error::Error;
