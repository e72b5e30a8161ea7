//! Command opcodes: admin, NVM I/O and the Fabrics command type.

open_enum! {
    /// Admin command set opcode (SQE byte 0 on the admin queue; NVMe base 2.0 figure 28).
    pub struct AdminOpcode(u8) {
        /// Delete I/O Submission Queue.
        DELETE_SQ = 0x00,
        /// Create I/O Submission Queue.
        CREATE_SQ = 0x01,
        /// Get Log Page.
        GET_LOG_PAGE = 0x02,
        /// Delete I/O Completion Queue.
        DELETE_CQ = 0x04,
        /// Create I/O Completion Queue.
        CREATE_CQ = 0x05,
        /// Identify.
        IDENTIFY = 0x06,
        /// Abort.
        ABORT = 0x08,
        /// Set Features.
        SET_FEATURES = 0x09,
        /// Get Features.
        GET_FEATURES = 0x0A,
        /// Asynchronous Event Request.
        ASYNC_EVENT_REQUEST = 0x0C,
        /// Namespace Management.
        NAMESPACE_MANAGEMENT = 0x0D,
        /// Firmware Commit.
        FIRMWARE_COMMIT = 0x10,
        /// Firmware Image Download.
        FIRMWARE_IMAGE_DOWNLOAD = 0x11,
        /// Device Self-test.
        DEVICE_SELF_TEST = 0x14,
        /// Namespace Attachment.
        NAMESPACE_ATTACHMENT = 0x15,
        /// Keep Alive.
        KEEP_ALIVE = 0x18,
        /// Directive Send.
        DIRECTIVE_SEND = 0x19,
        /// Directive Receive.
        DIRECTIVE_RECEIVE = 0x1A,
        /// Virtualization Management.
        VIRTUALIZATION_MANAGEMENT = 0x1C,
        /// NVMe-MI Send.
        NVME_MI_SEND = 0x1D,
        /// NVMe-MI Receive.
        NVME_MI_RECEIVE = 0x1E,
        /// Capacity Management.
        CAPACITY_MANAGEMENT = 0x20,
        /// Lockdown.
        LOCKDOWN = 0x24,
        /// Doorbell Buffer Config.
        DOORBELL_BUFFER_CONFIG = 0x7C,
        /// Fabrics command; the command type is in SQE byte 4 ([`FabricsCommandType`]).
        FABRICS = 0x7F,
        /// Format NVM.
        FORMAT_NVM = 0x80,
        /// Security Send.
        SECURITY_SEND = 0x81,
        /// Security Receive.
        SECURITY_RECEIVE = 0x82,
        /// Sanitize.
        SANITIZE = 0x84,
        /// Get LBA Status.
        GET_LBA_STATUS = 0x86,
    }
}

open_enum! {
    /// NVM command set I/O opcode (SQE byte 0 on an I/O queue; NVM command set 1.0 figure 18).
    pub struct IoOpcode(u8) {
        /// Flush.
        FLUSH = 0x00,
        /// Write.
        WRITE = 0x01,
        /// Read.
        READ = 0x02,
        /// Write Uncorrectable.
        WRITE_UNCORRECTABLE = 0x04,
        /// Compare.
        COMPARE = 0x05,
        /// Write Zeroes.
        WRITE_ZEROES = 0x08,
        /// Dataset Management.
        DATASET_MANAGEMENT = 0x09,
        /// Verify.
        VERIFY = 0x0C,
        /// Reservation Register.
        RESERVATION_REGISTER = 0x0D,
        /// Reservation Report.
        RESERVATION_REPORT = 0x0E,
        /// Reservation Acquire.
        RESERVATION_ACQUIRE = 0x11,
        /// Reservation Release.
        RESERVATION_RELEASE = 0x15,
        /// Copy.
        COPY = 0x19,
        /// Fabrics command (only Connect, Disconnect and authentication are allowed on I/O queues).
        FABRICS = 0x7F,
    }
}

impl IoOpcode {
    /// Data transfer direction bits 1:0 of the opcode: `0b01` host to controller,
    /// `0b10` controller to host, `0b11` bidirectional, `0b00` none.
    #[must_use]
    pub const fn data_transfer(self) -> u8 {
        self.0 & 0b11
    }
}

open_enum! {
    /// Fabrics command type (FCTYPE, SQE byte 4 when the opcode is 0x7F; NVMe base 2.0 figure 545).
    pub struct FabricsCommandType(u8) {
        /// Property Set.
        PROPERTY_SET = 0x00,
        /// Connect.
        CONNECT = 0x01,
        /// Property Get.
        PROPERTY_GET = 0x04,
        /// Authentication Send.
        AUTH_SEND = 0x05,
        /// Authentication Receive.
        AUTH_RECEIVE = 0x06,
        /// Disconnect.
        DISCONNECT = 0x08,
    }
}
