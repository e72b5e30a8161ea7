//! Log pages: identifiers, the Get Log Page command fields and the log page structures a
//! target returns (discovery log: see [`discovery`](super::discovery)).

use bitflags::bitflags;
use core::mem::offset_of;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::command::Command;
use super::identify::Csi;
use super::opcode::AdminOpcode;

open_enum! {
    /// Log Page Identifier (LID; NVMe base 2.0 figure 202).
    pub struct Lid(u8) {
        /// Supported Log Pages.
        SUPPORTED_LOG_PAGES = 0x00,
        /// Error Information.
        ERROR = 0x01,
        /// SMART / Health Information.
        SMART = 0x02,
        /// Firmware Slot Information.
        FIRMWARE_SLOT = 0x03,
        /// Changed Namespace List.
        CHANGED_NS = 0x04,
        /// Commands Supported and Effects.
        CMD_EFFECTS = 0x05,
        /// Device Self-test.
        DEVICE_SELF_TEST = 0x06,
        /// Telemetry Host-Initiated.
        TELEMETRY_HOST = 0x07,
        /// Telemetry Controller-Initiated.
        TELEMETRY_CONTROLLER = 0x08,
        /// Endurance Group Information.
        ENDURANCE_GROUP = 0x09,
        /// Predictable Latency Per NVM Set.
        PREDICTABLE_LATENCY = 0x0A,
        /// Predictable Latency Event Aggregate.
        PREDICTABLE_LATENCY_AGGREGATE = 0x0B,
        /// Asymmetric Namespace Access.
        ANA = 0x0C,
        /// Persistent Event Log.
        PERSISTENT_EVENT = 0x0D,
        /// Endurance Group Event Aggregate.
        ENDURANCE_GROUP_AGGREGATE = 0x0F,
        /// Media Unit Status.
        MEDIA_UNIT_STATUS = 0x10,
        /// Supported Capacity Configuration List.
        CAPACITY_CONFIG_LIST = 0x11,
        /// Feature Identifiers Supported and Effects.
        FEATURE_EFFECTS = 0x12,
        /// NVMe-MI Commands Supported and Effects.
        MI_COMMAND_EFFECTS = 0x13,
        /// Command and Feature Lockdown.
        LOCKDOWN = 0x14,
        /// Boot Partition.
        BOOT_PARTITION = 0x15,
        /// Rotational Media Information.
        ROTATIONAL_MEDIA = 0x16,
        /// Discovery (discovery controllers only).
        DISCOVERY = 0x70,
        /// Reservation Notification.
        RESERVATION_NOTIFICATION = 0x80,
        /// Sanitize Status.
        SANITIZE_STATUS = 0x81,
    }
}

/// Decoded fields of a Get Log Page command (NVMe base 2.0 figures 197–200).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GetLogPage {
    /// Namespace identifier.
    pub nsid: u32,
    /// Log Page Identifier (CDW10 bits 7:0).
    pub lid: Lid,
    /// Log Specific Parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain Asynchronous Event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords, zero-based (NUMDL CDW10 bits 31:16, NUMDU CDW11 bits 15:0).
    pub numd: u32,
    /// Log Specific Identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Log Page Offset in bytes, or in entries with `ot` (CDW12 | CDW13 << 32).
    pub lpo: u64,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
    /// Offset Type: `lpo` is an index of entries rather than bytes (CDW14 bit 23).
    pub ot: bool,
    /// Command Set Identifier (CDW14 bits 31:24).
    pub csi: Csi,
}

