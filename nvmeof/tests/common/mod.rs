//! A minimal blocking NVMe/TCP host for tests, and a target fixture on loopback.
#![allow(dead_code)] // each test file uses a different part

pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::BlockDevice;
use ferrox_nvme_spec::{
    Command, Completion, ConnectCommand, ConnectData, PropertyCommand, PropertySize, SglDescriptor,
    Status, DISCOVERY_NQN,
};
use ferrox_nvmeof::host::HostOptions;
use ferrox_nvmeof::pdu::{
    le32, CommonHeader, DataHeader, Digests, HeaderBuf, IcReq, IcResp, PduType, CH_LEN,
};
use ferrox_nvmeof::{SubsystemConfig, Target};
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, ReactorGroup, ReactorOptions,
};
use zerocopy::{FromBytes, IntoBytes};

pub const NQN: &str = "nqn.2026-11.io.ferrox:test";
pub const HOSTNQN: &str = "nqn.2026-11.io.ferrox:host1";

pub struct Fixture {
    pub group: Option<ReactorGroup>,
    pub target: Target,
    pub addr: SocketAddr,
    pub dev: Arc<dyn BlockDevice>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(g) = self.group.take() {
            g.shutdown();
        }
    }
}

pub fn fixture() -> Fixture {
    fixture_at("127.0.0.1:0")
}

/// A fixture listening on `addr` (port 0 picks a free port).
pub fn fixture_at(addr: &str) -> Fixture {
    fixture_with(&[addr], Vec::new(), |_| Vec::new())
}

/// The test subsystem (reachable through `own_listeners`, all when empty) and the
/// subsystems `more` makes, on a target listening on `addrs`; `addr` is the first.
pub fn fixture_with(
    addrs: &[&str],
    own_listeners: Vec<SocketAddr>,
    more: impl FnOnce(Arc<dyn BlockDevice>) -> Vec<SubsystemConfig>,
) -> Fixture {
    fixture_on(2, addrs, own_listeners, more)
}

/// [`fixture_with`] on `reactors` reactors.
pub fn fixture_on(
    reactors: usize,
    addrs: &[&str],
    own_listeners: Vec<SocketAddr>,
    more: impl FnOnce(Arc<dyn BlockDevice>) -> Vec<SubsystemConfig>,
) -> Fixture {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 256,
            },
            ClassConfig {
                size: 128 << 10,
                count: 32,
            },
        ],
        hugepages: false,
    })
    .unwrap();
    let cores: Vec<usize> = available_cores()
        .into_iter()
        .cycle()
        .take(reactors)
        .collect();
    let group = ReactorGroup::start(&cores, &ReactorOptions::default(), pool).unwrap();
    let dev: Arc<dyn BlockDevice> = MallocBdev::new("m0", 32768, 512).unwrap();
    let mut subsystems = vec![SubsystemConfig {
        nqn: NQN.to_string(),
        serial: "SN0001".to_string(),
        model: "Ferrox test".to_string(),
        allow_any_host: false,
        hosts: vec![HOSTNQN.to_string()],
        namespaces: vec![(1, dev.clone())],
        listeners: own_listeners,
    }];
    subsystems.extend(more(dev.clone()));
    let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let target = Target::start(group.handles(), [7; 16], subsystems, &addrs).unwrap();
    let addr = target.listen_addrs()[0];
    Fixture {
        group: Some(group),
        target,
        addr,
        dev,
    }
}

/// A received PDU.
#[derive(Debug)]
pub struct Pdu {
    pub ch: CommonHeader,
    pub header: Vec<u8>,
    pub data: Vec<u8>,
}

pub struct Host {
    pub sock: TcpStream,
    pub digests: Digests,
    pub cid: u16,
    pub qid: u16,
}

impl Host {
    /// TCP connect only (no ICReq).
    pub fn raw(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// A connected socket, nothing sent yet.
    pub fn from_stream(sock: TcpStream) -> Self {
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        Self {
            sock,
            digests: Digests::default(),
            cid: 0,
            qid: 0,
        }
    }

    /// TCP connect and ICReq/ICResp.
    pub fn ic(addr: SocketAddr, digests: Digests) -> Self {
        let mut h = Self::raw(addr);
        h.ic_on(digests);
        h
    }

    /// ICReq/ICResp on a connected socket.
    pub fn ic_on(&mut self, digests: Digests) {
        let h = self;
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            digests,
            maxr2t: 0,
        };
        h.sock.write_all(&req.encode()).unwrap();
        let p = h.recv();
        assert_eq!(p.ch.pdu_type, PduType::IC_RESP);
        let resp = IcResp::parse(&p.header);
        assert_eq!(resp.digests, digests);
        assert!(resp.maxh2cdata >= 4096 && resp.maxh2cdata.is_multiple_of(4));
        assert_eq!(resp.cpda, 0);
        h.digests = digests;
    }

