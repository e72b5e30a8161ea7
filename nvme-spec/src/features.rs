//! Features: identifiers, the Get/Set Features command fields, Number of Queues,
//! Asynchronous Event Configuration and the Asynchronous Event Request completion.

use bitflags::bitflags;

use super::command::Command;
use super::log::Lid;
use super::opcode::AdminOpcode;

open_enum! {
    /// Feature Identifier (FID; NVMe base 2.0 figure 317).
    pub struct FeatureId(u8) {
        /// Arbitration.
        ARBITRATION = 0x01,
        /// Power Management.
        POWER_MGMT = 0x02,
        /// LBA Range Type.
        LBA_RANGE_TYPE = 0x03,
        /// Temperature Threshold.
        TEMP_THRESHOLD = 0x04,
        /// Error Recovery.
        ERROR_RECOVERY = 0x05,
        /// Volatile Write Cache.
        VOLATILE_WRITE_CACHE = 0x06,
        /// Number of Queues.
        NUMBER_OF_QUEUES = 0x07,
        /// Interrupt Coalescing.
        INTERRUPT_COALESCING = 0x08,
        /// Interrupt Vector Configuration.
        INTERRUPT_VECTOR_CONFIG = 0x09,
        /// Write Atomicity Normal.
        WRITE_ATOMICITY = 0x0A,
        /// Asynchronous Event Configuration.
        ASYNC_EVENT_CONFIG = 0x0B,
        /// Autonomous Power State Transition.
        APST = 0x0C,
        /// Host Memory Buffer.
        HOST_MEMORY_BUFFER = 0x0D,
        /// Timestamp.
        TIMESTAMP = 0x0E,
        /// Keep Alive Timer.
        KEEP_ALIVE_TIMER = 0x0F,
        /// Host Controlled Thermal Management.
        HOST_THERMAL_MGMT = 0x10,
        /// Non-Operational Power State Config.
        NON_OP_POWER_STATE = 0x11,
        /// Read Recovery Level Config.
        READ_RECOVERY_LEVEL = 0x12,
        /// Predictable Latency Mode Config.
        PLM_CONFIG = 0x13,
        /// Predictable Latency Mode Window.
        PLM_WINDOW = 0x14,
        /// LBA Status Information Attributes.
        LBA_STATUS_INFO = 0x15,
        /// Host Behavior Support.
        HOST_BEHAVIOR = 0x16,
        /// Sanitize Config.
        SANITIZE_CONFIG = 0x17,
        /// Endurance Group Event Configuration.
        ENDURANCE_GROUP_EVENT = 0x18,
        /// I/O Command Set Profile.
        IO_COMMAND_SET_PROFILE = 0x19,
        /// Spinup Control.
        SPINUP_CONTROL = 0x1A,
        /// Enhanced Controller Metadata.
        ENHANCED_CONTROLLER_METADATA = 0x7D,
        /// Controller Metadata.
        CONTROLLER_METADATA = 0x7E,
        /// Namespace Metadata.
        NAMESPACE_METADATA = 0x7F,
        /// Software Progress Marker.
        SOFTWARE_PROGRESS_MARKER = 0x80,
        /// Host Identifier.
        HOST_IDENTIFIER = 0x81,
        /// Reservation Notification Mask.
        RESERVATION_NOTIFICATION_MASK = 0x82,
        /// Reservation Persistence.
        RESERVATION_PERSISTENCE = 0x83,
        /// Namespace Write Protection Config.
        NS_WRITE_PROTECTION = 0x84,
    }
}

open_enum! {
    /// Select (SEL, Get Features CDW10 bits 10:8).
    pub struct FeatureSelect(u8) {
        /// Current value.
        CURRENT = 0b000,
        /// Default value.
        DEFAULT = 0b001,
        /// Saved value.
        SAVED = 0b010,
        /// Supported capabilities (dword 0: bit 0 saveable, bit 1 namespace specific, bit 2 changeable).
        SUPPORTED_CAPABILITIES = 0b011,
    }
}

bitflags! {
    /// Completion dword 0 of Get Features with SEL = supported capabilities.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct FeatureCapabilities: u32 {
        /// The feature is saveable.
        const SAVEABLE = 1 << 0;
        /// The feature is namespace specific.
        const NAMESPACE_SPECIFIC = 1 << 1;
        /// The feature is changeable.
        const CHANGEABLE = 1 << 2;
    }
}

