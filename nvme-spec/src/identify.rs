//! Identify: CNS values, the Identify command fields, Identify Namespace, the Namespace
//! Identification Descriptor list and NSID lists.

use bitflags::bitflags;
use core::mem::offset_of;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::command::Command;
use super::opcode::AdminOpcode;

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_LEN: usize = 4096;

open_enum! {
    /// Controller or Namespace Structure (CNS, Identify CDW10 bits 7:0; NVMe base 2.0 figure 273).
    pub struct Cns(u8) {
        /// Identify Namespace (NVM command set).
        NAMESPACE = 0x00,
        /// Identify Controller.
        CONTROLLER = 0x01,
        /// Active Namespace ID list.
        ACTIVE_NS_LIST = 0x02,
        /// Namespace Identification Descriptor list.
        NS_ID_DESCRIPTORS = 0x03,
        /// NVM Set list.
        NVM_SET_LIST = 0x04,
        /// I/O Command Set specific Identify Namespace.
        CSI_NAMESPACE = 0x05,
        /// I/O Command Set specific Identify Controller.
        CSI_CONTROLLER = 0x06,
        /// Active Namespace ID list for an I/O command set.
        CSI_ACTIVE_NS_LIST = 0x07,
        /// I/O Command Set Independent Identify Namespace.
        CSI_INDEPENDENT_NAMESPACE = 0x08,
        /// Allocated Namespace ID list.
        ALLOCATED_NS_LIST = 0x10,
        /// Identify Namespace for an allocated NSID.
        ALLOCATED_NAMESPACE = 0x11,
        /// Controller list attached to an NSID.
        NS_CONTROLLER_LIST = 0x12,
        /// Controller list of the subsystem.
        CONTROLLER_LIST = 0x13,
        /// Primary Controller Capabilities.
        PRIMARY_CONTROLLER_CAPS = 0x14,
        /// Secondary Controller list.
        SECONDARY_CONTROLLER_LIST = 0x15,
        /// Namespace Granularity list.
        NS_GRANULARITY_LIST = 0x16,
        /// UUID list.
        UUID_LIST = 0x17,
        /// Domain list.
        DOMAIN_LIST = 0x18,
        /// Endurance Group list.
        ENDURANCE_GROUP_LIST = 0x19,
        /// I/O Command Set specific Allocated Namespace ID list.
        CSI_ALLOCATED_NS_LIST = 0x1A,
        /// I/O Command Set specific Identify Namespace for an allocated NSID.
        CSI_ALLOCATED_NAMESPACE = 0x1B,
        /// Identify I/O Command Set data structure.
        IO_COMMAND_SET = 0x1C,
    }
}

open_enum! {
    /// Command Set Identifier (CSI).
    pub struct Csi(u8) {
        /// NVM command set.
        NVM = 0x00,
        /// Key Value command set.
        KEY_VALUE = 0x01,
        /// Zoned Namespace command set.
        ZONED = 0x02,
    }
}

/// Decoded fields of an Identify command (NVMe base 2.0 figures 271–272).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Identify {
    /// Namespace identifier.
    pub nsid: u32,
    /// CNS (CDW10 bits 7:0).
    pub cns: Cns,
    /// Controller Identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// CNS Specific Identifier (CDW11 bits 15:0).
    pub cnssid: u16,
    /// Command Set Identifier (CDW11 bits 31:24).
    pub csi: Csi,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
}

impl Identify {
    /// Decodes an Identify SQE.
    #[must_use]
    pub const fn parse(cmd: &Command) -> Self {
        Self {
            nsid: cmd.nsid,
            cns: Cns((cmd.cdw10 & 0xFF) as u8),
            cntid: (cmd.cdw10 >> 16) as u16,
            cnssid: (cmd.cdw11 & 0xFFFF) as u16,
            csi: Csi((cmd.cdw11 >> 24) as u8),
            uuid_index: (cmd.cdw14 & 0x7F) as u8,
        }
    }

    /// Encodes an Identify SQE (the data pointer is left zero).
    #[must_use]
    pub const fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(AdminOpcode::IDENTIFY.0, cid).with_nsid(self.nsid);
        cmd.cdw10 = self.cns.0 as u32 | (self.cntid as u32) << 16;
        cmd.cdw11 = self.cnssid as u32 | (self.csi.0 as u32) << 24;
        cmd.cdw14 = self.uuid_index as u32 & 0x7F;
        cmd
    }
}

/// LBA Format data structure (NVM command set 1.0 figure 98), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LbaFormat {
    /// Metadata Size in bytes per LBA.
    pub ms: u16,
    /// LBA Data Size as a power of two (9 = 512 bytes); 0 = format not supported.
    pub lbads: u8,
    /// Relative Performance (bits 1:0; 0 best).
    pub rp: u8,
}

const _: () = assert!(size_of::<LbaFormat>() == 4);

