//! Keep Alive as a task of a host reactor (the first that opens a channel of the
//! controller): every KATO/2 one Keep Alive on the admin queue's socket, sent and
//! awaited with the socket's readiness as a future, so no thread per controller and
//! no reactor blocked on the network.
//!
//! The admin queue stays where it is (under the session's lock, for the blocking
//! set-up and shutdown); the task takes the lock only to clone the socket and pick a
//! command id, with `try_lock`, and skips a round when someone else holds it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrox_nvme_spec::{Command, Completion, SglDescriptor};
use ferrox_reactor::task::{ready, sleep, timeout};
use zerocopy::{FromBytes, IntoBytes};

use super::bdev::Session;
use super::{check_header, HostError};
use crate::pdu::{crc32c, le32, CommonHeader, HeaderBuf, PduFlags, PduType, CH_LEN};

/// Clears the session's "keep-alive running" flag when the task ends or is dropped,
/// so the next channel opened starts a new one.
struct Running(Arc<Session>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.ka_running.store(false, Ordering::Release);
    }
}

/// The task: runs until the session stops (or the task is aborted).
pub(super) async fn run(sess: Arc<Session>) {
    let running = Running(sess);
    let sess = &running.0;
    let period = sess.ka_period();
    // The first Keep Alive goes out at once: the task starts with the first channel,
    // which may come well after the admin queue connected (and the target's KATO
    // started counting).
    loop {
        if sess.stopping() {
            return;
        }
        let res = match timeout(sess.opts.connect_timeout, once(sess)).await {
            Ok(r) => r,
            Err(_) => Err(HostError::Protocol("no Keep Alive response in time".into())),
        };
        if let Err(e) = res {
            sess.keep_alive_failed(&e);
        }
        sleep(period).await;
    }
}

/// One Keep Alive: Ok when answered with success, or when this round is skipped.
async fn once(sess: &Session) -> Result<(), HostError> {
    let Some((sock, cid, digests)) = sess.admin_for_keep_alive()? else {
        return Ok(());
    };
    let mut cmd = Command::new(0x18, cid);
    cmd.flags = 0x40;
    cmd.dptr = SglDescriptor::transport(0).to_dptr();
    let mut sqe = [0u8; 64];
    sqe.copy_from_slice(cmd.as_bytes());
    let h = HeaderBuf::capsule_cmd(&sqe, 0, digests);
    let fd = sock.as_raw_fd();
    // A socket that reports room takes a 72-byte capsule without blocking.
    ready(fd, libc::POLLOUT as u32).await?;
    (&sock).write_all(h.as_slice())?;
    let mut pdu = vec![0u8; CH_LEN];
    read_exact(&sock, &mut pdu).await?;
    let ch = CommonHeader::parse(&pdu);
    check_header(&ch, Some(digests)).map_err(HostError::Protocol)?;
    if ch.pdu_type != PduType::CAPSULE_RESP {
        return Err(HostError::Protocol(format!(
            "{:?} in answer to Keep Alive",
            ch.pdu_type
        )));
    }
    let hlen = usize::from(ch.hlen);
    if ch.plen as usize > 256 || (ch.plen as usize) < hlen {
        return Err(HostError::Protocol(format!(
            "CapsuleResp of {} bytes",
            ch.plen
        )));
    }
    pdu.resize(ch.plen as usize, 0);
    read_exact(&sock, &mut pdu[CH_LEN..]).await?;
    if ch.flags.contains(PduFlags::HDGSTF) && le32(&pdu, hlen) != crc32c(&pdu[..hlen]) {
        return Err(HostError::Protocol("header digest mismatch".into()));
    }
    let cqe = Completion::read_from_bytes(&pdu[8..24])
        .map_err(|_| HostError::Protocol("short CapsuleResp".into()))?;
    if cqe.cid != cid {
        return Err(HostError::Protocol(format!(
            "response for cid {} while waiting for Keep Alive {cid}",
            cqe.cid
        )));
    }
    if !cqe.status().is_success() {
        return Err(HostError::Status {
            what: "Keep Alive",
            status: cqe.status(),
        });
    }
    Ok(())
}

/// Fills `buf`, waiting for the socket to be readable before each read (so the
/// blocking socket's read returns what is there without blocking).
async fn read_exact(sock: &TcpStream, buf: &mut [u8]) -> Result<(), HostError> {
    let mut got = 0;
    while got < buf.len() {
        ready(sock.as_raw_fd(), libc::POLLIN as u32).await?;
        match (&*sock).read(&mut buf[got..]) {
            Ok(0) => {
                return Err(HostError::Io(std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HostError::Io(e)),
        }
    }
    Ok(())
}