/// Decoded fields of a Get Features command (NVMe base 2.0 figures 191–192).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GetFeatures {
    /// Namespace identifier.
    pub nsid: u32,
    /// Feature Identifier (CDW10 bits 7:0).
    pub fid: FeatureId,
    /// Select (CDW10 bits 10:8).
    pub sel: FeatureSelect,
    /// Feature specific (CDW11).
    pub cdw11: u32,
}

impl GetFeatures {
    /// Decodes a Get Features SQE.
    #[must_use]
    pub const fn parse(cmd: &Command) -> Self {
        Self {
            nsid: cmd.nsid,
            fid: FeatureId((cmd.cdw10 & 0xFF) as u8),
            sel: FeatureSelect(((cmd.cdw10 >> 8) & 0x7) as u8),
            cdw11: cmd.cdw11,
        }
    }

    /// Encodes a Get Features SQE.
    #[must_use]
    pub const fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(AdminOpcode::GET_FEATURES.0, cid).with_nsid(self.nsid);
        cmd.cdw10 = self.fid.0 as u32 | ((self.sel.0 & 0x7) as u32) << 8;
        cmd.cdw11 = self.cdw11;
        cmd
    }
}

/// Decoded fields of a Set Features command (NVMe base 2.0 figures 315–316).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SetFeatures {
    /// Namespace identifier.
    pub nsid: u32,
    /// Feature Identifier (CDW10 bits 7:0).
    pub fid: FeatureId,
    /// Save (CDW10 bit 31).
    pub sv: bool,
    /// Feature specific value (CDW11).
    pub cdw11: u32,
    /// Feature specific (CDW12).
    pub cdw12: u32,
    /// Feature specific (CDW13).
    pub cdw13: u32,
}

impl SetFeatures {
    /// Decodes a Set Features SQE.
    #[must_use]
    pub const fn parse(cmd: &Command) -> Self {
        Self {
            nsid: cmd.nsid,
            fid: FeatureId((cmd.cdw10 & 0xFF) as u8),
            sv: cmd.cdw10 & (1 << 31) != 0,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
        }
    }

    /// Encodes a Set Features SQE.
    #[must_use]
    pub const fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(AdminOpcode::SET_FEATURES.0, cid).with_nsid(self.nsid);
        cmd.cdw10 = self.fid.0 as u32 | (self.sv as u32) << 31;
        cmd.cdw11 = self.cdw11;
        cmd.cdw12 = self.cdw12;
        cmd.cdw13 = self.cdw13;
        cmd
    }
}

/// Number of Queues (FID 07h): both counts are zero-based and exclude the admin queue.
/// Set Features CDW11 carries the request (NSQR, NCQR); completion dword 0 the
/// allocation (NSQA, NCQA), with the same layout.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct NumberOfQueues {
    /// Number of I/O submission queues, zero-based (bits 15:0).
    pub nsq: u16,
    /// Number of I/O completion queues, zero-based (bits 31:16).
    pub ncq: u16,
}

impl NumberOfQueues {
    /// Decodes CDW11 or completion dword 0.
    #[must_use]
    pub const fn from_dword(dword: u32) -> Self {
        Self {
            nsq: dword as u16,
            ncq: (dword >> 16) as u16,
        }
    }

    /// Encodes CDW11 or completion dword 0.
    #[must_use]
    pub const fn to_dword(self) -> u32 {
        self.nsq as u32 | (self.ncq as u32) << 16
    }
}

bitflags! {
    /// Asynchronous Event Configuration (FID 0Bh, CDW11). Bits 8 and up share their
    /// positions with OAES of Identify Controller.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct AsyncEventConfig: u32 {
        /// SMART: available spare below threshold.
        const SMART_SPARE = 1 << 0;
        /// SMART: temperature.
        const SMART_TEMPERATURE = 1 << 1;
        /// SMART: reliability degraded.
        const SMART_RELIABILITY = 1 << 2;
        /// SMART: read-only.
        const SMART_READ_ONLY = 1 << 3;
        /// SMART: volatile memory backup failed.
        const SMART_VOLATILE_BACKUP = 1 << 4;
        /// SMART: persistent memory region read-only.
        const SMART_PMR_READ_ONLY = 1 << 5;
        /// Namespace Attribute Notices.
        const NS_ATTR_CHANGED = 1 << 8;
        /// Firmware Activation Notices.
        const FW_ACTIVATION = 1 << 9;
        /// Telemetry Log Notices.
        const TELEMETRY_LOG = 1 << 10;
        /// Asymmetric Namespace Access Change Notices.
        const ANA_CHANGE = 1 << 11;
        /// Predictable Latency Event Aggregate Log Change Notices.
        const PREDICTABLE_LATENCY = 1 << 12;
        /// LBA Status Information Notices.
        const LBA_STATUS = 1 << 13;
        /// Endurance Group Event Aggregate Log Change Notices.
        const ENDURANCE_GROUP = 1 << 14;
        /// Normal NVM Subsystem Shutdown Notices.
        const NORMAL_NSS_SHUTDOWN = 1 << 15;
        /// Zone Descriptor Changed Notices.
        const ZONE_DESCRIPTOR_CHANGED = 1 << 27;
        /// Discovery Log Page Change Notification.
        const DISCOVERY_LOG_CHANGE = 1 << 31;
    }
}

