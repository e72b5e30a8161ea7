//! The NVMe/TCP PDU codec: common header, per-type headers, digests, and the checks a
//! receiver applies before it trusts any length or offset; and [`stream::Stream`],
//! the framing both the host and the target receive and transmit with, over a
//! [`transport::Transport`]. No unsafe.
//!
//! Layout of every PDU (NVMe/TCP transport specification 1.0, section 3.6):
//!
//! ```text
//! byte 0       1       2       3       4..8
//!      type    flags   HLEN    PDO     PLEN (LE u32, whole PDU)
//!      [type-specific header up to HLEN][HDGST: crc32c(header), 4 bytes, if HDGSTF]
//!      [padding up to PDO][data][DDGST: crc32c(data), 4 bytes, if DDGSTF]
//! ```
//!
//! Type-specific headers (offsets from the start of the PDU):
//!
//! ```text
//! ICReq   HLEN 128: 8 PFV u16 | 10 HPDA u8 | 11 DGST (bit0 hdr, bit1 data) | 12 MAXR2T u32
//! ICResp  HLEN 128: 8 PFV u16 | 10 CPDA u8 | 11 DGST | 12 MAXH2CDATA u32
//! TermReq HLEN 24:  8 FES u16 | 10 FEI u32 | data: the header of the PDU in error
//! Capsule Cmd  72:  8..72 the 64-byte SQE        | in-capsule data
//! Capsule Resp 24:  8..24 the 16-byte CQE
//! H2CData HLEN 24:  8 CCCID u16 | 10 TTAG u16 | 12 DATAO u32 | 16 DATAL u32
//! C2HData HLEN 24:  8 CCCID u16 | 10 rsvd     | 12 DATAO u32 | 16 DATAL u32
//! R2T     HLEN 24:  8 CCCID u16 | 10 TTAG u16 | 12 R2TO u32  | 16 R2TL u32
//! ```

use std::fmt;

pub mod stream;
pub mod transport;

/// Bytes of the common header.
pub const CH_LEN: usize = 8;
/// Header digest length.
pub const DIGEST_LEN: usize = 4;
/// The largest header of any PDU type.
pub const MAX_HLEN: usize = 128;

/// PDU type (an open newtype: unknown values parse, then fail validation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PduType(pub u8);

impl PduType {
    pub const IC_REQ: Self = Self(0x00);
    pub const IC_RESP: Self = Self(0x01);
    pub const H2C_TERM_REQ: Self = Self(0x02);
    pub const C2H_TERM_REQ: Self = Self(0x03);
    pub const CAPSULE_CMD: Self = Self(0x04);
    pub const CAPSULE_RESP: Self = Self(0x05);
    pub const H2C_DATA: Self = Self(0x06);
    pub const C2H_DATA: Self = Self(0x07);
    pub const R2T: Self = Self(0x09);

    /// The fixed header length of a known type.
    pub fn hlen(self) -> Option<u8> {
        Some(match self {
            Self::IC_REQ | Self::IC_RESP => 128,
            Self::CAPSULE_CMD => 72,
            Self::H2C_TERM_REQ
            | Self::C2H_TERM_REQ
            | Self::CAPSULE_RESP
            | Self::H2C_DATA
            | Self::C2H_DATA
            | Self::R2T => 24,
            _ => return None,
        })
    }

    /// Whether PDUs of this type carry digests (IC and TermReq PDUs never do).
    pub fn digestible(self) -> bool {
        !matches!(
            self,
            Self::IC_REQ | Self::IC_RESP | Self::H2C_TERM_REQ | Self::C2H_TERM_REQ
        )
    }
}

impl fmt::Debug for PduType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::IC_REQ => "ICReq",
            Self::IC_RESP => "ICResp",
            Self::H2C_TERM_REQ => "H2CTermReq",
            Self::C2H_TERM_REQ => "C2HTermReq",
            Self::CAPSULE_CMD => "CapsuleCmd",
            Self::CAPSULE_RESP => "CapsuleResp",
            Self::H2C_DATA => "H2CData",
            Self::C2H_DATA => "C2HData",
            Self::R2T => "R2T",
            _ => return write!(f, "PduType({:#04x})", self.0),
        };
        f.write_str(name)
    }
}

