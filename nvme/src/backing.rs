//! The hardware seam: what the driver needs from a PCIe NVMe function.
//!
//! Two implementations: [`crate::vfio::VfioDevice`] (a real device through VFIO) and
//! [`crate::emu::EmulatedController`] (an in-process controller with fault injection).
#![forbid(unsafe_code)]

use std::sync::Arc;

use ferrox_reactor::{BufferPool, EventFd};

use crate::dma::{DmaRegion, PoolMap};
use crate::Error;

/// BAR access, DMA mapping and interrupts of one NVMe controller.
pub trait DeviceBacking: Send + Sync + 'static {
    /// A name for messages (the PCI address).
    fn id(&self) -> &str;
    /// Reads the 32-bit register at `offset` of BAR0.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset` of BAR0.
    fn write32(&self, offset: usize, value: u32);
    /// Reads a 64-bit register as two 32-bit halves (low first).
    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }
    /// Writes a 64-bit register as two 32-bit halves (low first).
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
    /// Allocates zeroed DMA memory of at least `len` bytes, mapped for the device.
    fn alloc_dma(&self, len: usize) -> Result<Arc<DmaRegion>, Error>;
    /// Maps every region of `pool` for the device and returns the translation table.
    fn map_pool(&self, pool: &'static BufferPool) -> Result<PoolMap, Error>;
    /// MSI-X vectors the function offers (0: none, poll only).
    fn max_interrupts(&self) -> u32;
    /// Routes MSI-X vector `i` to `fds[i]` (an eventfd), `None` leaving it unrouted.
    /// Called once, with every vector the driver will use.
    fn set_interrupts(&self, fds: &[Option<&EventFd>]) -> Result<(), Error>;
    /// Gives the device up: interrupts off, DMA unmapped. Called after the controller
    /// was shut down; the backing must not be used afterwards.
    fn release(&self) {}
}
