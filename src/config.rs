//! The daemon's TOML configuration, its defaults, and the checks that turn a bad file
//! into a message naming the key and the value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub reactor: ReactorSection,
    #[serde(default)]
    pub pool: PoolSection,
    #[serde(default)]
    pub bdev: Vec<BdevSection>,
    #[serde(default)]
    pub subsystem: Vec<SubsystemSection>,
    /// Listeners for every subsystem (a subsystem with listeners of its own is
    /// reachable through those only).
    #[serde(default)]
    pub listener: Vec<ListenerSection>,
    /// The cluster store (`--cluster` overrides it).
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: the etcd cluster that holds the control plane's state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Client URLs of etcd members: `["http://10.0.0.1:2379", ...]`.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorSection {
    /// `[0, 1]`, or a string: `"0-1"`, `"0x3"`.
    pub cores: Option<Cores>,
    pub poll_mode: Option<String>,
    pub idle_threshold_us: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Cores {
    List(Vec<usize>),
    Spec(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    #[serde(default = "default_small")]
    pub buffers_4k: usize,
    #[serde(default = "default_medium")]
    pub buffers_8k: usize,
    #[serde(default = "default_large")]
    pub buffers_128k: usize,
    #[serde(default = "yes")]
    pub hugepages: bool,
}

impl Default for PoolSection {
    fn default() -> Self {
        Self {
            buffers_4k: default_small(),
            buffers_8k: default_medium(),
            buffers_128k: default_large(),
            hugepages: true,
        }
    }
}

fn default_small() -> usize {
    4096
}
fn default_medium() -> usize {
    1024
}
fn default_large() -> usize {
    512
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevSection {
    pub name: String,
    /// `malloc`, `uring` or `nvme` (checked by [`ferrox_bdev::BdevSpec::from_fields`]).
    pub kind: String,
    /// Bytes, or a string with a unit: "512MiB", "1GiB" (binary), "1GB" (decimal).
    pub size: Option<Size>,
    #[serde(default = "default_bs")]
    pub block_size: u32,
    /// For `uring`: the file or block device.
    pub path: Option<PathBuf>,
    /// For `nvme`: the PCI address of a controller bound to vfio-pci ("0000:00:04.0").
    /// Each active namespace becomes a bdev `<name>n<nsid>`.
    pub pci: Option<String>,
    /// For `uring`: requests in flight; for `nvme`: entries per I/O queue (one queue
    /// pair per reactor; capped by the controller's CAP.MQES).
    #[serde(default = "default_qd")]
    pub queue_depth: usize,
}

fn default_bs() -> u32 {
    512
}
fn default_qd() -> usize {
    128
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsystemSection {
    pub nqn: String,
    #[serde(default = "default_serial")]
    pub serial: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub allow_any_host: bool,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub namespace: Vec<NamespaceSection>,
    #[serde(default)]
    pub listener: Vec<ListenerSection>,
}

fn default_serial() -> String {
    "FERROX00000000000001".to_string()
}
fn default_model() -> String {
    "Ferrox".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSection {
    #[serde(default)]
    pub nsid: u32,
    pub bdev: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    4420
}

/// A configuration error: what, where, and the bad value. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// A size: bytes, or text by the one size rule ([`ferrox_bdev::size`]: "512MiB",
/// "10G" binary, "10GB" decimal). The daemon always read "GB" as decimal, so every
/// spelling is accepted.
pub fn parse_size(key: &str, s: &Size) -> Result<u64, ConfigError> {
    match s {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => {
            ferrox_bdev::size::parse(t).map_err(|e| ConfigError(format!("{key} = {e}")))
        }
    }
}

/// Resolves "127.0.0.1" + port, "[::1]" + port, or a host:port pair.
pub fn listener_addr(key: &str, l: &ListenerSection) -> Result<SocketAddr, ConfigError> {
    let host = l.address.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        ConfigError(format!(
            "{key}.address = {:?}: expected an IPv4 or IPv6 address",
            l.address
        ))
    })?;
    Ok(SocketAddr::new(ip, l.port))
}
