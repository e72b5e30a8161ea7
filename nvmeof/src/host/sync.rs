//! A simple NVMe/TCP queue, one command at a time: the host's admin queue, the
//! handshake of its I/O queues, and the client the tests use to speak raw PDUs.
//!
//! The queue's code is written once, as `async` functions, and runs in one of two
//! modes: blocking (the socket blocks, with the timeout as its read and write
//! timeouts; the futures never wait and `block` runs them to the end in one poll),
//! or as a reactor task (the socket does not block; each wait for the socket is a
//! [`ready`] future bounded by the timeout, so a reconnection needs no thread).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ferrox_reactor::task::{ready, timeout};

use ferrox_nvme_spec::{
    Command, Completion, ConnectCommand, ConnectData, PropertyCommand, PropertySize, SglDescriptor,
};
use zerocopy::{FromBytes, IntoBytes};

use super::{check_header, HostError};
use crate::pdu::{
    crc32c, le32, CommonHeader, DataHeader, Digests, HeaderBuf, IcReq, IcResp, PduFlags, PduType,
    CH_LEN,
};

/// A received PDU, split into header and data (digests checked and removed).
#[derive(Debug)]
pub struct Pdu {
    pub ch: CommonHeader,
    pub header: Vec<u8>,
    pub data: Vec<u8>,
}

/// What a Fabrics Connect asks for.
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams<'a> {
    /// 0: the admin queue.
    pub qid: u16,
    /// Submission queue entries, zero-based.
    pub sqsize: u16,
    /// Keep-alive timeout in milliseconds (admin queue; 0 disables it).
    pub kato: u32,
    /// 0xFFFF on the admin queue (a new controller), its CNTLID on I/O queues.
    pub cntlid: u16,
    pub subnqn: &'a str,
    pub hostnqn: &'a str,
    pub hostid: [u8; 16],
    /// CATTR bit 2: the controller need not report SQ head pointers, and may end a
    /// read with a C2HData PDU carrying SUCCESS instead of a response capsule.
    pub disable_sq_flow_control: bool,
}

/// How a queue waits for its socket (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The socket blocks (up to the timeout): for threads, never a reactor's task.
    Blocking,
    /// The socket does not block; waits are [`ready`] futures: a reactor's task only.
    Task,
}

/// Runs a future of the blocking mode to its end: it never waits, so one poll does.
pub(crate) fn block<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("a blocking queue's future never waits"),
    }
}

