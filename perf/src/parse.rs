//! Parsers for everything a user types: sizes, target specs, workloads, ranges.
//!
//! Each returns a [`UsageError`]-flavoured [`crate::Error`] so the binary can answer
//! with one line and exit code 2.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::Error;

/// Parses a byte count by the one size rule ([`ferrox_bdev::size`]): `4096`, `4k`,
/// `4K`, `4KiB`, `128k`, `1m`, `1.5GiB`, `2t` (binary, as in fio). The decimal units
/// `kB`/`MB`/`GB`/`TB`, which ferrox-perf read as binary before, are refused with
/// both readings and the spellings to use.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    ferrox_bdev::size::parse_legacy_binary(s, "ferrox-perf")
        .map_err(|e| Error::usage(format!("size {e}")))
}

/// Formats bytes the way [`parse_size`] reads them back (largest exact unit).
pub fn format_size(b: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    format!("{b}B")
}

/// Where the I/O goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `nvme+tcp://ADDR:PORT/NQN[?nsid=N]`.
    Nvmf(NvmfUrl),
    /// A file or block device, through the uring bdev.
    Path(PathBuf),
    /// `malloc:SIZE`: an in-process RAM disk of SIZE bytes.
    Malloc { size: u64 },
    /// `pcie://DOMAIN:BUS:DEV.FN[?nsid=N]`: a local NVMe controller bound to vfio-pci,
    /// driven through Ferrox's user-space driver (namespace N, else the first).
    Pcie { bdf: String, nsid: Option<u32> },
}

/// A parsed `nvme+tcp://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmfUrl {
    pub addr: SocketAddr,
    pub nqn: String,
    pub nsid: Option<u32>,
    /// The URL as given (what the host library is handed).
    pub url: String,
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nvmf(u) => f.write_str(&u.url),
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Malloc { size } => write!(f, "malloc:{}", format_size(*size)),
            Self::Pcie { bdf, nsid: None } => write!(f, "pcie://{bdf}"),
            Self::Pcie { bdf, nsid: Some(n) } => write!(f, "pcie://{bdf}?nsid={n}"),
        }
    }
}

/// Parses a target: a URL, `malloc:SIZE`, or a path (which must exist).
pub fn parse_target(s: &str) -> Result<TargetSpec, Error> {
    if let Some(size) = s.strip_prefix("malloc:") {
        let size = parse_size(size)?;
        if size == 0 {
            return Err(Error::usage(format!(
                "target {s:?}: the size must not be 0"
            )));
        }
        return Ok(TargetSpec::Malloc { size });
    }
    if s.starts_with("pcie://") {
        return parse_pcie_url(s);
    }
    if s.contains("://") {
        return parse_nvmf_url(s).map(TargetSpec::Nvmf);
    }
    let p = PathBuf::from(s);
    if !p.exists() {
        return Err(Error::usage(format!(
            "target {s:?}: no such file or device (targets are nvme+tcp://ADDR:PORT/NQN, pcie://BDF, malloc:SIZE or a path)"
        )));
    }
    Ok(TargetSpec::Path(p))
}

/// Parses `pcie://DOMAIN:BUS:DEV.FN[?nsid=N]` (the domain may be left out).
pub fn parse_pcie_url(s: &str) -> Result<TargetSpec, Error> {
    let bad = |why: &str| {
        Error::usage(format!(
            "URL {s:?}: {why} (expected pcie://DOMAIN:BUS:DEV.FN[?nsid=N], e.g. pcie://0000:00:04.0)"
        ))
    };
    let rest = s
        .strip_prefix("pcie://")
        .ok_or_else(|| bad("no pcie:// scheme"))?;
    let (addr, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let bdf = ferrox_nvme::bdev::parse_bdf(addr).map_err(|e| bad(&e))?;
    let mut nsid = None;
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("nsid", v)) => {
                nsid = Some(
                    v.parse()
                        .ok()
                        .filter(|&n: &u32| n != 0 && n != u32::MAX)
                        .ok_or_else(|| bad(&format!("nsid {v:?} is not a namespace id")))?,
                );
            }
            _ => return Err(bad(&format!("unknown query parameter {kv:?}"))),
        }
    }
    Ok(TargetSpec::Pcie { bdf, nsid })
}

