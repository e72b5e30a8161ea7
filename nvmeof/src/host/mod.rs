//! The NVMe/TCP host (initiator): a remote namespace as a [`BlockDevice`].
//!
//! [`NvmfBdev::connect`] sets up a controller with a blocking admin queue
//! ([`sync::SyncQueue`]): ICReq, Connect, CC.EN, Identify, Number of Queues. Each reactor
//! that opens a channel gets its own I/O queue pair ([`qpair`]), polled by that reactor
//! with no locks or allocation on the I/O path. Keep Alive goes on the admin queue
//! every KATO/2 from a task of the first reactor that opens a channel (`keepalive.rs`;
//! none before the first channel): no thread per controller. A lost I/O queue
//! reconnects as a task of its reactor (`qpair/reconnect.rs`): the same queue code
//! ([`sync::SyncQueue`]) in its task mode — a non-blocking TCP connect, ICReq, Connect,
//! and the controller re-created when the target lost it, each wait for the socket a
//! `task::ready` bounded by the connect timeout: no thread per attempt either.
//!
//! Failures are errors, never hangs: each command has a deadline; an expired command or
//! a lost connection fails every command in flight on that queue and every command
//! queued behind them (more submitted than the queue has entries), and the next
//! submission reconnects (re-creating the controller when the target restarted). A
//! queued command that waits longer than the I/O timeout for an entry fails alone.

pub mod bdev;
mod keepalive;
mod qpair;
pub mod sync;

use std::time::Duration;

pub use bdev::NvmfBdev;
use ferrox_nvme_spec::Status;

use crate::pdu::{CommonHeader, Digests, PduFlags, PduType, DIGEST_LEN, MAX_HLEN};

/// How the host connects.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub header_digest: bool,
    pub data_digest: bool,
    /// Entries per I/O queue (at most 128).
    pub queue_depth: u16,
    /// Keep-alive timeout asked for at Connect; 0 disables keep-alive.
    pub kato_ms: u32,
    /// A command without a response after this long fails, and its queue reconnects;
    /// a command still waiting for a queue entry after this long fails alone.
    pub io_timeout: Duration,
    /// TCP connect and handshake timeout.
    pub connect_timeout: Duration,
    /// Ask the controller to disable SQ flow control (Connect CATTR bit 2): it then
    /// ends a successful read with a C2HData PDU carrying SUCCESS, one PDU fewer per
    /// read. A controller that refuses the Connect asking for it gets a second one
    /// without.
    pub disable_sq_flow_control: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:6f9f1a5e-7a10-4d5c-9a1e-0000f0e20000"
                .to_string(),
            hostid: [
                0x6f, 0x9f, 0x1a, 0x5e, 0x7a, 0x10, 0x4d, 0x5c, 0x9a, 0x1e, 0, 0, 0xf0, 0xe2, 0, 0,
            ],
            header_digest: false,
            data_digest: false,
            queue_depth: 128,
            kato_ms: 10_000,
            io_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            disable_sq_flow_control: false,
        }
    }
}

/// Errors of the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("bad target address {url:?}: {why} (expected nvme+tcp://ADDR:PORT/NQN[?nsid=N])")]
    Url { url: String, why: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the target failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("NVMe/TCP protocol error from the target: {0}")]
    Protocol(String),
    #[error("{what} failed with NVMe status {status}")]
    Status { what: &'static str, status: Status },
    #[error("namespace {0} does not exist on the target")]
    NoNamespace(u32),
}

/// A parsed `nvme+tcp://ADDR:PORT/NQN[?nsid=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    pub addr: String,
    pub nqn: String,
    pub nsid: u32,
}

impl TargetUrl {
    pub fn parse(url: &str) -> Result<Self, HostError> {
        let bad = |why: &str| HostError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("nvme+tcp://")
            .ok_or_else(|| bad("it must start with nvme+tcp://"))?;
        let (hostport, path) = rest.split_once('/').ok_or_else(|| bad("no /NQN"))?;
        let (nqn, query) = match path.split_once('?') {
            Some((n, q)) => (n, Some(q)),
            None => (path, None),
        };
        let mut nsid = 1;
        if let Some(q) = query {
            for kv in q.split('&') {
                match kv.split_once('=') {
                    Some(("nsid", v)) => {
                        nsid = v
                            .parse()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| bad("nsid must be a positive number"))?;
                    }
                    _ => return Err(bad("the only query parameter is nsid=N")),
                }
            }
        }
        ferrox_nvme_spec::validate_nqn(nqn).map_err(|e| bad(&format!("NQN: {e}")))?;
        if hostport.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "ADDR:PORT must be an IP address and a port (IPv6 in brackets)",
            ));
        }
        Ok(Self {
            addr: hostport.to_string(),
            nqn: nqn.to_string(),
            nsid,
        })
    }
}

/// Checks the common header of a PDU from the target before any other field of it is
/// trusted (the host-side twin of [`crate::pdu::validate_h2c`]): a type a controller
/// may send, ICResp first and only once, the type's HLEN, HDGSTF and DDGSTF equal to
/// what was negotiated (`digests` is `None` until the ICResp; IC and TermReq PDUs never
/// carry digests, and only C2HData carries data), and a PLEN that holds the header and
/// nothing a PDU without data could carry.
pub(crate) fn check_header(ch: &CommonHeader, digests: Option<Digests>) -> Result<(), String> {
    let t = ch.pdu_type;
    let bad = |why: &str| Err(format!("bad {t:?} PDU from the target: {why} ({ch:?})"));
    if !matches!(
        t,
        PduType::IC_RESP
            | PduType::C2H_TERM_REQ
            | PduType::CAPSULE_RESP
            | PduType::C2H_DATA
            | PduType::R2T
    ) {
        return bad("not a PDU type a controller sends");
    }
    match (t, digests) {
        (PduType::IC_RESP, Some(_)) => return bad("a second ICResp"),
        (PduType::IC_RESP | PduType::C2H_TERM_REQ, _) | (_, Some(_)) => {}
        (_, None) => return bad("before the ICResp"),
    }
    let hlen = usize::from(t.hlen().expect("a known type"));
    if usize::from(ch.hlen) != hlen {
        return bad("HLEN does not match the PDU type");
    }
    let dg = if t.digestible() {
        digests.unwrap_or_default()
    } else {
        Digests::default()
    };
    if ch.flags.contains(PduFlags::HDGSTF) != dg.header {
        return bad("HDGSTF differs from the negotiated header digest");
    }
    if ch.flags.contains(PduFlags::DDGSTF) != (dg.data && t == PduType::C2H_DATA) {
        return bad("DDGSTF differs from the negotiated data digest");
    }
    let header = hlen + if dg.header { DIGEST_LEN } else { 0 };
    let plen = ch.plen as usize;
    let fits = match t {
        PduType::C2H_DATA => plen >= header,
        // The data of a TermReq is the header it objects to.
        PduType::C2H_TERM_REQ => (header..=header + MAX_HLEN).contains(&plen),
        _ => plen == header,
    };
    if !fits {
        return bad("PLEN does not fit the PDU type");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