impl LbaFormat {
    /// A format of `2^lbads`-byte blocks with `ms` metadata bytes and best performance.
    #[must_use]
    pub const fn new(lbads: u8, ms: u16) -> Self {
        Self { ms, lbads, rp: 0 }
    }

    /// Block size in bytes, `None` if LBADS is below 9 (unsupported) or too large.
    #[must_use]
    pub const fn block_size(&self) -> Option<u64> {
        if self.lbads < 9 || self.lbads > 63 {
            None
        } else {
            Some(1 << self.lbads)
        }
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 00h; NVM command set
/// 1.0 figure 97), byte-exact (4096 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespace {
    /// Namespace Size in logical blocks.
    pub nsze: u64,
    /// Namespace Capacity in logical blocks (must be non-zero for the Linux host).
    pub ncap: u64,
    /// Namespace Utilization in logical blocks.
    pub nuse: u64,
    /// Namespace Features ([`NsFeat`]).
    pub nsfeat: u8,
    /// Number of LBA Formats, zero-based.
    pub nlbaf: u8,
    /// Formatted LBA Size: bits 3:0 format index low, bit 4 extended metadata, bits 6:5 index high.
    pub flbas: u8,
    /// Metadata Capabilities.
    pub mc: u8,
    /// End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities: bit 0 shared.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// Deallocate Logical Block Features: bits 2:0 read value after deallocate
    /// (1 = zeroes), bit 3 Write Zeroes DEAC supported, bit 4 guard field is CRC.
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal, zero-based.
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail, zero-based.
    pub nawupf: u16,
    /// Namespace Atomic Compare & Write Unit, zero-based.
    pub nacwu: u16,
    /// Namespace Atomic Boundary Size Normal.
    pub nabsn: u16,
    /// Namespace Atomic Boundary Offset.
    pub nabo: u16,
    /// Namespace Atomic Boundary Size Power Fail.
    pub nabspf: u16,
    /// Namespace Optimal I/O Boundary, logical blocks.
    pub noiob: u16,
    /// NVM Capacity in bytes (128-bit little-endian).
    pub nvmcap: [u8; 16],
    /// Namespace Preferred Write Granularity, zero-based.
    pub npwg: u16,
    /// Namespace Preferred Write Alignment, zero-based.
    pub npwa: u16,
    /// Namespace Preferred Deallocate Granularity, zero-based.
    pub npdg: u16,
    /// Namespace Preferred Deallocate Alignment, zero-based.
    pub npda: u16,
    /// Namespace Optimal Write Size, zero-based.
    pub nows: u16,
    /// Maximum Single Source Range Length (Copy).
    pub mssrl: u16,
    /// Maximum Copy Length.
    pub mcl: u32,
    /// Maximum Source Range Count, zero-based.
    pub msrc: u8,
    /// Reserved.
    pub reserved81: u8,
    /// Number of Unique Capability LBA Formats.
    pub nulbaf: u8,
    /// Reserved.
    pub reserved83: [u8; 9],
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Reserved.
    pub reserved96: [u8; 3],
    /// Namespace Attributes: bit 0 write protected.
    pub nsattr: u8,
    /// NVM Set Identifier.
    pub nvmsetid: u16,
    /// Endurance Group Identifier.
    pub endgid: u16,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA Formats 0–63.
    pub lbaf: [LbaFormat; 64],
    /// Vendor specific.
    pub vs: [u8; 3712],
}

const _: () = assert!(size_of::<IdentifyNamespace>() == IDENTIFY_DATA_LEN);
const _: () = assert!(offset_of!(IdentifyNamespace, nsfeat) == 24);
const _: () = assert!(offset_of!(IdentifyNamespace, dlfeat) == 33);
const _: () = assert!(offset_of!(IdentifyNamespace, nvmcap) == 48);
const _: () = assert!(offset_of!(IdentifyNamespace, mcl) == 76);
const _: () = assert!(offset_of!(IdentifyNamespace, anagrpid) == 92);
const _: () = assert!(offset_of!(IdentifyNamespace, nsattr) == 99);
const _: () = assert!(offset_of!(IdentifyNamespace, nguid) == 104);
const _: () = assert!(offset_of!(IdentifyNamespace, eui64) == 120);
const _: () = assert!(offset_of!(IdentifyNamespace, lbaf) == 128);
const _: () = assert!(offset_of!(IdentifyNamespace, vs) == 384);

impl IdentifyNamespace {
    /// An all-zero structure (what an inactive NSID returns).
    #[must_use]
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// Index of the formatted LBA format (FLBAS bits 3:0 and 6:5).
    #[must_use]
    pub const fn flbas_index(&self) -> usize {
        (self.flbas & 0x0F) as usize | ((((self.flbas >> 5) & 0x3) as usize) << 4)
    }

    /// Sets the formatted LBA format index (0–63), keeping FLBAS bit 4.
    pub const fn set_flbas_index(&mut self, index: usize) {
        let low = (index & 0x0F) as u8;
        let high = ((index >> 4) & 0x3) as u8;
        self.flbas = (self.flbas & 0x10) | low | (high << 5);
    }