impl GetLogPage {
    /// Decodes a Get Log Page SQE.
    #[must_use]
    pub const fn parse(cmd: &Command) -> Self {
        Self {
            nsid: cmd.nsid,
            lid: Lid((cmd.cdw10 & 0xFF) as u8),
            lsp: ((cmd.cdw10 >> 8) & 0x7F) as u8,
            rae: cmd.cdw10 & (1 << 15) != 0,
            numd: (cmd.cdw10 >> 16) | (cmd.cdw11 & 0xFFFF) << 16,
            lsi: (cmd.cdw11 >> 16) as u16,
            lpo: cmd.cdw12 as u64 | (cmd.cdw13 as u64) << 32,
            uuid_index: (cmd.cdw14 & 0x7F) as u8,
            ot: cmd.cdw14 & (1 << 23) != 0,
            csi: Csi((cmd.cdw14 >> 24) as u8),
        }
    }

    /// A request for `len` bytes (rounded down to dwords, at least one) of log `lid`.
    #[must_use]
    pub const fn new(lid: Lid, nsid: u32, len: u32, lpo: u64) -> Self {
        let dwords = if len < 4 { 1 } else { len / 4 };
        Self {
            nsid,
            lid,
            lsp: 0,
            rae: false,
            numd: dwords - 1,
            lsi: 0,
            lpo,
            uuid_index: 0,
            ot: false,
            csi: Csi::NVM,
        }
    }

    /// Encodes a Get Log Page SQE (the data pointer is left zero).
    #[must_use]
    pub const fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, cid).with_nsid(self.nsid);
        cmd.cdw10 = self.lid.0 as u32
            | ((self.lsp & 0x7F) as u32) << 8
            | (self.rae as u32) << 15
            | (self.numd & 0xFFFF) << 16;
        cmd.cdw11 = (self.numd >> 16) | (self.lsi as u32) << 16;
        cmd.cdw12 = self.lpo as u32;
        cmd.cdw13 = (self.lpo >> 32) as u32;
        cmd.cdw14 =
            (self.uuid_index & 0x7F) as u32 | (self.ot as u32) << 23 | (self.csi.0 as u32) << 24;
        cmd
    }

    /// Number of bytes requested (`(numd + 1) * 4`).
    #[must_use]
    pub const fn num_bytes(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }
}

/// Error Information log entry (LID 01h; NVMe base 2.0 figure 205), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ErrorInformationEntry {
    /// Error Count: unique, incrementing; 0 = entry invalid.
    pub error_count: u64,
    /// Submission Queue ID.
    pub sqid: u16,
    /// Command ID.
    pub cid: u16,
    /// Status Field: CQE status bits 15:1 in bits 15:1, phase tag in bit 0.
    pub status: u16,
    /// Parameter Error Location: byte in bits 7:0, bit in bits 10:8; 0xFFFF = not applicable.
    pub parameter_error_location: u16,
    /// LBA of the first failing block.
    pub lba: u64,
    /// Namespace.
    pub nsid: u32,
    /// Vendor Specific Information Available (log page ID, 0 = none).
    pub vendor_specific: u8,
    /// Transport Type (see [`TransportType`](super::TransportType)).
    pub trtype: u8,
    /// Reserved.
    pub reserved30: [u8; 2],
    /// Command Specific Information.
    pub command_specific: u64,
    /// Transport Type Specific Information.
    pub transport_specific: u16,
    /// Reserved.
    pub reserved42: [u8; 22],
}

const _: () = assert!(size_of::<ErrorInformationEntry>() == 64);
const _: () = assert!(offset_of!(ErrorInformationEntry, nsid) == 24);
const _: () = assert!(offset_of!(ErrorInformationEntry, command_specific) == 32);

