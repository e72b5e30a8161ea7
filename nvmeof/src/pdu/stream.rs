//! One NVMe/TCP byte stream, as both ends see it: a staging buffer that PDU headers
//! are framed from, data read either out of staging or straight from the transport
//! into the caller's buffer (zero copy), header and data digests, and a transmit
//! queue that leaves in one vectored write per batch.
//!
//! The stream knows framing, not meaning: which PDU types are valid, and where a
//! PDU's data lands, are the caller's (the target checks headers with
//! [`validate_h2c`](super::validate_h2c), the host with its own checks of C2H PDUs).
//! It is generic over its [`Transport`] and over the caller's transmit item type,
//! so the I/O path has no dynamic dispatch.
//!
//! Receiving one PDU:
//!
//! ```text
//! recv_header(validate) ──► Ok(Some(ch)) ──► the caller reads header()
//!                                           └► begin_data(off, direct) if it has data
//! recv_data(dst) ─► Progress | NeedBytes (fill) | Blocked ─► Done { digest_ok, end }
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::{crc32c, crc32c_append, le32, CommonHeader, Layout, CH_LEN, DIGEST_LEN, MAX_HLEN};

pub use super::transport::Transport;

/// Data at least this long that is not staged yet is read straight into its buffer.
pub const DIRECT_MIN: usize = 2048;
/// Most items one vectored write takes.
const IOV_MAX: usize = 64;

/// Where the current PDU's data stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Data {
    pad: usize,
    off: usize,
    remaining: usize,
    crc: u32,
    ddgst: bool,
    /// Read straight into the destination however short the data is.
    always_direct: bool,
}

/// Why a header was refused.
#[derive(Debug)]
pub enum HeaderError<E> {
    /// The caller's validator refused the common header; [`Stream::quoted`] holds
    /// what was staged of it.
    Invalid(E),
    /// The header digest does not match: the digest received.
    Digest(u32),
}

/// What one [`Stream::recv_data`] call did.
#[derive(Debug)]
pub enum DataStep {
    /// Data moved (or padding was skipped); call again.
    Progress,
    /// Nothing staged to take: [`Stream::fill`] first.
    NeedBytes,
    /// A direct read found nothing: wait for the transport.
    Blocked,
    /// The PDU's data and digest are in. `end` is the offset after its last byte.
    Done { digest_ok: bool, end: usize },
    /// The transport failed (`UnexpectedEof`: the peer closed it).
    Failed(io::Error),
}

/// [`Stream::recv_data`]'s result, with the bytes it moved by either path.
#[derive(Debug)]
pub struct DataRecv {
    pub step: DataStep,
    /// Bytes copied out of the staging buffer into the destination.
    pub copied: usize,
    /// Bytes read straight from the transport into the destination.
    pub direct: usize,
}

/// What one [`Stream::send`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Some bytes left.
    pub progress: bool,
    /// The transport would block with items still queued.
    pub blocked: bool,
    /// Bytes that left.
    pub bytes: usize,
}

/// Resolves queued transmit items to their bytes, and takes them back once sent
/// (a host's data items point into buffers its command slots own).
pub trait TxSource<I> {
    fn bytes<'a>(&'a self, item: &'a I) -> &'a [u8];
    /// `item` has left entirely.
    fn sent(&mut self, item: I) {
        drop(item);
    }
}

/// A received PDU's header bytes: up to the largest header and its digest.
pub type HeaderBytes = [u8; MAX_HLEN + DIGEST_LEN];

/// One NVMe/TCP connection's byte stream over transport `T`, transmitting items `I`.
pub struct Stream<T, I> {
    io: T,
    rx: Box<[u8]>,
    start: usize,
    end: usize,
    hdr: HeaderBytes,
    layout: Layout,
    data: Option<Data>,
    tx: VecDeque<I>,
    tx_off: usize,
}

impl<T: Transport, I> Stream<T, I> {
    /// A stream with `rx_cap` bytes of staging and room for `tx_items` queued items
    /// (both allocated now, never on the I/O path).
    pub fn new(io: T, rx_cap: usize, tx_items: usize) -> Self {
        Self {
            io,
            rx: vec![0u8; rx_cap].into_boxed_slice(),
            start: 0,
            end: 0,
            hdr: [0; MAX_HLEN + DIGEST_LEN],
            layout: Layout {
                hlen: 0,
                hdgst: false,
                pdo: 0,
                data_len: 0,
                ddgst: false,
            },
            data: None,
            tx: VecDeque::with_capacity(tx_items),
            tx_off: 0,
        }
    }

