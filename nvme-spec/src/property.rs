//! Controller properties (NVMe base 2.0 section 3.1.3): their offsets, as a Fabrics
//! Property Get/Set names them, and the fields of CAP, VS, CC, CSTS and AQA. A PCIe
//! controller maps the same registers at the same offsets in BAR0 (see
//! [`crate::register`]).

use super::fabrics::PropertySize;

open_enum! {
    /// Property offset (OFST of Property Get/Set).
    pub struct PropertyOffset(u32) {
        /// Controller Capabilities, 8 bytes.
        CAP = 0x00,
        /// Version, 4 bytes.
        VS = 0x08,
        /// Interrupt Mask Set (PCIe only; reserved on fabrics).
        INTMS = 0x0C,
        /// Interrupt Mask Clear (PCIe only; reserved on fabrics).
        INTMC = 0x10,
        /// Controller Configuration, 4 bytes.
        CC = 0x14,
        /// Controller Status, 4 bytes.
        CSTS = 0x1C,
        /// NVM Subsystem Reset, 4 bytes.
        NSSR = 0x20,
        /// Admin Queue Attributes (PCIe only).
        AQA = 0x24,
        /// Admin Submission Queue Base Address (PCIe only).
        ASQ = 0x28,
        /// Admin Completion Queue Base Address (PCIe only).
        ACQ = 0x30,
    }
}

impl PropertyOffset {
    /// The property's size, for the properties a fabrics controller defines
    /// (CAP, VS, CC, CSTS, NSSR); `None` for the others.
    #[must_use]
    pub const fn fabrics_size(self) -> Option<PropertySize> {
        match self {
            Self::CAP => Some(PropertySize::Eight),
            Self::VS | Self::CC | Self::CSTS | Self::NSSR => Some(PropertySize::Four),
            _ => None,
        }
    }
}

/// The value written to NSSR to reset the NVM subsystem ("NVMe" in ASCII).
pub const NSSR_RESET_VALUE: u32 = 0x4E56_4D65;

/// Controller Capabilities (CAP, offset 0x00, 8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Cap(pub u64);

bit_fields! {
    Cap: u64 {
        /// Maximum Queue Entries Supported, zero-based.
        mqes / set_mqes: u16 @ 0, 16;
        /// Contiguous Queues Required.
        cqr / set_cqr: bool @ 16, 1;
        /// Arbitration Mechanism Supported: bit 0 WRR with urgent, bit 1 vendor specific.
        ams / set_ams: u8 @ 17, 2;
        /// Timeout: worst-case time to CSTS.RDY change, in 500 ms units.
        to / set_to: u8 @ 24, 8;
        /// Doorbell Stride (PCIe).
        dstrd / set_dstrd: u8 @ 32, 4;
        /// NVM Subsystem Reset Supported.
        nssrs / set_nssrs: bool @ 36, 1;
        /// Command Sets Supported, see `Cap::CSS_*`.
        css / set_css: u8 @ 37, 8;
        /// Boot Partition Support.
        bps / set_bps: bool @ 45, 1;
        /// Controller Power Scope.
        cps / set_cps: u8 @ 46, 2;
        /// Memory Page Size Minimum: 2^(12 + MPSMIN) bytes.
        mpsmin / set_mpsmin: u8 @ 48, 4;
        /// Memory Page Size Maximum: 2^(12 + MPSMAX) bytes.
        mpsmax / set_mpsmax: u8 @ 52, 4;
        /// Persistent Memory Region Supported.
        pmrs / set_pmrs: bool @ 56, 1;
        /// Controller Memory Buffer Supported.
        cmbs / set_cmbs: bool @ 57, 1;
        /// NVM Subsystem Shutdown Supported.
        nsss / set_nsss: bool @ 58, 1;
        /// Controller Ready Modes Supported: bit 0 with media, bit 1 independent of media.
        crms / set_crms: u8 @ 59, 2;
    }
}

impl Cap {
    /// CSS bit 0: NVM command set.
    pub const CSS_NVM: u8 = 1 << 0;
    /// CSS bit 6: one or more I/O command sets (selected with CC.CSS = 110b).
    pub const CSS_IO_COMMAND_SETS: u8 = 1 << 6;
    /// CSS bit 7: no I/O command set (admin only, e.g. a discovery controller).
    pub const CSS_NO_IO: u8 = 1 << 7;
}

