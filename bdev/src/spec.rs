//! What a bdev is made from, checked in one place: the daemon's `[[bdev]]` tables
//! ([`BdevSpec::from_fields`]) and the control plane's pool bases both become a
//! [`BdevSpec`], and [`BdevSpec::create`] (or [`BdevSpec::create_with`], for the
//! kinds whose driver lives in a crate that depends on this one) makes the devices.

use std::path::PathBuf;
use std::sync::Arc;

use crate::malloc::MallocBdev;
use crate::uring::UringBdev;
use crate::{validate_block_size, BlockDevice, RegistryError};

/// A named block device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevSpec {
    pub name: String,
    pub kind: BdevKind,
}

/// The backend and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevKind {
    /// A RAM disk of `size` bytes.
    Malloc { size: u64, block_size: u32 },
    /// A file or block device through io_uring; when `path` does not exist and `size`
    /// is given, a sparse file of that many bytes is created.
    Uring {
        path: PathBuf,
        size: Option<u64>,
        block_size: u32,
        /// Requests in flight.
        queue_depth: usize,
    },
    /// A local NVMe controller: built by the PCIe driver crate (see
    /// [`BdevSpec::create_with`]).
    Nvme(NvmeSpec),
}

/// An NVMe controller bound to vfio-pci; each active namespace becomes a bdev
/// `<name>n<nsid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeSpec {
    /// The PCI address ("0000:00:04.0"), checked by the driver.
    pub pci: String,
    /// Entries per I/O queue in use (the queue holds one more), 2 to 1023.
    pub queue_depth: usize,
}

impl NvmeSpec {
    /// Entries per I/O queue: the queue depth plus the slot a full ring keeps empty.
    pub fn queue_entries(&self) -> Option<u16> {
        let entries = self.queue_depth.checked_add(1)?;
        u16::try_from(entries).ok().filter(|&d| d >= 3)
    }
}

/// A `[[bdev]]` table as written, before its keys are checked against its `kind`.
#[derive(Debug, Clone, Default)]
pub struct BdevFields {
    pub name: String,
    pub kind: String,
    /// Bytes (a size with a unit is parsed by [`crate::size`] first).
    pub size: Option<u64>,
    pub block_size: u32,
    pub path: Option<PathBuf>,
    pub pci: Option<String>,
    pub queue_depth: usize,
}

/// A mistake in a bdev specification: the key it is about (none: the table as a
/// whole) and why. [`SpecError::at`] words it under the caller's name for the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{why}", key.map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct SpecError {
    pub key: Option<&'static str>,
    pub why: String,
}

impl SpecError {
    fn of(key: &'static str, why: impl Into<String>) -> Self {
        Self {
            key: Some(key),
            why: why.into(),
        }
    }

    fn whole(why: impl Into<String>) -> Self {
        Self {
            key: None,
            why: why.into(),
        }
    }

    /// `bdev[0] ("m").size: …` for `table` = `bdev[0] ("m")`.
    pub fn at(&self, table: &str) -> String {
        match self.key {
            Some(k) => format!("{table}.{k}: {}", self.why),
            None => format!("{table}: {}", self.why),
        }
    }
}

