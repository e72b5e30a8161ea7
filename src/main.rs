//! `ferrox`: the daemon. Reads the TOML config (or starts the embedded default), starts
//! one pinned reactor per core, creates the block devices and the NVMe/TCP target, and
//! runs until SIGINT or SIGTERM.

mod config;
mod daemon;
mod node;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Ferrox: a user-space NVMe-over-Fabrics/TCP storage target.
///
/// With no --config, Ferrox serves its embedded default: a 1 GiB sparse file in the
/// data directory, exported as nqn.2026-11.io.ferrox:default on 127.0.0.1:4420, and
/// prints the `nvme connect` line for it.
#[derive(Debug, Parser)]
#[command(name = "ferrox", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (bdevs, subsystems, namespaces, listeners).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cores to run reactors on: a list ("0,1", "0-3") or a hex mask ("0x3").
    /// Default: every core this process may use.
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// How idle reactors wait: "adaptive" (spin while busy, then sleep) or "busy"
    /// (spin always, like SPDK).
    #[arg(long, value_name = "MODE")]
    pub poll_mode: Option<String>,
    /// How long a reactor spins with nothing to do before it sleeps, in microseconds.
    #[arg(long, value_name = "US")]
    pub idle_threshold_us: Option<u64>,
    /// Where Ferrox keeps its node identity and the default namespace's file.
    /// Default: /var/lib/ferrox as root, else ~/.local/share/ferrox.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's name (a DNS name: lowercase letters, digits, '-', '.'), kept in the
    /// data directory; giving a different one renames the node. Default: the host name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Size of the embedded default namespace (used without --config).
    ///
    /// A SIZE here and in the TOML is bytes, or a number with a unit: k, m, g, t, Ki,
    /// Mi, Gi, Ti, KiB, MiB, GiB, TiB are powers of 1024 (binary); kB, KB, MB, GB, TB
    /// are powers of 1000 (decimal), so 10GB is 10,000,000,000 bytes and 10GiB or 10G
    /// is 10,737,418,240. Case does not matter; a fraction (1.5GiB) must come to a
    /// whole number of bytes.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub default_size: String,
    /// Address of the embedded default listener (used without --config).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:4420")]
    pub listen: String,
    /// The control API's Unix socket (gRPC, mode 0600; `ferroxctl` talks to it).
    /// Default: <data-dir>/ferrox.sock.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Do not start the control API.
    #[arg(long, conflicts_with = "control_socket")]
    pub no_control: bool,
    /// Keep the control plane's state in the etcd cluster at these endpoints
    /// (http://HOST:PORT, comma-separated) instead of <data-dir>/control.redb: this
    /// node joins a cluster. etcd must answer at start, else ferrox exits with code 2
    /// (it never falls back to the local store). Overrides `[cluster] endpoints` in
    /// the TOML.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "no_control")]
    pub cluster: Option<String>,
    /// This node's labels in the cluster, KEY=VALUE[,KEY=VALUE...] (zone=z1,rack=r1):
    /// placement spreads replicas over their values. Keys are lowercase letters,
    /// digits, '.', '_', '-'; `node` is reserved. Needs --cluster.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub labels: Option<String>,
    /// Serve Prometheus metrics over HTTP on ADDR:PORT at /metrics (off by default;
    /// served by the control API's runtime, so not with --no-control).
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_control")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    // Control API over TCP (opt-in): mutual TLS only.
    /// Also serve the control API on TCP ADDR:PORT, with TLS that requires client
    /// certificates (needs --tls-cert, --tls-key and --tls-client-ca). Off by default.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        conflicts_with = "no_control",
        requires_all = ["tls_cert", "tls_key", "tls_client_ca"]
    )]
    pub control_tcp: Option<std::net::SocketAddr>,
    /// The TCP listener's certificate chain (PEM, leaf first), for --control-tcp.
    #[arg(long, value_name = "PEM", requires = "control_tcp")]
    pub tls_cert: Option<PathBuf>,
    /// The TCP listener's private key (PEM), for --control-tcp.
    #[arg(long, value_name = "PEM", requires = "control_tcp")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that must have signed every client certificate, for --control-tcp.
    #[arg(long, value_name = "PEM", requires = "control_tcp")]
    pub tls_client_ca: Option<PathBuf>,
    // End of control API over TCP.
    /// The most NVMe/TCP connections the target holds at once; more are closed as
    /// they are accepted. Default 4096, and never more than the open-file limit
    /// (raised to its hard limit at start) leaves room for.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// The most NVMe/TCP connections from one peer address (a host opens one per
    /// queue: an admin queue and up to one I/O queue per CPU, per controller).
    #[arg(long, value_name = "N", default_value_t = ferrox_nvmeof::target::limits::DEFAULT_MAX_CONNECTIONS_PER_HOST)]
    pub max_connections_per_host: usize,
    /// The most discovery controllers one peer address may hold at once (every host
    /// may reach the discovery subsystem); more Connects get Controller Busy.
    #[arg(long, value_name = "N", default_value_t = ferrox_nvmeof::target::limits::DEFAULT_MAX_DISCOVERY_PER_HOST)]
    pub max_discovery_per_host: usize,
    /// Seconds of keep-alive given to a discovery controller connected with KATO 0
    /// (the kernel's one-shot `nvme discover`); idle that long, it is torn down.
    #[arg(long, value_name = "SECS", default_value_t = ferrox_nvmeof::target::DEFAULT_DISCOVERY_KATO.as_secs())]
    pub discovery_kato: u64,
    /// Seconds an R2T may wait for all of its data; then the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = ferrox_nvmeof::target::DEFAULT_R2T_TIMEOUT.as_secs())]
    pub r2t_timeout: u64,
    /// Percent of the buffer pool's largest class that the R2Ts of one controller
    /// may hold (buffers waiting for a host's data).
    #[arg(long, value_name = "PCT", default_value_t = ferrox_nvmeof::target::DEFAULT_R2T_CTRL_PCT)]
    pub r2t_share: usize,
    /// Percent of the same that all R2Ts together may hold; the rest is kept for
    /// reads, in-capsule writes and Connects.
    #[arg(long, value_name = "PCT", default_value_t = ferrox_nvmeof::target::DEFAULT_R2T_TOTAL_PCT)]
    pub r2t_share_total: usize,
    /// Bytes a host whose responses wait (its socket full) must read of them in each
    /// stall window (30 s); a window with less closes the connection.
    #[arg(long, value_name = "BYTES", default_value_t = ferrox_nvmeof::target::DEFAULT_STALL_MIN_BYTES)]
    pub stall_min_bytes: u64,
    /// Log filter: error, warn, info, debug, trace, or per-module directives.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("ferrox: --log {:?}: {e}; using \"info\"", cli.log);
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any thread starts, so every thread inherits the blocked mask.
    signals::block();
    match daemon::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(daemon::Failure::Config(e)) => {
            eprintln!("ferrox: configuration error: {e}");
            ExitCode::from(2)
        }
        Err(daemon::Failure::Runtime(e)) => {
            eprintln!("ferrox: {e}");
            ExitCode::from(1)
        }
    }
}