/// SMART / Health Information log page (LID 02h; NVMe base 2.0 figure 207), byte-exact.
///
/// 128-bit counters and the unaligned composite temperature are byte arrays; use the
/// accessor methods.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SmartLog {
    /// Critical Warning ([`CriticalWarning`]).
    pub critical_warning: u8,
    /// Composite Temperature in kelvin (little-endian u16 at byte 1).
    pub composite_temperature: [u8; 2],
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub available_spare_threshold: u8,
    /// Percentage Used.
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary.
    pub endurance_group_critical_warning: u8,
    /// Reserved.
    pub reserved7: [u8; 25],
    /// Data Units Read, thousands of 512-byte units.
    pub data_units_read: [u8; 16],
    /// Data Units Written, thousands of 512-byte units.
    pub data_units_written: [u8; 16],
    /// Host Read Commands.
    pub host_read_commands: [u8; 16],
    /// Host Write Commands.
    pub host_write_commands: [u8; 16],
    /// Controller Busy Time, minutes.
    pub controller_busy_time: [u8; 16],
    /// Power Cycles.
    pub power_cycles: [u8; 16],
    /// Power On Hours.
    pub power_on_hours: [u8; 16],
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: [u8; 16],
    /// Media and Data Integrity Errors.
    pub media_errors: [u8; 16],
    /// Number of Error Information Log Entries.
    pub error_log_entries: [u8; 16],
    /// Warning Composite Temperature Time, minutes.
    pub warning_temperature_time: u32,
    /// Critical Composite Temperature Time, minutes.
    pub critical_temperature_time: u32,
    /// Temperature Sensors 1–8, kelvin.
    pub temperature_sensors: [u16; 8],
    /// Thermal Management Temperature 1 Transition Count.
    pub thermal_transition_count: [u32; 2],
    /// Total Time For Thermal Management Temperature 1 and 2, seconds.
    pub thermal_total_time: [u32; 2],
    /// Reserved.
    pub reserved232: [u8; 280],
}

const _: () = assert!(size_of::<SmartLog>() == 512);
const _: () = assert!(offset_of!(SmartLog, data_units_read) == 32);
const _: () = assert!(offset_of!(SmartLog, error_log_entries) == 176);
const _: () = assert!(offset_of!(SmartLog, warning_temperature_time) == 192);
const _: () = assert!(offset_of!(SmartLog, temperature_sensors) == 200);
const _: () = assert!(offset_of!(SmartLog, thermal_total_time) == 224);

macro_rules! u128_accessors {
    ($($field:ident / $set:ident;)*) => {
        impl SmartLog {
            $(
                #[doc = concat!("`", stringify!($field), "` as a number.")]
                #[must_use]
                pub const fn $field(&self) -> u128 {
                    u128::from_le_bytes(self.$field)
                }

                #[doc = concat!("Sets `", stringify!($field), "`.")]
                pub const fn $set(&mut self, value: u128) {
                    self.$field = value.to_le_bytes();
                }
            )*
        }
    };
}

u128_accessors! {
    data_units_read / set_data_units_read;
    data_units_written / set_data_units_written;
    host_read_commands / set_host_read_commands;
    host_write_commands / set_host_write_commands;
    controller_busy_time / set_controller_busy_time;
    power_cycles / set_power_cycles;
    power_on_hours / set_power_on_hours;
    unsafe_shutdowns / set_unsafe_shutdowns;
    media_errors / set_media_errors;
    error_log_entries / set_error_log_entries;
}

impl SmartLog {
    /// An all-zero log page.
    #[must_use]
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// Composite temperature in kelvin.
    #[must_use]
    pub const fn composite_temperature(&self) -> u16 {
        u16::from_le_bytes(self.composite_temperature)
    }

    /// Sets the composite temperature in kelvin.
    pub const fn set_composite_temperature(&mut self, kelvin: u16) {
        self.composite_temperature = kelvin.to_le_bytes();
    }
}

bitflags! {
    /// SMART critical warning bits.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct CriticalWarning: u8 {
        /// Available spare below threshold.
        const SPARE = 1 << 0;
        /// Temperature outside thresholds.
        const TEMPERATURE = 1 << 1;
        /// Reliability degraded.
        const RELIABILITY = 1 << 2;
        /// Media placed in read-only mode.
        const READ_ONLY = 1 << 3;
        /// Volatile memory backup failed.
        const VOLATILE_BACKUP = 1 << 4;
        /// Persistent memory region read-only.
        const PMR_READ_ONLY = 1 << 5;
    }
}