bitflags::bitflags! {
    /// Common-header flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PduFlags: u8 {
        const HDGSTF = 1 << 0;
        const DDGSTF = 1 << 1;
        const LAST_PDU = 1 << 2;
        const SUCCESS = 1 << 3;
    }
}

/// Fatal error status of a termination request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fes(pub u16);

impl Fes {
    pub const INVALID_HEADER_FIELD: Self = Self(0x01);
    pub const PDU_SEQUENCE_ERROR: Self = Self(0x02);
    pub const HEADER_DIGEST_ERROR: Self = Self(0x03);
    pub const DATA_OUT_OF_RANGE: Self = Self(0x04);
    pub const DATA_LIMIT_EXCEEDED: Self = Self(0x05);
    pub const UNSUPPORTED_PARAMETER: Self = Self(0x06);
}

/// A protocol violation: the connection ends with a termination request carrying
/// `fes` and `fei`: for an invalid header field the byte offset of the field, for a
/// header digest error the digest received, otherwise reserved (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("NVMe/TCP protocol error {fes:?} at {fei}: {why}")]
pub struct TermError {
    pub fes: Fes,
    pub fei: u32,
    pub why: &'static str,
}

impl TermError {
    pub fn field(fei: u32, why: &'static str) -> Self {
        Self {
            fes: Fes::INVALID_HEADER_FIELD,
            fei,
            why,
        }
    }

    pub fn new(fes: Fes, fei: u32, why: &'static str) -> Self {
        Self { fes, fei, why }
    }
}

/// The 8-byte common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: PduType,
    pub flags: PduFlags,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    pub fn parse(b: &[u8]) -> Self {
        Self {
            pdu_type: PduType(b[0]),
            flags: PduFlags::from_bits_retain(b[1]),
            hlen: b[2],
            pdo: b[3],
            plen: le32(b, 4),
        }
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.pdu_type.0;
        out[1] = self.flags.bits();
        out[2] = self.hlen;
        out[3] = self.pdo;
        out[4..8].copy_from_slice(&self.plen.to_le_bytes());
    }
}

/// What the connection negotiated at ICReq/ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// Where a received PDU's parts are, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub hlen: usize,
    /// A header digest follows the header.
    pub hdgst: bool,
    /// Offset of the data from the start of the PDU (0 when there is none).
    pub pdo: usize,
    pub data_len: usize,
    /// A data digest follows the data.
    pub ddgst: bool,
}

impl Layout {
    /// Bytes of header plus header digest.
    pub fn header_bytes(&self) -> usize {
        self.hlen + if self.hdgst { DIGEST_LEN } else { 0 }
    }

    /// Padding between the header digest and the data.
    pub fn pad(&self) -> usize {
        if self.data_len == 0 {
            0
        } else {
            self.pdo - self.header_bytes()
        }
    }
}

/// Limits the receiver enforces on data sizes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest in-capsule data for this queue.
    pub in_capsule: usize,
    /// MAXH2CDATA advertised in ICResp.
    pub max_h2c_data: usize,
}

