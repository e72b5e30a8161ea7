//! One NVMe/TCP connection: one queue pair, owned by one reactor, polled.
//!
//! Receive: bytes land in a staging buffer, from which PDU headers are parsed and
//! checked ([`crate::pdu::validate_h2c`]); data bigger than what is already staged is
//! read straight from the socket into the command's pool buffer (zero copy), small
//! in-capsule data is copied out of the staging buffer. Transmit: PDUs queue as
//! header bytes plus the pool buffer that holds their data, and leave in one
//! `writev` per loop turn.
//!
//! Commands live in a pre-sized slot table; a slot's index is the R2T transfer tag.
//! A protocol violation sends a C2HTermReq and closes this connection only.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use ferrox_nvme::spec::{Command, Completion, FabricsCommandType, Status};
use ferrox_reactor::{
    DmaBuf, PollStatus, Poller, PollerId, Reactor, ReactorHandle, TimerId, WakeSource,
};
use zerocopy::{FromBytes, IntoBytes};

use super::ctrl::{Controller, QueueCounters};
use super::TargetShared;
use crate::pdu::{
    crc32c, crc32c_append, le32, validate_h2c, CommonHeader, DataHeader, Digests, Fes, HeaderBuf,
    IcReq, IcResp, Layout, Limits, PduFlags, PduType, TermError, CH_LEN, DIGEST_LEN, MAX_HLEN,
};

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
/// Data at least this long that is not staged yet is read straight into its buffer.
const DIRECT_MIN: usize = 2048;

thread_local! {
    static CONNS: RefCell<HashMap<u64, Weak<Conn>>> = RefCell::new(HashMap::new());
}

fn lookup(id: u64) -> Option<Rc<Conn>> {
    CONNS.with(|c| c.borrow().get(&id).and_then(Weak::upgrade))
}

/// Asks reactor `h` to close connection `conn` (a no-op when it is gone).
pub fn close_remote(h: &ReactorHandle, conn: u64, reason: &str) {
    let reason = reason.to_string();
    if h.send(move |_| {
        if let Some(c) = lookup(conn) {
            c.close(&reason);
        }
    })
    .is_err()
    {
        tracing::error!(conn, "reactor mailbox full: cannot close connection");
    }
}

/// Asks reactor `h` to complete pending asynchronous events on admin connection `conn`.
pub fn deliver_events_remote(h: &ReactorHandle, conn: u64) {
    if h.send(move |_| {
        if let Some(c) = lookup(conn) {
            let mut st = c.st.borrow_mut();
            c.deliver_events(&mut st);
        }
    })
    .is_err()
    {
        tracing::error!(
            conn,
            "reactor mailbox full: cannot deliver an asynchronous event"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIc,
    Active,
    /// A termination request is queued; close once it is sent.
    Terminating,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    None,
    H2C,
    C2H,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    Header,
    /// Data of the current PDU: `slot` None discards it.
    Data {
        slot: Option<u16>,
        pad: usize,
        off: usize,
        remaining: usize,
        crc: u32,
        ddgst: bool,
        /// H2CData (else in-capsule data).
        h2c: bool,
    },
    /// In-capsule data waits for a buffer for `slot`.
    WaitBuf {
        slot: u16,
    },
}

pub(super) struct Slot {
    pub cmd: Command,
    pub buf: Option<DmaBuf>,
    pub dir: Dir,
    pub xfer: usize,
    pub got: usize,
    pub in_use: bool,
    pub ops_left: u32,
    pub status: Status,
    /// The host is sending data for this slot after an R2T.
    pub awaiting_h2c: bool,
    pub data_digest_error: bool,
}

impl Slot {
    fn empty() -> Self {
        Self {
            cmd: Command::new(0, 0),
            buf: None,
            dir: Dir::None,
            xfer: 0,
            got: 0,
            in_use: false,
            ops_left: 0,
            status: Status::SUCCESS,
            awaiting_h2c: false,
            data_digest_error: false,
        }
    }
}

enum TxItem {
    Hdr(HeaderBuf),
    Data(DmaBuf),
    Digest([u8; 4]),
}

impl TxItem {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Hdr(h) => h.as_slice(),
            Self::Data(b) => b.as_slice(),
            Self::Digest(d) => d,
        }
    }
}