impl BdevSpec {
    /// Reads a `[[bdev]]` table: `kind` names the backend, and the other keys must fit
    /// it. Keys a kind does not use (a malloc's `path`, `queue_depth`) are ignored.
    pub fn from_fields(f: BdevFields) -> Result<Self, SpecError> {
        if f.kind != "nvme" && f.pci.is_some() {
            return Err(SpecError::of(
                "pci",
                format!(
                    "only an nvme bdev takes a PCI address (kind = {:?})",
                    f.kind
                ),
            ));
        }
        let kind = match f.kind.as_str() {
            "malloc" => BdevKind::Malloc {
                size: f
                    .size
                    .ok_or_else(|| SpecError::whole("a malloc bdev needs a size"))?,
                block_size: f.block_size,
            },
            "uring" => BdevKind::Uring {
                path: f
                    .path
                    .ok_or_else(|| SpecError::whole("a uring bdev needs a path"))?,
                size: f.size,
                block_size: f.block_size,
                queue_depth: f.queue_depth,
            },
            "nvme" => {
                if f.size.is_some() || f.path.is_some() {
                    return Err(SpecError::whole(
                        "an nvme bdev takes its size from the controller: remove size/path",
                    ));
                }
                BdevKind::Nvme(NvmeSpec {
                    pci: f.pci.ok_or_else(|| {
                        SpecError::whole(
                            "an nvme bdev needs pci = \"DOMAIN:BUS:DEV.FN\" (list NVMe functions with: lspci -D -d ::0108)",
                        )
                    })?,
                    queue_depth: f.queue_depth,
                })
            }
            other => {
                return Err(SpecError::of(
                    "kind",
                    format!("{other:?}: expected \"malloc\", \"uring\" or \"nvme\""),
                ))
            }
        };
        let spec = Self { name: f.name, kind };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what can be checked without touching a device: the name, the block
    /// size, a size that is a non-zero multiple of it, an NVMe queue depth.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty() {
            return Err(SpecError::of("name", "must not be empty"));
        }
        let (size, block_size) = match &self.kind {
            BdevKind::Malloc { size, block_size } => (Some(*size), *block_size),
            BdevKind::Uring {
                size, block_size, ..
            } => (*size, *block_size),
            BdevKind::Nvme(n) => {
                return match n.queue_entries() {
                    Some(_) => Ok(()),
                    None => Err(SpecError::of(
                        "queue_depth",
                        format!("{}: expected 2 to 1023", n.queue_depth),
                    )),
                }
            }
        };
        validate_block_size(&self.name, block_size).map_err(|_| {
            SpecError::of(
                "block_size",
                format!("{block_size}: expected a power of two from 512 to 65536"),
            )
        })?;
        match size {
            Some(s) if s == 0 || s % u64::from(block_size) != 0 => Err(SpecError::of(
                "size",
                format!("{s} bytes: must be a non-zero multiple of block_size {block_size}"),
            )),
            _ => Ok(()),
        }
    }

    /// Creates a malloc or uring device. An nvme spec is refused here: use
    /// [`BdevSpec::create_with`].
    pub fn create(&self) -> Result<Arc<dyn BlockDevice>, RegistryError> {
        let mut one = self.create_with(|_, _| {
            Err(RegistryError::Invalid {
                name: self.name.clone(),
                why: "an nvme bdev is attached by the NVMe driver (ferrox-nvme)".into(),
            })
        })?;
        Ok(one.remove(0))
    }

    /// Creates the devices of this spec: the one of a malloc or uring spec, or those
    /// `nvme` attaches for an nvme spec (its driver depends on this crate, so the
    /// caller supplies it; it gets the spec's name and parameters and returns one
    /// device per namespace).
    pub fn create_with<E: From<RegistryError>>(
        &self,
        nvme: impl FnOnce(&str, &NvmeSpec) -> Result<Vec<Arc<dyn BlockDevice>>, E>,
    ) -> Result<Vec<Arc<dyn BlockDevice>>, E> {
        self.validate().map_err(|e| RegistryError::Invalid {
            name: self.name.clone(),
            why: e.to_string(),
        })?;
        let dev: Arc<dyn BlockDevice> = match &self.kind {
            BdevKind::Malloc { size, block_size } => {
                MallocBdev::new(&self.name, size / u64::from(*block_size), *block_size)?
            }
            BdevKind::Uring {
                path,
                size,
                block_size,
                queue_depth,
            } => UringBdev::open(&self.name, path, *size, *block_size, *queue_depth)?,
            BdevKind::Nvme(n) => return nvme(&self.name, n),
        };
        Ok(vec![dev])
    }
}

#[cfg(test)]
mod tests;
