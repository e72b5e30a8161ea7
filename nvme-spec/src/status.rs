//! Completion status: Status Code Type plus Status Code, with the CRD, More and DNR flags.

use core::fmt;

open_enum! {
    /// Status Code Type (CQE status field bits 11:9).
    pub struct StatusCodeType(u8) {
        /// Generic Command Status.
        GENERIC = 0x0,
        /// Command Specific Status.
        COMMAND_SPECIFIC = 0x1,
        /// Media and Data Integrity Errors.
        MEDIA_ERROR = 0x2,
        /// Path Related Status.
        PATH_RELATED = 0x3,
        /// Vendor Specific.
        VENDOR_SPECIFIC = 0x7,
    }
}

/// An NVMe completion status: SCT and SC plus the CRD, More and DNR flags.
///
/// Stored as the CQE status field shifted right by one (the phase tag is not part of a
/// status): SC in bits 7:0, SCT in bits 10:8, CRD in bits 12:11, More in bit 13 and DNR in
/// bit 14. The representation is open: any SCT/SC pair round-trips.
///
/// `==` compares flags too; compare [`Status::code`] to ignore them:
/// `status.code() == Status::LBA_OUT_OF_RANGE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(u16);

const SCT_SHIFT: u16 = 8;
const CRD_SHIFT: u16 = 11;
const MORE_BIT: u16 = 1 << 13;
const DNR_BIT: u16 = 1 << 14;
const CODE_MASK: u16 = 0x07FF;

