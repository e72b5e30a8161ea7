//! Identify Controller data structure (CNS 01h; NVMe base 2.0 figure 275).

use bitflags::bitflags;
use core::mem::offset_of;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::nqn::{NqnError, NQN_FIELD_LEN};
use super::text::{copy_padded, read_nul_terminated, write_nul_terminated};

/// Identify Controller data structure, byte-exact (4096 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: u16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// Serial Number, ASCII, space padded.
    pub sn: [u8; 20],
    /// Model Number, ASCII, space padded.
    pub mn: [u8; 40],
    /// Firmware Revision, ASCII, space padded.
    pub fr: [u8; 8],
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI Identifier.
    pub ieee: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities ([`Cmic`]).
    pub cmic: u8,
    /// Maximum Data Transfer Size: 2^MDTS units of CAP.MPSMIN; 0 = no limit.
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version (same encoding as the VS property).
    pub ver: u32,
    /// RTD3 Resume Latency, microseconds.
    pub rtd3r: u32,
    /// RTD3 Entry Latency, microseconds.
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported ([`AsyncEventConfig`](super::AsyncEventConfig) bits 8 and up).
    pub oaes: u32,
    /// Controller Attributes ([`CtrAtt`]).
    pub ctratt: u32,
    /// Read Recovery Levels Supported.
    pub rrls: u16,
    /// Reserved.
    pub reserved102: [u8; 9],
    /// Controller Type: 1 I/O, 2 discovery, 3 administrative.
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// Command Retry Delay Time 1, 100 ms units.
    pub crdt1: u16,
    /// Command Retry Delay Time 2.
    pub crdt2: u16,
    /// Command Retry Delay Time 3.
    pub crdt3: u16,
    /// Reserved.
    pub reserved134: [u8; 119],
    /// NVM Subsystem Report (NVMe-MI).
    pub nvmsr: u8,
    /// VPD Write Cycle Information (NVMe-MI).
    pub vwci: u8,
    /// Management Endpoint Capabilities (NVMe-MI).
    pub mec: u8,
    /// Optional Admin Command Support ([`Oacs`]).
    pub oacs: u16,
    /// Abort Command Limit, zero-based.
    pub acl: u8,
    /// Asynchronous Event Request Limit, zero-based.
    pub aerl: u8,
    /// Firmware Updates: bit 0 slot 1 read-only, bits 3:1 slot count, bit 4 activation without reset.
    pub frmw: u8,
    /// Log Page Attributes ([`Lpa`]).
    pub lpa: u8,
    /// Error Log Page Entries, zero-based.
    pub elpe: u8,
    /// Number of Power States Support, zero-based.
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// Warning Composite Temperature Threshold, kelvin.
    pub wctemp: u16,
    /// Critical Composite Temperature Threshold, kelvin.
    pub cctemp: u16,
    /// Maximum Time for Firmware Activation, 100 ms units.
    pub mtfa: u16,
    /// Host Memory Buffer Preferred Size, 4 KiB units.
    pub hmpre: u32,
    /// Host Memory Buffer Minimum Size, 4 KiB units.
    pub hmmin: u32,
    /// Total NVM Capacity in bytes (128-bit little-endian).
    pub tnvmcap: [u8; 16],
    /// Unallocated NVM Capacity in bytes (128-bit little-endian).
    pub unvmcap: [u8; 16],
    /// Replay Protected Memory Block Support.
    pub rpmbs: u32,
    /// Extended Device Self-test Time, minutes.
    pub edstt: u16,
    /// Device Self-test Options.
    pub dsto: u8,
    /// Firmware Update Granularity, 4 KiB units.
    pub fwug: u8,
    /// Keep Alive Support: granularity in 100 ms units; 0 = not supported.
    pub kas: u16,
    /// Host Controlled Thermal Management Attributes.
    pub hctma: u16,
    /// Minimum Thermal Management Temperature.
    pub mntmt: u16,
    /// Maximum Thermal Management Temperature.
    pub mxtmt: u16,
    /// Sanitize Capabilities.
    pub sanicap: u32,
    /// Host Memory Buffer Minimum Descriptor Entry Size.
    pub hmminds: u32,
    /// Host Memory Maximum Descriptors Entries.
    pub hmmaxd: u16,
    /// NVM Set Identifier Maximum.
    pub nsetidmax: u16,
    /// Endurance Group Identifier Maximum.
    pub endgidmax: u16,
    /// ANA Transition Time, seconds.
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: u32,
    /// Persistent Event Log Size, 64 KiB units.
    pub pels: u32,
    /// Domain Identifier.
    pub domainid: u16,
    /// Reserved.
    pub reserved358: [u8; 10],
    /// Max Endurance Group Capacity (128-bit little-endian).
    pub megcap: [u8; 16],
    /// Reserved.
    pub reserved384: [u8; 128],
    /// Submission Queue Entry Size: bits 3:0 required, 7:4 maximum (log2 bytes; 0x66).
    pub sqes: u8,
    /// Completion Queue Entry Size: bits 3:0 required, 7:4 maximum (log2 bytes; 0x44).
    pub cqes: u8,
    /// Maximum Outstanding Commands (fabrics).
    pub maxcmd: u16,
    /// Number of Namespaces: largest valid NSID.
    pub nn: u32,
    /// Optional NVM Command Support ([`Oncs`]).
    pub oncs: u16,
    /// Fused Operation Support: bit 0 Compare and Write.
    pub fuses: u16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache ([`Vwc`]).
    pub vwc: u8,
    /// Atomic Write Unit Normal, logical blocks, zero-based.
    pub awun: u16,
    /// Atomic Write Unit Power Fail, logical blocks, zero-based.
    pub awupf: u16,
    /// I/O Command Set Vendor Specific Command Configuration.
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// Atomic Compare & Write Unit, zero-based.
    pub acwu: u16,
    /// Copy Descriptor Formats Supported.
    pub ocfs: u16,
    /// SGL Support ([`Sgls`]).
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// Maximum Domain Namespace Attachments (128-bit little-endian).
    pub maxdna: [u8; 16],
    /// Maximum I/O Controller Namespace Attachments.
    pub maxcna: u32,
    /// Reserved.
    pub reserved564: [u8; 204],
    /// NVM Subsystem NVMe Qualified Name, NUL-terminated UTF-8.
    pub subnqn: [u8; NQN_FIELD_LEN],
    /// Reserved.
    pub reserved1024: [u8; 768],
    /// I/O Queue Command Capsule Supported Size, 16-byte units (at least 4).
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size, 16-byte units (at least 1).
    pub iorcsz: u32,
    /// In Capsule Data Offset, 16-byte units (0 for NVMe/TCP hosts).
    pub icdoff: u16,
    /// Fabrics Controller Attributes: bit 0 static controller model.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors (0 = no limit).
    pub msdbd: u8,
    /// Optional Fabric Commands Support: bit 0 Disconnect.
    pub ofcs: u16,
    /// Reserved.
    pub reserved1806: [u8; 242],
    /// Power State Descriptors 0–31.
    pub psd: [PowerStateDescriptor; 32],
    /// Vendor specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyController>() == 4096);
