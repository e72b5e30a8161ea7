//! The 64-byte submission queue entry and the SGL descriptor carried in its data pointer.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::opcode::{AdminOpcode, FabricsCommandType, IoOpcode};

/// A submission queue entry (NVMe base 2.0 figure 88), byte-exact.
///
/// Fields are public and named as in the specification; the methods of the same name
/// return them by value, and the other methods decode command-specific dwords.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Command {
    /// CDW0 bits 7:0: opcode.
    pub opcode: u8,
    /// CDW0 bits 15:8: FUSE (bits 1:0) and PSDT (bits 7:6).
    pub flags: u8,
    /// CDW0 bits 31:16: command identifier.
    pub cid: u16,
    /// Namespace identifier (for Fabrics commands, byte 4 is FCTYPE instead).
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer: SGL1 ([`SglDescriptor`]) on fabrics, PRP1/PRP2 on PCIe.
    pub dptr: [u64; 2],
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

const _: () = assert!(size_of::<Command>() == 64);
const _: () = assert!(core::mem::offset_of!(Command, mptr) == 16);
const _: () = assert!(core::mem::offset_of!(Command, dptr) == 24);
const _: () = assert!(core::mem::offset_of!(Command, cdw10) == 40);

/// PRP or SGL selector (PSDT, CDW0 bits 15:14).
pub mod psdt {
    /// PRPs are used.
    pub const PRP: u8 = 0b00;
    /// SGLs are used; MPTR is the address of a contiguous metadata buffer. Fabrics uses this.
    pub const SGL_MPTR_CONTIGUOUS: u8 = 0b01;
    /// SGLs are used; MPTR is the address of an SGL segment with one descriptor.
    pub const SGL_MPTR_SGL: u8 = 0b10;
}

/// Fused operation (FUSE, CDW0 bits 9:8).
pub mod fuse {
    /// Normal operation.
    pub const NORMAL: u8 = 0b00;
    /// First command of a fused operation.
    pub const FIRST: u8 = 0b01;
    /// Second command of a fused operation.
    pub const SECOND: u8 = 0b10;
}

impl Command {
    /// A zeroed command with the given opcode and command identifier.
    #[must_use]
    pub const fn new(opcode: u8, cid: u16) -> Self {
        Self {
            opcode,
            flags: 0,
            cid,
            nsid: 0,
            cdw2: 0,
            cdw3: 0,
            mptr: 0,
            dptr: [0; 2],
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            cdw14: 0,
            cdw15: 0,
        }
    }

    /// Builder: sets NSID.
    #[must_use]
    pub const fn with_nsid(mut self, nsid: u32) -> Self {
        self.nsid = nsid;
        self
    }

    /// Builder: sets the flags byte (FUSE and PSDT).
    #[must_use]
    pub const fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// Builder: sets PSDT to SGL ([`psdt::SGL_MPTR_CONTIGUOUS`]) and SGL1 to `sgl`.
    #[must_use]
    pub const fn with_sgl1(mut self, sgl: SglDescriptor) -> Self {
        self.flags = (self.flags & 0x3F) | (psdt::SGL_MPTR_CONTIGUOUS << 6);
        self.dptr = sgl.to_dptr();
        self
    }

    /// Builder: sets command dwords 10 to 15 (in order).
    #[must_use]
    pub const fn with_cdws(mut self, cdw: [u32; 6]) -> Self {
        self.cdw10 = cdw[0];
        self.cdw11 = cdw[1];
        self.cdw12 = cdw[2];
        self.cdw13 = cdw[3];
        self.cdw14 = cdw[4];
        self.cdw15 = cdw[5];
        self
    }

    /// Opcode byte.
    #[must_use]
    pub const fn opcode(&self) -> u8 {
        self.opcode
    }

    /// Opcode as an admin opcode.
    #[must_use]
    pub const fn admin_opcode(&self) -> AdminOpcode {
        AdminOpcode(self.opcode)
    }

    /// Opcode as an NVM I/O opcode.
    #[must_use]
    pub const fn io_opcode(&self) -> IoOpcode {
        IoOpcode(self.opcode)
    }

    /// Whether this is a Fabrics command (opcode 0x7F).
    #[must_use]
    pub const fn is_fabrics(&self) -> bool {
        self.opcode == AdminOpcode::FABRICS.0
    }

    /// Fabrics command type (byte 4); meaningful only when [`Self::is_fabrics`].
    #[must_use]
    pub const fn fctype(&self) -> FabricsCommandType {
        FabricsCommandType((self.nsid & 0xFF) as u8)
    }

    /// Command identifier.
    #[must_use]
    pub const fn cid(&self) -> u16 {
        self.cid
    }

    /// Namespace identifier.
    #[must_use]
    pub const fn nsid(&self) -> u32 {
        self.nsid
    }

    /// FUSE (flags bits 1:0), see [`fuse`].
    #[must_use]
    pub const fn fuse(&self) -> u8 {
        self.flags & 0b11
    }