macro_rules! status_consts {
    ($( $sct:ident { $( $(#[$m:meta])* $name:ident = $sc:literal, )* } )*) => {
        impl Status {
            $($(
                $(#[$m])*
                pub const $name: Self = Self::new(StatusCodeType::$sct, $sc);
            )*)*
        }
    };
}

status_consts! {
    GENERIC {
        /// Successful Completion.
        SUCCESS = 0x00,
        /// Invalid Command Opcode.
        INVALID_OPCODE = 0x01,
        /// Invalid Field in Command.
        INVALID_FIELD = 0x02,
        /// Command ID Conflict.
        CID_CONFLICT = 0x03,
        /// Data Transfer Error.
        DATA_TRANSFER_ERROR = 0x04,
        /// Commands Aborted due to Power Loss Notification.
        ABORTED_POWER_LOSS = 0x05,
        /// Internal Error.
        INTERNAL_ERROR = 0x06,
        /// Command Abort Requested.
        ABORT_REQUESTED = 0x07,
        /// Command Aborted due to SQ Deletion.
        SQ_DELETED = 0x08,
        /// Command Aborted due to Failed Fused Command.
        FAILED_FUSED = 0x09,
        /// Command Aborted due to Missing Fused Command.
        MISSING_FUSED = 0x0A,
        /// Invalid Namespace or Format.
        INVALID_NAMESPACE = 0x0B,
        /// Command Sequence Error.
        COMMAND_SEQUENCE_ERROR = 0x0C,
        /// Invalid SGL Segment Descriptor.
        INVALID_SGL_SEGMENT_DESCRIPTOR = 0x0D,
        /// Invalid Number of SGL Descriptors.
        INVALID_SGL_COUNT = 0x0E,
        /// Data SGL Length Invalid.
        DATA_SGL_LENGTH_INVALID = 0x0F,
        /// Metadata SGL Length Invalid.
        METADATA_SGL_LENGTH_INVALID = 0x10,
        /// SGL Descriptor Type Invalid.
        SGL_DESCRIPTOR_TYPE_INVALID = 0x11,
        /// Invalid Use of Controller Memory Buffer.
        INVALID_CMB_USE = 0x12,
        /// PRP Offset Invalid.
        PRP_OFFSET_INVALID = 0x13,
        /// Atomic Write Unit Exceeded.
        ATOMIC_WRITE_UNIT_EXCEEDED = 0x14,
        /// Operation Denied.
        OPERATION_DENIED = 0x15,
        /// SGL Offset Invalid.
        SGL_OFFSET_INVALID = 0x16,
        /// Host Identifier Inconsistent Format.
        HOST_ID_INCONSISTENT_FORMAT = 0x18,
        /// Keep Alive Timer Expired.
        KEEP_ALIVE_EXPIRED = 0x19,
        /// Keep Alive Timeout Invalid.
        KEEP_ALIVE_INVALID = 0x1A,
        /// Command Aborted due to Preempt and Abort.
        ABORTED_PREEMPT = 0x1B,
        /// Sanitize Failed.
        SANITIZE_FAILED = 0x1C,
        /// Sanitize In Progress.
        SANITIZE_IN_PROGRESS = 0x1D,
        /// SGL Data Block Granularity Invalid.
        SGL_DATA_BLOCK_GRANULARITY_INVALID = 0x1E,
        /// Command Not Supported for Queue in CMB.
        NOT_SUPPORTED_FOR_CMB_QUEUE = 0x1F,
        /// Namespace is Write Protected.
        NAMESPACE_WRITE_PROTECTED = 0x20,
        /// Command Interrupted.
        COMMAND_INTERRUPTED = 0x21,
        /// Transient Transport Error.
        TRANSIENT_TRANSPORT_ERROR = 0x22,
        /// Command Prohibited by Command and Feature Lockdown.
        PROHIBITED_BY_LOCKDOWN = 0x23,
        /// Admin Command Media Not Ready.
        ADMIN_MEDIA_NOT_READY = 0x24,
        /// LBA Out of Range (NVM command set).
        LBA_OUT_OF_RANGE = 0x80,
        /// Capacity Exceeded (NVM command set).
        CAPACITY_EXCEEDED = 0x81,
        /// Namespace Not Ready (NVM command set).
        NAMESPACE_NOT_READY = 0x82,
        /// Reservation Conflict (NVM command set).
        RESERVATION_CONFLICT = 0x83,
        /// Format In Progress (NVM command set).
        FORMAT_IN_PROGRESS = 0x84,
    }
    COMMAND_SPECIFIC {
        /// Completion Queue Invalid.
        INVALID_CQ = 0x00,
        /// Invalid Queue Identifier.
        INVALID_QUEUE_ID = 0x01,
        /// Invalid Queue Size.
        INVALID_QUEUE_SIZE = 0x02,
        /// Abort Command Limit Exceeded.
        ABORT_LIMIT_EXCEEDED = 0x03,
        /// Asynchronous Event Request Limit Exceeded.
        ASYNC_EVENT_LIMIT_EXCEEDED = 0x05,
        /// Invalid Firmware Slot.
        INVALID_FIRMWARE_SLOT = 0x06,
        /// Invalid Firmware Image.
        INVALID_FIRMWARE_IMAGE = 0x07,
        /// Invalid Interrupt Vector.
        INVALID_INTERRUPT_VECTOR = 0x08,
        /// Invalid Log Page.
        INVALID_LOG_PAGE = 0x09,
        /// Invalid Format.
        INVALID_FORMAT = 0x0A,
        /// Invalid Queue Deletion.
        INVALID_QUEUE_DELETION = 0x0C,
        /// Feature Identifier Not Saveable.
        FEATURE_NOT_SAVEABLE = 0x0D,
        /// Feature Not Changeable.
        FEATURE_NOT_CHANGEABLE = 0x0E,
        /// Feature Not Namespace Specific.
        FEATURE_NOT_NAMESPACE_SPECIFIC = 0x0F,
        /// Overlapping Range.
        OVERLAPPING_RANGE = 0x14,
        /// Namespace Insufficient Capacity.
        NAMESPACE_INSUFFICIENT_CAPACITY = 0x15,
        /// Namespace Identifier Unavailable.
        NAMESPACE_ID_UNAVAILABLE = 0x16,
        /// Namespace Already Attached.
        NAMESPACE_ALREADY_ATTACHED = 0x18,
        /// Namespace Is Private.
        NAMESPACE_IS_PRIVATE = 0x19,
        /// Namespace Not Attached.
        NAMESPACE_NOT_ATTACHED = 0x1A,
        /// Thin Provisioning Not Supported.
        THIN_PROVISIONING_NOT_SUPPORTED = 0x1B,
        /// Controller List Invalid.
        CONTROLLER_LIST_INVALID = 0x1C,
        /// Invalid Controller Identifier.
        INVALID_CONTROLLER_ID = 0x1F,
        /// ANA Group Identifier Invalid.
        ANA_GROUP_ID_INVALID = 0x24,
        /// ANA Attach Failed.
        ANA_ATTACH_FAILED = 0x25,
        /// I/O Command Set Not Supported.
        IO_COMMAND_SET_NOT_SUPPORTED = 0x29,
        /// I/O Command Set Not Enabled.
        IO_COMMAND_SET_NOT_ENABLED = 0x2A,
        /// I/O Command Set Combination Rejected.
        IO_COMMAND_SET_COMBINATION_REJECTED = 0x2B,
        /// Invalid I/O Command Set.
        INVALID_IO_COMMAND_SET = 0x2C,
        /// Identifier Unavailable.
        IDENTIFIER_UNAVAILABLE = 0x2D,
        /// Connect Incompatible Format (Fabrics). Same code as Conflicting Attributes (NVM).
        CONNECT_INCOMPATIBLE_FORMAT = 0x80,
        /// Connect Controller Busy (Fabrics). Same code as Invalid Protection Information (NVM).
        CONNECT_CONTROLLER_BUSY = 0x81,
        /// Connect Invalid Parameters (Fabrics); dw0 carries [`connect_invalid_parameter_dw0`](crate::connect_invalid_parameter_dw0).
        /// Same code as Attempted Write to Read Only Range (NVM).
        CONNECT_INVALID_PARAMETERS = 0x82,
        /// Connect Restart Discovery (Fabrics). Same code as Command Size Limit Exceeded (NVM).
        CONNECT_RESTART_DISCOVERY = 0x83,
        /// Connect Invalid Host (Fabrics).
        CONNECT_INVALID_HOST = 0x84,
        /// Invalid Queue Type (Fabrics).
        INVALID_QUEUE_TYPE = 0x85,
        /// Discover Restart (Fabrics).
        DISCOVER_RESTART = 0x90,
        /// Authentication Required (Fabrics).
        AUTH_REQUIRED = 0x91,
    }
    MEDIA_ERROR {
        /// Write Fault.
        WRITE_FAULT = 0x80,
        /// Unrecovered Read Error.
        UNRECOVERED_READ_ERROR = 0x81,
        /// End-to-end Guard Check Error.
        GUARD_CHECK_ERROR = 0x82,
        /// End-to-end Application Tag Check Error.
        APPLICATION_TAG_CHECK_ERROR = 0x83,
        /// End-to-end Reference Tag Check Error.
        REFERENCE_TAG_CHECK_ERROR = 0x84,
        /// Compare Failure.
        COMPARE_FAILURE = 0x85,
        /// Access Denied.
        ACCESS_DENIED = 0x86,
        /// Deallocated or Unwritten Logical Block.
        DEALLOCATED_OR_UNWRITTEN = 0x87,
        /// End-to-End Storage Tag Check Error.
        STORAGE_TAG_CHECK_ERROR = 0x88,
    }
    PATH_RELATED {
        /// Internal Path Error.
        INTERNAL_PATH_ERROR = 0x00,
        /// Asymmetric Access Persistent Loss.
        ANA_PERSISTENT_LOSS = 0x01,
        /// Asymmetric Access Inaccessible.
        ANA_INACCESSIBLE = 0x02,
        /// Asymmetric Access Transition.
        ANA_TRANSITION = 0x03,
        /// Controller Pathing Error.
        CONTROLLER_PATHING_ERROR = 0x60,
        /// Host Pathing Error.
        HOST_PATHING_ERROR = 0x70,
        /// Command Aborted By Host.
        ABORTED_BY_HOST = 0x71,
    }
}

impl Status {
    /// Alias of [`Status::INVALID_SGL_SEGMENT_DESCRIPTOR`] (generic 0x0D).
    pub const INVALID_SGL_DESCRIPTOR: Self = Self::INVALID_SGL_SEGMENT_DESCRIPTOR;
    /// Alias of [`Status::CONNECT_INCOMPATIBLE_FORMAT`]: NVM command set name of 0x80.
    pub const CONFLICTING_ATTRIBUTES: Self = Self::CONNECT_INCOMPATIBLE_FORMAT;
    /// Alias of [`Status::CONNECT_CONTROLLER_BUSY`]: NVM command set name of 0x81.
    pub const INVALID_PROTECTION_INFO: Self = Self::CONNECT_CONTROLLER_BUSY;
    /// Alias of [`Status::CONNECT_INVALID_PARAMETERS`]: NVM command set name of 0x82.
    pub const WRITE_TO_READ_ONLY_RANGE: Self = Self::CONNECT_INVALID_PARAMETERS;

    /// A status with the given code and no flags.
    #[must_use]
    pub const fn new(sct: StatusCodeType, sc: u8) -> Self {
        Self((((sct.0 & 0x7) as u16) << SCT_SHIFT) | sc as u16)
    }

    /// From the raw 15-bit form (CQE status field >> 1); bit 15 is ignored.
    #[must_use]
    pub const fn from_raw(raw: u16) -> Self {
        Self(raw & 0x7FFF)
    }

    /// The raw 15-bit form (CQE status field >> 1).
    #[must_use]
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Decodes a CQE status field (bits 15:0 of CQE dword 3), dropping the phase tag.
    #[must_use]
    pub const fn from_cqe_status(field: u16) -> Self {
        Self(field >> 1)
    }

    /// Encodes the CQE status field (bits 31:16 of dword 3) with the given phase tag.
    #[must_use]
    pub const fn to_cqe_status(self, phase: bool) -> u16 {
        (self.0 << 1) | phase as u16
    }

    /// Status Code Type.
    #[must_use]
    pub const fn sct(self) -> StatusCodeType {
        StatusCodeType(((self.0 >> SCT_SHIFT) & 0x7) as u8)
    }

    /// Status Code.
    #[must_use]
    pub const fn sc(self) -> u8 {
        (self.0 & 0xFF) as u8
    }

    /// The same SCT and SC with CRD, More and DNR cleared; compare this against constants.
    #[must_use]
    pub const fn code(self) -> Self {
        Self(self.0 & CODE_MASK)
    }

    /// Whether this is Successful Completion (any flags ignored).
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 & CODE_MASK == 0
    }

    /// Whether this is an error status.
    #[must_use]
    pub const fn is_error(self) -> bool {
        !self.is_success()
    }

    /// Do Not Retry: the same command would fail again if resubmitted.
    #[must_use]
    pub const fn dnr(self) -> bool {
        self.0 & DNR_BIT != 0
    }

    /// This status with DNR set.
    #[must_use]
    pub const fn with_dnr(self) -> Self {
        Self(self.0 | DNR_BIT)
    }

    /// This status with DNR set or cleared.
    #[must_use]
    pub const fn set_dnr(self, dnr: bool) -> Self {
        if dnr {
            Self(self.0 | DNR_BIT)
        } else {
            Self(self.0 & !DNR_BIT)
        }
    }

    /// More: the Error Information log page has more detail.
    #[must_use]
    pub const fn more(self) -> bool {
        self.0 & MORE_BIT != 0
    }

    /// This status with More set or cleared.
    #[must_use]
    pub const fn with_more(self, more: bool) -> Self {
        if more {
            Self(self.0 | MORE_BIT)
        } else {
            Self(self.0 & !MORE_BIT)
        }
    }

    /// Command Retry Delay index (0 = none, 1..=3 select CRDT1..CRDT3 of Identify Controller).
    #[must_use]
    pub const fn crd(self) -> u8 {
        ((self.0 >> CRD_SHIFT) & 0x3) as u8
    }

    /// This status with the Command Retry Delay index set (only bits 1:0 are used).
    #[must_use]
    pub const fn with_crd(self, crd: u8) -> Self {
        Self((self.0 & !(0x3 << CRD_SHIFT)) | (((crd & 0x3) as u16) << CRD_SHIFT))
    }

    /// The specification's name for the code, if it is known. Command-specific codes
    /// 0x80–0x83 are named after their Fabrics meaning.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match (self.sct(), self.sc()) {
            (StatusCodeType::GENERIC, sc) => generic_name(sc),
            (StatusCodeType::COMMAND_SPECIFIC, sc) => command_specific_name(sc),
            (StatusCodeType::MEDIA_ERROR, sc) => media_name(sc),
            (StatusCodeType::PATH_RELATED, sc) => path_name(sc),
            _ => None,
        }
    }
}

const fn generic_name(sc: u8) -> Option<&'static str> {
    Some(match sc {
        0x00 => "Successful Completion",
        0x01 => "Invalid Command Opcode",
        0x02 => "Invalid Field in Command",
        0x03 => "Command ID Conflict",
        0x04 => "Data Transfer Error",
        0x05 => "Commands Aborted due to Power Loss Notification",
        0x06 => "Internal Error",
        0x07 => "Command Abort Requested",
        0x08 => "Command Aborted due to SQ Deletion",
        0x09 => "Command Aborted due to Failed Fused Command",
        0x0A => "Command Aborted due to Missing Fused Command",
        0x0B => "Invalid Namespace or Format",
        0x0C => "Command Sequence Error",
        0x0D => "Invalid SGL Segment Descriptor",
        0x0E => "Invalid Number of SGL Descriptors",
        0x0F => "Data SGL Length Invalid",
        0x10 => "Metadata SGL Length Invalid",
        0x11 => "SGL Descriptor Type Invalid",
        0x12 => "Invalid Use of Controller Memory Buffer",
        0x13 => "PRP Offset Invalid",
        0x14 => "Atomic Write Unit Exceeded",
        0x15 => "Operation Denied",
        0x16 => "SGL Offset Invalid",
        0x18 => "Host Identifier Inconsistent Format",
        0x19 => "Keep Alive Timer Expired",
        0x1A => "Keep Alive Timeout Invalid",
        0x1B => "Command Aborted due to Preempt and Abort",
        0x1C => "Sanitize Failed",
        0x1D => "Sanitize In Progress",
        0x1E => "SGL Data Block Granularity Invalid",
        0x1F => "Command Not Supported for Queue in CMB",
        0x20 => "Namespace is Write Protected",
        0x21 => "Command Interrupted",
        0x22 => "Transient Transport Error",
        0x23 => "Command Prohibited by Command and Feature Lockdown",
        0x24 => "Admin Command Media Not Ready",
        0x80 => "LBA Out of Range",
        0x81 => "Capacity Exceeded",
        0x82 => "Namespace Not Ready",
        0x83 => "Reservation Conflict",
        0x84 => "Format In Progress",
        _ => return None,
    })
}

const fn command_specific_name(sc: u8) -> Option<&'static str> {
    Some(match sc {
        0x00 => "Completion Queue Invalid",
        0x01 => "Invalid Queue Identifier",
        0x02 => "Invalid Queue Size",
        0x03 => "Abort Command Limit Exceeded",
        0x05 => "Asynchronous Event Request Limit Exceeded",
        0x06 => "Invalid Firmware Slot",
        0x07 => "Invalid Firmware Image",
        0x08 => "Invalid Interrupt Vector",
        0x09 => "Invalid Log Page",
        0x0A => "Invalid Format",
        0x0B => "Firmware Activation Requires Conventional Reset",
        0x0C => "Invalid Queue Deletion",
        0x0D => "Feature Identifier Not Saveable",
        0x0E => "Feature Not Changeable",
        0x0F => "Feature Not Namespace Specific",
        0x10 => "Firmware Activation Requires NVM Subsystem Reset",
        0x11 => "Firmware Activation Requires Controller Level Reset",
        0x12 => "Firmware Activation Requires Maximum Time Violation",
        0x13 => "Firmware Activation Prohibited",
        0x14 => "Overlapping Range",
        0x15 => "Namespace Insufficient Capacity",
        0x16 => "Namespace Identifier Unavailable",
        0x18 => "Namespace Already Attached",
        0x19 => "Namespace Is Private",
        0x1A => "Namespace Not Attached",
        0x1B => "Thin Provisioning Not Supported",
        0x1C => "Controller List Invalid",
        0x1D => "Device Self-test In Progress",
        0x1E => "Boot Partition Write Prohibited",
        0x1F => "Invalid Controller Identifier",
        0x20 => "Invalid Secondary Controller State",
        0x21 => "Invalid Number of Controller Resources",
        0x22 => "Invalid Resource Identifier",
        0x23 => "Sanitize Prohibited While Persistent Memory Region is Enabled",
        0x24 => "ANA Group Identifier Invalid",
        0x25 => "ANA Attach Failed",
        0x26 => "Insufficient Capacity",
        0x27 => "Namespace Attachment Limit Exceeded",
        0x28 => "Prohibition of Command Execution Not Supported",
        0x29 => "I/O Command Set Not Supported",
        0x2A => "I/O Command Set Not Enabled",
        0x2B => "I/O Command Set Combination Rejected",
        0x2C => "Invalid I/O Command Set",
        0x2D => "Identifier Unavailable",
        0x80 => "Connect Incompatible Format",
        0x81 => "Connect Controller Busy",
        0x82 => "Connect Invalid Parameters",
        0x83 => "Connect Restart Discovery",
        0x84 => "Connect Invalid Host",
        0x85 => "Invalid Queue Type",
        0x90 => "Discover Restart",
        0x91 => "Authentication Required",
        _ => return None,
    })
}