pub(super) struct QueueState {
    pub qid: u16,
    pub ctrl: Arc<Controller>,
    pub sqflow_disabled: bool,
}

pub(super) struct State {
    phase: Phase,
    digests: Digests,
    c2h_align: usize,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    rx_state: RxState,
    hdr: [u8; MAX_HLEN + DIGEST_LEN],
    layout: Layout,
    tx: VecDeque<TxItem>,
    tx_off: usize,
    pub slots: Vec<Slot>,
    free: Vec<u16>,
    wait_buf: VecDeque<u16>,
    /// Slots with an R2T out (holding a buffer until the host's data arrives).
    r2t_out: usize,
    pub q: Option<QueueState>,
    pub sq_head: u16,
    sq_size: u16,
    pub counters: Arc<QueueCounters>,
    kato_timer: Option<TimerId>,
    pub aers: Vec<u16>,
    pub io: super::io::IoCache,
}

/// A connection's poller and I/O sink.
pub struct Conn {
    pub id: u64,
    sock: TcpStream,
    pub peer: SocketAddr,
    pub target: Arc<TargetShared>,
    me: Weak<Conn>,
    pub(super) st: RefCell<State>,
    poller: Cell<Option<PollerId>>,
}

impl Conn {
    /// Takes over an accepted socket on the current reactor.
    pub fn start(r: &Reactor, sock: TcpStream, target: Arc<TargetShared>) {
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
        let conn = Rc::new_cyclic(|me| Conn {
            id,
            sock,
            peer,
            target,
            me: me.clone(),
            st: RefCell::new(State {
                phase: Phase::AwaitIc,
                digests: Digests::default(),
                c2h_align: 4,
                rx: vec![0u8; RX_CAP].into_boxed_slice(),
                rx_start: 0,
                rx_end: 0,
                rx_state: RxState::Header,
                hdr: [0; MAX_HLEN + DIGEST_LEN],
                layout: Layout {
                    hlen: 0,
                    hdgst: false,
                    pdo: 0,
                    data_len: 0,
                    ddgst: false,
                },
                tx: VecDeque::with_capacity(depth * 3),
                tx_off: 0,
                slots: (0..depth).map(|_| Slot::empty()).collect(),
                free: (0..depth as u16).rev().collect(),
                wait_buf: VecDeque::with_capacity(depth),
                r2t_out: 0,
                q: None,
                sq_head: 0,
                sq_size: depth as u16,
                counters: Arc::new(QueueCounters::default()),
                kato_timer: None,
                aers: Vec::new(),
                io: Default::default(),
            }),
            poller: Cell::new(None),
        });
        CONNS.with(|c| c.borrow_mut().insert(id, Rc::downgrade(&conn)));
        let pid = r.add_poller(conn.clone());
        conn.poller.set(Some(pid));
        tracing::debug!(conn = id, %peer, reactor = r.id(), "connection accepted");
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
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
        let _ = self.sock.shutdown(Shutdown::Both);
        st.tx.clear();
        st.tx_off = 0;
        st.wait_buf.clear();
        if let Some(t) = st.kato_timer.take() {
            Reactor::with(|r| r.cancel_timer(t));
        }
        // Commands that wait for nothing but the host are dropped now (this is what
        // keeps a stale command from completing after the controller is gone).
        for i in 0..st.slots.len() {
            if st.slots[i].in_use && st.slots[i].ops_left == 0 {
                Self::release(st, i as u16);
            }
        }
        st.aers.clear();
        if let Some(q) = &st.q {
            if q.qid == 0 {
                q.ctrl.teardown(reason);
            } else {
                q.ctrl.remove_io_queue(q.qid, self.id, &st.counters);
            }
        }
    }

    pub(super) fn release(st: &mut State, slot: u16) {
        let s = &mut st.slots[slot as usize];
        if !s.in_use {
            return;
        }
        s.in_use = false;
        s.buf = None;
        if s.awaiting_h2c {
            st.r2t_out -= 1;
        }
        s.awaiting_h2c = false;
        s.ops_left = 0;
        st.free.push(slot);
    }

    pub(super) fn is_closed(st: &State) -> bool {
        st.phase == Phase::Closed
    }