/// Checks a host-to-controller PDU's common header. `digests` is `None` until the
/// ICReq was answered.
pub fn validate_h2c(
    ch: &CommonHeader,
    digests: Option<Digests>,
    limits: &Limits,
) -> Result<Layout, TermError> {
    let t = ch.pdu_type;
    if !matches!(
        t,
        PduType::IC_REQ | PduType::H2C_TERM_REQ | PduType::CAPSULE_CMD | PduType::H2C_DATA
    ) {
        return Err(TermError::field(0, "PDU type a host may not send"));
    }
    match (t, digests) {
        (PduType::IC_REQ, Some(_)) => {
            return Err(TermError::new(Fes::PDU_SEQUENCE_ERROR, 0, "second ICReq"))
        }
        (PduType::IC_REQ | PduType::H2C_TERM_REQ, _) => {}
        (_, None) => {
            return Err(TermError::new(
                Fes::PDU_SEQUENCE_ERROR,
                0,
                "PDU before ICReq",
            ))
        }
        _ => {}
    }
    let hlen = t.hlen().expect("known type");
    if ch.hlen != hlen {
        return Err(TermError::field(2, "HLEN does not match the PDU type"));
    }
    let dg = digests.unwrap_or_default();
    let (hdgst, ddgst_neg) = if t.digestible() {
        (dg.header, dg.data)
    } else {
        (false, false)
    };
    if ch.flags.contains(PduFlags::HDGSTF) != hdgst {
        return Err(TermError::field(
            1,
            "HDGSTF differs from the negotiated header digest",
        ));
    }
    let hbytes = usize::from(hlen) + if hdgst { DIGEST_LEN } else { 0 };
    let plen = ch.plen as usize;
    if plen < hbytes {
        return Err(TermError::field(4, "PLEN shorter than the header"));
    }
    if t == PduType::IC_REQ {
        if plen != 128 {
            return Err(TermError::field(4, "ICReq PLEN must be 128"));
        }
        if ch.pdo != 0 {
            return Err(TermError::field(3, "ICReq PDO must be 0"));
        }
        return Ok(Layout {
            hlen: 128,
            hdgst: false,
            pdo: 0,
            data_len: 0,
            ddgst: false,
        });
    }
    if t == PduType::H2C_TERM_REQ {
        // The data is the header of the PDU the host found in error: at most 128 bytes.
        if plen > usize::from(hlen) + MAX_HLEN {
            return Err(TermError::field(4, "H2CTermReq too long"));
        }
        return Ok(Layout {
            hlen: 24,
            hdgst: false,
            pdo: if plen > 24 { 24 } else { 0 },
            data_len: plen - 24,
            ddgst: false,
        });
    }
    if plen == hbytes {
        if ch.flags.contains(PduFlags::DDGSTF) {
            return Err(TermError::field(1, "DDGSTF set on a PDU without data"));
        }
        if t == PduType::H2C_DATA {
            return Err(TermError::field(4, "H2CData without data"));
        }
        return Ok(Layout {
            hlen: usize::from(hlen),
            hdgst,
            pdo: 0,
            data_len: 0,
            ddgst: false,
        });
    }
    let ddgst = ch.flags.contains(PduFlags::DDGSTF);
    if ddgst != ddgst_neg {
        return Err(TermError::field(
            1,
            "DDGSTF differs from the negotiated data digest",
        ));
    }
    let pdo = usize::from(ch.pdo);
    if pdo < hbytes || pdo % 4 != 0 || pdo > plen {
        return Err(TermError::field(3, "PDO outside the PDU or misaligned"));
    }
    let tail = if ddgst { DIGEST_LEN } else { 0 };
    let data_len = plen
        .checked_sub(pdo + tail)
        .filter(|&n| n > 0)
        .ok_or(TermError::field(4, "PLEN leaves no room for the data"))?;
    let limit = if t == PduType::CAPSULE_CMD {
        limits.in_capsule
    } else {
        limits.max_h2c_data
    };
    if data_len > limit {
        let fes = if t == PduType::H2C_DATA {
            Fes::DATA_LIMIT_EXCEEDED
        } else {
            Fes::DATA_OUT_OF_RANGE
        };
        // FEI is reserved for these two statuses.
        return Err(TermError::new(
            fes,
            0,
            "data longer than the negotiated limit",
        ));
    }
    Ok(Layout {
        hlen: usize::from(hlen),
        hdgst,
        pdo,
        data_len,
        ddgst,
    })
}

/// CRC32C as NVMe/TCP digests use it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more data.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// ICReq fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    pub pfv: u16,
    pub hpda: u8,
    pub digests: Digests,
    pub maxr2t: u32,
}

