//! Block devices: the [`BlockDevice`] trait, per-reactor I/O channels, the backends
//! `malloc` (RAM) and `uring` (files and block devices through the reactor's io_uring),
//! the logical-volume engine [`lvol`] (pools of volumes on any block device), the one
//! way to describe and create a bdev ([`BdevSpec`]), and the one size rule for user
//! input ([`size`]).
//!
//! # Architecture
//!
//! * [`BlockDevice`], [`IoChannel`] and the [`Registry`] of named devices (this file);
//!   the backends [`malloc`] and [`uring`].
//! * [`lvol`]: the logical-volume engine is part of this crate, not a crate of its own:
//!   a volume is a [`BlockDevice`] over another one, on the same channel and
//!   completion model, so it lives beside the backends (its design, on-disk layout and
//!   crash consistency are in `lvol/mod.rs`).
//! * [`spec`]: a [`BdevSpec`] (name and [`BdevKind`]) is what the daemon's `[[bdev]]`
//!   tables and the control plane's pool bases are read into, checked once, and
//!   created from. The `nvme` kind is attached by the PCIe driver crate, which depends
//!   on this one; its caller hands that constructor to [`BdevSpec::create_with`].
//! * [`size`]: every size a user types (TOML, flags, `ferroxctl`, `ferrox-perf`) is
//!   parsed by one rule — `k`/`KiB` binary, `kB`/`KB` decimal — and printed by
//!   [`size::human`].
//! * [`nexus`]: a mirror over N child devices (replicas): write fan-out, faults
//!   recorded before acknowledgement, a dirty-region log and partial rebuild.
//!
//! A [`BlockDevice`] is shared by every reactor (`Send + Sync`, behind an `Arc`) and
//! describes itself with [`BdevInfo`]. I/O goes through an [`IoChannel`], which a
//! reactor opens for itself and which never leaves that reactor: submitting takes the
//! request by value (its data buffer included), checks it against the device
//! geometry, and the backend completes it later, on the same reactor, through the
//! caller's [`IoSink`], handing the buffer back. A completion never runs inside
//! `submit`, so callers may submit while they hold their own state.
//!
//! Requests that fail the checks come back at once as `Err((error, op))`.
//!
//! # What it doesn't implement
//!
//! Splitting requests on the optimal I/O boundary (reported for callers to honour),
//! per-device QoS, and vectored (multi-buffer) requests: one request is one buffer.
//! The NVMe PCIe backend (`ferrox-nvme`) and the NVMe/TCP host (`ferrox-nvmeof`) are
//! block devices of other crates; RAID levels other than the [`nexus`] mirror, and
//! caching, are not here.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use ferrox_reactor::{DmaBuf, Reactor};

mod defer;
mod future;
pub mod lvol;
pub mod malloc;
pub mod nexus;
pub mod size;
pub mod spec;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod uring;

pub use defer::defer_completion;
pub use future::{IoResult, Submitted};
pub use spec::{BdevFields, BdevKind, BdevSpec, NvmeSpec, SpecError};

bitflags::bitflags! {
    /// Operations a device supports beyond read and write.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ops: u32 {
        const FLUSH = 1 << 0;
        const FUA = 1 << 1;
        const WRITE_ZEROES = 1 << 2;
        const UNMAP = 1 << 3;
        /// Write Zeroes writes no data to the device, whatever the range (a regular
        /// file punches holes; memory is one store pass): worth zeroing a whole area
        /// up front.
        const CHEAP_ZEROES = 1 << 4;
        /// [`BdevInfo::uuid`] names this data across restarts (a logical volume's, a
        /// drive namespace's). Exported namespace identifiers include it, so other
        /// data exported later under the same subsystem and NSID never looks like the
        /// same disk to a host.
        const STABLE_UUID = 1 << 5;
    }
}

