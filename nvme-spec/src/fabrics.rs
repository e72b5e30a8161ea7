//! NVMe over Fabrics commands: Connect, Property Get/Set and Disconnect
//! (NVMe base 2.0 section 6).

use bitflags::bitflags;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::command::{Command, SglDescriptor};
use super::nqn::{NqnError, NQN_FIELD_LEN};
use super::opcode::{AdminOpcode, FabricsCommandType};
use super::text::{read_nul_terminated, write_nul_terminated};

/// Size of the Connect data that SGL1 of a Connect command points at.
pub const CONNECT_DATA_LEN: usize = 1024;
/// The dynamic controller model's CNTLID in Connect data ("allocate any controller").
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// The static controller model's "any controller" CNTLID.
pub const CNTLID_STATIC_ANY: u16 = 0xFFFE;

/// Connect command SQE (NVMe base 2.0 figure 551), byte-exact.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ConnectCommand {
    /// Opcode, 0x7F.
    pub opcode: u8,
    /// Flags (PSDT).
    pub flags: u8,
    /// Command identifier.
    pub cid: u16,
    /// Fabrics command type, 0x01.
    pub fctype: u8,
    /// Reserved.
    pub reserved5: [u8; 19],
    /// SGL1: the 1024-byte [`ConnectData`].
    pub sgl1: SglDescriptor,
    /// Record format, 0.
    pub recfmt: u16,
    /// Queue identifier: 0 for the admin queue.
    pub qid: u16,
    /// Submission queue size, zero-based.
    pub sqsize: u16,
    /// Connect attributes: bits 1:0 priority class, bit 2 disable SQ flow control.
    pub cattr: u8,
    /// Reserved.
    pub reserved47: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only); 0 disables it.
    pub kato: u32,
    /// Reserved.
    pub reserved52: [u8; 12],
}

const _: () = assert!(size_of::<ConnectCommand>() == 64);
const _: () = assert!(core::mem::offset_of!(ConnectCommand, recfmt) == 40);
const _: () = assert!(core::mem::offset_of!(ConnectCommand, kato) == 48);

impl ConnectCommand {
    /// CATTR bit 2: the host asks to disable submission queue flow control.
    pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

    /// Reinterprets an SQE as a Connect command (no checks; see [`Command::fctype`]).
    #[must_use]
    pub fn from_command(cmd: &Command) -> Self {
        zerocopy::transmute!(*cmd)
    }

    /// A Connect command; SGL1 is set to transport data of [`CONNECT_DATA_LEN`] bytes.
    #[must_use]
    pub fn new(cid: u16, qid: u16, sqsize: u16, kato: u32) -> Self {
        Self {
            opcode: AdminOpcode::FABRICS.0,
            flags: 1 << 6,
            cid,
            fctype: FabricsCommandType::CONNECT.0,
            sgl1: SglDescriptor::transport(CONNECT_DATA_LEN as u32),
            qid,
            sqsize,
            kato,
            ..Self::default()
        }
    }

    /// Whether the host disabled SQ flow control (CATTR bit 2).
    #[must_use]
    pub const fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & Self::CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }
}

impl From<ConnectCommand> for Command {
    fn from(value: ConnectCommand) -> Self {
        zerocopy::transmute!(value)
    }
}

/// Connect command data (NVMe base 2.0 figure 552), byte-exact.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ConnectData {
    /// Host identifier (128-bit UUID-like value).
    pub hostid: [u8; 16],
    /// Controller ID: [`CNTLID_DYNAMIC`] on the admin queue with the dynamic model, the
    /// returned CNTLID on I/O queues.
    pub cntlid: u16,
    /// Reserved.
    pub reserved18: [u8; 238],
    /// Subsystem NQN, NUL-terminated UTF-8.
    pub subnqn: [u8; NQN_FIELD_LEN],
    /// Host NQN, NUL-terminated UTF-8.
    pub hostnqn: [u8; NQN_FIELD_LEN],
    /// Reserved.
    pub reserved768: [u8; 256],
}

const _: () = assert!(size_of::<ConnectData>() == CONNECT_DATA_LEN);
const _: () = assert!(core::mem::offset_of!(ConnectData, cntlid) == 16);
const _: () = assert!(core::mem::offset_of!(ConnectData, subnqn) == 256);
const _: () = assert!(core::mem::offset_of!(ConnectData, hostnqn) == 512);

impl ConnectData {
    /// Connect data with the given fields.
    ///
    /// # Errors
    /// An NQN does not fit its field or holds a NUL (the NQN grammar is not checked).
    pub fn new(
        hostid: [u8; 16],
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
    ) -> Result<Self, NqnError> {
        let mut data = Self::new_zeroed();
        data.hostid = hostid;
        data.cntlid = cntlid;
        write_nul_terminated(&mut data.subnqn, subnqn)?;
        write_nul_terminated(&mut data.hostnqn, hostnqn)?;
        Ok(data)
    }

    /// The subsystem NQN as text (not grammar-checked; see [`validate_nqn`](super::validate_nqn)).
    ///
    /// # Errors
    /// The field is not NUL-terminated or not UTF-8.
    pub fn subnqn_str(&self) -> Result<&str, NqnError> {
        read_nul_terminated(&self.subnqn)
    }

    /// The host NQN as text (not grammar-checked).
    ///
    /// # Errors
    /// The field is not NUL-terminated or not UTF-8.
    pub fn hostnqn_str(&self) -> Result<&str, NqnError> {
        read_nul_terminated(&self.hostnqn)
    }
}