    /// PSDT (flags bits 7:6), see [`psdt`].
    #[must_use]
    pub const fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    /// SGL1, the data pointer read as an SGL descriptor.
    #[must_use]
    pub const fn sgl1(&self) -> SglDescriptor {
        SglDescriptor::from_dptr(self.dptr)
    }

    /// Command dword 10.
    #[must_use]
    pub const fn cdw10(&self) -> u32 {
        self.cdw10
    }

    /// Command dword 11.
    #[must_use]
    pub const fn cdw11(&self) -> u32 {
        self.cdw11
    }

    /// Command dword 12.
    #[must_use]
    pub const fn cdw12(&self) -> u32 {
        self.cdw12
    }

    /// Command dword 13.
    #[must_use]
    pub const fn cdw13(&self) -> u32 {
        self.cdw13
    }

    /// Command dword 14.
    #[must_use]
    pub const fn cdw14(&self) -> u32 {
        self.cdw14
    }

    /// Command dword 15.
    #[must_use]
    pub const fn cdw15(&self) -> u32 {
        self.cdw15
    }
}

/// Read, Write, Compare, Write Zeroes, Write Uncorrectable and Verify fields
/// (NVM command set 1.0 figures 15 and following).
impl Command {
    /// Builds a Read (`nlb` is zero-based: 0 means one block).
    #[must_use]
    pub const fn read(cid: u16, nsid: u32, slba: u64, nlb: u16) -> Self {
        Self::new(IoOpcode::READ.0, cid)
            .with_nsid(nsid)
            .with_lba_range(slba, nlb)
    }

    /// Builds a Write (`nlb` is zero-based: 0 means one block).
    #[must_use]
    pub const fn write(cid: u16, nsid: u32, slba: u64, nlb: u16) -> Self {
        Self::new(IoOpcode::WRITE.0, cid)
            .with_nsid(nsid)
            .with_lba_range(slba, nlb)
    }

    /// Builds a Write Zeroes (`nlb` is zero-based).
    #[must_use]
    pub const fn write_zeroes(cid: u16, nsid: u32, slba: u64, nlb: u16) -> Self {
        Self::new(IoOpcode::WRITE_ZEROES.0, cid)
            .with_nsid(nsid)
            .with_lba_range(slba, nlb)
    }

    /// Builds a Flush.
    #[must_use]
    pub const fn flush(cid: u16, nsid: u32) -> Self {
        Self::new(IoOpcode::FLUSH.0, cid).with_nsid(nsid)
    }

    /// Builder: sets SLBA (CDW10/11) and the zero-based NLB (CDW12 bits 15:0).
    #[must_use]
    pub const fn with_lba_range(mut self, slba: u64, nlb: u16) -> Self {
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
        self.cdw12 = (self.cdw12 & !0xFFFF) | nlb as u32;
        self
    }

    /// Builder: sets or clears Force Unit Access (CDW12 bit 30).
    #[must_use]
    pub const fn with_fua(mut self, fua: bool) -> Self {
        self.cdw12 = (self.cdw12 & !(1 << 30)) | ((fua as u32) << 30);
        self
    }

    /// Starting LBA (CDW10 | CDW11 << 32).
    #[must_use]
    pub const fn slba(&self) -> u64 {
        self.cdw10 as u64 | (self.cdw11 as u64) << 32
    }

    /// Number of Logical Blocks, zero-based (CDW12 bits 15:0).
    #[must_use]
    pub const fn nlb(&self) -> u16 {
        (self.cdw12 & 0xFFFF) as u16
    }

    /// Number of logical blocks, one-based (`nlb() + 1`).
    #[must_use]
    pub const fn block_count(&self) -> u32 {
        self.nlb() as u32 + 1
    }

    /// Limited Retry (CDW12 bit 31).
    #[must_use]
    pub const fn limited_retry(&self) -> bool {
        self.cdw12 & (1 << 31) != 0
    }

    /// Force Unit Access (CDW12 bit 30).
    #[must_use]
    pub const fn fua(&self) -> bool {
        self.cdw12 & (1 << 30) != 0
    }

    /// Protection Information field PRINFO (CDW12 bits 29:26).
    #[must_use]
    pub const fn prinfo(&self) -> u8 {
        ((self.cdw12 >> 26) & 0xF) as u8
    }

    /// Write Zeroes: Deallocate (DEAC, CDW12 bit 25).
    #[must_use]
    pub const fn deac(&self) -> bool {
        self.cdw12 & (1 << 25) != 0
    }

    /// Storage Tag Check (STC, CDW12 bit 24).
    #[must_use]
    pub const fn stc(&self) -> bool {
        self.cdw12 & (1 << 24) != 0
    }

    /// Directive Type (DTYPE, CDW12 bits 23:20).
    #[must_use]
    pub const fn dtype(&self) -> u8 {
        ((self.cdw12 >> 20) & 0xF) as u8
    }

