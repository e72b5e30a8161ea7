//! The NVMe/TCP host (initiator): a remote namespace as a [`BlockDevice`].
//!
//! [`NvmfBdev::connect`] sets up a controller with a blocking admin queue
//! ([`sync::SyncQueue`]): ICReq, Connect, CC.EN, Identify, Number of Queues. Each reactor
//! that opens a channel gets its own I/O queue pair ([`qpair`]), polled by that reactor
//! with no locks or allocation on the I/O path. A small keep-alive thread (not tokio, not
//! a reactor) sends Keep Alive on the admin queue every KATO/2.
//!
//! Failures are errors, never hangs: each command has a deadline; an expired command or
//! a lost connection fails every command in flight on that queue and every command
//! queued behind them (more submitted than the queue has entries), and the next
//! submission reconnects (re-creating the controller when the target restarted). A
//! queued command that waits longer than the I/O timeout for an entry fails alone.

pub mod bdev;
mod qpair;
pub mod sync;

use std::time::Duration;

pub use bdev::NvmfBdev;
use ferrox_nvme::spec::Status;

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
        ferrox_nvme::spec::validate_nqn(nqn).map_err(|e| bad(&format!("NQN: {e}")))?;
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

#[cfg(test)]
mod tests;
