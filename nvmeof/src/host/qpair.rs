//! A polled host I/O queue pair: one TCP connection owned by one reactor.
//!
//! Commands live in a pre-sized slot table; a CID is the slot index (low 7 bits) plus
//! a generation (high 9 bits), so a late response for a recycled slot is recognised.
//! The bytes go through a [`Stream`], as on the target. Read data is received
//! straight into the request's pool buffer when it is not already staged; write data leaves from the request's buffer (in the capsule when it
//! fits, else after the target's R2T, in MAXH2CDATA-sized H2CData PDUs).
//!
//! Completions are collected while the queue's state is borrowed and delivered after,
//! so a caller may submit from inside its completion.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::{defer_completion, BdevError, ChannelImpl, Completion, IoOp};
use ferrox_nvme_spec::{Command, SglDescriptor, Status};
use ferrox_reactor::{
    AbortHandle, DmaBuf, PollStatus, Poller, PollerId, Reactor, TimerId, WakeSource,
};
use zerocopy::{FromBytes, IntoBytes};

use self::tx::TxItem;
use super::bdev::Session;
use super::{check_header, HostError};
use crate::pdu::stream::{DataStep, HeaderError, Stream, Transport};
use crate::pdu::{
    crc32c, CommonHeader, DataHeader, Digests, HeaderBuf, Layout, PduFlags, PduType, DIGEST_LEN,
};
use ferrox_nvme_spec::Completion as Cqe;

mod reconnect;
mod tx;

const RX_CAP: usize = 64 << 10;
/// Transmit items one command may queue at once (header, data, digest, and more).
const TX_PER_SLOT: usize = 4;
const SLOT_BITS: u16 = 7;
const SLOT_MASK: u16 = (1 << SLOT_BITS) - 1;
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    /// Dataset Management: its 16-byte range is in the slot, not in a buffer.
    Dsm,
    Other,
}

struct Slot {
    in_use: bool,
    generation: u16,
    kind: Kind,
    buf: Option<DmaBuf>,
    done: Option<Completion>,
    deadline: Instant,
    received: usize,
    /// The DSM range of a [`Kind::Dsm`] command, for an R2T to ask for.
    range: [u8; 16],
    /// `TxItem::SlotData` items of this slot still in `tx` (its buffer must stay).
    queued: u16,
}

/// What the stream receives next (the data's progress is the stream's).
#[derive(Clone, Copy)]
enum Rx {
    Header,
    /// C2HData for `slot`; `success`: it completes the command.
    Data {
        slot: u16,
        success: bool,
    },
}

/// What one receive step did.
enum Step {
    Progress,
    /// Nothing staged to go on with: read more.
    NeedBytes,
    /// The socket has nothing: wait for it.
    Blocked,
}

/// The queue's byte stream.
type QStream = Stream<TcpStream, TxItem>;

type Ready = (Completion, Result<(), BdevError>, Option<DmaBuf>);

/// A command waiting for a free slot (more submitted than the queue has entries).
struct Queued {
    op: IoOp,
    done: Completion,
    /// It fails with `ETIMEDOUT` if it has not started by then.
    deadline: Instant,
}

struct State {
    /// The connection (none while it is lost).
    stream: Option<QStream>,
    maxh2cdata: usize,
    rx_state: Rx,
    slots: Vec<Slot>,
    free: Vec<u16>,
    pending: VecDeque<Queued>,
    ready: Vec<Ready>,
    last_attempt: Option<Instant>,
    /// A reconnection under way as a task of this reactor: where its result lands,
    /// and how to stop it.
    reconnect: Option<(Rc<RefCell<Option<Reconnected>>>, AbortHandle)>,
    last_timeout_check: Instant,
    closed: bool,
}

/// What a reconnection task hands back: the new I/O queue's socket (non-blocking)
/// and its MAXH2CDATA.
type Reconnected = Result<(TcpStream, usize), HostError>;

pub(super) struct QPair {
    session: Arc<Session>,
    qid: u16,
    st: RefCell<State>,
    poller: Cell<Option<PollerId>>,
    /// Checks deadlines even while the reactor sleeps (a silent target sends nothing
    /// that would wake it).
    timer: Cell<Option<TimerId>>,
}

/// The message a failed receive closes the queue with.
fn receive_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the target closed the connection".into()
    } else {
        format!("receive failed: {e}")
    }
}