    fn fatal(&self, st: &mut State, e: TermError) {
        tracing::warn!(conn = self.id, peer = %self.peer, fes = e.fes.0, fei = e.fei, why = e.why, "NVMe/TCP protocol error; terminating the connection");
        let quoted_len = st.layout.hlen.clamp(CH_LEN, MAX_HLEN);
        let quoted = st.hdr[..quoted_len].to_vec();
        st.tx.push_back(TxItem::Hdr(HeaderBuf::term_req(
            PduType::C2H_TERM_REQ,
            &e,
            &quoted,
        )));
        st.phase = Phase::Terminating;
    }

    // ---------------------------------------------------------------- receive

    /// Reads more bytes into the staging buffer; false when nothing came.
    fn fill(&self, st: &mut State) -> bool {
        if st.rx_start == st.rx_end {
            st.rx_start = 0;
            st.rx_end = 0;
        } else if st.rx_start > RX_CAP / 2 {
            st.rx.copy_within(st.rx_start..st.rx_end, 0);
            st.rx_end -= st.rx_start;
            st.rx_start = 0;
        }
        if st.rx_end == RX_CAP {
            return false;
        }
        let end = st.rx_end;
        match (&self.sock).read(&mut st.rx[end..]) {
            Ok(0) => {
                self.close_locked(st, "the host closed the connection");
                false
            }
            Ok(n) => {
                st.rx_end += n;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => {
                self.close_locked(st, &format!("receive failed: {e}"));
                false
            }
        }
    }

    fn staged(st: &State) -> usize {
        st.rx_end - st.rx_start
    }

    /// Processes received bytes; returns whether anything happened.
    fn receive(&self, st: &mut State) -> bool {
        let mut progress = false;
        for _ in 0..256 {
            if !matches!(st.phase, Phase::AwaitIc | Phase::Active) {
                break;
            }
            match self.step(st) {
                Step::Progress => progress = true,
                Step::NeedBytes => {
                    if !self.fill(st) {
                        break;
                    }
                    progress = true;
                }
                Step::Blocked => break,
            }
        }
        progress
    }

    fn step(&self, st: &mut State) -> Step {
        match st.rx_state {
            RxState::Header => self.step_header(st),
            RxState::Data { .. } => self.step_data(st),
            RxState::WaitBuf { slot } => {
                let len = st.slots[slot as usize].xfer;
                match Reactor::with(|r| r.pool().alloc(len)) {
                    Some(buf) => {
                        st.slots[slot as usize].buf = Some(buf);
                        self.begin_data(st, Some(slot), false);
                        Step::Progress
                    }
                    None => Step::Blocked,
                }
            }
        }
    }

    fn step_header(&self, st: &mut State) -> Step {
        if Self::staged(st) < CH_LEN {
            return Step::NeedBytes;
        }
        let s = st.rx_start;
        let ch = CommonHeader::parse(&st.rx[s..s + CH_LEN]);
        let digests = (st.phase == Phase::Active).then_some(st.digests);
        let layout = match validate_h2c(&ch, digests, &Self::limits(st)) {
            Ok(l) => l,
            Err(e) => {
                let n = Self::staged(st).min(MAX_HLEN);
                st.hdr[..n].copy_from_slice(&st.rx[s..s + n]);
                st.layout.hlen = n;
                self.fatal(st, e);
                return Step::Progress;
            }
        };
        let hb = layout.header_bytes();
        if Self::staged(st) < hb {
            return Step::NeedBytes;
        }
        st.hdr[..hb].copy_from_slice(&st.rx[s..s + hb]);
        st.rx_start += hb;
        st.layout = layout;
        if layout.hdgst {
            let want = le32(&st.hdr, layout.hlen);
            if crc32c(&st.hdr[..layout.hlen]) != want {
                self.fatal(
                    st,
                    TermError::new(Fes::HEADER_DIGEST_ERROR, 0, "header digest mismatch"),
                );
                return Step::Progress;
            }
        }
        match ch.pdu_type {
            PduType::IC_REQ => self.on_icreq(st),
            PduType::H2C_TERM_REQ => {
                let fes = u16::from_le_bytes([st.hdr[8], st.hdr[9]]);
                self.close_locked(st, &format!("the host sent H2CTermReq (FES {fes:#x})"));
            }
            PduType::CAPSULE_CMD => self.on_capsule(st),
            PduType::H2C_DATA => self.on_h2c_data(st),
            _ => unreachable!("validate_h2c admits only host PDU types"),
        }
        Step::Progress
    }

    fn on_icreq(&self, st: &mut State) {
        let req = IcReq::parse(&st.hdr);
        if let Err(e) = req.check(st.hdr[11]) {
            self.fatal(st, e);
            return;
        }
        st.digests = req.digests;
        st.c2h_align = (usize::from(req.hpda) + 1) * 4;
        let resp = IcResp {
            pfv: 0,
            cpda: 0,
            digests: req.digests,
            maxh2cdata: MAX_H2C_DATA as u32,
        };
        let mut h = HeaderBuf::capsule_resp(&[0; 16], false);
        h.bytes[..128].copy_from_slice(&resp.encode());
        h.len = 128;
        st.tx.push_back(TxItem::Hdr(h));
        st.phase = Phase::Active;
    }

    /// Sets up receiving the current PDU's data into `slot` (or discarding it).
    fn begin_data(&self, st: &mut State, slot: Option<u16>, h2c: bool) {
        let l = st.layout;
        let off = match (slot, h2c) {
            (Some(s), true) => st.slots[s as usize].got,
            _ => 0,
        };
        st.rx_state = RxState::Data {
            slot,
            pad: l.pad(),
            off,
            remaining: l.data_len,
            crc: 0,
            ddgst: l.ddgst,
            h2c,
        };
    }

    fn step_data(&self, st: &mut State) -> Step {
        let RxState::Data {
            slot,
            mut pad,
            mut off,
            mut remaining,
            mut crc,
            ddgst,
            h2c,
        } = st.rx_state
        else {
            unreachable!()
        };
        // Padding between header and data.
        if pad > 0 {
            let n = pad.min(Self::staged(st));
            if n == 0 {
                return Step::NeedBytes;
            }
            st.rx_start += n;
            pad -= n;
        }
        if pad == 0 && remaining > 0 {
            let staged = Self::staged(st);
            if staged > 0 {
                let n = remaining.min(staged);
                let src = st.rx_start..st.rx_start + n;
                if ddgst {
                    crc = crc32c_append(crc, &st.rx[src.clone()]);
                }
                if let Some(s) = slot {
                    let (rx, slots) = (&st.rx, &mut st.slots);
                    if let Some(buf) = slots[s as usize].buf.as_mut() {
                        buf.as_mut_slice()[off..off + n].copy_from_slice(&rx[src]);
                    }
                    QueueCounters::add(&st.counters.copied_bytes, n as u64);
                }
                st.rx_start += n;
                off += n;
                remaining -= n;
            } else if remaining >= DIRECT_MIN && slot.is_some() {
                // Zero copy: straight from the socket into the command's buffer.
                let s = slot.expect("checked") as usize;
                let Some(buf) = st.slots[s].buf.as_mut() else {
                    return Step::Blocked;
                };
                let dst = &mut buf.as_mut_slice()[off..off + remaining];
                match (&self.sock).read(dst) {
                    Ok(0) => {
                        self.close_locked(st, "the host closed the connection");
                        return Step::Blocked;
                    }
                    Ok(n) => {
                        if ddgst {
                            let b = st.slots[s].buf.as_ref().expect("present");
                            crc = crc32c_append(crc, &b.as_slice()[off..off + n]);
                        }
                        QueueCounters::add(&st.counters.direct_bytes, n as u64);
                        off += n;
                        remaining -= n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        st.rx_state = RxState::Data {
                            slot,
                            pad,
                            off,
                            remaining,
                            crc,
                            ddgst,
                            h2c,
                        };
                        return Step::Blocked;
                    }
                    Err(e) => {
                        self.close_locked(st, &format!("receive failed: {e}"));
                        return Step::Blocked;
                    }
                }
            } else {
                st.rx_state = RxState::Data {
                    slot,
                    pad,
                    off,
                    remaining,
                    crc,
                    ddgst,
                    h2c,
                };
                return Step::NeedBytes;
            }
        }
        if pad > 0 || remaining > 0 {
            st.rx_state = RxState::Data {
                slot,
                pad,
                off,
                remaining,
                crc,
                ddgst,
                h2c,
            };
            return Step::Progress;
        }
        let mut digest_ok = true;
        if ddgst {
            if Self::staged(st) < DIGEST_LEN {
                st.rx_state = RxState::Data {
                    slot,
                    pad,
                    off,
                    remaining,
                    crc,
                    ddgst,
                    h2c,
                };
                return Step::NeedBytes;
            }
            digest_ok = le32(&st.rx, st.rx_start) == crc;
            st.rx_start += DIGEST_LEN;
        }
        st.rx_state = RxState::Header;
        if let Some(s) = slot {
            let sl = &mut st.slots[s as usize];
            if !digest_ok {
                // Non-fatal: the command fails with a transient transport error.
                sl.data_digest_error = true;
            }
            if h2c {
                sl.got = off;
                if sl.got < sl.xfer {
                    return Step::Progress;
                }
                sl.awaiting_h2c = false;
                st.r2t_out -= 1;
            }
            self.data_complete(st, s);
        }
        Step::Progress
    }

    fn data_complete(&self, st: &mut State, slot: u16) {
        if st.slots[slot as usize].data_digest_error {
            tracing::warn!(conn = self.id, "data digest mismatch");
            self.complete(st, slot, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            return;
        }
        self.execute(st, slot);
    }

    fn on_capsule(&self, st: &mut State) {
        let cmd = match Command::read_from_bytes(&st.hdr[8..72]) {
            Ok(c) => c,
            Err(_) => unreachable!("64 bytes"),
        };
        st.sq_head = (st.sq_head + 1) % st.sq_size.max(1);
        let l = st.layout;
        let Some(slot) = st.free.pop() else {
            // The host exceeded the queue size it connected with.
            self.respond_now(st, &cmd, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            self.begin_data(st, None, false);
            return;
        };
        let (dir, xfer, status) = Self::plan(&cmd, l.data_len, st.q.is_some());
        let s = &mut st.slots[slot as usize];
        *s = Slot {
            cmd,
            in_use: true,
            dir,
            xfer,
            ..Slot::empty()
        };
        if let Err(status) = status {
            self.complete(st, slot, status.with_dnr(), 0);
            if l.data_len > 0 {
                self.begin_data(st, None, false);
            }
            return;
        }
        let in_capsule = dir == Dir::H2C && l.data_len > 0;
        if dir == Dir::H2C && !in_capsule && xfer > 0 {
            // Its buffer is taken when its R2T can go out (see `retry_waiting`).
            st.wait_buf.push_back(slot);
            if l.data_len > 0 {
                self.begin_data(st, None, false);
            }
            return;
        }
        if xfer > 0 {
            if let Some(buf) = Reactor::with(|r| r.pool().alloc(xfer)) {
                st.slots[slot as usize].buf = Some(buf);
            } else if in_capsule {
                st.rx_state = RxState::WaitBuf { slot };
                return;
            } else {
                st.wait_buf.push_back(slot);
                return;
            }
        }
        if in_capsule {
            self.begin_data(st, Some(slot), false);
        } else if l.data_len > 0 {
            // Data the command does not take: read and drop it.
            self.begin_data(st, None, false);
            self.proceed(st, slot);
        } else {
            self.proceed(st, slot);
        }
    }

    /// Works out a command's data transfer from its direction and SGL: (direction,
    /// bytes, verdict). Public for the fuzzers.
    pub fn plan(
        cmd: &Command,
        capsule_data: usize,
        connected: bool,
    ) -> (Dir, usize, Result<(), Status>) {
        let fabrics = cmd.is_fabrics();
        let is_connect = fabrics && cmd.fctype() == FabricsCommandType::CONNECT;
        if !connected && !is_connect {
            return (Dir::None, 0, Err(Status::COMMAND_SEQUENCE_ERROR));
        }
        let bits = if fabrics {
            cmd.fctype().0
        } else {
            cmd.opcode()
        } & 3;
        let dir = match bits {
            0 => Dir::None,
            1 => Dir::H2C,
            2 => Dir::C2H,
            _ => return (Dir::None, 0, Err(Status::INVALID_FIELD)),
        };
        if dir == Dir::None {
            return (dir, 0, Ok(()));
        }
        if cmd.psdt() != 0b01 && !fabrics {
            return (Dir::None, 0, Err(Status::INVALID_FIELD));
        }
        let sgl = cmd.sgl1();
        let len = sgl.length as usize;
        if len > MAX_TRANSFER {
            return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
        }
        if sgl.is_in_capsule() {
            if sgl.address != 0 {
                return (Dir::None, 0, Err(Status::SGL_OFFSET_INVALID));
            }
            if dir != Dir::H2C || len != capsule_data {
                return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
            }
        } else if sgl.is_transport() {
            if capsule_data > 0 {
                return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
            }
        } else if len > 0 {
            return (Dir::None, 0, Err(Status::SGL_DESCRIPTOR_TYPE_INVALID));
        }
        (dir, len, Ok(()))
    }

    /// The slot has its buffer: ask the host for data (R2T) or execute.
    fn proceed(&self, st: &mut State, slot: u16) {
        let s = &mut st.slots[slot as usize];
        if s.dir == Dir::H2C && s.xfer > 0 && s.got < s.xfer {
            s.awaiting_h2c = true;
            st.r2t_out += 1;
            let dh = DataHeader {
                cccid: s.cmd.cid(),
                ttag: slot,
                offset: 0,
                length: s.xfer as u32,
            };
            let h = HeaderBuf::r2t(dh, st.digests.header);
            st.tx.push_back(TxItem::Hdr(h));
            return;
        }
        self.execute(st, slot);
    }

    fn on_h2c_data(&self, st: &mut State) {
        let dh = DataHeader::parse(&st.hdr);
        let l = st.layout;
        let ok_slot = st
            .slots
            .get(usize::from(dh.ttag))
            .is_some_and(|s| s.in_use && s.awaiting_h2c);
        if !ok_slot {
            self.fatal(
                st,
                TermError::field(10, "H2CData for an unknown transfer tag"),
            );
            return;
        }
        let s = &st.slots[usize::from(dh.ttag)];
        if s.cmd.cid() != dh.cccid {
            self.fatal(
                st,
                TermError::field(8, "H2CData CCCID does not match the R2T"),
            );
            return;
        }
        if dh.length as usize != l.data_len {
            self.fatal(
                st,
                TermError::field(16, "DATAL differs from the PDU's data"),
            );
            return;
        }
        if dh.offset as usize != s.got || s.got + l.data_len > s.xfer {
            self.fatal(
                st,
                TermError::new(Fes::DATA_OUT_OF_RANGE, 12, "H2CData outside the R2T range"),
            );
            return;
        }
        self.begin_data(st, Some(dh.ttag), true);
    }

    /// Runs a command whose data (if any) is in its buffer.
    fn execute(&self, st: &mut State, slot: u16) {
        let cmd = st.slots[slot as usize].cmd;
        if cmd.is_fabrics() {
            let (status, dw0) = self.fabrics(st, slot);
            self.complete(st, slot, status, dw0);
            return;
        }
        match &st.q {
            Some(q) if q.qid == 0 => self.admin(st, slot),
            Some(_) => self.io(st, slot),
            None => self.complete(st, slot, Status::COMMAND_SEQUENCE_ERROR, 0),
        }
    }

    // ---------------------------------------------------------------- responses

    /// Sends a response for a command that never got a slot.
    fn respond_now(&self, st: &mut State, cmd: &Command, status: Status) {
        let qid = st.q.as_ref().map_or(0, |q| q.qid);
        let cqe = Completion::new(cmd.cid(), status).with_sq(qid, st.sq_head);
        let mut b = [0u8; 16];
        b.copy_from_slice(cqe.as_bytes());
        st.tx
            .push_back(TxItem::Hdr(HeaderBuf::capsule_resp(&b, st.digests.header)));
    }

    /// Completes a command: data (for a successful controller-to-host transfer), then
    /// the response capsule unless the data PDU carries SUCCESS.
    pub(super) fn complete(&self, st: &mut State, slot: u16, status: Status, result: u64) {
        if st.phase == Phase::Closed {
            Self::release(st, slot);
            return;
        }
        let qid = st.q.as_ref().map_or(0, |q| q.qid);
        let sqflow_off = st.q.as_ref().is_some_and(|q| q.sqflow_disabled);
        let s = &mut st.slots[slot as usize];
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
                st.tx.push_back(TxItem::Hdr(HeaderBuf::c2h_data(
                    dh,
                    flags,
                    st.digests,
                    st.c2h_align,
                )));
                st.tx.push_back(TxItem::Data(buf));
                if let Some(d) = digest {
                    st.tx.push_back(TxItem::Digest(d.to_le_bytes()));
                }
            }
        }
        if need_resp {
            let cqe = Completion::new(cid, status)
                .with_qword(result)
                .with_sq(qid, st.sq_head);
            let mut b = [0u8; 16];
            b.copy_from_slice(cqe.as_bytes());
            st.tx
                .push_back(TxItem::Hdr(HeaderBuf::capsule_resp(&b, st.digests.header)));
        }
        Self::release(st, slot);
    }

    /// Completes held AERs with pending events.
    pub(super) fn deliver_events(&self, st: &mut State) {
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

    fn send(&self, st: &mut State) -> bool {
        let mut progress = false;
        while !st.tx.is_empty() {
            let mut iov: [IoSlice<'_>; 64] = [IoSlice::new(&[]); 64];
            let mut n = 0;
            for (i, item) in st.tx.iter().take(64).enumerate() {
                let b = item.bytes();
                iov[n] = IoSlice::new(if i == 0 { &b[st.tx_off..] } else { b });
                n += 1;
            }
            match (&self.sock).write_vectored(&iov[..n]) {
                Ok(0) => {
                    self.close_locked(st, "send returned 0");
                    return progress;
                }
                Ok(mut sent) => {
                    progress = true;
                    while sent > 0 {
                        let left = st
                            .tx
                            .front()
                            .expect("sent bytes belong to items")
                            .bytes()
                            .len()
                            - st.tx_off;
                        if sent >= left {
                            sent -= left;
                            st.tx.pop_front();
                            st.tx_off = 0;
                        } else {
                            st.tx_off += sent;
                            sent = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close_locked(st, &format!("send failed: {e}"));
                    return progress;
                }
            }
        }
        progress
    }

    fn retry_waiting(&self, st: &mut State) -> bool {
        let mut progress = false;
        while let Some(&slot) = st.wait_buf.front() {
            let s = &st.slots[slot as usize];
            if s.dir == Dir::H2C && st.r2t_out >= MAX_R2T_OUT {
                break;
            }
            let len = s.xfer;
            let Some(buf) = Reactor::with(|r| r.pool().alloc(len)) else {
                break;
            };
            st.wait_buf.pop_front();
            st.slots[slot as usize].buf = Some(buf);
            self.proceed(st, slot);
            progress = true;
        }
        progress
    }

    fn in_flight_ops(st: &State) -> bool {
        st.slots.iter().any(|s| s.in_use && s.ops_left > 0)
    }

    pub(super) fn set_kato_timer(&self, st: &mut State, t: TimerId) {
        st.kato_timer = Some(t);
    }
}

impl State {
    pub(super) fn set_sq_size(&mut self, entries: u16) {
        self.sq_size = entries;
        self.sq_head %= entries.max(1);
    }
}

enum Step {
    Progress,
    NeedBytes,
    Blocked,
}

impl Poller for Conn {
    fn poll(&self, r: &Reactor) -> PollStatus {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closed {
            if Self::in_flight_ops(&st) {
                return PollStatus::Idle;
            }
            drop(st);
            self.st.borrow_mut().io.channels.clear();
            CONNS.with(|c| c.borrow_mut().remove(&self.id));
            let _ = r;
            return PollStatus::Done;
        }
        let mut busy = self.retry_waiting(&mut st);
        // A host that does not read its responses stops being read from: the
        // transmit backlog (and the pool buffers it holds) stays bounded.
        if st.tx.len() < TX_HIGH {
            busy |= self.receive(&mut st);
        }
        busy |= self.send(&mut st);
        // Waiting for pool buffers: another reactor may free them without waking this
        // one, so keep polling (never park) until the waiters are served.
        busy |= !st.wait_buf.is_empty() || matches!(st.rx_state, RxState::WaitBuf { .. });
        if st.phase == Phase::Terminating && st.tx.is_empty() {
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
        if !st.tx.is_empty() {
            events |= libc::POLLOUT as u32;
        }
        Some(WakeSource {
            fd: self.sock.as_raw_fd(),
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