const _: () = assert!(offset_of!(IdentifyController, ver) == 80);
const _: () = assert!(offset_of!(IdentifyController, cntrltype) == 111);
const _: () = assert!(offset_of!(IdentifyController, crdt1) == 128);
const _: () = assert!(offset_of!(IdentifyController, nvmsr) == 253);
const _: () = assert!(offset_of!(IdentifyController, oacs) == 256);
const _: () = assert!(offset_of!(IdentifyController, tnvmcap) == 280);
const _: () = assert!(offset_of!(IdentifyController, kas) == 320);
const _: () = assert!(offset_of!(IdentifyController, anagrpmax) == 344);
const _: () = assert!(offset_of!(IdentifyController, megcap) == 368);
const _: () = assert!(offset_of!(IdentifyController, sqes) == 512);
const _: () = assert!(offset_of!(IdentifyController, nn) == 516);
const _: () = assert!(offset_of!(IdentifyController, sgls) == 536);
const _: () = assert!(offset_of!(IdentifyController, maxcna) == 560);
const _: () = assert!(offset_of!(IdentifyController, subnqn) == 768);
const _: () = assert!(offset_of!(IdentifyController, ioccsz) == 1792);
const _: () = assert!(offset_of!(IdentifyController, ofcs) == 1804);
const _: () = assert!(offset_of!(IdentifyController, psd) == 2048);
const _: () = assert!(offset_of!(IdentifyController, vs) == 3072);

impl IdentifyController {
    /// An all-zero structure.
    #[must_use]
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// Sets SN (space padded, truncated to 20 bytes).
    pub fn set_sn(&mut self, sn: &str) {
        copy_padded(&mut self.sn, sn, b' ');
    }

    /// Sets MN (space padded, truncated to 40 bytes).
    pub fn set_mn(&mut self, mn: &str) {
        copy_padded(&mut self.mn, mn, b' ');
    }

    /// Sets FR (space padded, truncated to 8 bytes).
    pub fn set_fr(&mut self, fr: &str) {
        copy_padded(&mut self.fr, fr, b' ');
    }

