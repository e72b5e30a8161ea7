//! One NVMe/TCP connection: one queue pair, owned by one reactor, polled.
//!
//! The bytes go through a [`Stream`]. Receive: PDU headers are framed out of its
//! staging buffer and checked ([`crate::pdu::validate_h2c`]); data bigger than what is
//! already staged is read straight from the socket into the command's pool buffer
//! (zero copy), small in-capsule data is copied out of the staging buffer. Transmit:
//! PDUs queue as header bytes plus the pool buffer that holds their data, and leave
//! in one `writev` per loop turn.
//!
//! Controllers reach this connection only through its [`QueueHandle`].
//!
//! Commands live in a pre-sized slot table; a slot's index is the R2T transfer tag.
//! A protocol violation sends a C2HTermReq and closes this connection only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use ferrox_reactor::{
    DmaBuf, PollStatus, Poller, PollerId, Reactor, ReactorHandle, TimerId, WakeSource,
};

mod rx;
mod slots;
mod tx;

pub use self::slots::Dir;
pub(super) use self::slots::{Commands, R2tQuota, Slot};

use super::ctrl::{Controller, QueueCounters};
use super::queue::{QueueHandle, QueueOps};
use super::TargetShared;
use crate::pdu::stream::{Stream, Transport, TxSource};
use crate::pdu::{Digests, HeaderBuf, Limits, PduType, TermError};

/// Largest data transfer of one command (MDTS): 128 KiB.
pub const MAX_TRANSFER: usize = 128 << 10;
/// MDTS in units of the 4 KiB minimum page size, as a power of two.
pub const MDTS: u8 = 5;
/// In-capsule data accepted on I/O queues (IOCCSZ = (64 + this) / 16).
pub const IN_CAPSULE_IO: usize = 8192;
/// In-capsule data on the admin queue, fixed by the spec.
pub const IN_CAPSULE_ADMIN: usize = 8192;
/// MAXH2CDATA advertised in ICResp.
pub const MAX_H2C_DATA: usize = 128 << 10;
/// Outstanding Asynchronous Event Requests a controller keeps (AERL + 1).
pub const MAX_AERS: usize = 4;

const RX_CAP: usize = 64 << 10;
/// Transmit items queued beyond which the connection stops reading new commands.
const TX_HIGH: usize = 128;
/// R2Ts (write buffers waiting for the host's data) one connection may have out.
pub const MAX_R2T_OUT: usize = 32;

thread_local! {
    static CONNS: RefCell<HashMap<u64, Weak<Conn>>> = RefCell::new(HashMap::new());
}

fn lookup(id: u64) -> Option<Rc<Conn>> {
    CONNS.with(|c| c.borrow().get(&id).and_then(Weak::upgrade))
}