    /// Dataset Management hints (DSM, CDW13 bits 7:0) of Read/Write.
    #[must_use]
    pub const fn dsm_hints(&self) -> u8 {
        (self.cdw13 & 0xFF) as u8
    }
}

open_enum! {
    /// SGL descriptor type (SGL identifier bits 7:4; NVMe base 2.0 figure 120).
    pub struct SglType(u8) {
        /// SGL Data Block.
        DATA_BLOCK = 0x0,
        /// SGL Bit Bucket.
        BIT_BUCKET = 0x1,
        /// SGL Segment.
        SEGMENT = 0x2,
        /// SGL Last Segment.
        LAST_SEGMENT = 0x3,
        /// Keyed SGL Data Block (RDMA).
        KEYED_DATA_BLOCK = 0x4,
        /// Transport SGL Data Block: the data is moved by the transport (NVMe/TCP R2T/C2H).
        TRANSPORT_DATA_BLOCK = 0x5,
        /// Vendor specific.
        VENDOR_SPECIFIC = 0xF,
    }
}

open_enum! {
    /// SGL descriptor sub type (SGL identifier bits 3:0; NVMe base 2.0 figure 121).
    pub struct SglSubtype(u8) {
        /// The address field is a memory address.
        ADDRESS = 0x0,
        /// The address field is an offset into the in-capsule data.
        OFFSET = 0x1,
        /// Transport specific (NVMe/TCP uses 0xA for host data transferred by the transport).
        TRANSPORT_SPECIFIC = 0xA,
    }
}

/// A 16-byte SGL descriptor as found in SGL1 (NVMe base 2.0 figure 119).
///
/// This is the layout of every descriptor type except the Keyed SGL Data Block (RDMA),
/// whose length is 24 bits followed by a key.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SglDescriptor {
    /// Address, or offset into in-capsule data when the sub type is [`SglSubtype::OFFSET`].
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Reserved.
    pub reserved: [u8; 3],
    /// SGL identifier: type in bits 7:4, sub type in bits 3:0.
    pub identifier: u8,
}

const _: () = assert!(size_of::<SglDescriptor>() == 16);

impl SglDescriptor {
    /// A descriptor with the given type and sub type.
    #[must_use]
    pub const fn new(sgl_type: SglType, subtype: SglSubtype, address: u64, length: u32) -> Self {
        Self {
            address,
            length,
            reserved: [0; 3],
            identifier: (sgl_type.0 << 4) | (subtype.0 & 0xF),
        }
    }

    /// In-capsule data: Data Block / Offset (identifier 0x01), as NVMe/TCP sends for
    /// writes that fit in the command capsule.
    #[must_use]
    pub const fn in_capsule(offset: u64, length: u32) -> Self {
        Self::new(SglType::DATA_BLOCK, SglSubtype::OFFSET, offset, length)
    }

    /// Transport data: Transport SGL Data Block / transport specific (identifier 0x5A), as
    /// NVMe/TCP sends for reads and for writes moved by R2T/H2CData. A zero length means
    /// no data.
    #[must_use]
    pub const fn transport(length: u32) -> Self {
        Self::new(
            SglType::TRANSPORT_DATA_BLOCK,
            SglSubtype::TRANSPORT_SPECIFIC,
            0,
            length,
        )
    }

    /// Reads a descriptor from a command's data pointer.
    #[must_use]
    pub const fn from_dptr(dptr: [u64; 2]) -> Self {
        let hi = dptr[1];
        Self {
            address: dptr[0],
            length: hi as u32,
            reserved: [(hi >> 32) as u8, (hi >> 40) as u8, (hi >> 48) as u8],
            identifier: (hi >> 56) as u8,
        }
    }

    /// The descriptor as a command's data pointer.
    #[must_use]
    pub const fn to_dptr(self) -> [u64; 2] {
        let hi = self.length as u64
            | (self.reserved[0] as u64) << 32
            | (self.reserved[1] as u64) << 40
            | (self.reserved[2] as u64) << 48
            | (self.identifier as u64) << 56;
        [self.address, hi]
    }

    /// Descriptor type (identifier bits 7:4).
    #[must_use]
    pub const fn sgl_type(&self) -> SglType {
        SglType(self.identifier >> 4)
    }

    /// Descriptor sub type (identifier bits 3:0).
    #[must_use]
    pub const fn subtype(&self) -> SglSubtype {
        SglSubtype(self.identifier & 0xF)
    }

    /// Whether this is in-capsule data (Data Block with Offset sub type).
    #[must_use]
    pub const fn is_in_capsule(&self) -> bool {
        self.identifier == 0x01
    }

    /// Whether this is transport data (Transport SGL Data Block, transport specific 0xA).
    #[must_use]
    pub const fn is_transport(&self) -> bool {
        self.identifier == 0x5A
    }
}

#[cfg(test)]
mod tests;