    /// Sets SUBNQN.
    ///
    /// # Errors
    /// The NQN does not fit or holds a NUL.
    pub fn set_subnqn(&mut self, nqn: &str) -> Result<(), NqnError> {
        write_nul_terminated(&mut self.subnqn, nqn)
    }

    /// SUBNQN as text.
    ///
    /// # Errors
    /// The field is not NUL-terminated UTF-8.
    pub fn subnqn_str(&self) -> Result<&str, NqnError> {
        read_nul_terminated(&self.subnqn)
    }

    /// TNVMCAP as a number.
    #[must_use]
    pub fn tnvmcap(&self) -> u128 {
        u128::from_le_bytes(self.tnvmcap)
    }

    /// Sets TNVMCAP.
    pub fn set_tnvmcap(&mut self, bytes: u128) {
        self.tnvmcap = bytes.to_le_bytes();
    }

    /// UNVMCAP as a number.
    #[must_use]
    pub fn unvmcap(&self) -> u128 {
        u128::from_le_bytes(self.unvmcap)
    }

    /// Sets UNVMCAP.
    pub fn set_unvmcap(&mut self, bytes: u128) {
        self.unvmcap = bytes.to_le_bytes();
    }
}

/// Controller types (CNTRLTYPE).
pub mod cntrltype {
    /// Not reported (pre-1.4 controllers).
    pub const NOT_REPORTED: u8 = 0;
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMINISTRATIVE: u8 = 3;
}

/// Power State Descriptor (NVMe base 2.0 figure 276), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PowerStateDescriptor {
    /// Maximum Power, in 0.01 W (or 0.0001 W with MXPS).
    pub mp: u16,
    /// Reserved.
    pub reserved2: u8,
    /// Bit 0 MXPS (max power scale), bit 1 NOPS (non-operational state).
    pub flags: u8,
    /// Entry Latency, microseconds.
    pub enlat: u32,
    /// Exit Latency, microseconds.
    pub exlat: u32,
    /// Relative Read Throughput (bits 4:0).
    pub rrt: u8,
    /// Relative Read Latency (bits 4:0).
    pub rrl: u8,
    /// Relative Write Throughput (bits 4:0).
    pub rwt: u8,
    /// Relative Write Latency (bits 4:0).
    pub rwl: u8,
    /// Idle Power.
    pub idlp: u16,
    /// Idle Power Scale (bits 7:6).
    pub ips: u8,
    /// Reserved.
    pub reserved19: u8,
    /// Active Power.
    pub actp: u16,
    /// Active Power Workload (bits 2:0) and Active Power Scale (bits 7:6).
    pub apw_aps: u8,
    /// Reserved.
    pub reserved23: [u8; 9],
}

const _: () = assert!(size_of::<PowerStateDescriptor>() == 32);
const _: () = assert!(offset_of!(PowerStateDescriptor, idlp) == 16);
const _: () = assert!(offset_of!(PowerStateDescriptor, actp) == 20);

bitflags! {
    /// CMIC: multi-path I/O and namespace sharing capabilities.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Cmic: u8 {
        /// The subsystem may have more than one port.
        const MULTI_PORT = 1 << 0;
        /// The subsystem may have more than one controller.
        const MULTI_CONTROLLER = 1 << 1;
        /// SR-IOV virtual function.
        const SRIOV = 1 << 2;
        /// Asymmetric Namespace Access reporting.
        const ANA = 1 << 3;
    }
}

bitflags! {
    /// OACS: optional admin commands supported.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Oacs: u16 {
        /// Security Send and Security Receive.
        const SECURITY = 1 << 0;
        /// Format NVM.
        const FORMAT_NVM = 1 << 1;
        /// Firmware Commit and Firmware Image Download.
        const FIRMWARE = 1 << 2;
        /// Namespace Management and Attachment.
        const NS_MANAGEMENT = 1 << 3;
        /// Device Self-test.
        const DEVICE_SELF_TEST = 1 << 4;
        /// Directives.
        const DIRECTIVES = 1 << 5;
        /// NVMe-MI Send and Receive.
        const NVME_MI = 1 << 6;
        /// Virtualization Management.
        const VIRTUALIZATION = 1 << 7;
        /// Doorbell Buffer Config.
        const DOORBELL_BUFFER_CONFIG = 1 << 8;
        /// Get LBA Status.
        const GET_LBA_STATUS = 1 << 9;
        /// Command and Feature Lockdown.
        const LOCKDOWN = 1 << 10;
    }
}