/// What a block device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevInfo {
    pub name: String,
    pub uuid: [u8; 16],
    /// Bytes per logical block (a power of two, >= 512).
    pub block_size: u32,
    pub num_blocks: u64,
    /// Requests should not cross multiples of this many blocks (0: no boundary).
    pub optimal_io_boundary: u32,
    /// Largest transfer in one request, in bytes.
    pub max_transfer: u32,
    pub ops: Ops,
    /// Writes may sit in a volatile cache until a flush (or FUA).
    pub volatile_cache: bool,
}

/// Errors of the block layer. `Copy`, so a completion can carry one cheaply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BdevError {
    #[error("blocks {lba}..{end} are beyond the device's {num_blocks} blocks", end = lba.saturating_add(*blocks))]
    OutOfRange {
        lba: u64,
        blocks: u64,
        num_blocks: u64,
    },
    #[error("buffer of {len} bytes does not hold {blocks} blocks of {block_size} bytes")]
    BadLength {
        len: usize,
        blocks: u64,
        block_size: u32,
    },
    #[error("a request of {bytes} bytes exceeds the device's {max} byte limit")]
    TooLarge { bytes: u64, max: u32 },
    #[error("the device does not support {0}")]
    Unsupported(&'static str),
    #[error("I/O error: {}", std::io::Error::from_raw_os_error(*.0))]
    Io(i32),
    #[error("the device is out of space")]
    NoSpace,
    #[error("the channel is shutting down")]
    Closed,
    /// No usable copy of the data behind this path (a mirror with no healthy child,
    /// or one that could not durably record a failed child): the NVMe target answers
    /// with a path-related status, so a multipath host retries on another path.
    #[error("no usable path to the data")]
    NoPath,
}

impl BdevError {
    pub fn from_errno(errno: i32) -> Self {
        if errno == libc::ENOSPC {
            Self::NoSpace
        } else {
            Self::Io(errno)
        }
    }
}

/// One block request. Buffers travel with the request and come back in the completion.
#[derive(Debug)]
pub enum IoOp {
    Read {
        lba: u64,
        blocks: u64,
        buf: DmaBuf,
    },
    Write {
        lba: u64,
        blocks: u64,
        buf: DmaBuf,
        fua: bool,
    },
    Flush,
    WriteZeroes {
        lba: u64,
        blocks: u64,
    },
    Unmap {
        lba: u64,
        blocks: u64,
    },
}

impl IoOp {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Write { .. } => "write",
            Self::Flush => "flush",
            Self::WriteZeroes { .. } => "write zeroes",
            Self::Unmap { .. } => "unmap",
        }
    }

    /// The data buffer, if the request has one.
    pub fn into_buf(self) -> Option<DmaBuf> {
        match self {
            Self::Read { buf, .. } | Self::Write { buf, .. } => Some(buf),
            _ => None,
        }
    }
}

/// Receives completions on the submitting reactor.
pub trait IoSink {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>);
}

/// Where a request's completion goes: a sink and the caller's tag.
pub struct Completion {
    pub sink: Rc<dyn IoSink>,
    pub tag: u64,
}

impl Completion {
    pub fn complete(self, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        self.sink.io_done(self.tag, result, buf);
    }
}

/// A block device, shared by all reactors.
pub trait BlockDevice: Send + Sync {
    fn info(&self) -> &BdevInfo;
    /// Opens this device's channel for the calling reactor.
    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError>;
}

/// What a backend implements per reactor; callers use [`IoChannel`], which checks
/// requests first.
pub trait ChannelImpl {
    /// Starts a request that passed the geometry checks. Must not complete inline.
    fn submit(&self, op: IoOp, done: Completion);
    /// Requests accepted and not completed yet.
    fn in_flight(&self) -> usize;
    /// Fails queued work and releases reactor resources once nothing is in flight.
    fn close(&self) {}
}

/// A reactor's channel to one device.
pub struct IoChannel {
    dev: Arc<dyn BlockDevice>,
    inner: Rc<dyn ChannelImpl>,
}

