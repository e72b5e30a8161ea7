//! The transmit side of a host queue pair: what waits to be sent, and sending it
//! with one vectored write per batch.

use super::{QPair, Slot, State};
use crate::pdu::stream::TxSource;
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

/// Items resolve to bytes of their own or of a slot's buffer; a data item sent
/// lets its slot's buffer go.
impl TxSource<TxItem> for Vec<Slot> {
    fn bytes<'a>(&'a self, item: &'a TxItem) -> &'a [u8] {
        match item {
            TxItem::Hdr(h) => h.as_slice(),
            TxItem::SlotData { slot, off, len } => &self[*slot as usize]
                .buf
                .as_ref()
                .expect("data buffer")
                .as_slice()[*off..off + len],
            TxItem::Small { bytes, len } => &bytes[..usize::from(*len)],
            TxItem::Digest(d) => d,
        }
    }

    fn sent(&mut self, item: TxItem) {
        if let TxItem::SlotData { slot, .. } = item {
            self[slot as usize].queued -= 1;
        }
    }
}

impl QPair {
    /// Sends queued items until the socket would block; `Ok(true)`: something went.
    pub(super) fn send(&self, st: &mut State) -> Result<bool, String> {
        let Some(stream) = st.stream.as_mut() else {
            return Ok(false);
        };
        match stream.send(&mut st.slots) {
            Ok(sent) => Ok(sent.progress),
            Err(e) if e.kind() == std::io::ErrorKind::WriteZero => Err("send returned 0".into()),
            Err(e) => Err(format!("send failed: {e}")),
        }
    }
}