bitflags! {
    /// ONCS: optional NVM commands supported.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Oncs: u16 {
        /// Compare.
        const COMPARE = 1 << 0;
        /// Write Uncorrectable.
        const WRITE_UNCORRECTABLE = 1 << 1;
        /// Dataset Management.
        const DSM = 1 << 2;
        /// Write Zeroes.
        const WRITE_ZEROES = 1 << 3;
        /// Save field of Set Features and Select field of Get Features.
        const SAVE_SELECT = 1 << 4;
        /// Reservations.
        const RESERVATIONS = 1 << 5;
        /// Timestamp feature.
        const TIMESTAMP = 1 << 6;
        /// Verify.
        const VERIFY = 1 << 7;
        /// Copy.
        const COPY = 1 << 8;
    }
}

bitflags! {
    /// LPA: log page attributes.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Lpa: u8 {
        /// SMART / Health log per namespace.
        const SMART_PER_NAMESPACE = 1 << 0;
        /// Commands Supported and Effects log page.
        const COMMAND_EFFECTS = 1 << 1;
        /// Extended data for Get Log Page (NUMDU, LPOL/LPOU).
        const EXTENDED_DATA = 1 << 2;
        /// Telemetry logs.
        const TELEMETRY = 1 << 3;
        /// Persistent Event log.
        const PERSISTENT_EVENT = 1 << 4;
        /// Supported Log Pages, Feature Identifiers Supported and Effects, NVMe-MI Commands
        /// Supported and Effects log pages.
        const SUPPORTED_LOG_PAGES = 1 << 5;
        /// Telemetry Data Area 4.
        const TELEMETRY_AREA_4 = 1 << 6;
    }
}

bitflags! {
    /// CTRATT: controller attributes.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct CtrAtt: u32 {
        /// 128-bit Host Identifier.
        const HOST_ID_128 = 1 << 0;
        /// Non-Operational Power State Permissive Mode.
        const NOPSPM = 1 << 1;
        /// NVM Sets.
        const NVM_SETS = 1 << 2;
        /// Read Recovery Levels.
        const READ_RECOVERY_LEVELS = 1 << 3;
        /// Endurance Groups.
        const ENDURANCE_GROUPS = 1 << 4;
        /// Predictable Latency Mode.
        const PREDICTABLE_LATENCY = 1 << 5;
        /// Traffic Based Keep Alive.
        const TBKAS = 1 << 6;
        /// Namespace Granularity.
        const NS_GRANULARITY = 1 << 7;
        /// SQ Associations.
        const SQ_ASSOCIATIONS = 1 << 8;
        /// UUID List.
        const UUID_LIST = 1 << 9;
        /// Multi-Domain Subsystem.
        const MDS = 1 << 10;
        /// Fixed Capacity Management.
        const FIXED_CAPACITY = 1 << 11;
        /// Variable Capacity Management.
        const VARIABLE_CAPACITY = 1 << 12;
        /// Delete Endurance Group.
        const DELETE_ENDURANCE_GROUP = 1 << 13;
        /// Delete NVM Set.
        const DELETE_NVM_SET = 1 << 14;
        /// Extended LBA Formats Supported (Identify CNS 05h for the NVM command set).
        const ELBAS = 1 << 15;
    }
}

bitflags! {
    /// VWC: volatile write cache.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Vwc: u8 {
        /// A volatile write cache is present.
        const PRESENT = 1 << 0;
        /// Flush with NSID FFFFFFFFh is not supported (bits 2:1 = 10b).
        const FLUSH_BROADCAST_UNSUPPORTED = 0b10 << 1;
        /// Flush with NSID FFFFFFFFh is supported (bits 2:1 = 11b).
        const FLUSH_BROADCAST_SUPPORTED = 0b11 << 1;
    }
}

bitflags! {
    /// SGLS: SGL support.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct Sgls: u32 {
        /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
        const SUPPORTED = 0b01;
        /// SGLs supported with dword alignment and granularity (bits 1:0 = 10b).
        const SUPPORTED_DWORD_ALIGNED = 0b10;
        /// Keyed SGL Data Block descriptor.
        const KEYED_DATA_BLOCK = 1 << 2;
        /// SGL Bit Bucket descriptor.
        const BIT_BUCKET = 1 << 16;
        /// Byte aligned contiguous physical buffer of metadata.
        const BYTE_ALIGNED_METADATA = 1 << 17;
        /// SGL length may exceed the data to transfer.
        const LENGTH_LARGER_THAN_DATA = 1 << 18;
        /// MPTR may point to a single SGL descriptor.
        const MPTR_SGL = 1 << 19;
        /// Address field as offset (in-capsule data).
        const OFFSET = 1 << 20;
        /// Transport SGL Data Block descriptor.
        const TRANSPORT_DATA_BLOCK = 1 << 21;
    }
}