/// Checks a PDU from the target ([`check_header`]) and says where its parts are.
/// A termination request is taken as its fixed header only: the queue ends on it.
fn c2h_layout(ch: &CommonHeader, d: Digests) -> Result<Layout, String> {
    // Type, HLEN and the digest flags as negotiated (so digests come from the
    // negotiation, never from what a PDU claims).
    check_header(ch, Some(d))?;
    let hlen = usize::from(ch.hlen);
    let hdgst = d.header && ch.pdu_type.digestible();
    let mut l = Layout {
        hlen,
        hdgst,
        pdo: 0,
        data_len: 0,
        ddgst: false,
    };
    if ch.pdu_type == PduType::C2H_DATA {
        let pdo = usize::from(ch.pdo);
        let dd = if d.data { DIGEST_LEN } else { 0 };
        let data_len = (ch.plen as usize).checked_sub(pdo + dd);
        match data_len {
            Some(n) if pdo >= l.header_bytes() => {
                l.pdo = pdo;
                l.data_len = n;
                l.ddgst = d.data;
            }
            _ => return Err("C2HData outside its command's buffer".into()),
        }
    }
    Ok(l)
}

fn status_error(s: Status) -> BdevError {
    if s.code() == Status::LBA_OUT_OF_RANGE {
        BdevError::OutOfRange {
            lba: 0,
            blocks: 0,
            num_blocks: 0,
        }
    } else if s.code() == Status::CAPACITY_EXCEEDED {
        BdevError::NoSpace
    } else if s.code() == Status::INVALID_OPCODE {
        BdevError::Unsupported("this command on the remote target")
    } else {
        BdevError::Io(libc::EIO)
    }
}