/// Version (VS, offset 0x08).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct Vs(pub u32);

bit_fields! {
    Vs: u32 {
        /// Tertiary version.
        ter / set_ter: u8 @ 0, 8;
        /// Minor version.
        mnr / set_mnr: u8 @ 8, 8;
        /// Major version.
        mjr / set_mjr: u16 @ 16, 16;
    }
}

impl Vs {
    /// NVMe 1.3.
    pub const V1_3: Self = Self::new(1, 3, 0);
    /// NVMe 1.4.
    pub const V1_4: Self = Self::new(1, 4, 0);
    /// NVMe 2.0.
    pub const V2_0: Self = Self::new(2, 0, 0);

    /// A version number.
    #[must_use]
    pub const fn new(mjr: u16, mnr: u8, ter: u8) -> Self {
        Self((mjr as u32) << 16 | (mnr as u32) << 8 | ter as u32)
    }
}

/// Controller Configuration (CC, offset 0x14).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Cc(pub u32);

bit_fields! {
    Cc: u32 {
        /// Enable.
        en / set_en: bool @ 0, 1;
        /// I/O Command Set Selected, see `Cc::CSS_*`.
        css / set_css: u8 @ 4, 3;
        /// Memory Page Size: 2^(12 + MPS) bytes.
        mps / set_mps: u8 @ 7, 4;
        /// Arbitration Mechanism Selected: 0 round robin, 1 WRR with urgent, 7 vendor.
        ams / set_ams: u8 @ 11, 3;
        /// Shutdown Notification, see `Cc::SHN_*`.
        shn / set_shn: u8 @ 14, 2;
        /// I/O Submission Queue Entry Size: 2^n bytes (6 for 64 bytes).
        iosqes / set_iosqes: u8 @ 16, 4;
        /// I/O Completion Queue Entry Size: 2^n bytes (4 for 16 bytes).
        iocqes / set_iocqes: u8 @ 20, 4;
        /// Controller Ready Independent of Media Enable.
        crime / set_crime: bool @ 24, 1;
    }
}

impl Cc {
    /// CSS: NVM command set.
    pub const CSS_NVM: u8 = 0b000;
    /// CSS: all supported I/O command sets.
    pub const CSS_ALL_IO: u8 = 0b110;
    /// CSS: admin command set only.
    pub const CSS_ADMIN_ONLY: u8 = 0b111;
    /// SHN: no notification.
    pub const SHN_NONE: u8 = 0b00;
    /// SHN: normal shutdown.
    pub const SHN_NORMAL: u8 = 0b01;
    /// SHN: abrupt shutdown.
    pub const SHN_ABRUPT: u8 = 0b10;
}

/// Controller Status (CSTS, offset 0x1C).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Csts(pub u32);

bit_fields! {
    Csts: u32 {
        /// Ready.
        rdy / set_rdy: bool @ 0, 1;
        /// Controller Fatal Status.
        cfs / set_cfs: bool @ 1, 1;
        /// Shutdown Status, see `Csts::SHST_*`.
        shst / set_shst: u8 @ 2, 2;
        /// NVM Subsystem Reset Occurred.
        nssro / set_nssro: bool @ 4, 1;
        /// Processing Paused.
        pp / set_pp: bool @ 5, 1;
        /// Shutdown Type: set when an NVM subsystem shutdown is reported.
        st / set_st: bool @ 6, 1;
    }
}

impl Csts {
    /// SHST: normal operation.
    pub const SHST_NORMAL: u8 = 0b00;
    /// SHST: shutdown processing occurring.
    pub const SHST_OCCURRING: u8 = 0b01;
    /// SHST: shutdown processing complete.
    pub const SHST_COMPLETE: u8 = 0b10;
}

/// Admin Queue Attributes (AQA, offset 0x24; PCIe only).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Aqa(pub u32);

bit_fields! {
    Aqa: u32 {
        /// Admin Submission Queue Size, zero-based.
        asqs / set_asqs: u16 @ 0, 12;
        /// Admin Completion Queue Size, zero-based.
        acqs / set_acqs: u16 @ 16, 12;
    }
}

#[cfg(test)]
mod tests;
