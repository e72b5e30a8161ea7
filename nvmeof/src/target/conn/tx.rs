//! Transmitting: responses, C2H data, held asynchronous events, and the one `writev`
//! per turn that sends them.

use std::time::{Duration, Instant};

use ferrox_nvme_spec::{Command, Completion, Status};
use zerocopy::IntoBytes;

use ferrox_reactor::{Reactor, TimerId};

use super::{Conn, Dir, Owned, Phase, State, TxItem, MAX_R2T_OUT};
use crate::pdu::{crc32c, DataHeader, HeaderBuf, PduFlags};

impl Conn {
    // ---------------------------------------------------------------- responses

    /// Sends a response for a command that never got a slot.
    pub(in crate::target) fn respond_now(&self, st: &mut State, cmd: &Command, status: Status) {
        let qid = st.q.as_ref().map_or(0, |q| q.qid);
        let cqe = Completion::new(cmd.cid(), status).with_sq(qid, st.sq_head);
        let mut b = [0u8; 16];
        b.copy_from_slice(cqe.as_bytes());
        st.stream
            .push(TxItem::Hdr(HeaderBuf::capsule_resp(&b, st.digests.header)));
    }

    /// Completes a command: data (for a successful controller-to-host transfer), then
    /// the response capsule unless the data PDU carries SUCCESS.
    pub(in crate::target) fn complete(
        &self,
        st: &mut State,
        slot: u16,
        status: Status,
        result: u64,
    ) {
        if st.phase == Phase::Closed {
            st.cmds.release(slot);
            return;
        }
        let qid = st.q.as_ref().map_or(0, |q| q.qid);
        let sqflow_off = st.q.as_ref().is_some_and(|q| q.sqflow_disabled);
        let s = &st.cmds.slots[slot as usize];
        if qid != 0 && !s.cmd.is_fabrics() {
            let ns = s.started.elapsed().as_nanos() as u64;
            st.counters.record_latency(ns);
        }
        let s = &mut st.cmds.slots[slot as usize];
        let cid = s.cmd.cid();
        let mut need_resp = true;
        if status.is_success() && s.dir == Dir::C2H && s.xfer > 0 {
            if let Some(buf) = s.buf.take() {
                // SUCCESS replaces the response only when it carries nothing else.
                let success = sqflow_off && result == 0;
                let mut flags = PduFlags::LAST_PDU;
                if success {
                    flags |= PduFlags::SUCCESS;
                    need_resp = false;
                }
                let dh = DataHeader {
                    cccid: cid,
                    ttag: 0,
                    offset: 0,
                    length: buf.len() as u32,
                };
                let digest = st.digests.data.then(|| crc32c(buf.as_slice()));
                st.stream.push(TxItem::Hdr(HeaderBuf::c2h_data(
                    dh,
                    flags,
                    st.digests,
                    st.c2h_align,
                )));
                st.stream.push(TxItem::Data(buf));
                if let Some(d) = digest {
                    st.stream.push(TxItem::Digest(d.to_le_bytes()));
                }
            }
        }
        if need_resp {
            let cqe = Completion::new(cid, status)
                .with_qword(result)
                .with_sq(qid, st.sq_head);
            let mut b = [0u8; 16];
            b.copy_from_slice(cqe.as_bytes());
            st.stream
                .push(TxItem::Hdr(HeaderBuf::capsule_resp(&b, st.digests.header)));
        }
        st.cmds.release(slot);
    }

    /// Completes held AERs with pending events.
    pub(in crate::target) fn deliver_events(&self, st: &mut State) {
        let Some(ctrl) = st.q.as_ref().map(|q| q.ctrl.clone()) else {
            return;
        };
        while !st.aers.is_empty() {
            let Some(dw0) = ctrl.take_event() else { break };
            let slot = st.aers.remove(0);
            self.complete(st, slot, Status::SUCCESS, u64::from(dw0));
        }
    }

    // ---------------------------------------------------------------- transmit

