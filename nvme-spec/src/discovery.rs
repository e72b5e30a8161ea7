//! The Discovery log page (LID 70h; NVMe base 2.0 figures 262–263 and NVMe/TCP 1.0
//! figure 28).

use bitflags::bitflags;
use core::mem::offset_of;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::nqn::{NqnError, NQN_FIELD_LEN};
use super::text::{copy_padded, read_nul_terminated, trim_padded, write_nul_terminated};

open_enum! {
    /// Transport type (TRTYPE).
    pub struct TransportType(u8) {
        /// RDMA.
        RDMA = 1,
        /// Fibre Channel.
        FC = 2,
        /// TCP.
        TCP = 3,
        /// Intra-host transport (loopback).
        LOOP = 254,
    }
}

open_enum! {
    /// Address family (ADRFAM).
    pub struct AddressFamily(u8) {
        /// IPv4.
        IPV4 = 1,
        /// IPv6.
        IPV6 = 2,
        /// InfiniBand.
        IB = 3,
        /// Fibre Channel.
        FC = 4,
        /// Intra-host transport.
        LOOP = 254,
    }
}

open_enum! {
    /// Subsystem type (SUBTYPE).
    pub struct SubsystemType(u8) {
        /// Referral to another discovery service.
        REFERRAL = 1,
        /// An NVM subsystem.
        NVM = 2,
        /// The current discovery subsystem (the one returning the log page).
        CURRENT_DISCOVERY = 3,
    }
}

open_enum! {
    /// NVMe/TCP security type (TSAS byte 0, SECTYPE).
    pub struct TcpSecurityType(u8) {
        /// No security.
        NONE = 0,
        /// TLS 1.2.
        TLS12 = 1,
        /// TLS 1.3.
        TLS13 = 2,
    }
}

/// Transport requirements (TREQ).
pub mod treq {
    /// Secure channel requirements not specified (bits 1:0 = 00b).
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0b00;
    /// Secure channel required (bits 1:0 = 01b).
    pub const SECURE_CHANNEL_REQUIRED: u8 = 0b01;
    /// Secure channel not required (bits 1:0 = 10b).
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 0b10;
    /// Bit 2: the controller supports disabling SQ flow control.
    pub const DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;
}

bitflags! {
    /// Entry flags (EFLAGS).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
    pub struct DiscoveryEntryFlags: u16 {
        /// Duplicate Returned Information: the entry may repeat information of other entries.
        const DUPRETINFO = 1 << 0;
        /// Explicit Persistent Connection Support for Discovery.
        const EPCSD = 1 << 1;
        /// No CDC Connectivity.
        const NCC = 1 << 2;
    }
}

/// Size of the Discovery log page header and of each entry.
pub const DISCOVERY_RECORD_LEN: usize = 1024;

/// Discovery log page header, byte-exact; entries follow at offset 1024.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DiscoveryLogHeader {
    /// Generation Counter: changes whenever the log content changes.
    pub genctr: u64,
    /// Number of Records.
    pub numrec: u64,
    /// Record Format, 0.
    pub recfmt: u16,
    /// Reserved.
    pub reserved18: [u8; 1006],
}

const _: () = assert!(size_of::<DiscoveryLogHeader>() == DISCOVERY_RECORD_LEN);

impl DiscoveryLogHeader {
    /// A header with the given generation counter and record count.
    #[must_use]
    pub fn new(genctr: u64, numrec: u64) -> Self {
        let mut header = Self::new_zeroed();
        header.genctr = genctr;
        header.numrec = numrec;
        header
    }
}