bitflags! {
    /// AUTHREQ of a successful Connect response (dword 0 bits 31:16).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct AuthReq: u16 {
        /// ATR: an authentication transaction is required before other commands.
        const ATR = 1 << 1;
        /// ASCR: authentication with secure channel concatenation is required.
        const ASCR = 1 << 2;
    }
}

/// Dword 0 of a successful Connect response: CNTLID in bits 15:0, AUTHREQ in bits 31:16.
#[must_use]
pub const fn connect_response_dw0(cntlid: u16, authreq: AuthReq) -> u32 {
    cntlid as u32 | (authreq.bits() as u32) << 16
}

/// Where a Connect Invalid Parameters error points.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ConnectInvalidParameter {
    /// A field of the Connect SQE, by byte offset.
    Command(u16),
    /// A field of the Connect data, by byte offset.
    Data(u16),
}

/// Dword 0 of a Connect response with status Connect Invalid Parameters: IPO (offset) in
/// bits 15:0 and IATTR in bits 23:16 (bit 16 set when the offset is into the data).
#[must_use]
pub const fn connect_invalid_parameter_dw0(param: ConnectInvalidParameter) -> u32 {
    match param {
        ConnectInvalidParameter::Command(offset) => offset as u32,
        ConnectInvalidParameter::Data(offset) => offset as u32 | 1 << 16,
    }
}

/// Byte offsets of Connect fields, for [`ConnectInvalidParameter`].
pub mod connect_offsets {
    /// SQE: QID.
    pub const QID: u16 = 42;
    /// SQE: SQSIZE.
    pub const SQSIZE: u16 = 44;
    /// SQE: KATO.
    pub const KATO: u16 = 48;
    /// Data: CNTLID.
    pub const CNTLID: u16 = 16;
    /// Data: SUBNQN.
    pub const SUBNQN: u16 = 256;
    /// Data: HOSTNQN.
    pub const HOSTNQN: u16 = 512;
}

/// Property size selector (ATTRIB bits 2:0 of Property Get/Set).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PropertySize {
    /// A 4-byte property.
    Four,
    /// An 8-byte property.
    Eight,
}

impl PropertySize {
    /// Decodes ATTRIB; `None` for reserved sizes.
    #[must_use]
    pub const fn from_attrib(attrib: u8) -> Option<Self> {
        match attrib & 0x7 {
            0 => Some(Self::Four),
            1 => Some(Self::Eight),
            _ => None,
        }
    }

    /// The ATTRIB encoding.
    #[must_use]
    pub const fn to_attrib(self) -> u8 {
        match self {
            Self::Four => 0,
            Self::Eight => 1,
        }
    }

    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> usize {
        match self {
            Self::Four => 4,
            Self::Eight => 8,
        }
    }
}

/// Property Get and Property Set SQE (NVMe base 2.0 figures 553 and 555), byte-exact.
/// Property Get leaves `value` reserved; its value returns in completion dwords 0–1.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PropertyCommand {
    /// Opcode, 0x7F.
    pub opcode: u8,
    /// Flags.
    pub flags: u8,
    /// Command identifier.
    pub cid: u16,
    /// Fabrics command type: 0x04 Get, 0x00 Set.
    pub fctype: u8,
    /// Reserved.
    pub reserved5: [u8; 35],
    /// ATTRIB: size in bits 2:0 ([`PropertySize`]).
    pub attrib: u8,
    /// Reserved.
    pub reserved41: [u8; 3],
    /// Property offset ([`PropertyOffset`](super::PropertyOffset)).
    pub ofst: u32,
    /// Property Set: the value (only the low 4 bytes for a 4-byte property).
    pub value: u64,
    /// Reserved.
    pub reserved56: [u8; 8],
}

const _: () = assert!(size_of::<PropertyCommand>() == 64);
const _: () = assert!(core::mem::offset_of!(PropertyCommand, ofst) == 44);
const _: () = assert!(core::mem::offset_of!(PropertyCommand, value) == 48);

impl Default for PropertyCommand {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl PropertyCommand {
    /// Reinterprets an SQE as a Property Get/Set command (no checks).
    #[must_use]
    pub fn from_command(cmd: &Command) -> Self {
        zerocopy::transmute!(*cmd)
    }

    /// A Property Get command.
    #[must_use]
    pub fn get(cid: u16, ofst: u32, size: PropertySize) -> Self {
        Self {
            opcode: AdminOpcode::FABRICS.0,
            cid,
            fctype: FabricsCommandType::PROPERTY_GET.0,
            attrib: size.to_attrib(),
            ofst,
            ..Self::default()
        }
    }

    /// A Property Set command.
    #[must_use]
    pub fn set(cid: u16, ofst: u32, size: PropertySize, value: u64) -> Self {
        Self {
            fctype: FabricsCommandType::PROPERTY_SET.0,
            value,
            ..Self::get(cid, ofst, size)
        }
    }

    /// The size selected by ATTRIB; `None` if reserved.
    #[must_use]
    pub const fn size(&self) -> Option<PropertySize> {
        PropertySize::from_attrib(self.attrib)
    }
}

impl From<PropertyCommand> for Command {
    fn from(value: PropertyCommand) -> Self {
        zerocopy::transmute!(value)
    }
}

impl Command {
    /// A Disconnect command for the queue the command is sent on.
    #[must_use]
    pub const fn disconnect(cid: u16) -> Self {
        let mut cmd = Self::new(AdminOpcode::FABRICS.0, cid);
        cmd.nsid = FabricsCommandType::DISCONNECT.0 as u32;
        cmd
    }
}

#[cfg(test)]
mod tests;
