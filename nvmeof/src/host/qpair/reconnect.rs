//! Reconnecting a queue pair whose connection was lost: the handshake runs as a
//! task of the queue's reactor, its socket waits as futures, and hands the new
//! socket back. No thread per attempt or per controller.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use ferrox_bdev::BdevError;
use ferrox_reactor::task::spawn_local;

use super::{QPair, State, RECONNECT_EVERY, RX_CAP, TX_PER_SLOT};
use crate::host::sync::Mode;
use crate::pdu::stream::Stream;

impl QPair {
    /// Whether the queue has a connection; if not, takes the result of a reconnection
    /// under way, or starts one (at most every `RECONNECT_EVERY`). The handshake —
    /// TCP connect, ICReq, Connect, perhaps a new admin queue, each wait for the
    /// socket bounded by the connect timeout — runs as a task of this reactor;
    /// commands wait for it (see `submit`).
    pub(super) fn try_reconnect(&self, st: &mut State) -> bool {
        if st.stream.is_some() {
            return true;
        }
        if st.closed {
            // A connection that comes back now is dropped with the result.
            st.reconnect = None;
            return false;
        }
        if let Some((slot, _)) = &st.reconnect {
            let done = slot.borrow_mut().take();
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
        let slot = Rc::new(RefCell::new(None));
        let (session, qid, out) = (self.session.clone(), self.qid, slot.clone());
        let task = spawn_local(async move {
            if session.stopping() {
                return;
            }
            let res = session.io_queue_in(Mode::Task, qid).await.and_then(|q| {
                q.sock.set_nonblocking(true)?;
                Ok((q.sock, q.maxh2cdata as usize))
            });
            *out.borrow_mut() = Some(res);
        });
        st.reconnect = Some((slot, task.abort_handle()));
        false
    }
}
