//! A PDU-aware TCP proxy between the host library and a real target: the tests' way
//! to make a target misbehave (drop, delay or rewrite PDUs) or go away, with the rest
//! of the protocol spoken by the real thing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ferrox_nvmeof::pdu::{le32, PduFlags, PduType, CH_LEN};

/// Which way a PDU travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToTarget,
    ToHost,
}

/// What becomes of a PDU the hook saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// Sees every whole PDU (digests included) with its connection's number (0 is the
/// first connection accepted: the host's admin queue) and may rewrite it. Runs on
/// that direction's forwarding thread: sleeping in it delays what follows.
pub type Hook = dyn Fn(usize, Dir, &mut Vec<u8>) -> Verdict + Send + Sync;

struct Shared {
    hook: Box<Hook>,
    severed: AtomicBool,
    stopping: AtomicBool,
    socks: Mutex<Vec<TcpStream>>,
    conns: AtomicUsize,
}

impl Shared {
    fn close_all(&self) {
        for s in self.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub fn start(
        upstream: SocketAddr,
        hook: impl Fn(usize, Dir, &mut Vec<u8>) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            hook: Box::new(hook),
            severed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            socks: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for host in listener.incoming() {
                if sh.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(host) = host else { continue };
                if sh.severed.load(Ordering::SeqCst) {
                    // The target is gone: the connection closes before any ICResp.
                    let _ = host.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(target) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = host.set_nodelay(true);
                let _ = target.set_nodelay(true);
                let n = sh.conns.fetch_add(1, Ordering::SeqCst);
                {
                    let mut socks = sh.socks.lock().unwrap();
                    socks.push(host.try_clone().unwrap());
                    socks.push(target.try_clone().unwrap());
                }
                for (from, to, dir) in [
                    (
                        host.try_clone().unwrap(),
                        target.try_clone().unwrap(),
                        Dir::ToTarget,
                    ),
                    (target, host, Dir::ToHost),
                ] {
                    let sh = sh.clone();
                    std::thread::spawn(move || forward(&sh, n, dir, from, to));
                }
            }
        });
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The target goes away: every connection closes, new ones are closed at once.
    pub fn sever(&self) {
        self.shared.severed.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// A network blip: every connection closes; new ones are accepted and forwarded.
    pub fn cut(&self) {
        self.shared.close_all();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.sever();
        // Wakes the accept loop, which sees `stopping` and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn forward(sh: &Shared, conn: usize, dir: Dir, mut from: TcpStream, mut to: TcpStream) {
    loop {
        let mut pdu = vec![0u8; CH_LEN];
        if from.read_exact(&mut pdu).is_err() {
            break;
        }
        let plen = le32(&pdu, 4) as usize;
        if !(CH_LEN..=4 << 20).contains(&plen) {
            break;
        }
        pdu.resize(plen, 0);
        if from.read_exact(&mut pdu[CH_LEN..]).is_err() {
            break;
        }
        if (sh.hook)(conn, dir, &mut pdu) == Verdict::Drop {
            continue;
        }
        if to.write_all(&pdu).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Which I/O queues (every connection after the admin queue's) have had their Connect
/// answered, so a hook can leave the handshake alone and act on I/O only.
#[derive(Default)]
pub struct IoQueues {
    connected: Mutex<HashSet<usize>>,
}

impl IoQueues {
    /// Whether `pdu` goes to the host on an I/O queue after that queue's Connect
    /// response (the first CapsuleResp on the connection, which this notes).
    pub fn after_connect(&self, conn: usize, dir: Dir, pdu: &[u8]) -> bool {
        if conn == 0 || dir != Dir::ToHost {
            return false;
        }
        let mut c = self.connected.lock().unwrap();
        if c.contains(&conn) {
            return true;
        }
        if pdu_type(pdu) == PduType::CAPSULE_RESP {
            c.insert(conn);
        }
        false
    }
}

/// A hook applying `f` to what the target sends on each I/O queue after its Connect.
pub fn on_io_responses(
    f: impl Fn(&mut Vec<u8>) -> Verdict + Send + Sync + 'static,
) -> impl Fn(usize, Dir, &mut Vec<u8>) -> Verdict + Send + Sync + 'static {
    let q = IoQueues::default();
    move |conn, dir, pdu| {
        if q.after_connect(conn, dir, pdu) {
            f(pdu)
        } else {
            Verdict::Forward
        }
    }
}

// ---------------------------------------------------------------- PDU helpers

pub fn pdu_type(pdu: &[u8]) -> PduType {
    PduType(pdu[0])
}

/// The CID of a CapsuleCmd, CapsuleResp, C2HData or R2T.
pub fn cid(pdu: &[u8]) -> u16 {
    match pdu_type(pdu) {
        PduType::CAPSULE_CMD => u16::from_le_bytes([pdu[10], pdu[11]]),
        // CQE dword 3 low half.
        PduType::CAPSULE_RESP => u16::from_le_bytes([pdu[8 + 12], pdu[8 + 13]]),
        _ => u16::from_le_bytes([pdu[8], pdu[9]]),
    }
}

/// The opcode of a CapsuleCmd.
pub fn opcode(pdu: &[u8]) -> u8 {
    pdu[8]
}

/// Removes the header digest of a PDU that carries one (PDO and PLEN follow).
pub fn strip_header_digest(pdu: &mut Vec<u8>) {
    if pdu[1] & PduFlags::HDGSTF.bits() == 0 {
        return;
    }
    let hlen = usize::from(pdu[2]);
    pdu.drain(hlen..hlen + 4);
    pdu[1] &= !PduFlags::HDGSTF.bits();
    if pdu[3] != 0 {
        pdu[3] -= 4;
    }
    set_plen(pdu);
}

/// Removes the data digest of a PDU that carries one.
pub fn strip_data_digest(pdu: &mut Vec<u8>) {
    if pdu[1] & PduFlags::DDGSTF.bits() == 0 {
        return;
    }
    pdu.truncate(pdu.len() - 4);
    pdu[1] &= !PduFlags::DDGSTF.bits();
    set_plen(pdu);
}

/// Keeps the first `keep` bytes of a C2HData PDU's data (no digests).
pub fn truncate_c2h_data(pdu: &mut Vec<u8>, keep: usize) {
    assert_eq!(pdu_type(pdu), PduType::C2H_DATA);
    assert_eq!(pdu[1] & 0x3, 0, "only without digests");
    let pdo = usize::from(pdu[3]);
    pdu.truncate(pdo + keep);
    pdu[16..20].copy_from_slice(&(keep as u32).to_le_bytes());
    set_plen(pdu);
}

fn set_plen(pdu: &mut [u8]) {
    let n = pdu.len() as u32;
    pdu[4..8].copy_from_slice(&n.to_le_bytes());
}
