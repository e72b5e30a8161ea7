//! The 16-byte completion queue entry.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::status::Status;

/// A completion queue entry (NVMe base 2.0 figure 89), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Completion {
    /// Dword 0: command specific.
    pub dw0: u32,
    /// Dword 1: command specific.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status field: phase tag (bit 0), SC (8:1), SCT (11:9), CRD (13:12), More (14), DNR (15).
    pub status: u16,
}

const _: () = assert!(size_of::<Completion>() == 16);

impl Completion {
    /// A completion for `cid` with the given status, phase tag 0 and zero dwords.
    #[must_use]
    pub const fn new(cid: u16, status: Status) -> Self {
        Self {
            dw0: 0,
            dw1: 0,
            sqhd: 0,
            sqid: 0,
            cid,
            status: status.to_cqe_status(false),
        }
    }

    /// A successful completion for `cid`.
    #[must_use]
    pub const fn success(cid: u16) -> Self {
        Self::new(cid, Status::SUCCESS)
    }

    /// Builder: sets dword 0.
    #[must_use]
    pub const fn with_dw0(mut self, dw0: u32) -> Self {
        self.dw0 = dw0;
        self
    }

    /// Builder: sets dword 1.
    #[must_use]
    pub const fn with_dw1(mut self, dw1: u32) -> Self {
        self.dw1 = dw1;
        self
    }

    /// Builder: sets dwords 0 and 1 from a 64-bit value (low half in dword 0), as Property
    /// Get returns an 8-byte property.
    #[must_use]
    pub const fn with_qword(mut self, value: u64) -> Self {
        self.dw0 = value as u32;
        self.dw1 = (value >> 32) as u32;
        self
    }

    /// Builder: sets SQ head pointer and SQ identifier.
    #[must_use]
    pub const fn with_sq(mut self, sqid: u16, sqhd: u16) -> Self {
        self.sqid = sqid;
        self.sqhd = sqhd;
        self
    }

    /// The status, without the phase tag.
    #[must_use]
    pub const fn status(&self) -> Status {
        Status::from_cqe_status(self.status)
    }

    /// Replaces the status, keeping the phase tag.
    pub const fn set_status(&mut self, status: Status) {
        self.status = status.to_cqe_status(self.phase());
    }

    /// Phase tag (status bit 0).
    #[must_use]
    pub const fn phase(&self) -> bool {
        self.status & 1 != 0
    }

    /// Sets the phase tag.
    pub const fn set_phase(&mut self, phase: bool) {
        self.status = (self.status & !1) | phase as u16;
    }

    /// Dwords 0 and 1 as one 64-bit value (dword 0 is the low half).
    #[must_use]
    pub const fn qword(&self) -> u64 {
        self.dw0 as u64 | (self.dw1 as u64) << 32
    }
}

#[cfg(test)]
mod tests;
