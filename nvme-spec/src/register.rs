//! The controller register map of a PCIe NVMe controller's BAR0 (NVMe base 2.0
//! section 3.1.4; NVMe over PCIe 1.0 section 3.1): the property offsets of
//! [`PropertyOffset`] as byte offsets, and the doorbells after them.
//!
//! The fields of the registers are [`Cap`](crate::Cap), [`Vs`](crate::Vs),
//! [`Cc`](crate::Cc), [`Csts`](crate::Csts) and [`Aqa`](crate::Aqa). The PCIe driver
//! reads and writes these offsets and the emulated controller answers them; neither
//! defines its own.

use crate::property::PropertyOffset;

/// Controller Capabilities, 8 bytes.
pub const CAP: usize = PropertyOffset::CAP.0 as usize;
/// Version, 4 bytes.
pub const VS: usize = PropertyOffset::VS.0 as usize;
/// Interrupt Mask Set, 4 bytes.
pub const INTMS: usize = PropertyOffset::INTMS.0 as usize;
/// Interrupt Mask Clear, 4 bytes.
pub const INTMC: usize = PropertyOffset::INTMC.0 as usize;
/// Controller Configuration, 4 bytes.
pub const CC: usize = PropertyOffset::CC.0 as usize;
/// Controller Status, 4 bytes.
pub const CSTS: usize = PropertyOffset::CSTS.0 as usize;
/// NVM Subsystem Reset, 4 bytes.
pub const NSSR: usize = PropertyOffset::NSSR.0 as usize;
/// Admin Queue Attributes, 4 bytes.
pub const AQA: usize = PropertyOffset::AQA.0 as usize;
/// Admin Submission Queue Base Address, 8 bytes.
pub const ASQ: usize = PropertyOffset::ASQ.0 as usize;
/// Admin Completion Queue Base Address, 8 bytes.
pub const ACQ: usize = PropertyOffset::ACQ.0 as usize;
/// The first doorbell: the admin submission queue's tail.
pub const DOORBELLS: usize = 0x1000;

/// The offset of queue `qid`'s submission queue tail doorbell (`completion` false) or
/// completion queue head doorbell (`completion` true), for doorbell stride
/// [`Cap::dstrd`](crate::Cap::dstrd) `dstrd`.
#[must_use]
pub const fn doorbell(qid: u16, completion: bool, dstrd: u8) -> usize {
    DOORBELLS + ((2 * qid as usize + completion as usize) << (2 + dstrd))
}

/// The doorbell at `offset` for doorbell stride `dstrd`: `(qid, completion)`, the
/// inverse of [`doorbell`]; `None` below the doorbells, between two of them or past
/// queue 65535.
#[must_use]
pub const fn doorbell_at(offset: usize, dstrd: u8) -> Option<(u16, bool)> {
    if offset < DOORBELLS {
        return None;
    }
    let stride = 4usize << dstrd;
    let rel = offset - DOORBELLS;
    if rel % stride != 0 || rel / stride / 2 > u16::MAX as usize {
        return None;
    }
    let idx = rel / stride;
    Some(((idx / 2) as u16, idx % 2 == 1))
}

#[cfg(test)]
mod tests;