/// Firmware Slot Information log page (LID 03h; NVMe base 2.0 figure 208), byte-exact.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: bits 2:0 active slot, bits 6:4 slot activated at next reset.
    pub afi: u8,
    /// Reserved.
    pub reserved1: [u8; 7],
    /// Firmware Revision for slots 1–7, ASCII, space padded.
    pub frs: [[u8; 8]; 7],
    /// Reserved.
    pub reserved64: [u8; 448],
}

const _: () = assert!(size_of::<FirmwareSlotLog>() == 512);

/// The Changed Namespace List log page (LID 04h) is an [`NsidList`](super::NsidList); its
/// first entry is this value when more than 1024 namespaces changed.
pub const CHANGED_NS_LIST_OVERFLOW: u32 = 0xFFFF_FFFF;

/// Commands Supported and Effects log page (LID 05h; NVMe base 2.0 figure 210), byte-exact.
/// Each entry is a [`CommandEffects`] indexed by opcode.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CommandsSupportedEffects {
    /// Admin Command Supported, indexed by admin opcode.
    pub acs: [u32; 256],
    /// I/O Command Supported, indexed by I/O opcode.
    pub iocs: [u32; 256],
    /// Reserved.
    pub reserved2048: [u8; 2048],
}

const _: () = assert!(size_of::<CommandsSupportedEffects>() == 4096);
const _: () = assert!(offset_of!(CommandsSupportedEffects, iocs) == 1024);

impl CommandsSupportedEffects {
    /// An all-zero log page (nothing supported).
    #[must_use]
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }
}

bitflags! {
    /// One Commands Supported and Effects entry (NVMe base 2.0 figure 211).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct CommandEffects: u32 {
        /// Command Supported.
        const CSUPP = 1 << 0;
        /// Logical Block Content Change.
        const LBCC = 1 << 1;
        /// Namespace Capability Change.
        const NCC = 1 << 2;
        /// Namespace Inventory Change.
        const NIC = 1 << 3;
        /// Controller Capability Change.
        const CCC = 1 << 4;
        /// CSE = 001b: no other command for the same namespace may be outstanding.
        const CSE_SINGLE_NS = 1 << 16;
        /// CSE = 010b: no other command for any namespace may be outstanding.
        const CSE_SINGLE = 1 << 17;
        /// UUID Selection Supported.
        const UUID_SELECTION = 1 << 19;
    }
}

open_enum! {
    /// ANA state (NVMe base 2.0 figure 221).
    pub struct AnaState(u8) {
        /// Optimized.
        OPTIMIZED = 0x1,
        /// Non-optimized.
        NON_OPTIMIZED = 0x2,
        /// Inaccessible.
        INACCESSIBLE = 0x3,
        /// Persistent loss.
        PERSISTENT_LOSS = 0x4,
        /// Change.
        CHANGE = 0xF,
    }
}

/// Asymmetric Namespace Access log page header (LID 0Ch; NVMe base 2.0 figure 219).
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AnaLogHeader {
    /// Change Count.
    pub chgcnt: u64,
    /// Number of ANA Group Descriptors that follow.
    pub ngrps: u16,
    /// Reserved.
    pub reserved10: [u8; 6],
}

const _: () = assert!(size_of::<AnaLogHeader>() == 16);

/// ANA Group Descriptor (NVMe base 2.0 figure 220); followed by `nnsids` u32 NSIDs unless
/// LSP bit 0 ("RGO", groups only) was set.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AnaGroupDescriptor {
    /// ANA Group ID.
    pub grpid: u32,
    /// Number of NSID values that follow.
    pub nnsids: u32,
    /// Change Count.
    pub chgcnt: u64,
    /// ANA State ([`AnaState`]) in bits 3:0.
    pub state: u8,
    /// Reserved.
    pub reserved17: [u8; 15],
}

const _: () = assert!(size_of::<AnaGroupDescriptor>() == 32);

#[cfg(test)]
mod tests;