/// What a controller's [`QueueHandle`] runs on this module's reactor.
static QUEUE_OPS: QueueOps = QueueOps {
    close: |conn, reason| {
        if let Some(c) = lookup(conn) {
            c.close(reason);
        }
    },
    deliver_events: |conn| {
        if let Some(c) = lookup(conn) {
            let mut st = c.st.borrow_mut();
            c.deliver_events(&mut st);
        }
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIc,
    Active,
    /// A termination request is queued; close once it is sent.
    Terminating,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    Header,
    /// Data of the current PDU (its progress is the stream's): `slot` None discards it.
    Data {
        slot: Option<u16>,
        /// H2CData (else in-capsule data).
        h2c: bool,
    },
    /// In-capsule data waits for a buffer for `slot`.
    WaitBuf {
        slot: u16,
    },
}

enum TxItem {
    Hdr(HeaderBuf),
    Data(DmaBuf),
    Digest([u8; 4]),
}

/// Transmit items own their bytes: sent, they are dropped (a data buffer goes back
/// to its pool).
struct Owned;

impl TxSource<TxItem> for Owned {
    fn bytes<'a>(&'a self, item: &'a TxItem) -> &'a [u8] {
        match item {
            TxItem::Hdr(h) => h.as_slice(),
            TxItem::Data(b) => b.as_slice(),
            TxItem::Digest(d) => d,
        }
    }
}

/// The connection's byte stream.
type ConnStream = Stream<TcpStream, TxItem>;

pub(super) struct QueueState {
    pub qid: u16,
    pub ctrl: Arc<Controller>,
    pub sqflow_disabled: bool,
}

/// The connection's timers, all cancelled when it closes.
#[derive(Default)]
pub(super) struct Timers {
    /// The admin queue's keep-alive check.
    pub kato: Option<TimerId>,
    /// Since when responses have waited for a host that reads too few of them (the
    /// socket is full): the start of the current drain window. Cleared when the
    /// transmit queue empties; moved to now when the host has read
    /// [`TargetShared::stall_min_bytes`] since it (see `Conn::send`).
    pub tx_stalled_since: Option<Instant>,
    /// Bytes sent since `tx_stalled_since`.
    pub tx_drained: u64,
    /// The timer watching the stall (see `Conn::watch_stall`).
    pub stall: Option<TimerId>,
    /// The timer that closes a connection not connected in time.
    pub connect: Option<TimerId>,
    /// The timer watching the oldest R2T (see `Conn::watch_r2t`).
    pub r2t: Option<TimerId>,
}

impl Timers {
    fn cancel_all(&mut self) {
        for t in [
            self.kato.take(),
            self.stall.take(),
            self.connect.take(),
            self.r2t.take(),
        ]
        .into_iter()
        .flatten()
        {
            Reactor::with(|r| r.cancel_timer(t));
        }
    }
}

pub(super) struct State {
    phase: Phase,
    digests: Digests,
    c2h_align: usize,
    stream: ConnStream,
    rx_state: RxState,
    /// The commands: slots, the free list, and those waiting for buffers.
    pub cmds: Commands,
    pub q: Option<QueueState>,
    pub sq_head: u16,
    sq_size: u16,
    pub counters: Arc<QueueCounters>,
    pub(super) timers: Timers,
    pub aers: Vec<u16>,
    pub io: super::io::IoCache,
    /// The place of this admin queue's discovery controller under the per-peer cap.
    pub discovery_permit: Option<super::limits::DiscoveryPermit>,
}

/// A connection's poller and I/O sink.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    /// The listener (as bound) that accepted it: subsystems may be reachable through
    /// some listeners only.
    pub listener: SocketAddr,
    pub target: Arc<TargetShared>,
    me: Weak<Conn>,
    pub(super) st: RefCell<State>,
    poller: Cell<Option<PollerId>>,
    /// Its place under the target's connection limits, given back with the socket.
    _permit: super::limits::ConnPermit,
}

impl Conn {
    /// Takes over a socket accepted by the listener bound to `listener`, on the
    /// current reactor.
    pub fn start(
        r: &Reactor,
        sock: TcpStream,
        target: Arc<TargetShared>,
        listener: SocketAddr,
        permit: super::limits::ConnPermit,
    ) {
        let peer = sock
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if let Err(e) = sock
            .set_nonblocking(true)
            .and_then(|()| sock.set_nodelay(true))
        {
            tracing::warn!(%peer, error = %e, "cannot configure an accepted socket");
            return;
        }
        let id = target.next_conn_id();
        let depth = super::ctrl::MAX_QUEUE_ENTRIES as usize;
        let quota = R2tQuota {
            total: (target.r2t_held.clone(), target.r2t_caps().1),
            ctrl: None,
        };
        let conn = Rc::new_cyclic(|me| Conn {
            id,
            peer,
            listener,
            target,
            me: me.clone(),
            st: RefCell::new(State {
                phase: Phase::AwaitIc,
                digests: Digests::default(),
                c2h_align: 4,
                stream: Stream::new(sock, RX_CAP, depth * 3),
                rx_state: RxState::Header,
                cmds: Commands::new(depth, quota),
                q: None,
                sq_head: 0,
                sq_size: depth as u16,
                counters: Arc::new(QueueCounters::default()),
                timers: Timers::default(),
                aers: Vec::new(),
                io: Default::default(),
                discovery_permit: None,
            }),
            poller: Cell::new(None),
            _permit: permit,
        });
        CONNS.with(|c| c.borrow_mut().insert(id, Rc::downgrade(&conn)));
        let pid = r.add_poller(conn.clone());
        conn.poller.set(Some(pid));
        let weak = Rc::downgrade(&conn);
        let limit = conn.target.connect_timeout();
        let t = r.add_timer(limit, move |_r| {
            let Some(c) = weak.upgrade() else { return };
            let mut st = c.st.borrow_mut();
            st.timers.connect = None;
            if st.q.is_none() {
                c.close_locked(
                    &mut st,
                    &format!("no Fabrics Connect within {limit:?} of the TCP connection"),
                );
            }
        });
        conn.st.borrow_mut().timers.connect = Some(t);
        tracing::debug!(conn = id, %peer, reactor = r.id(), "connection accepted");
    }

    pub(super) fn local_addr(st: &State) -> Option<SocketAddr> {
        st.stream.transport().local_addr().ok()
    }