    /// The formatted LBA format.
    #[must_use]
    pub const fn lba_format(&self) -> LbaFormat {
        self.lbaf[self.flbas_index()]
    }

    /// NVMCAP as a number.
    #[must_use]
    pub fn nvmcap(&self) -> u128 {
        u128::from_le_bytes(self.nvmcap)
    }

    /// Sets NVMCAP.
    pub fn set_nvmcap(&mut self, bytes: u128) {
        self.nvmcap = bytes.to_le_bytes();
    }
}

bitflags! {
    /// NSFEAT: namespace features.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct NsFeat: u8 {
        /// Thin provisioning.
        const THIN_PROVISIONING = 1 << 0;
        /// NAWUN, NAWUPF, NACWU are valid.
        const ATOMICS = 1 << 1;
        /// Deallocated or Unwritten Logical Block error supported.
        const DAE = 1 << 2;
        /// NGUID and EUI64 are never reused.
        const UIDREUSE = 1 << 3;
        /// NPWG, NPWA, NPDG, NPDA and NOWS are valid.
        const OPTPERF = 1 << 4;
    }
}

open_enum! {
    /// Namespace Identifier Type (NIDT) of a descriptor (NVMe base 2.0 figure 280).
    pub struct NsIdType(u8) {
        /// IEEE Extended Unique Identifier, 8 bytes.
        EUI64 = 0x01,
        /// Namespace Globally Unique Identifier, 16 bytes.
        NGUID = 0x02,
        /// Namespace UUID, 16 bytes.
        UUID = 0x03,
        /// Command Set Identifier, 1 byte.
        CSI = 0x04,
    }
}

impl NsIdType {
    /// The NIDL this type requires, `None` for unknown types.
    #[must_use]
    pub const fn length(self) -> Option<usize> {
        match self {
            Self::EUI64 => Some(8),
            Self::NGUID | Self::UUID => Some(16),
            Self::CSI => Some(1),
            _ => None,
        }
    }
}

/// A namespace's identifiers, for the Namespace Identification Descriptor list (CNS 03h).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NsIdDescriptors {
    /// EUI-64.
    pub eui64: Option<[u8; 8]>,
    /// NGUID.
    pub nguid: Option<[u8; 16]>,
    /// UUID.
    pub uuid: Option<[u8; 16]>,
    /// Command set (the Linux host expects it once NVMe 2.0 is reported).
    pub csi: Option<Csi>,
}

impl NsIdDescriptors {
    /// Writes the descriptor list into `buf`, zero-filling the rest (the zero header that
    /// follows the last descriptor ends the list). Returns the bytes used.
    pub fn write_to(&self, buf: &mut [u8; IDENTIFY_DATA_LEN]) -> usize {
        buf.fill(0);
        let mut at = 0;
        let mut put = |nidt: NsIdType, id: &[u8]| {
            buf[at] = nidt.0;
            buf[at + 1] = id.len() as u8;
            buf[at + 4..at + 4 + id.len()].copy_from_slice(id);
            at += 4 + id.len();
        };
        if let Some(eui64) = &self.eui64 {
            put(NsIdType::EUI64, eui64);
        }
        if let Some(nguid) = &self.nguid {
            put(NsIdType::NGUID, nguid);
        }
        if let Some(uuid) = &self.uuid {
            put(NsIdType::UUID, uuid);
        }
        if let Some(csi) = self.csi {
            put(NsIdType::CSI, &[csi.0]);
        }
        at
    }

    /// Iterates over the descriptors of a list: `(NIDT, NID)` pairs, stopping at a zero
    /// NIDT or a descriptor that overruns the buffer.
    pub fn iter(buf: &[u8]) -> impl Iterator<Item = (NsIdType, &[u8])> {
        let mut at = 0;
        core::iter::from_fn(move || {
            let header = buf.get(at..at + 4)?;
            if header[0] == 0 {
                return None;
            }
            let len = usize::from(header[1]);
            let nid = buf.get(at + 4..at + 4 + len)?;
            at += 4 + len;
            Some((NsIdType(header[0]), nid))
        })
    }
}

/// A list of up to 1024 NSIDs, zero-terminated (Active Namespace ID list, Changed
/// Namespace List log page).
pub type NsidList = [u32; 1024];

/// Builds the Active Namespace ID list for Identify CNS 02h: the NSIDs from
/// `active_sorted` (ascending) that are greater than `after` (the command's NSID), at most
/// 1024 of them, zero-terminated.
#[must_use]
pub fn active_ns_list(active_sorted: &[u32], after: u32) -> NsidList {
    let mut list = [0u32; 1024];
    let start = active_sorted.partition_point(|&nsid| nsid <= after);
    for (slot, &nsid) in list.iter_mut().zip(&active_sorted[start..]) {
        *slot = nsid;
    }
    list
}

#[cfg(test)]
mod tests;
