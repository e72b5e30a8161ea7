//! The transmit side of a host queue pair: what waits to be sent, and sending it
//! with one vectored write per batch.

use std::io::{IoSlice, Write};

use super::{QPair, State};
use crate::pdu::HeaderBuf;

pub(super) enum TxItem {
    Hdr(HeaderBuf),
    /// Bytes `off..off + len` of a slot's buffer.
    SlotData {
        slot: u16,
        off: usize,
        len: usize,
    },
    /// The first `len` bytes (a DSM range or part of it).
    Small {
        bytes: [u8; 16],
        len: u8,
    },
    Digest([u8; 4]),
}

impl QPair {
    /// Sends queued items until the socket would block; `Ok(true)`: something went.
    pub(super) fn send(&self, st: &mut State) -> Result<bool, String> {
        let mut progress = false;
        while !st.tx.is_empty() {
            let Some(sock) = st.sock.as_ref() else {
                return Ok(progress);
            };
            let mut iov: [IoSlice<'_>; 64] = [IoSlice::new(&[]); 64];
            let mut n = 0;
            for (i, item) in st.tx.iter().take(64).enumerate() {
                let b: &[u8] = match item {
                    TxItem::Hdr(h) => h.as_slice(),
                    TxItem::SlotData { slot, off, len } => &st.slots[*slot as usize]
                        .buf
                        .as_ref()
                        .expect("data buffer")
                        .as_slice()[*off..off + len],
                    TxItem::Small { bytes, len } => &bytes[..usize::from(*len)],
                    TxItem::Digest(d) => d,
                };
                iov[n] = IoSlice::new(if i == 0 { &b[st.tx_off..] } else { b });
                n += 1;
            }
            match (&*sock).write_vectored(&iov[..n]) {
                Ok(0) => return Err("send returned 0".into()),
                Ok(mut sent) => {
                    progress = true;
                    while sent > 0 {
                        let len = match st.tx.front().expect("sent bytes belong to items") {
                            TxItem::Hdr(h) => h.len,
                            TxItem::SlotData { len, .. } => *len,
                            TxItem::Small { len, .. } => usize::from(*len),
                            TxItem::Digest(_) => 4,
                        };
                        let left = len - st.tx_off;
                        if sent >= left {
                            sent -= left;
                            if let Some(TxItem::SlotData { slot, .. }) = st.tx.pop_front() {
                                st.slots[slot as usize].queued -= 1;
                            }
                            st.tx_off = 0;
                        } else {
                            st.tx_off += sent;
                            sent = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send failed: {e}")),
            }
        }
        Ok(progress)
    }
}