impl QPair {
    pub fn start(
        r: &Reactor,
        session: Arc<Session>,
        qid: u16,
        sock: TcpStream,
        maxh2cdata: u32,
    ) -> std::io::Result<Rc<dyn ChannelImpl>> {
        sock.set_nonblocking(true)?;
        let depth = usize::from(session.opts.queue_depth.clamp(2, 128));
        let qp = Rc::new(QPair {
            session,
            qid,
            st: RefCell::new(State {
                stream: Some(Stream::new(sock, RX_CAP, depth * TX_PER_SLOT)),
                maxh2cdata: maxh2cdata as usize,
                rx_state: Rx::Header,
                slots: (0..depth)
                    .map(|_| Slot {
                        in_use: false,
                        generation: 0,
                        kind: Kind::Other,
                        buf: None,
                        done: None,
                        deadline: Instant::now(),
                        received: 0,
                        range: [0; 16],
                        queued: 0,
                    })
                    .collect(),
                free: (0..depth as u16).rev().collect(),
                pending: VecDeque::with_capacity(depth),
                ready: Vec::with_capacity(depth),
                last_attempt: None,
                reconnect: None,
                last_timeout_check: Instant::now(),
                closed: false,
            }),
            poller: Cell::new(None),
            timer: Cell::new(None),
        });
        let id = r.add_poller(qp.clone());
        qp.poller.set(Some(id));
        let weak = Rc::downgrade(&qp);
        let period = (qp.session.opts.io_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let t = r.add_periodic(period, move |r| {
            if let Some(q) = weak.upgrade() {
                let mut st = q.st.borrow_mut();
                if st.stream.is_none() && st.reconnect.is_some() {
                    q.try_reconnect(&mut st);
                }
                q.check_timeouts(&mut st, r.now());
                drop(st);
                q.deliver();
            }
        });
        qp.timer.set(Some(t));
        Ok(qp)
    }

    fn digests(&self) -> crate::pdu::Digests {
        self.session.digests
    }

    /// Drops the connection and fails every command with `errno`: those in flight and
    /// those queued for a slot (nothing else would ever start them).
    fn fail_connection(&self, st: &mut State, why: &str, errno: i32) {
        if let Some(s) = st.stream.take() {
            let _ = s.shutdown();
            tracing::warn!(qid = self.qid, target_addr = %self.session.url.addr, why, "I/O queue lost; failing its commands");
        }
        // Its transmit queue went with the stream.
        for s in &mut st.slots {
            s.queued = 0;
        }
        st.rx_state = Rx::Header;
        for i in 0..st.slots.len() {
            if st.slots[i].in_use {
                let s = &mut st.slots[i];
                s.in_use = false;
                let (done, buf) = (s.done.take(), s.buf.take());
                st.free.push(i as u16);
                if let Some(d) = done {
                    st.ready.push((d, Err(BdevError::Io(errno)), buf));
                }
            }
        }
        while let Some(q) = st.pending.pop_front() {
            st.ready
                .push((q.done, Err(BdevError::Io(errno)), q.op.into_buf()));
        }
    }

    fn start_cmd(&self, st: &mut State, op: IoOp, done: Completion) {
        let Some(slot) = st.free.pop() else {
            st.pending.push_back(Queued {
                op,
                done,
                deadline: Instant::now() + self.session.opts.io_timeout,
            });
            return;
        };
        let s = &mut st.slots[slot as usize];
        s.generation = (s.generation + 1) & ((1 << (16 - SLOT_BITS)) - 1);
        let cid = (s.generation << SLOT_BITS) | slot;
        let nsid = self.session.url.nsid;
        let nlb = |blocks: u64| (blocks - 1) as u16;
        let mut data_len = 0usize;
        let mut range = [0u8; 16];
        let (mut cmd, kind, buf) = match op {
            IoOp::Read { lba, blocks, buf } => (
                Command::read(cid, nsid, lba, nlb(blocks)),
                Kind::Read,
                Some(buf),
            ),
            IoOp::Write {
                lba,
                blocks,
                buf,
                fua,
            } => {
                data_len = buf.len();
                (
                    Command::write(cid, nsid, lba, nlb(blocks)).with_fua(fua),
                    Kind::Write,
                    Some(buf),
                )
            }
            IoOp::Flush => (Command::flush(cid, nsid), Kind::Other, None),
            IoOp::WriteZeroes { blocks, .. } | IoOp::Unmap { blocks, .. } if blocks > 65536 => {
                st.free.push(slot);
                st.ready.push((
                    done,
                    Err(BdevError::TooLarge {
                        bytes: blocks,
                        max: 65536,
                    }),
                    None,
                ));
                return;
            }
            IoOp::WriteZeroes { lba, blocks } => (
                Command::write_zeroes(cid, nsid, lba, nlb(blocks)),
                Kind::Other,
                None,
            ),
            IoOp::Unmap { lba, blocks } => {
                range[4..8].copy_from_slice(&(blocks as u32).to_le_bytes());
                range[8..16].copy_from_slice(&lba.to_le_bytes());
                data_len = range.len();
                // DSM, one range (NR = 0), attribute deallocate. In the capsule when
                // the target takes in-capsule data, else after its R2T.
                (
                    Command::new(0x09, cid)
                        .with_nsid(nsid)
                        .with_cdws([0, 1 << 2, 0, 0, 0, 0]),
                    Kind::Dsm,
                    None,
                )
            }
        };
        cmd.flags = 0x40;
        let in_capsule = data_len > 0 && data_len <= self.session.in_capsule;
        cmd.dptr = if in_capsule {
            SglDescriptor::in_capsule(0, data_len as u32)
        } else if data_len > 0 {
            SglDescriptor::transport(data_len as u32)
        } else {
            SglDescriptor::transport(buf.as_ref().map_or(0, |b| b.len() as u32))
        }
        .to_dptr();
        let s = &mut st.slots[slot as usize];
        s.in_use = true;
        s.kind = kind;
        s.buf = buf;
        s.done = Some(done);
        s.received = 0;
        s.range = range;
        s.deadline = Instant::now() + self.session.opts.io_timeout;
        let d = self.digests();
        let mut sqe = [0u8; 64];
        sqe.copy_from_slice(cmd.as_bytes());
        let cap_data = if in_capsule { data_len } else { 0 };
        let Some(stream) = st.stream.as_mut() else {
            unreachable!("commands start on a connected queue only");
        };
        stream.push(TxItem::Hdr(HeaderBuf::capsule_cmd(&sqe, cap_data, d)));
        if in_capsule {
            let crc;
            if kind == Kind::Dsm {
                crc = crc32c(&range);
                stream.push(TxItem::Small {
                    bytes: range,
                    len: range.len() as u8,
                });
            } else {
                let b = st.slots[slot as usize].buf.as_ref().expect("write buffer");
                crc = if d.data { crc32c(b.as_slice()) } else { 0 };
                stream.push(TxItem::SlotData {
                    slot,
                    off: 0,
                    len: data_len,
                });
                st.slots[slot as usize].queued += 1;
            }
            if d.data {
                stream.push(TxItem::Digest(crc.to_le_bytes()));
            }
        }
    }

    fn finish(&self, st: &mut State, slot: u16, res: Result<(), BdevError>) {
        let s = &mut st.slots[slot as usize];
        if !s.in_use {
            return;
        }
        s.in_use = false;
        let (done, buf) = (s.done.take(), s.buf.take());
        st.free.push(slot);
        if let Some(d) = done {
            st.ready.push((d, res, buf));
        }
        self.start_queued(st);
    }

    /// Starts queued commands while slots are free; one that waited past its
    /// deadline fails instead.
    fn start_queued(&self, st: &mut State) {
        if st.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        while !st.free.is_empty() {
            let Some(q) = st.pending.pop_front() else {
                return;
            };
            if now > q.deadline {
                st.ready
                    .push((q.done, Err(BdevError::Io(libc::ETIMEDOUT)), q.op.into_buf()));
                continue;
            }
            self.start_cmd(st, q.op, q.done);
        }
    }

    /// A read the target reports successful must have received every byte.
    fn all_data_received(&self, st: &State, slot: u16) -> Result<(), BdevError> {
        let s = &st.slots[slot as usize];
        let want = s.buf.as_ref().map_or(0, DmaBuf::len);
        if s.kind == Kind::Read && s.received != want {
            tracing::warn!(
                qid = self.qid,
                received = s.received,
                want,
                "the target completed a read without sending all its data"
            );
            return Err(BdevError::Io(libc::EIO));
        }
        Ok(())
    }

    fn slot_of(st: &State, cid: u16) -> Option<u16> {
        let slot = cid & SLOT_MASK;
        let s = st.slots.get(slot as usize)?;
        (s.in_use && s.generation == cid >> SLOT_BITS).then_some(slot)
    }

    // ------------------------------------------------------------ receive

    fn fill(&self, st: &mut State) -> Result<bool, String> {
        let Some(stream) = st.stream.as_mut() else {
            return Ok(false);
        };
        stream.fill(None).map_err(receive_error)
    }

    /// One step of PDU processing.
    fn step(&self, st: &mut State) -> Result<Step, String> {
        match st.rx_state {
            Rx::Header => self.step_header(st),
            Rx::Data { slot, success } => self.step_data(st, slot, success),
        }
    }

    fn step_header(&self, st: &mut State) -> Result<Step, String> {
        let d = self.digests();
        let stream = st.stream.as_mut().expect("connected");
        let ch = match stream.recv_header(|ch| c2h_layout(ch, d)) {
            Ok(Some(ch)) => ch,
            Ok(None) => return Ok(Step::NeedBytes),
            Err(HeaderError::Invalid(why)) => return Err(why),
            Err(HeaderError::Digest(_)) => return Err("header digest mismatch".into()),
        };
        // What the types below need of the header (parsed, so the stream is free).
        let (hdr, layout) = (stream.header(), stream.layout());
        let cqe = (ch.pdu_type == PduType::CAPSULE_RESP)
            .then(|| Cqe::read_from_bytes(&hdr[8..24]).expect("16 bytes"));
        let dh = DataHeader::parse(hdr);
        match ch.pdu_type {
            PduType::CAPSULE_RESP => {
                let cqe = cqe.expect("parsed above");
                let Some(slot) = Self::slot_of(st, cqe.cid) else {
                    return Err(format!("response for unknown command {}", cqe.cid));
                };
                if st.slots[slot as usize].queued > 0 {
                    // Its buffer would go back while the data is still to send.
                    return Err(format!(
                        "response for command {} before its data was sent",
                        cqe.cid
                    ));
                }
                let res = if cqe.status().is_success() {
                    self.all_data_received(st, slot)
                } else {
                    tracing::debug!(qid = self.qid, status = %cqe.status(), "command failed");
                    Err(status_error(cqe.status()))
                };
                self.finish(st, slot, res);
            }
            PduType::C2H_DATA => {
                let Some(slot) = Self::slot_of(st, dh.cccid) else {
                    return Err(format!("data for unknown command {}", dh.cccid));
                };
                let s = &st.slots[slot as usize];
                let cap = s.buf.as_ref().map_or(0, |b| b.len());
                if s.kind != Kind::Read
                    || layout.data_len != dh.length as usize
                    || dh.offset as usize != s.received
                    || s.received + layout.data_len > cap
                {
                    return Err("C2HData outside its command's buffer".into());
                }
                let success = ch.flags.contains(PduFlags::SUCCESS);
                if success && !ch.flags.contains(PduFlags::LAST_PDU) {
                    return Err("C2HData SUCCESS without LAST_PDU".into());
                }
                let stream = st.stream.as_mut().expect("connected");
                stream.begin_data(dh.offset as usize, false);
                st.rx_state = Rx::Data { slot, success };
            }
            PduType::R2T => self.on_r2t(st, dh)?,
            PduType::C2H_TERM_REQ => {
                // FES is where a data header's CCCID is.
                let fes = dh.cccid;
                return Err(format!(
                    "the target terminated the connection (FES {fes:#x})"
                ));
            }
            t => return Err(format!("unexpected PDU {t:?} from the target")),
        }
        Ok(Step::Progress)
    }

    /// Answers an R2T: H2CData PDUs of at most MAXH2CDATA for the range it asks.
    fn on_r2t(&self, st: &mut State, r: DataHeader) -> Result<(), String> {
        let d = self.digests();
        let Some(slot) = Self::slot_of(st, r.cccid) else {
            return Err(format!("R2T for unknown command {}", r.cccid));
        };
        let s = &st.slots[slot as usize];
        let (kind, range) = (s.kind, s.range);
        let len = match kind {
            Kind::Write => s.buf.as_ref().map_or(0, |b| b.len()),
            Kind::Dsm => range.len(),
            Kind::Read | Kind::Other => 0,
        };
        let (o, l) = (r.offset as usize, r.length as usize);
        if l == 0 || o + l > len {
            return Err("R2T outside its command's data".into());
        }
        let chunk = st.maxh2cdata.max(4096);
        let stream = st.stream.as_mut().expect("connected");
        let mut off = o;
        while off < o + l {
            let n = chunk.min(o + l - off);
            let dh = DataHeader {
                cccid: r.cccid,
                ttag: r.ttag,
                offset: off as u32,
                length: n as u32,
            };
            stream.push(TxItem::Hdr(HeaderBuf::h2c_data(dh, off + n == o + l, d)));
            let crc = if kind == Kind::Dsm {
                let mut bytes = [0u8; 16];
                bytes[..n].copy_from_slice(&range[off..off + n]);
                stream.push(TxItem::Small {
                    bytes,
                    len: n as u8,
                });
                crc32c(&bytes[..n])
            } else {
                stream.push(TxItem::SlotData { slot, off, len: n });
                st.slots[slot as usize].queued += 1;
                let b = st.slots[slot as usize].buf.as_ref().expect("write buffer");
                if d.data {
                    crc32c(&b.as_slice()[off..off + n])
                } else {
                    0
                }
            };
            if d.data {
                stream.push(TxItem::Digest(crc.to_le_bytes()));
            }
            off += n;
        }
        Ok(())
    }

    fn step_data(&self, st: &mut State, slot: u16, success: bool) -> Result<Step, String> {
        let stream = st.stream.as_mut().expect("connected");
        let dst = st.slots[slot as usize].buf.as_mut().expect("read buffer");
        let (digest_ok, end) = match stream.recv_data(Some(dst.as_mut_slice())).step {
            DataStep::Progress => return Ok(Step::Progress),
            DataStep::NeedBytes => return Ok(Step::NeedBytes),
            DataStep::Blocked => return Ok(Step::Blocked),
            DataStep::Failed(e) => return Err(receive_error(e)),
            DataStep::Done { digest_ok, end } => (digest_ok, end),
        };
        if !digest_ok {
            return Err("data digest mismatch on read data".into());
        }
        st.rx_state = Rx::Header;
        st.slots[slot as usize].received = end;
        if success {
            let res = self.all_data_received(st, slot);
            self.finish(st, slot, res);
        }
        Ok(Step::Progress)
    }

    fn receive(&self, st: &mut State) -> Result<bool, String> {
        let mut progress = false;
        for _ in 0..256 {
            if st.stream.is_none() {
                break;
            }
            match self.step(st)? {
                Step::Progress => progress = true,
                Step::NeedBytes => {
                    if !self.fill(st)? {
                        break;
                    }
                    progress = true;
                }
                Step::Blocked => break,
            }
        }
        Ok(progress)
    }

    fn check_timeouts(&self, st: &mut State, now: Instant) {
        if now - st.last_timeout_check < Duration::from_millis(100) {
            return;
        }
        st.last_timeout_check = now;
        if st.slots.iter().any(|s| s.in_use && now > s.deadline) {
            self.fail_connection(st, "a command timed out", libc::ETIMEDOUT);
            return;
        }
        // Queued commands wait at most `io_timeout` for a slot (deadlines are in
        // submission order). The connection is not at fault: it keeps its commands.
        let mut expired = 0usize;
        while st.pending.front().is_some_and(|q| now > q.deadline) {
            let q = st.pending.pop_front().expect("front exists");
            st.ready
                .push((q.done, Err(BdevError::Io(libc::ETIMEDOUT)), q.op.into_buf()));
            expired += 1;
        }
        if expired > 0 {
            tracing::warn!(
                qid = self.qid,
                expired,
                "commands waited longer than the I/O timeout for a queue slot"
            );
        }
    }

    fn deliver(&self) {
        let mut ready = std::mem::take(&mut self.st.borrow_mut().ready);
        for (done, res, buf) in ready.drain(..) {
            done.complete(res, buf);
        }
        // Give the (empty) vector back so its capacity is reused.
        let mut st = self.st.borrow_mut();
        if st.ready.is_empty() {
            st.ready = ready;
        }
    }
}

impl Poller for QPair {
    fn poll(&self, r: &Reactor) -> PollStatus {
        let busy = {
            let mut st = self.st.borrow_mut();
            if st.closed && st.free.len() == st.slots.len() {
                if let Some(t) = self.timer.take() {
                    r.cancel_timer(t);
                }
                return PollStatus::Done;
            }
            let mut busy = false;
            if st.stream.is_none() && st.reconnect.is_some() {
                // A reconnection that finished is taken now, not at the next command.
                busy |= self.try_reconnect(&mut st);
            }
            if st.stream.is_some() {
                let res = self
                    .send(&mut st)
                    .and_then(|a| Ok(a | self.receive(&mut st)?))
                    .and_then(|b| Ok(b | self.send(&mut st)?));
                match res {
                    Ok(b) => busy = b,
                    Err(why) => {
                        self.fail_connection(&mut st, &why, libc::ECONNRESET);
                        busy = true;
                    }
                }
            }
            self.check_timeouts(&mut st, r.now());
            busy || !st.ready.is_empty()
        };
        self.deliver();
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn wake_source(&self) -> Option<WakeSource> {
        let st = self.st.borrow();
        let stream = st.stream.as_ref()?;
        let mut events = libc::POLLIN as u32;
        if !stream.tx_is_empty() {
            events |= libc::POLLOUT as u32;
        }
        // Deadlines are checked by the queue's periodic timer while the reactor sleeps.
        Some(WakeSource {
            fd: stream.transport().raw_fd(),
            events,
        })
    }

    fn shutdown(&self, _r: &Reactor) {
        let mut st = self.st.borrow_mut();
        self.fail_connection(&mut st, "the reactor is stopping", libc::ECANCELED);
        st.closed = true;
        if let Some((_, t)) = st.reconnect.take() {
            t.abort();
        }
        drop(st);
        self.deliver();
    }

    fn name(&self) -> &'static str {
        "nvmf-host-qpair"
    }
}

impl ChannelImpl for QPair {
    fn submit(&self, op: IoOp, done: Completion) {
        let mut st = self.st.borrow_mut();
        if st.closed || !self.try_reconnect(&mut st) {
            if !st.closed && st.reconnect.is_some() {
                // A reconnection is under way: the command waits for it, at most
                // the I/O timeout (like a command waiting for a queue slot).
                st.pending.push_back(Queued {
                    op,
                    done,
                    deadline: Instant::now() + self.session.opts.io_timeout,
                });
            } else {
                let errno = if st.closed {
                    libc::ECANCELED
                } else {
                    libc::ENOTCONN
                };
                st.ready
                    .push((done, Err(BdevError::Io(errno)), op.into_buf()));
            }
            let ready = std::mem::take(&mut st.ready);
            drop(st);
            for (d, res, buf) in ready {
                Reactor::with(|r| defer_completion(r, d, res, buf));
            }
            return;
        }
        self.start_cmd(&mut st, op, done);
        // Failures found while starting (e.g. too large) complete next turn.
        let ready = std::mem::take(&mut st.ready);
        drop(st);
        for (d, res, buf) in ready {
            Reactor::with(|r| defer_completion(r, d, res, buf));
        }
    }

    fn in_flight(&self) -> usize {
        let st = self.st.borrow();
        st.slots.len() - st.free.len() + st.pending.len()
    }

    fn close(&self) {
        let mut st = self.st.borrow_mut();
        st.closed = true;
        if let Some((_, t)) = st.reconnect.take() {
            t.abort();
        }
        if let Some(s) = st.stream.take() {
            let _ = s.shutdown();
        }
        let pending: Vec<_> = st.pending.drain(..).collect();
        drop(st);
        for q in pending {
            let buf = q.op.into_buf();
            Reactor::with(|r| defer_completion(r, q.done, Err(BdevError::Closed), buf));
        }
    }
}
