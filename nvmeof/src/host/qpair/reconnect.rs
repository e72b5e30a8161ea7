//! Reconnecting a queue pair whose connection was lost: the blocking handshake runs
//! on a thread of its own and hands the new socket back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrox_bdev::BdevError;

use super::{QPair, State, RECONNECT_EVERY, RX_CAP, TX_PER_SLOT};
use crate::pdu::stream::Stream;

impl QPair {
    /// Whether the queue has a connection; if not, takes the result of a reconnection
    /// under way, or starts one (at most every `RECONNECT_EVERY`). The handshake
    /// blocks — TCP connect, ICReq, Connect, perhaps a new admin queue, up to the
    /// connect timeout each — so it runs on a thread of its own, never on the reactor;
    /// commands fail with `ENOTCONN` meanwhile.
    pub(super) fn try_reconnect(&self, st: &mut State) -> bool {
        if st.stream.is_some() {
            return true;
        }
        if st.closed {
            // A connection that comes back now is dropped with the result.
            st.reconnect = None;
            return false;
        }
        if let Some(slot) = &st.reconnect {
            let done = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match done {
                None => return false,
                Some(Ok((sock, maxh2cdata))) => {
                    st.reconnect = None;
                    st.maxh2cdata = maxh2cdata;
                    st.stream = Some(Stream::new(sock, RX_CAP, st.slots.len() * TX_PER_SLOT));
                    tracing::info!(qid = self.qid, "I/O queue reconnected");
                    // Commands that waited for the connection start now.
                    self.start_queued(st);
                    return true;
                }
                Some(Err(e)) => {
                    st.reconnect = None;
                    tracing::debug!(qid = self.qid, error = %e, "reconnect failed");
                    while let Some(q) = st.pending.pop_front() {
                        st.ready.push((
                            q.done,
                            Err(BdevError::Io(libc::ENOTCONN)),
                            q.op.into_buf(),
                        ));
                    }
                    return false;
                }
            }
        }
        let now = Instant::now();
        if st.last_attempt.is_some_and(|t| now - t < RECONNECT_EVERY) {
            return false;
        }
        st.last_attempt = Some(now);
        let slot = Arc::new(Mutex::new(None));
        let (session, qid, out) = (self.session.clone(), self.qid, slot.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("nvmf-reconnect-{qid}"))
            .spawn(move || {
                if session.stopping() {
                    return;
                }
                let res = session.io_queue(qid).and_then(|q| {
                    q.sock.set_nonblocking(true)?;
                    Ok((q.sock, q.maxh2cdata as usize))
                });
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
            });
        match spawned {
            Ok(_) => st.reconnect = Some(slot),
            Err(e) => tracing::warn!(qid, error = %e, "cannot start a reconnection thread"),
        }
        false
    }
}