open_enum! {
    /// Asynchronous Event Type (AER completion dword 0 bits 2:0).
    pub struct AsyncEventType(u8) {
        /// Error status.
        ERROR = 0,
        /// SMART / Health status.
        SMART = 1,
        /// Notice.
        NOTICE = 2,
        /// Immediate.
        IMMEDIATE = 3,
        /// I/O command specific status.
        IO_COMMAND_SPECIFIC = 6,
        /// Vendor specific.
        VENDOR_SPECIFIC = 7,
    }
}

/// Asynchronous event information for [`AsyncEventType::NOTICE`].
pub mod notice {
    /// Namespace Attribute Changed (read [`Lid::CHANGED_NS`](super::Lid::CHANGED_NS)).
    pub const NS_ATTR_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FW_ACTIVATION_STARTING: u8 = 0x01;
    /// Telemetry Log Changed.
    pub const TELEMETRY_LOG_CHANGED: u8 = 0x02;
    /// Asymmetric Namespace Access Change.
    pub const ANA_CHANGE: u8 = 0x03;
    /// Predictable Latency Event Aggregate Log Change.
    pub const PREDICTABLE_LATENCY: u8 = 0x04;
    /// LBA Status Information Alert.
    pub const LBA_STATUS_ALERT: u8 = 0x05;
    /// Endurance Group Event Aggregate Log Page Change.
    pub const ENDURANCE_GROUP: u8 = 0x06;
    /// Discovery Log Page Change.
    pub const DISCOVERY_LOG_CHANGE: u8 = 0xF0;
}

/// An asynchronous event, as reported in the completion dword 0 of an Asynchronous
/// Event Request (NVMe base 2.0 figure 146).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct AsyncEvent {
    /// Asynchronous Event Type (bits 2:0).
    pub event_type: AsyncEventType,
    /// Asynchronous Event Information (bits 15:8).
    pub info: u8,
    /// The log page to read to clear the event (bits 23:16).
    pub lid: Lid,
}

impl AsyncEvent {
    /// Namespace attribute changed: read the Changed Namespace List.
    pub const NS_ATTR_CHANGED: Self = Self {
        event_type: AsyncEventType::NOTICE,
        info: notice::NS_ATTR_CHANGED,
        lid: Lid::CHANGED_NS,
    };
    /// Firmware activation starting: read the Firmware Slot log.
    pub const FW_ACTIVATION_STARTING: Self = Self {
        event_type: AsyncEventType::NOTICE,
        info: notice::FW_ACTIVATION_STARTING,
        lid: Lid::FIRMWARE_SLOT,
    };
    /// ANA change: read the ANA log.
    pub const ANA_CHANGE: Self = Self {
        event_type: AsyncEventType::NOTICE,
        info: notice::ANA_CHANGE,
        lid: Lid::ANA,
    };
    /// Discovery log change: read the Discovery log.
    pub const DISCOVERY_LOG_CHANGE: Self = Self {
        event_type: AsyncEventType::NOTICE,
        info: notice::DISCOVERY_LOG_CHANGE,
        lid: Lid::DISCOVERY,
    };

    /// Encodes completion dword 0.
    #[must_use]
    pub const fn to_dw0(self) -> u32 {
        (self.event_type.0 & 0x7) as u32 | (self.info as u32) << 8 | (self.lid.0 as u32) << 16
    }

    /// Decodes completion dword 0.
    #[must_use]
    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            event_type: AsyncEventType((dw0 & 0x7) as u8),
            info: (dw0 >> 8) as u8,
            lid: Lid((dw0 >> 16) as u8),
        }
    }
}

#[cfg(test)]
mod tests;