/// Waits up to `d` for `fd` to be ready for `events` (the task mode's socket timeout).
async fn wait_fd(fd: i32, events: i16, d: Duration) -> std::io::Result<()> {
    match timeout(d, ready(fd, events as u32)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

/// Sleeps `d`: the thread in the blocking mode, the task in the task mode.
pub(crate) async fn pause(mode: Mode, d: Duration) {
    match mode {
        Mode::Blocking => std::thread::sleep(d),
        Mode::Task => ferrox_reactor::task::sleep(d).await,
    }
}

/// One queue pair, one command at a time.
pub struct SyncQueue {
    pub sock: TcpStream,
    pub digests: Digests,
    pub maxh2cdata: u32,
    /// In-capsule data this queue may send (8 KiB on the admin queue).
    pub in_capsule: usize,
    cid: u16,
    /// The ICResp came: `digests` is what every later PDU must carry.
    ic_done: bool,
    mode: Mode,
    /// How long one wait for the socket may take.
    timeout: Duration,
}

fn proto(why: impl Into<String>) -> HostError {
    HostError::Protocol(why.into())
}

/// A TCP connection to `sa` that does not block, awaiting the connect's end as a
/// task (up to `d`).
async fn connect_task(sa: &SocketAddr, d: Duration) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(*sa), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    match s.connect(&(*sa).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            wait_fd(s.as_raw_fd(), libc::POLLOUT, d).await?;
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

impl SyncQueue {
    /// Opens the TCP connection (no ICReq yet).
    pub fn tcp(addr: &str, timeout: Duration) -> Result<Self, HostError> {
        block(Self::tcp_in(Mode::Blocking, addr, timeout))
    }

    async fn tcp_in(mode: Mode, addr: &str, timeout: Duration) -> Result<Self, HostError> {
        let err = |source| HostError::Connect {
            addr: addr.to_string(),
            source,
        };
        // An address is parsed, never resolved, on a reactor (resolving may block).
        let sa: SocketAddr = match (mode, addr.parse()) {
            (_, Ok(sa)) => sa,
            (Mode::Task, Err(_)) => {
                return Err(err(std::io::Error::other(
                    "a reconnection needs an IP address, not a name",
                )))
            }
            (Mode::Blocking, Err(_)) => addr
                .to_socket_addrs()
                .map_err(err)?
                .next()
                .ok_or_else(|| err(std::io::Error::other("no address")))?,
        };
        let sock = match mode {
            Mode::Blocking => TcpStream::connect_timeout(&sa, timeout),
            Mode::Task => connect_task(&sa, timeout).await,
        }
        .map_err(err)?;
        sock.set_nodelay(true).map_err(err)?;
        sock.set_read_timeout(Some(timeout)).map_err(err)?;
        sock.set_write_timeout(Some(timeout)).map_err(err)?;
        Ok(Self {
            sock,
            digests: Digests::default(),
            maxh2cdata: 0,
            in_capsule: 8192,
            cid: 0,
            ic_done: false,
            mode,
            timeout,
        })
    }

    /// Turns a queue opened by a task into a blocking one (for the threads that
    /// use the admin queue later: shutdown).
    pub(crate) fn into_blocking(mut self) -> std::io::Result<Self> {
        self.sock.set_nonblocking(false)?;
        self.mode = Mode::Blocking;
        Ok(self)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if self.mode == Mode::Blocking {
            return self.sock.read_exact(buf);
        }
        let mut got = 0;
        while got < buf.len() {
            match self.sock.read(&mut buf[got..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_fd(self.sock.as_raw_fd(), libc::POLLIN, self.timeout).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.mode == Mode::Blocking {
            return self.sock.write_all(buf);
        }
        let mut sent = 0;
        while sent < buf.len() {
            match self.sock.write(&buf[sent..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_fd(self.sock.as_raw_fd(), libc::POLLOUT, self.timeout).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// TCP connect plus ICReq/ICResp with the wanted digests.
    pub fn open(addr: &str, digests: Digests, timeout: Duration) -> Result<Self, HostError> {
        block(Self::open_in(Mode::Blocking, addr, digests, timeout))
    }

    /// [`SyncQueue::open`] in `mode`.
    pub(crate) async fn open_in(
        mode: Mode,
        addr: &str,
        digests: Digests,
        timeout: Duration,
    ) -> Result<Self, HostError> {
        let mut q = Self::tcp_in(mode, addr, timeout).await?;
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests,
            maxr2t: 0,
        };
        q.write_all(&req.encode()).await?;
        let p = q.recv_in().await?;
        if p.ch.pdu_type != PduType::IC_RESP {
            return Err(proto(format!("expected ICResp, got {:?}", p.ch.pdu_type)));
        }
        let resp = IcResp::parse(&p.header);
        if resp.digests != digests {
            return Err(proto("the target changed the digest settings"));
        }
        if resp.cpda != 0 || resp.maxh2cdata < 4096 || !resp.maxh2cdata.is_multiple_of(4) {
            return Err(proto(format!(
                "unusable ICResp: CPDA {} MAXH2CDATA {}",
                resp.cpda, resp.maxh2cdata
            )));
        }
        q.digests = digests;
        q.ic_done = true;
        q.maxh2cdata = resp.maxh2cdata;
        Ok(q)
    }

    pub fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// The next PDU, its common header checked ([`check_header`]): `header` holds
    /// exactly its type's HLEN bytes. A C2HTermReq is returned like any PDU (its data
    /// is the quoted header); a closed connection is an error.
    pub fn recv(&mut self) -> Result<Pdu, HostError> {
        block(self.recv_in())
    }

    async fn recv_in(&mut self) -> Result<Pdu, HostError> {
        let mut ch = [0u8; CH_LEN];
        self.read_exact(&mut ch).await?;
        let c = CommonHeader::parse(&ch);
        check_header(&c, self.ic_done.then_some(self.digests)).map_err(proto)?;
        let plen = c.plen as usize;
        let hlen = usize::from(c.hlen);
        if plen > (1 << 20) + 256 {
            return Err(proto(format!("implausible PDU length {plen}")));
        }
        let mut all = vec![0u8; plen];
        all[..CH_LEN].copy_from_slice(&ch);
        self.read_exact(&mut all[CH_LEN..]).await?;
        let hd = if c.flags.contains(PduFlags::HDGSTF) {
            4
        } else {
            0
        };
        if hd > 0 && le32(&all, hlen) != crc32c(&all[..hlen]) {
            return Err(proto("header digest mismatch"));
        }
        if c.pdu_type == PduType::C2H_TERM_REQ {
            return Ok(Pdu {
                ch: c,
                header: all[..hlen].to_vec(),
                data: all[hlen..].to_vec(),
            });
        }
        let pdo = usize::from(c.pdo);
        let data = if c.pdu_type == PduType::C2H_DATA {
            let dd = if c.flags.contains(PduFlags::DDGSTF) {
                4
            } else {
                0
            };
            if pdo < hlen + hd || pdo + dd > plen {
                return Err(proto("PDO outside the PDU"));
            }
            let d = all[pdo..plen - dd].to_vec();
            if dd > 0 && le32(&all, plen - 4) != crc32c(&d) {
                return Err(proto("data digest mismatch"));
            }
            d
        } else {
            Vec::new()
        };
        all.truncate(hlen);
        Ok(Pdu {
            ch: c,
            header: all,
            data,
        })
    }

    /// Sends a capsule with optional in-capsule data.
    pub fn send_cmd(&mut self, cmd: &Command, data: &[u8]) -> Result<(), HostError> {
        block(self.send_cmd_in(cmd, data))
    }

    async fn send_cmd_in(&mut self, cmd: &Command, data: &[u8]) -> Result<(), HostError> {
        let mut sqe = [0u8; 64];
        sqe.copy_from_slice(cmd.as_bytes());
        let h = HeaderBuf::capsule_cmd(&sqe, data.len(), self.digests);
        let mut out = Vec::with_capacity(h.len + data.len() + 4);
        out.extend_from_slice(h.as_slice());
        out.extend_from_slice(data);
        if self.digests.data && !data.is_empty() {
            out.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        self.write_all(&out).await?;
        Ok(())
    }

    /// Sends one H2CData PDU.
    pub fn send_h2c(
        &mut self,
        cccid: u16,
        ttag: u16,
        offset: u32,
        data: &[u8],
        last: bool,
    ) -> Result<(), HostError> {
        block(self.send_h2c_in(cccid, ttag, offset, data, last))
    }

    async fn send_h2c_in(
        &mut self,
        cccid: u16,
        ttag: u16,
        offset: u32,
        data: &[u8],
        last: bool,
    ) -> Result<(), HostError> {
        let dh = DataHeader {
            cccid,
            ttag,
            offset,
            length: data.len() as u32,
        };
        let h = HeaderBuf::h2c_data(dh, last, self.digests);
        let mut out = Vec::with_capacity(h.len + data.len() + 4);
        out.extend_from_slice(h.as_slice());
        out.extend_from_slice(data);
        if self.digests.data {
            out.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        self.write_all(&out).await?;
        Ok(())
    }

    /// Waits for the completion of `cid`: collects C2H data, answers R2Ts from
    /// `data_out`, and returns the CQE (synthesised for a C2HData with SUCCESS).
    pub fn wait(&mut self, cid: u16, data_out: &[u8]) -> Result<(Completion, Vec<u8>), HostError> {
        block(self.wait_in(cid, data_out))
    }

    async fn wait_in(
        &mut self,
        cid: u16,
        data_out: &[u8],
    ) -> Result<(Completion, Vec<u8>), HostError> {
        let mut data = Vec::new();
        loop {
            let p = self.recv_in().await?;
            match p.ch.pdu_type {
                PduType::C2H_DATA => {
                    let dh = DataHeader::parse(&p.header);
                    if dh.cccid != cid
                        || dh.offset as usize != data.len()
                        || dh.length as usize != p.data.len()
                    {
                        return Err(proto(
                            "C2HData for another command, out of order or of the wrong length",
                        ));
                    }
                    data.extend_from_slice(&p.data);
                    if p.ch.flags.contains(PduFlags::SUCCESS) {
                        return Ok((Completion::success(cid), data));
                    }
                }
                PduType::R2T => {
                    let r = DataHeader::parse(&p.header);
                    let (o, l) = (r.offset as usize, r.length as usize);
                    if r.cccid != cid || o + l > data_out.len() {
                        return Err(proto("R2T outside the command's data"));
                    }
                    let chunk = (self.maxh2cdata as usize).max(4096);
                    let mut off = o;
                    while off < o + l {
                        let n = chunk.min(o + l - off);
                        let last = off + n == o + l;
                        self.send_h2c_in(cid, r.ttag, off as u32, &data_out[off..off + n], last)
                            .await?;
                        off += n;
                    }
                }
                PduType::CAPSULE_RESP => {
                    let cqe = Completion::read_from_bytes(&p.header[8..24])
                        .map_err(|_| proto("short CapsuleResp"))?;
                    if cqe.cid != cid {
                        return Err(proto(format!(
                            "response for cid {} while waiting for {cid}",
                            cqe.cid
                        )));
                    }
                    return Ok((cqe, data));
                }
                PduType::C2H_TERM_REQ => {
                    return Err(proto(format!(
                        "the target terminated the connection (FES {:#x})",
                        u16::from_le_bytes([p.header[8], p.header[9]])
                    )))
                }
                t => return Err(proto(format!("unexpected PDU {t:?}"))),
            }
        }
    }

    /// Runs one command: `data_out` goes in-capsule when it fits, else by R2T;
    /// `data_in` bytes are expected back.
    pub fn exec(
        &mut self,
        cmd: Command,
        data_out: &[u8],
        data_in: u32,
    ) -> Result<(Completion, Vec<u8>), HostError> {
        block(self.exec_in(cmd, data_out, data_in))
    }

    async fn exec_in(
        &mut self,
        mut cmd: Command,
        data_out: &[u8],
        data_in: u32,
    ) -> Result<(Completion, Vec<u8>), HostError> {
        let cid = self.next_cid();
        cmd.cid = cid;
        cmd.flags = 0x40; // PSDT: SGL
        let in_capsule = !data_out.is_empty() && data_out.len() <= self.in_capsule;
        let sgl = if in_capsule {
            SglDescriptor::in_capsule(0, data_out.len() as u32)
        } else if !data_out.is_empty() {
            SglDescriptor::transport(data_out.len() as u32)
        } else {
            SglDescriptor::transport(data_in)
        };
        cmd.dptr = sgl.to_dptr();
        self.send_cmd_in(&cmd, if in_capsule { data_out } else { &[] })
            .await?;
        let (c, data) = self.wait_in(cid, data_out).await?;
        if c.status().is_success() && data.len() != data_in as usize {
            return Err(proto(format!(
                "a successful command returned {} of its {data_in} data bytes",
                data.len()
            )));
        }
        Ok((c, data))
    }

    /// Like [`SyncQueue::exec`], failing on a non-success status.
    pub fn exec_ok(
        &mut self,
        what: &'static str,
        cmd: Command,
        data_out: &[u8],
        data_in: u32,
    ) -> Result<(Completion, Vec<u8>), HostError> {
        block(self.exec_ok_in(what, cmd, data_out, data_in))
    }

    pub(crate) async fn exec_ok_in(
        &mut self,
        what: &'static str,
        cmd: Command,
        data_out: &[u8],
        data_in: u32,
    ) -> Result<(Completion, Vec<u8>), HostError> {
        let (c, d) = self.exec_in(cmd, data_out, data_in).await?;
        if !c.status().is_success() {
            return Err(HostError::Status {
                what,
                status: c.status(),
            });
        }
        Ok((c, d))
    }

    /// Fabrics Connect as `p` describes it. The Connect data goes in the capsule when it
    /// fits [`SyncQueue::in_capsule`] (8 KiB on the admin queue; an I/O queue's caller
    /// sets it from IOCCSZ first), else by R2T.
    pub fn fabrics_connect(&mut self, p: &ConnectParams<'_>) -> Result<Completion, HostError> {
        block(self.fabrics_connect_in(p))
    }

    pub(crate) async fn fabrics_connect_in(
        &mut self,
        p: &ConnectParams<'_>,
    ) -> Result<Completion, HostError> {
        let mut cc = ConnectCommand::new(0, p.qid, p.sqsize, p.kato);
        if p.disable_sq_flow_control {
            cc.cattr |= ConnectCommand::CATTR_DISABLE_SQ_FLOW_CONTROL;
        }
        let cmd: Command = cc.into();
        let data = ConnectData::new(p.hostid, p.cntlid, p.subnqn, p.hostnqn)
            .map_err(|e| proto(format!("NQN does not fit: {e}")))?;
        Ok(self.exec_in(cmd, data.as_bytes(), 0).await?.0)
    }

    pub fn prop_get(&mut self, ofst: u32, size: PropertySize) -> Result<Completion, HostError> {
        block(self.prop_get_in(ofst, size))
    }

    async fn prop_get_in(
        &mut self,
        ofst: u32,
        size: PropertySize,
    ) -> Result<Completion, HostError> {
        let cmd = Command::read_from_bytes(PropertyCommand::get(0, ofst, size).as_bytes())
            .expect("64 bytes");
        Ok(self.exec_in(cmd, &[], 0).await?.0)
    }

    pub fn prop_set(&mut self, ofst: u32, value: u32) -> Result<Completion, HostError> {
        block(self.prop_set_in(ofst, value))
    }

    async fn prop_set_in(&mut self, ofst: u32, value: u32) -> Result<Completion, HostError> {
        let pc = PropertyCommand::set(0, ofst, PropertySize::Four, u64::from(value));
        let cmd = Command::read_from_bytes(pc.as_bytes()).expect("64 bytes");
        Ok(self.exec_in(cmd, &[], 0).await?.0)
    }

    /// Reads CAP, writes CC (NVM, 4 KiB pages, 64/16-byte entries, EN), waits for
    /// CSTS.RDY within CAP.TO.
    pub fn enable(&mut self) -> Result<(), HostError> {
        block(self.enable_in())
    }

    pub(crate) async fn enable_in(&mut self) -> Result<(), HostError> {
        let cap = self.prop_get_in(0x00, PropertySize::Eight).await?;
        let to_ms = u64::from((cap.dw0 >> 24) & 0xff).max(1) * 500;
        let c = self.prop_set_in(0x14, (6 << 16) | (4 << 20) | 1).await?;
        if !c.status().is_success() {
            return Err(HostError::Status {
                what: "Property Set CC",
                status: c.status(),
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(to_ms);
        loop {
            let csts = self.prop_get_in(0x1c, PropertySize::Four).await?;
            if csts.dw0 & 2 != 0 {
                return Err(proto("the controller reports a fatal status (CSTS.CFS)"));
            }
            if csts.dw0 & 1 != 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(proto("CSTS.RDY did not come within CAP.TO"));
            }
            pause(self.mode, Duration::from_millis(10)).await;
        }
    }
}