/// Discovery log page entry, byte-exact.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DiscoveryLogEntry {
    /// Transport Type ([`TransportType`]).
    pub trtype: u8,
    /// Address Family ([`AddressFamily`]).
    pub adrfam: u8,
    /// Subsystem Type ([`SubsystemType`]).
    pub subtype: u8,
    /// Transport Requirements ([`treq`]).
    pub treq: u8,
    /// Port ID.
    pub portid: u16,
    /// Controller ID: 0xFFFF for the dynamic controller model.
    pub cntlid: u16,
    /// Admin Max SQ Size.
    pub asqsz: u16,
    /// Entry Flags ([`DiscoveryEntryFlags`]).
    pub eflags: u16,
    /// Reserved.
    pub reserved12: [u8; 20],
    /// Transport Service Identifier (TCP port), ASCII, space padded.
    pub trsvcid: [u8; 32],
    /// Reserved.
    pub reserved64: [u8; 192],
    /// Subsystem NQN, NUL-terminated UTF-8.
    pub subnqn: [u8; NQN_FIELD_LEN],
    /// Transport Address (IP address), ASCII, space padded.
    pub traddr: [u8; 256],
    /// Transport Specific Address Subtype; for TCP byte 0 is SECTYPE ([`TcpSecurityType`]).
    pub tsas: [u8; 256],
}

const _: () = assert!(size_of::<DiscoveryLogEntry>() == DISCOVERY_RECORD_LEN);
const _: () = assert!(offset_of!(DiscoveryLogEntry, trsvcid) == 32);
const _: () = assert!(offset_of!(DiscoveryLogEntry, subnqn) == 256);
const _: () = assert!(offset_of!(DiscoveryLogEntry, traddr) == 512);
const _: () = assert!(offset_of!(DiscoveryLogEntry, tsas) == 768);

impl DiscoveryLogEntry {
    /// An all-zero entry.
    #[must_use]
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// A TCP entry with no security, dynamic controller and the given addressing.
    ///
    /// # Errors
    /// `subnqn` does not fit its field or holds a NUL.
    pub fn tcp(
        subtype: SubsystemType,
        adrfam: AddressFamily,
        portid: u16,
        traddr: &str,
        trsvcid: &str,
        subnqn: &str,
    ) -> Result<Self, NqnError> {
        let mut entry = Self::zeroed();
        entry.trtype = TransportType::TCP.0;
        entry.adrfam = adrfam.0;
        entry.subtype = subtype.0;
        entry.treq = treq::SECURE_CHANNEL_NOT_REQUIRED;
        entry.portid = portid;
        entry.cntlid = 0xFFFF;
        entry.set_traddr(traddr);
        entry.set_trsvcid(trsvcid);
        entry.set_subnqn(subnqn)?;
        entry.tsas[0] = TcpSecurityType::NONE.0;
        Ok(entry)
    }

    /// Sets TRADDR (space padded; truncated if longer than 256 bytes).
    pub fn set_traddr(&mut self, traddr: &str) {
        copy_padded(&mut self.traddr, traddr, b' ');
    }

    /// Sets TRSVCID (space padded; truncated if longer than 32 bytes).
    pub fn set_trsvcid(&mut self, trsvcid: &str) {
        copy_padded(&mut self.trsvcid, trsvcid, b' ');
    }

    /// Sets SUBNQN.
    ///
    /// # Errors
    /// The NQN does not fit or holds a NUL.
    pub fn set_subnqn(&mut self, nqn: &str) -> Result<(), NqnError> {
        write_nul_terminated(&mut self.subnqn, nqn)
    }

    /// TRADDR without padding.
    #[must_use]
    pub fn traddr_bytes(&self) -> &[u8] {
        trim_padded(&self.traddr)
    }

    /// TRSVCID without padding.
    #[must_use]
    pub fn trsvcid_bytes(&self) -> &[u8] {
        trim_padded(&self.trsvcid)
    }

    /// SUBNQN as text.
    ///
    /// # Errors
    /// The field is not NUL-terminated UTF-8.
    pub fn subnqn_str(&self) -> Result<&str, NqnError> {
        read_nul_terminated(&self.subnqn)
    }
}

#[cfg(test)]
mod tests;