impl IcReq {
    pub fn parse(h: &[u8]) -> Self {
        Self {
            pfv: le16(h, 8),
            hpda: h[10],
            digests: Digests {
                header: h[11] & 1 != 0,
                data: h[11] & 2 != 0,
            },
            maxr2t: le32(h, 12),
        }
    }

    /// Checks the fields a controller must refuse.
    pub fn check(&self, raw_dgst: u8) -> Result<(), TermError> {
        if self.pfv != 0 {
            return Err(TermError::new(
                Fes::UNSUPPORTED_PARAMETER,
                8,
                "PDU format version",
            ));
        }
        if self.hpda > 31 {
            return Err(TermError::new(
                Fes::UNSUPPORTED_PARAMETER,
                10,
                "HPDA above 31",
            ));
        }
        if raw_dgst & !3 != 0 {
            return Err(TermError::field(11, "reserved DGST bits set"));
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        CommonHeader {
            pdu_type: PduType::IC_REQ,
            flags: PduFlags::empty(),
            hlen: 128,
            pdo: 0,
            plen: 128,
        }
        .write(&mut b);
        b[8..10].copy_from_slice(&self.pfv.to_le_bytes());
        b[10] = self.hpda;
        b[11] = u8::from(self.digests.header) | (u8::from(self.digests.data) << 1);
        b[12..16].copy_from_slice(&self.maxr2t.to_le_bytes());
        b
    }
}

/// ICResp fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    pub pfv: u16,
    pub cpda: u8,
    pub digests: Digests,
    pub maxh2cdata: u32,
}

impl IcResp {
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        CommonHeader {
            pdu_type: PduType::IC_RESP,
            flags: PduFlags::empty(),
            hlen: 128,
            pdo: 0,
            plen: 128,
        }
        .write(&mut b);
        b[8..10].copy_from_slice(&self.pfv.to_le_bytes());
        b[10] = self.cpda;
        b[11] = u8::from(self.digests.header) | (u8::from(self.digests.data) << 1);
        b[12..16].copy_from_slice(&self.maxh2cdata.to_le_bytes());
        b
    }

    pub fn parse(h: &[u8]) -> Self {
        Self {
            pfv: le16(h, 8),
            cpda: h[10],
            digests: Digests {
                header: h[11] & 1 != 0,
                data: h[11] & 2 != 0,
            },
            maxh2cdata: le32(h, 12),
        }
    }
}

/// The data-transfer headers (H2CData, C2HData, R2T) share one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub cccid: u16,
    /// TTAG for H2CData and R2T; reserved (0) in C2HData.
    pub ttag: u16,
    /// DATAO / R2TO.
    pub offset: u32,
    /// DATAL / R2TL.
    pub length: u32,
}

impl DataHeader {
    pub fn parse(h: &[u8]) -> Self {
        Self {
            cccid: le16(h, 8),
            ttag: le16(h, 10),
            offset: le32(h, 12),
            length: le32(h, 16),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[8..10].copy_from_slice(&self.cccid.to_le_bytes());
        b[10..12].copy_from_slice(&self.ttag.to_le_bytes());
        b[12..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.length.to_le_bytes());
    }
}

/// Room for the longest header we send: a termination request (24 bytes plus 128
/// quoted), or a data header padded to the host's largest alignment (128 bytes).
pub const HEADER_BUF_LEN: usize = 24 + MAX_HLEN;

/// An encoded PDU header (plus header digest and padding) ready to send; the data,
/// if any, follows from its own buffer, then the data digest.
#[derive(Clone, Copy)]
pub struct HeaderBuf {
    pub bytes: [u8; HEADER_BUF_LEN],
    pub len: usize,
}

impl fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeaderBuf({:02x?})", &self.bytes[..self.len])
    }
}