    /// This connection's queue, as its controller sees it (`r`: the reactor it
    /// runs on).
    pub(super) fn queue_handle(&self, r: &ReactorHandle) -> QueueHandle {
        QueueHandle::new(r.clone(), self.id, &QUEUE_OPS)
    }

    pub(super) fn sink(&self) -> Rc<Conn> {
        self.me.upgrade().expect("a live connection")
    }

    fn limits(st: &State) -> Limits {
        let in_capsule = match &st.q {
            Some(q) if q.qid != 0 => IN_CAPSULE_IO,
            _ => IN_CAPSULE_ADMIN,
        };
        Limits {
            in_capsule,
            max_h2c_data: MAX_H2C_DATA,
        }
    }

    /// Closes the connection: no more PDUs either way. Slots with backend I/O in
    /// flight stay until their completions arrive, then the poller goes away.
    pub fn close(&self, reason: &str) {
        let mut st = self.st.borrow_mut();
        self.close_locked(&mut st, reason);
    }

    fn close_locked(&self, st: &mut State, reason: &str) {
        if st.phase == Phase::Closed {
            return;
        }
        st.phase = Phase::Closed;
        tracing::info!(conn = self.id, peer = %self.peer, reason, "connection closed");
        let _ = st.stream.shutdown();
        st.stream.clear_tx();
        st.timers.cancel_all();
        // Commands that wait for nothing but the host are dropped now (this is what
        // keeps a stale command from completing after the controller is gone).
        st.cmds.drop_idle();
        st.aers.clear();
        st.discovery_permit = None;
        if let Some(q) = &st.q {
            if q.qid == 0 {
                q.ctrl.teardown(reason);
            } else {
                q.ctrl.remove_io_queue(q.qid, self.id, &st.counters);
            }
        }
    }

    pub(super) fn is_closed(st: &State) -> bool {
        st.phase == Phase::Closed
    }

    fn fatal(&self, st: &mut State, e: TermError) {
        tracing::warn!(conn = self.id, peer = %self.peer, fes = e.fes.0, fei = e.fei, why = e.why, "NVMe/TCP protocol error; terminating the connection");
        let h = HeaderBuf::term_req(PduType::C2H_TERM_REQ, &e, st.stream.quoted());
        st.stream.push(TxItem::Hdr(h));
        st.phase = Phase::Terminating;
    }
}

impl State {
    pub(super) fn set_sq_size(&mut self, entries: u16) {
        self.sq_size = entries;
        self.sq_head %= entries.max(1);
    }
}

pub(super) enum Step {
    Progress,
    NeedBytes,
    Blocked,
}

impl Poller for Conn {
    fn poll(&self, r: &Reactor) -> PollStatus {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closed {
            if st.cmds.in_flight_ops() {
                return PollStatus::Idle;
            }
            drop(st);
            self.st.borrow_mut().io.clear();
            CONNS.with(|c| c.borrow_mut().remove(&self.id));
            let _ = r;
            return PollStatus::Done;
        }
        let mut busy = self.retry_waiting(&mut st);
        // Responses queued since the last turn (backend completions) go out first, so
        // a full batch of them does not hold back reading the next commands.
        if !st.stream.tx_is_empty() {
            busy |= self.send(&mut st);
        }
        // A host that does not read its responses stops being read from: the
        // transmit backlog (and the pool buffers it holds) stays bounded.
        if st.stream.tx_len() < TX_HIGH {
            busy |= self.receive(&mut st);
        }
        busy |= self.send(&mut st);
        // Waiting for pool buffers: another reactor may free them without waking this
        // one, so keep polling (never park) until the waiters are served.
        busy |= !st.cmds.wait_buf.is_empty() || matches!(st.rx_state, RxState::WaitBuf { .. });
        if st.phase == Phase::Terminating && st.stream.tx_is_empty() {
            self.close_locked(&mut st, "protocol error");
            busy = true;
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn wake_source(&self) -> Option<WakeSource> {
        let st = self.st.borrow();
        if st.phase == Phase::Closed {
            return None;
        }
        let mut events = libc::POLLIN as u32 | libc::POLLRDHUP as u32;
        if !st.stream.tx_is_empty() {
            events |= libc::POLLOUT as u32;
        }
        Some(WakeSource {
            fd: st.stream.transport().raw_fd(),
            events,
        })
    }

    fn shutdown(&self, _r: &Reactor) {
        self.close("the target is shutting down");
    }

    fn name(&self) -> &'static str {
        "nvme-tcp-conn"
    }
}
