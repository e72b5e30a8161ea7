//! Dataset Management (deallocate/TRIM) ranges and attributes.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::command::Command;

/// One Dataset Management range (NVM command set 1.0 figure 40), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DsmRange {
    /// Context attributes.
    pub context_attributes: u32,
    /// Length in logical blocks (one-based: 0 means no blocks).
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

const _: () = assert!(size_of::<DsmRange>() == 16);

/// Most ranges one Dataset Management command can carry.
pub const DSM_MAX_RANGES: usize = 256;

bitflags! {
    /// Dataset Management attributes (CDW11).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct DsmAttributes: u32 {
        /// Integral Dataset for Read.
        const IDR = 1 << 0;
        /// Integral Dataset for Write.
        const IDW = 1 << 1;
        /// Attribute – Deallocate.
        const AD = 1 << 2;
    }
}

impl Command {
    /// Dataset Management: number of ranges, one-based (CDW10 bits 7:0 are zero-based).
    #[must_use]
    pub const fn dsm_range_count(&self) -> usize {
        (self.cdw10 & 0xFF) as usize + 1
    }

    /// Dataset Management attributes (CDW11); unknown bits are kept.
    #[must_use]
    pub const fn dsm_attributes(&self) -> DsmAttributes {
        DsmAttributes::from_bits_retain(self.cdw11)
    }
}