impl IoChannel {
    /// Opens a channel on the calling reactor.
    pub fn open(dev: Arc<dyn BlockDevice>, r: &Reactor) -> Result<Self, BdevError> {
        let inner = dev.clone().open_channel(r)?;
        Ok(Self { dev, inner })
    }

    pub fn info(&self) -> &BdevInfo {
        self.dev.info()
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Checks `op` against the device and submits it; a request that fails the checks
    /// is handed back with the reason.
    pub fn submit(&self, op: IoOp, done: Completion) -> Result<(), (BdevError, IoOp)> {
        if let Err(e) = check(self.dev.info(), &op) {
            return Err((e, op));
        }
        self.inner.submit(op, done);
        Ok(())
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// Checks a request against a device's geometry and capabilities.
pub fn check(info: &BdevInfo, op: &IoOp) -> Result<(), BdevError> {
    let range = |lba: u64, blocks: u64| {
        if blocks == 0
            || lba
                .checked_add(blocks)
                .is_none_or(|end| end > info.num_blocks)
        {
            Err(BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: info.num_blocks,
            })
        } else {
            Ok(())
        }
    };
    let data = |lba: u64, blocks: u64, buf: &DmaBuf| {
        range(lba, blocks)?;
        let bytes = blocks * u64::from(info.block_size);
        if bytes > u64::from(info.max_transfer) {
            return Err(BdevError::TooLarge {
                bytes,
                max: info.max_transfer,
            });
        }
        if buf.len() as u64 != bytes {
            return Err(BdevError::BadLength {
                len: buf.len(),
                blocks,
                block_size: info.block_size,
            });
        }
        Ok(())
    };
    match op {
        IoOp::Read { lba, blocks, buf } => data(*lba, *blocks, buf),
        IoOp::Write {
            lba,
            blocks,
            buf,
            fua,
        } => {
            if *fua && !info.ops.contains(Ops::FUA) {
                return Err(BdevError::Unsupported("FUA"));
            }
            data(*lba, *blocks, buf)
        }
        IoOp::Flush => Ok(()),
        IoOp::WriteZeroes { lba, blocks } => {
            if !info.ops.contains(Ops::WRITE_ZEROES) {
                return Err(BdevError::Unsupported("write zeroes"));
            }
            range(*lba, *blocks)
        }
        IoOp::Unmap { lba, blocks } => {
            if !info.ops.contains(Ops::UNMAP) {
                return Err(BdevError::Unsupported("unmap"));
            }
            range(*lba, *blocks)
        }
    }
}

/// Errors of the registry and of creating devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("a bdev named {0:?} already exists")]
    Exists(String),
    #[error("no bdev named {0:?}")]
    NotFound(String),
    #[error("bdev {name:?}: {why}")]
    Invalid { name: String, why: String },
    #[error("bdev {name:?}: {path}: {source}")]
    Open {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Named block devices. Used by set-up and the control plane, never on the I/O path.
#[derive(Default)]
pub struct Registry {
    devs: RwLock<HashMap<String, Arc<dyn BlockDevice>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, dev: Arc<dyn BlockDevice>) -> Result<(), RegistryError> {
        let name = dev.info().name.clone();
        let mut devs = self.devs.write().unwrap_or_else(|e| e.into_inner());
        if devs.contains_key(&name) {
            return Err(RegistryError::Exists(name));
        }
        devs.insert(name, dev);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn BlockDevice>, RegistryError> {
        self.devs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }

    pub fn remove(&self, name: &str) -> Result<Arc<dyn BlockDevice>, RegistryError> {
        self.devs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .devs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// Checks a block size: a power of two from 512 to 64 KiB.
pub fn validate_block_size(name: &str, bs: u32) -> Result<(), RegistryError> {
    if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
        return Err(RegistryError::Invalid {
            name: name.to_string(),
            why: format!("block size {bs} must be a power of two from 512 to 65536"),
        });
    }
    Ok(())
}

/// 16 random bytes shaped as a version-4 UUID.
pub fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut u);
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

#[cfg(test)]
mod tests;