    pub fn transport(&self) -> &T {
        &self.io
    }

    /// Ends the transport both ways (what is queued is not sent).
    pub fn shutdown(&self) -> io::Result<()> {
        self.io.shutdown()
    }

    // ---------------------------------------------------------------- receive

    /// Bytes received and not yet taken.
    pub fn staged(&self) -> usize {
        self.end - self.start
    }

    /// The next bytes are a PDU header (no data of an earlier PDU is pending).
    pub fn at_header(&self) -> bool {
        self.data.is_none()
    }

    /// Reads what the transport has into the staging buffer, with one read: at most
    /// until `upto` bytes are staged when given and fewer are (so the data behind a
    /// header can go straight to its buffer). `Ok(false)`: nothing came (or no room);
    /// `UnexpectedEof`: the peer closed the stream.
    pub fn fill(&mut self, upto: Option<usize>) -> io::Result<bool> {
        let cap = self.rx.len();
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > cap / 2 {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == cap {
            return Ok(false);
        }
        let limit = match upto {
            Some(n) if self.start + n > self.end => (self.start + n).min(cap),
            _ => cap,
        };
        let end = self.end;
        match self.io.read(&mut self.rx[end..limit]) {
            Ok(0) if limit > end => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.end += n;
                Ok(n > 0)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The common header of the next PDU, once staged (not taken).
    pub fn peek_common(&self) -> Option<CommonHeader> {
        (self.at_header() && self.staged() >= CH_LEN)
            .then(|| CommonHeader::parse(&self.rx[self.start..self.start + CH_LEN]))
    }

    /// The bytes staged and not yet taken.
    pub fn staged_bytes(&self) -> &[u8] {
        &self.rx[self.start..self.end]
    }

    /// Takes the next PDU's header once it is all staged: `validate` checks the
    /// common header and says where the PDU's parts are; the header digest is
    /// checked. `Ok(None)`: more bytes are needed. After `Ok(Some)`, [`Self::header`]
    /// holds the header and [`Self::layout`] its layout; the data (if any) is next.
    pub fn recv_header<E>(
        &mut self,
        validate: impl FnOnce(&CommonHeader) -> Result<Layout, E>,
    ) -> Result<Option<CommonHeader>, HeaderError<E>> {
        let Some(ch) = self.peek_common() else {
            return Ok(None);
        };
        let s = self.start;
        let layout = match validate(&ch) {
            Ok(l) => l,
            Err(e) => {
                let n = self.staged().min(MAX_HLEN);
                self.hdr[..n].copy_from_slice(&self.rx[s..s + n]);
                self.layout.hlen = n;
                return Err(HeaderError::Invalid(e));
            }
        };
        let hb = layout.header_bytes();
        if self.staged() < hb {
            return Ok(None);
        }
        self.hdr[..hb].copy_from_slice(&self.rx[s..s + hb]);
        self.start += hb;
        self.layout = layout;
        if layout.hdgst {
            let want = le32(&self.hdr, layout.hlen);
            if crc32c(&self.hdr[..layout.hlen]) != want {
                return Err(HeaderError::Digest(want));
            }
        }
        Ok(Some(ch))
    }

    /// The last header taken.
    pub fn header(&self) -> &HeaderBytes {
        &self.hdr
    }

    /// The last header's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// What a termination request quotes of the last header (or of the refused one).
    pub fn quoted(&self) -> &[u8] {
        &self.hdr[..self.layout.hlen.clamp(CH_LEN, MAX_HLEN)]
    }

    /// Starts receiving the last header's data, to land at `off` of the destination
    /// [`Self::recv_data`] is given: data that is not staged yet goes straight from
    /// the transport when it is at least [`DIRECT_MIN`] long, or `always_direct`.
    pub fn begin_data(&mut self, off: usize, always_direct: bool) {
        let l = self.layout;
        self.data = Some(Data {
            // PDO, when there is one, places the data (even none of it).
            pad: l.pdo.saturating_sub(l.header_bytes()),
            off,
            remaining: l.data_len,
            crc: 0,
            ddgst: l.ddgst,
            always_direct,
        });
    }

    /// Moves the current PDU's data into `dst` (the whole destination buffer; the
    /// data goes at the offset given to [`Self::begin_data`]), or drops it when
    /// `dst` is `None`, then checks its digest.
    pub fn recv_data(&mut self, mut dst: Option<&mut [u8]>) -> DataRecv {
        let mut out = DataRecv {
            step: DataStep::Progress,
            copied: 0,
            direct: 0,
        };
        let Some(mut d) = self.data else {
            out.step = DataStep::Done {
                digest_ok: true,
                end: 0,
            };
            return out;
        };
        if d.pad > 0 {
            let n = d.pad.min(self.staged());
            if n == 0 {
                out.step = DataStep::NeedBytes;
                return out;
            }
            self.start += n;
            d.pad -= n;
        }
        if d.pad == 0 && d.remaining > 0 {
            let staged = self.staged();
            if staged > 0 {
                let n = d.remaining.min(staged);
                let src = &self.rx[self.start..self.start + n];
                if d.ddgst {
                    d.crc = crc32c_append(d.crc, src);
                }
                if let Some(dst) = dst.as_deref_mut() {
                    dst[d.off..d.off + n].copy_from_slice(src);
                    out.copied = n;
                }
                self.start += n;
                d.off += n;
                d.remaining -= n;
            } else if let Some(dst) = dst.filter(|_| d.remaining >= DIRECT_MIN || d.always_direct) {
                // Zero copy: straight from the transport into the destination. Data
                // with nowhere to land goes through staging and is dropped there.
                let dst = &mut dst[d.off..d.off + d.remaining];
                match self.io.read(dst) {
                    Ok(0) => {
                        out.step = DataStep::Failed(io::ErrorKind::UnexpectedEof.into());
                        return out;
                    }
                    Ok(n) => {
                        if d.ddgst {
                            d.crc = crc32c_append(d.crc, &dst[..n]);
                        }
                        out.direct = n;
                        d.off += n;
                        d.remaining -= n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.data = Some(d);
                        out.step = DataStep::Blocked;
                        return out;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        out.step = DataStep::Failed(e);
                        return out;
                    }
                }
            } else {
                self.data = Some(d);
                out.step = DataStep::NeedBytes;
                return out;
            }
        }
        if d.pad > 0 || d.remaining > 0 {
            self.data = Some(d);
            return out;
        }
        let mut digest_ok = true;
        if d.ddgst {
            if self.staged() < DIGEST_LEN {
                self.data = Some(d);
                out.step = DataStep::NeedBytes;
                return out;
            }
            digest_ok = le32(&self.rx, self.start) == d.crc;
            self.start += DIGEST_LEN;
        }
        self.data = None;
        out.step = DataStep::Done {
            digest_ok,
            end: d.off,
        };
        out
    }

    // ---------------------------------------------------------------- transmit

    /// Queues an item; it leaves with the next [`Self::send`].
    pub fn push(&mut self, item: I) {
        self.tx.push_back(item);
    }

    /// Items queued (the first perhaps partly sent).
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    pub fn tx_is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Drops everything queued.
    pub fn clear_tx(&mut self) {
        self.tx.clear();
        self.tx_off = 0;
    }

    /// Sends queued items, up to [`IOV_MAX`] per vectored write, until the queue is
    /// empty or the transport would block. `WriteZero`: the transport took nothing.
    pub fn send<S: TxSource<I> + ?Sized>(&mut self, src: &mut S) -> io::Result<Sent> {
        let mut out = Sent {
            progress: false,
            blocked: false,
            bytes: 0,
        };
        while !self.tx.is_empty() {
            let mut iov: [IoSlice<'_>; IOV_MAX] = [IoSlice::new(&[]); IOV_MAX];
            let mut n = 0;
            for (i, item) in self.tx.iter().take(IOV_MAX).enumerate() {
                let b = src.bytes(item);
                iov[n] = IoSlice::new(if i == 0 { &b[self.tx_off..] } else { b });
                n += 1;
            }
            match self.io.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut sent) => {
                    out.progress = true;
                    out.bytes += sent;
                    while sent > 0 {
                        let front = self.tx.front().expect("sent bytes belong to items");
                        let left = src.bytes(front).len() - self.tx_off;
                        if sent >= left {
                            sent -= left;
                            let item = self.tx.pop_front().expect("the front item");
                            src.sent(item);
                            self.tx_off = 0;
                        } else {
                            self.tx_off += sent;
                            sent = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