const fn media_name(sc: u8) -> Option<&'static str> {
    Some(match sc {
        0x80 => "Write Fault",
        0x81 => "Unrecovered Read Error",
        0x82 => "End-to-end Guard Check Error",
        0x83 => "End-to-end Application Tag Check Error",
        0x84 => "End-to-end Reference Tag Check Error",
        0x85 => "Compare Failure",
        0x86 => "Access Denied",
        0x87 => "Deallocated or Unwritten Logical Block",
        0x88 => "End-to-End Storage Tag Check Error",
        _ => return None,
    })
}

const fn path_name(sc: u8) -> Option<&'static str> {
    Some(match sc {
        0x00 => "Internal Path Error",
        0x01 => "Asymmetric Access Persistent Loss",
        0x02 => "Asymmetric Access Inaccessible",
        0x03 => "Asymmetric Access Transition",
        0x60 => "Controller Pathing Error",
        0x70 => "Host Pathing Error",
        0x71 => "Command Aborted By Host",
        _ => return None,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name)?,
            None => f.write_str("Unknown Status")?,
        }
        write!(f, " (sct {:#x}, sc {:#04x}", self.sct().0, self.sc())?;
        if self.crd() != 0 {
            write!(f, ", crd {}", self.crd())?;
        }
        if self.more() {
            f.write_str(", more")?;
        }
        if self.dnr() {
            f.write_str(", dnr")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({self})")
    }
}

#[cfg(test)]
mod tests;