impl HeaderBuf {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Builds a header of `hlen` bytes filled by `fill`, with a header digest when
    /// `hdgst`, padded so the data starts at a multiple of `align` bytes.
    fn build(
        t: PduType,
        mut flags: PduFlags,
        hdgst: bool,
        ddgst: bool,
        data_len: usize,
        align: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Self {
        let hlen = usize::from(t.hlen().expect("known type"));
        let mut b = [0u8; HEADER_BUF_LEN];
        let hd = if hdgst { DIGEST_LEN } else { 0 };
        if hdgst {
            flags |= PduFlags::HDGSTF;
        }
        let (pdo, plen) = if data_len > 0 {
            let pdo = (hlen + hd).next_multiple_of(align.max(1));
            if ddgst {
                flags |= PduFlags::DDGSTF;
            }
            (pdo, pdo + data_len + if ddgst { DIGEST_LEN } else { 0 })
        } else {
            (0, hlen + hd)
        };
        CommonHeader {
            pdu_type: t,
            flags,
            hlen: hlen as u8,
            pdo: pdo as u8,
            plen: plen as u32,
        }
        .write(&mut b);
        fill(&mut b[..hlen]);
        if hdgst {
            let crc = crc32c(&b[..hlen]);
            b[hlen..hlen + 4].copy_from_slice(&crc.to_le_bytes());
        }
        let len = if data_len > 0 { pdo } else { hlen + hd };
        Self { bytes: b, len }
    }

    pub fn capsule_resp(cqe: &[u8; 16], hdgst: bool) -> Self {
        Self::build(
            PduType::CAPSULE_RESP,
            PduFlags::empty(),
            hdgst,
            false,
            0,
            4,
            |b| b[8..24].copy_from_slice(cqe),
        )
    }

    /// C2HData header for `dh.length` bytes; `align` is the host's (HPDA + 1) * 4.
    pub fn c2h_data(dh: DataHeader, flags: PduFlags, d: Digests, align: usize) -> Self {
        let dh = DataHeader { ttag: 0, ..dh };
        Self::build(
            PduType::C2H_DATA,
            flags,
            d.header,
            d.data,
            dh.length as usize,
            align,
            |b| dh.write(b),
        )
    }

    pub fn r2t(dh: DataHeader, hdgst: bool) -> Self {
        Self::build(PduType::R2T, PduFlags::empty(), hdgst, false, 0, 4, |b| {
            dh.write(b)
        })
    }

    /// A termination request (C2H when sent by a controller) quoting up to 128 bytes
    /// of the offending header.
    pub fn term_req(t: PduType, e: &TermError, quoted: &[u8]) -> Self {
        let q = &quoted[..quoted.len().min(MAX_HLEN)];
        let mut h = Self::build(t, PduFlags::empty(), false, false, 0, 4, |b| {
            b[8..10].copy_from_slice(&e.fes.0.to_le_bytes());
            b[10..14].copy_from_slice(&e.fei.to_le_bytes());
        });
        h.bytes[24..24 + q.len()].copy_from_slice(q);
        h.len = 24 + q.len();
        h.bytes[4..8].copy_from_slice(&(h.len as u32).to_le_bytes());
        h
    }

    /// A command capsule (host side) with `data_len` bytes of in-capsule data to follow.
    pub fn capsule_cmd(sqe: &[u8; 64], data_len: usize, d: Digests) -> Self {
        Self::build(
            PduType::CAPSULE_CMD,
            PduFlags::empty(),
            d.header,
            d.data,
            data_len,
            4,
            |b| b[8..72].copy_from_slice(sqe),
        )
    }

    /// H2CData header (host side).
    pub fn h2c_data(dh: DataHeader, last: bool, d: Digests) -> Self {
        let flags = if last {
            PduFlags::LAST_PDU
        } else {
            PduFlags::empty()
        };
        Self::build(
            PduType::H2C_DATA,
            flags,
            d.header,
            d.data,
            dh.length as usize,
            4,
            |b| dh.write(b),
        )
    }
}

#[cfg(test)]
mod tests;