    pub(in crate::target) fn send(&self, st: &mut State) -> bool {
        match st.stream.send(&mut Owned) {
            Ok(sent) => {
                // A stall ends when the host has caught up (nothing left queued), not
                // at any byte it reads: a window ends early, and a new one starts,
                // once it has read the minimum of one; a window that ends without it
                // closes the connection (`watch_stall`). So a trickle cannot keep the
                // buffers of its responses.
                let t = &mut st.timers;
                if st.stream.tx_is_empty() {
                    t.tx_stalled_since = None;
                } else if t.tx_stalled_since.is_some() && sent.bytes > 0 {
                    t.tx_drained += sent.bytes as u64;
                    if t.tx_drained >= self.target.stall_min_bytes() {
                        t.tx_stalled_since = Some(Instant::now());
                        t.tx_drained = 0;
                    }
                }
                if sent.blocked && st.timers.tx_stalled_since.is_none() {
                    st.timers.tx_stalled_since = Some(Instant::now());
                    st.timers.tx_drained = 0;
                    if st.timers.stall.is_none() {
                        self.watch_stall(st, self.target.stall_timeout());
                    }
                }
                sent.progress
            }
            Err(e) if e.kind() == std::io::ErrorKind::WriteZero => {
                self.close_locked(st, "send returned 0");
                true
            }
            Err(e) => {
                self.close_locked(st, &format!("send failed: {e}"));
                true
            }
        }
    }

    /// Arms a timer that closes the connection if its responses are still stuck
    /// after `after` (a host that stops reading, or reads a trickle, would otherwise
    /// keep the pool buffers of its responses, and other connections wait for them,
    /// forever).
    /// One timer per connection: a stall that ended and began again re-arms it for
    /// what is left of the new one.
    fn watch_stall(&self, st: &mut State, after: Duration) {
        let weak = self.me.clone();
        st.timers.stall = Some(Reactor::with(|r| {
            r.add_timer(after, move |_r| {
                let Some(c) = weak.upgrade() else { return };
                let mut st = c.st.borrow_mut();
                st.timers.stall = None;
                let Some(t0) = st.timers.tx_stalled_since else {
                    return;
                };
                let limit = c.target.stall_timeout();
                match limit.checked_sub(t0.elapsed()) {
                    Some(left) if !left.is_zero() => c.watch_stall(&mut st, left),
                    _ => {
                        let min = c.target.stall_min_bytes();
                        c.close_locked(
                            &mut st,
                            &format!(
                                "the host has read less than {min} bytes of its responses in {limit:?}"
                            ),
                        );
                    }
                }
            })
        }));
    }

    /// Arms a timer that closes the connection if an R2T is still unanswered
    /// `after` from now (the buffer it holds would otherwise be the host's to keep:
    /// a host that never sends the data must not pin pool buffers). One timer per
    /// connection, re-armed for the oldest R2T still out.
    pub(in crate::target) fn watch_r2t(&self, st: &mut State, after: Duration) {
        let weak = self.me.clone();
        st.timers.r2t = Some(Reactor::with(|r| {
            r.add_timer(after, move |_r| {
                let Some(c) = weak.upgrade() else { return };
                let mut st = c.st.borrow_mut();
                st.timers.r2t = None;
                let Some(t0) = st.cmds.oldest_r2t() else {
                    return;
                };
                let limit = c.target.r2t_timeout();
                match limit.checked_sub(t0.elapsed()) {
                    Some(left) if !left.is_zero() => c.watch_r2t(&mut st, left),
                    _ => {
                        c.target
                            .r2t_timeouts
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        c.close_locked(
                            &mut st,
                            &format!("the host sent no data for an R2T within {limit:?}"),
                        );
                    }
                }
            })
        }));
    }

    pub(in crate::target) fn retry_waiting(&self, st: &mut State) -> bool {
        let mut progress = false;
        while let Some(&slot) = st.cmds.wait_buf.front() {
            let s = &st.cmds.slots[slot as usize];
            let len = s.xfer;
            let r2t = s.dir == Dir::H2C;
            // An R2T's buffer counts against this connection's, its controller's
            // and the target's quotas until the host's data is in.
            if r2t && (st.cmds.r2t_out >= MAX_R2T_OUT || !st.cmds.quota.charge(len)) {
                break;
            }
            let Some(buf) = Reactor::with(|r| r.pool().alloc(len)) else {
                if r2t {
                    st.cmds.quota.uncharge(len);
                }
                break;
            };
            st.cmds.wait_buf.pop_front();
            st.cmds.slots[slot as usize].buf = Some(buf);
            self.proceed(st, slot);
            progress = true;
        }
        progress
    }

    pub(in crate::target) fn set_kato_timer(&self, st: &mut State, t: TimerId) {
        st.timers.kato = Some(t);
    }
}