/// Parses `nvme+tcp://ADDR:PORT/NQN[?nsid=N]`; ADDR is an IPv4 address, `[IPv6]` or a
/// host name that resolves.
pub fn parse_nvmf_url(s: &str) -> Result<NvmfUrl, Error> {
    let bad = |why: &str| {
        Error::usage(format!(
            "URL {s:?}: {why} (expected nvme+tcp://ADDR:PORT/NQN[?nsid=N])"
        ))
    };
    let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme != "nvme+tcp" {
        return Err(bad(&format!("unsupported scheme {scheme:?}")));
    }
    let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no NQN"))?;
    let (nqn, query) = match path.split_once('?') {
        Some((n, q)) => (n, Some(q)),
        None => (path, None),
    };
    if nqn.is_empty() {
        return Err(bad("no NQN"));
    }
    if !nqn.starts_with("nqn.") || nqn.len() > 223 {
        return Err(bad(&format!(
            "{nqn:?} is not an NQN (nqn.YYYY-MM.domain:name)"
        )));
    }
    let mut nsid = None;
    if let Some(q) = query {
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("nsid", v)) => {
                    let n: u32 = v
                        .parse()
                        .ok()
                        .filter(|&n| n != 0 && n != u32::MAX)
                        .ok_or_else(|| bad(&format!("nsid {v:?} is not a namespace id")))?;
                    nsid = Some(n);
                }
                _ => return Err(bad(&format!("unknown query parameter {kv:?}"))),
            }
        }
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        (h, p.strip_prefix(':').ok_or_else(|| bad("no port"))?)
    } else {
        authority.rsplit_once(':').ok_or_else(|| bad("no port"))?
    };
    if host.is_empty() {
        return Err(bad("no address"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad(&format!("port {port:?} is not a port number")))?;
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| bad(&format!("address {host:?} does not resolve")))?;
    Ok(NvmfUrl {
        addr,
        nqn: nqn.to_string(),
        nsid,
        url: s.to_string(),
    })
}

/// The access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Read,
    Write,
    RandRead,
    RandWrite,
    RandRw,
}

impl Rw {
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "read" => Self::Read,
            "write" => Self::Write,
            "randread" => Self::RandRead,
            "randwrite" => Self::RandWrite,
            "randrw" => Self::RandRw,
            _ => {
                return Err(Error::usage(format!(
                    "--rw {s:?}: expected read, write, randread, randwrite or randrw"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::RandRead => "randread",
            Self::RandWrite => "randwrite",
            Self::RandRw => "randrw",
        }
    }

    pub fn is_random(self) -> bool {
        matches!(self, Self::RandRead | Self::RandWrite | Self::RandRw)
    }

    /// Percentage of reads, given `--mix` (used by randrw only).
    pub fn read_percent(self, mix: u8) -> u8 {
        match self {
            Self::Read | Self::RandRead => 100,
            Self::Write | Self::RandWrite => 0,
            Self::RandRw => mix,
        }
    }
}

/// Parses `--mix`: the read percentage of randrw, `70` or `70%`.
pub fn parse_mix(s: &str) -> Result<u8, Error> {
    s.trim()
        .trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|&m| m <= 100)
        .ok_or_else(|| Error::usage(format!("--mix {s:?}: expected a read percentage 0..=100")))
}

/// Which offsets random workloads pick.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dist {
    Uniform,
    /// Zipf with exponent `theta` (> 0): slot k is drawn with weight 1/k^theta.
    Zipf {
        theta: f64,
    },
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Zipf { theta } => write!(f, "zipf:{theta}"),
        }
    }
}

pub fn parse_dist(s: &str) -> Result<Dist, Error> {
    if s == "uniform" {
        return Ok(Dist::Uniform);
    }
    if let Some(t) = s.strip_prefix("zipf:") {
        let theta: f64 = t
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t > 0.0 && *t <= 100.0)
            .ok_or_else(|| {
                Error::usage(format!("--dist {s:?}: theta must be a number in (0, 100]"))
            })?;
        return Ok(Dist::Zipf { theta });
    }
    Err(Error::usage(format!(
        "--dist {s:?}: expected uniform or zipf:THETA (e.g. zipf:1.2)"
    )))
}

/// `--range`: bytes, or a percentage of the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeSpec {
    Bytes(u64),
    Percent(f64),
}

impl RangeSpec {
    /// Bytes of a device of `dev_bytes`.
    pub fn resolve(self, dev_bytes: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            Self::Percent(p) => (dev_bytes as f64 * p / 100.0) as u64,
        }
    }
}

pub fn parse_range(s: &str) -> Result<RangeSpec, Error> {
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p
            .parse()
            .ok()
            .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
            .ok_or_else(|| {
                Error::usage(format!("--range {s:?}: expected a percentage in (0, 100]"))
            })?;
        return Ok(RangeSpec::Percent(p));
    }
    let b = parse_size(s)?;
    if b == 0 {
        return Err(Error::usage("--range must not be 0".to_string()));
    }
    Ok(RangeSpec::Bytes(b))
}

/// Parses a duration in seconds: `5`, `0.5`, `10s`, `2m`.
pub fn parse_seconds(s: &str) -> Result<f64, Error> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1.0)
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * mult)
        .ok_or_else(|| Error::usage(format!("duration {s:?}: expected seconds, e.g. 5 or 0.5")))
}

#[cfg(test)]
mod tests;