    /// Asserts that the target closes the connection (EOF or a reset) rather than
    /// leaving it open until the read timeout; bytes sent before the close are
    /// skipped and counted.
    pub fn expect_closed(&mut self, why: &str) -> usize {
        let mut buf = [0u8; 4096];
        let mut skipped = 0usize;
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return skipped,
                Ok(n) => {
                    skipped += n;
                    assert!(skipped < 1 << 20, "{why}: the target keeps sending");
                }
                Err(e) if is_reset(&e) => return skipped,
                Err(e) => panic!("{why}: the connection stayed open ({e})"),
            }
        }
    }

    pub fn recv(&mut self) -> Pdu {
        self.try_recv().expect("a PDU")
    }

    /// The next PDU, or None when the target closed the connection.
    pub fn try_recv(&mut self) -> Option<Pdu> {
        let mut ch = [0u8; CH_LEN];
        if self.sock.read_exact(&mut ch).is_err() {
            return None;
        }
        let c = CommonHeader::parse(&ch);
        let mut rest = vec![0u8; c.plen as usize - CH_LEN];
        self.sock.read_exact(&mut rest).ok()?;
        let mut all = ch.to_vec();
        all.extend_from_slice(&rest);
        let hlen = c.hlen as usize;
        let hd = usize::from(c.flags.bits() & 1 != 0) * 4;
        if hd > 0 {
            assert_eq!(
                le32(&all, hlen),
                crc32c::crc32c(&all[..hlen]),
                "header digest"
            );
        }
        let (header, data) = if c.pdo > 0 {
            let dd = usize::from(c.flags.bits() & 2 != 0) * 4;
            let data = all[c.pdo as usize..all.len() - dd].to_vec();
            if dd > 0 {
                assert_eq!(
                    le32(&all, all.len() - 4),
                    crc32c::crc32c(&data),
                    "data digest"
                );
            }
            (all[..hlen].to_vec(), data)
        } else if c.pdu_type == PduType::C2H_TERM_REQ {
            (all[..24].to_vec(), all[24..].to_vec())
        } else {
            (all[..hlen].to_vec(), Vec::new())
        };
        Some(Pdu {
            ch: c,
            header,
            data,
        })
    }

    pub fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// Sends a command capsule with optional in-capsule data.
    pub fn send_cmd(&mut self, cmd: &Command, data: &[u8]) {
        let mut sqe = [0u8; 64];
        sqe.copy_from_slice(cmd.as_bytes());
        let h = HeaderBuf::capsule_cmd(&sqe, data.len(), self.digests);
        let mut out = h.as_slice().to_vec();
        out.extend_from_slice(data);
        if self.digests.data && !data.is_empty() {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        self.sock.write_all(&out).unwrap();
    }

    /// Waits for the response of `cid`, collecting C2H data on the way.
    pub fn wait_resp(&mut self, cid: u16) -> (Completion, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            let p = self.recv();
            match p.ch.pdu_type {
                PduType::C2H_DATA => {
                    let dh = DataHeader::parse(&p.header);
                    assert_eq!(dh.cccid, cid);
                    assert_eq!(dh.offset as usize, data.len());
                    data.extend_from_slice(&p.data);
                    if p.ch.flags.bits() & 0x08 != 0 {
                        return (Completion::success(cid), data);
                    }
                }
                PduType::CAPSULE_RESP => {
                    let cqe = Completion::read_from_bytes(&p.header[8..24]).unwrap();
                    assert_eq!(cqe.cid, cid, "responses arrive in order in these tests");
                    return (cqe, data);
                }
                t => panic!("unexpected PDU {t:?}: {p:?}"),
            }
        }
    }

    /// Runs one command with in-capsule data (or none) and returns its completion.
    pub fn exec(&mut self, mut cmd: Command, data: &[u8], c2h_len: u32) -> (Completion, Vec<u8>) {
        let cid = self.next_cid();
        cmd.cid = cid;
        cmd.flags = (cmd.flags & 0b11) | 0x40; // PSDT = SGL; FUSE as given
        let sgl = if !data.is_empty() {
            SglDescriptor::in_capsule(0, data.len() as u32)
        } else {
            SglDescriptor::transport(c2h_len)
        };
        cmd.dptr = sgl.to_dptr();
        self.send_cmd(&cmd, data);
        self.wait_resp(cid)
    }

    /// A write whose data goes through R2T / H2CData.
    pub fn exec_r2t(&mut self, mut cmd: Command, data: &[u8]) -> Completion {
        let cid = self.next_cid();
        cmd.cid = cid;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(data.len() as u32).to_dptr();
        self.send_cmd(&cmd, &[]);
        let p = self.recv();
        if p.ch.pdu_type == PduType::CAPSULE_RESP {
            return Completion::read_from_bytes(&p.header[8..24]).unwrap();
        }
        assert_eq!(p.ch.pdu_type, PduType::R2T);
        let r2t = DataHeader::parse(&p.header);
        assert_eq!(r2t.cccid, cid);
        assert_eq!(r2t.length as usize, data.len());
        self.send_h2c(r2t.cccid, r2t.ttag, 0, data, true);
        self.wait_resp(cid).0
    }

    pub fn send_h2c(&mut self, cccid: u16, ttag: u16, offset: u32, data: &[u8], last: bool) {
        let dh = DataHeader {
            cccid,
            ttag,
            offset,
            length: data.len() as u32,
        };
        let h = HeaderBuf::h2c_data(dh, last, self.digests);
        let mut out = h.as_slice().to_vec();
        out.extend_from_slice(data);
        if self.digests.data {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        self.sock.write_all(&out).unwrap();
    }

    pub fn connect(&mut self, qid: u16, cntlid: u16, kato: u32) -> Completion {
        let cc = ConnectCommand::new(0, qid, 31, kato);
        let cmd: Command = cc.into();
        let data = ConnectData::new([1; 16], cntlid, NQN, HOSTNQN).unwrap();
        self.qid = qid;
        self.exec(cmd, data.as_bytes(), 0).0
    }

    pub fn connect_to(&mut self, subnqn: &str, hostnqn: &str, qid: u16, cntlid: u16) -> Completion {
        let cmd: Command = ConnectCommand::new(0, qid, 31, 0).into();
        let data = ConnectData::new([1; 16], cntlid, subnqn, hostnqn).unwrap();
        self.exec(cmd, data.as_bytes(), 0).0
    }

    /// ICReq, Connect to the discovery subsystem as HOSTNQN, and CC.EN.
    pub fn discovery(addr: SocketAddr) -> Self {
        let mut h = Self::ic(addr, Digests::default());
        let cmd: Command = ConnectCommand::new(0, 0, 31, 0).into();
        let data = ConnectData::new([2; 16], 0xFFFF, DISCOVERY_NQN, HOSTNQN).unwrap();
        assert!(h.exec(cmd, data.as_bytes(), 0).0.status().is_success());
        assert!(h
            .prop_set(0x14, (6 << 16) | (4 << 20) | 1)
            .status()
            .is_success());
        h
    }

    pub fn prop_set(&mut self, ofst: u32, v: u32) -> Completion {
        let cmd = Command::read_from_bytes(
            PropertyCommand::set(0, ofst, PropertySize::Four, u64::from(v)).as_bytes(),
        )
        .unwrap();
        self.exec(cmd, &[], 0).0
    }

    pub fn prop_get(&mut self, ofst: u32, size: PropertySize) -> Completion {
        let cmd = Command::read_from_bytes(PropertyCommand::get(0, ofst, size).as_bytes()).unwrap();
        self.exec(cmd, &[], 0).0
    }

    /// ICReq, admin Connect, CC.EN = 1; returns the controller ID.
    pub fn admin(addr: SocketAddr, digests: Digests, kato: u32) -> (Self, u16) {
        let mut h = Self::ic(addr, digests);
        let c = h.connect(0, 0xFFFF, kato);
        assert!(c.status().is_success(), "connect: {}", c.status());
        let cntlid = c.dw0 as u16;
        // IOSQES 6, IOCQES 4, EN.
        assert!(h
            .prop_set(0x14, (6 << 16) | (4 << 20) | 1)
            .status()
            .is_success());
        let csts = h.prop_get(0x1c, PropertySize::Four);
        assert_eq!(csts.dw0 & 1, 1, "CSTS.RDY");
        (h, cntlid)
    }

    /// ICReq and I/O queue Connect for `cntlid`.
    pub fn io_queue(addr: SocketAddr, digests: Digests, cntlid: u16, qid: u16) -> Self {
        let mut h = Self::ic(addr, digests);
        let c = h.connect(qid, cntlid, 0);
        assert!(c.status().is_success(), "io connect: {}", c.status());
        h
    }

    pub fn write(&mut self, lba: u64, data: &[u8]) -> Status {
        let cmd = Command::write(0, 1, lba, (data.len() / 512 - 1) as u16);
        if data.len() <= 8192 {
            self.exec(cmd, data, 0).0.status()
        } else {
            self.exec_r2t(cmd, data).status()
        }
    }

    pub fn read(&mut self, lba: u64, blocks: u32) -> (Status, Vec<u8>) {
        let cmd = Command::read(0, 1, lba, (blocks - 1) as u16);
        let (c, d) = self.exec(cmd, &[], blocks * 512);
        (c.status(), d)
    }
}

/// One reactor for the host library's queue pairs.
pub fn host_group() -> ReactorGroup {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 512,
            },
            ClassConfig {
                size: 128 << 10,
                count: 64,
            },
        ],
        hugepages: false,
    })
    .unwrap();
    let core = *available_cores().last().unwrap();
    ReactorGroup::start(&[core], &ReactorOptions::default(), pool).unwrap()
}

/// Host options for tests: `digests` both ways, queue depth `qd`, short timeouts.
pub fn host_opts(digests: bool, qd: u16) -> HostOptions {
    HostOptions {
        hostnqn: HOSTNQN.to_string(),
        header_digest: digests,
        data_digest: digests,
        queue_depth: qd,
        kato_ms: 2000,
        io_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A connection the peer closed abruptly.
pub fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}
