//! `ferroxctl`: the command-line client of the Ferrox control API (a Unix socket, or
//! the daemon's opt-in TCP listener with mutual TLS).

mod output;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use tonic::transport::Channel;

/// Control a running Ferrox daemon through its control socket.
#[derive(Debug, Parser)]
#[command(
    name = "ferroxctl",
    version,
    about,
    after_help = "Example:\n  ferroxctl pool create pool0 --path /var/lib/ferrox/pool0.img --size 20GiB\n  ferroxctl volume create vol1 --size 10GiB --thin\n  ferroxctl volume publish vol1 --any-host\n  ferroxctl --addr https://node1:9443 --tls-ca ca.pem --tls-cert me.pem --tls-key me.key node info"
)]
struct Cli {
    /// The daemon's control socket. Default: $FERROX_SOCKET, else <data-dir>/ferrox.sock
    /// (data dir: $FERROX_DATA_DIR, /var/lib/ferrox as root, ~/.local/share/ferrox).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// The daemon's TCP listener (ferrox --control-tcp), https://HOST:PORT, instead of
    /// the socket. Needs --tls-ca, --tls-cert and --tls-key.
    #[arg(
        long,
        value_name = "URL",
        global = true,
        conflicts_with = "socket",
        requires_all = ["tls_ca", "tls_cert", "tls_key"]
    )]
    addr: Option<String>,
    /// The CA (PEM) that signed the daemon's certificate (with --addr).
    #[arg(long, value_name = "PEM", global = true, requires = "addr")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the daemon's client CA (with --addr).
    #[arg(long, value_name = "PEM", global = true, requires = "addr")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM) (with --addr).
    #[arg(long, value_name = "PEM", global = true, requires = "addr")]
    tls_key: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Nodes: this one (info), the cluster's (list, get), cordon and uncordon.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Pools of logical volumes.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Volumes: create, resize, delete, publish.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Snapshots and clones.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// NVMe-oF subsystems the target serves.
    #[command(subcommand)]
    Subsystem(SubsystemCmd),
    /// Print a shell completion script (needs no daemon).
    #[command(
        after_help = "Example:\n  ferroxctl completions bash > /etc/bash_completion.d/ferroxctl\n  ferroxctl completions zsh > \"${fpath[1]}/_ferroxctl\"\n  ferroxctl completions fish > ~/.config/fish/completions/ferroxctl.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Version, features, reactors, bdevs, uptime and node id.
    #[command(after_help = "Example:\n  ferroxctl node info -o json")]
    Info,
    /// Every node of the cluster: name, labels, up or down, cordoned, the leader,
    /// listeners, pools and free space (without a cluster, this node).
    #[command(after_help = "Example:\n  ferroxctl node list")]
    List,
    /// One node of the cluster (by name or id): as in node list, plus its orphan
    /// lvols (lvols in its pools that no record accounts for: reported, never
    /// deleted).
    #[command(after_help = "Example:\n  ferroxctl node get b -o json")]
    Get {
        /// The node's name or id.
        node: String,
    },
    /// Stop placing new replicas on a node (what it holds stays). Kept in the
    /// cluster's store: it survives the node's restart. A cluster only.
    #[command(after_help = "Example:\n  ferroxctl node cordon b")]
    Cordon {
        /// The node's name or id.
        node: String,
    },
    /// Let placement use a cordoned node again.
    #[command(after_help = "Example:\n  ferroxctl node uncordon b")]
    Uncordon {
        /// The node's name or id.
        node: String,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct BaseArgs {
    /// A bdev the daemon already has (from its configuration).
    #[arg(long, value_name = "BDEV")]
    bdev: Option<String>,
    /// A file or block device (a file is created, sparse, with --size).
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PoolCmd {
    /// Format a pool on a bdev or a file.
    #[command(
        after_help = "Examples:\n  ferroxctl pool create pool0 --path /var/lib/ferrox/pool0.img --size 20GiB\n  ferroxctl pool create pool1 --bdev disk0 --cluster-size 4MiB"
    )]
    Create {
        name: String,
        #[command(flatten)]
        base: BaseArgs,
        /// Size of the file to create (with --path).
        #[arg(long, value_name = "SIZE", value_parser = parse_size,
              long_help = size_help!("Size of the file to create (with --path)."))]
        size: Option<u64>,
        /// Cluster size (default 1MiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size,
              long_help = size_help!("Cluster size (default 1MiB)."))]
        cluster_size: Option<u64>,
        /// How many times the pool's capacity its volumes may promise in all (thin
        /// volumes, clones, growth): default 10, at most 1000. A create, clone or
        /// resize past it is refused, naming it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_overcommit: Option<u32>,
    },
    /// Open a pool that exists on a bdev or file (its name comes from its label).
    #[command(after_help = "Example:\n  ferroxctl pool import --path /var/lib/ferrox/pool0.img")]
    Import {
        #[command(flatten)]
        base: BaseArgs,
    },
    /// List pools with capacity and allocation.
    #[command(after_help = "Example:\n  ferroxctl pool list")]
    List,
    /// Show one pool.
    #[command(after_help = "Example:\n  ferroxctl pool get pool0")]
    Get { name: String },
    /// Destroy an empty pool (a file it was created on is removed).
    #[command(after_help = "Example:\n  ferroxctl pool destroy pool0")]
    Destroy { name: String },
    /// Forget a pool and keep its data (import brings it back).
    #[command(after_help = "Example:\n  ferroxctl pool export pool0")]
    Export { name: String },
}

#[derive(Debug, Subcommand)]
enum VolumeCmd {
    /// Create a volume (thick unless --thin).
    #[command(
        after_help = "Example:\n  ferroxctl volume create vol1 --size 10GiB --thin --pool pool0 --label app=db"
    )]
    Create {
        name: String,
        /// The volume's size.
        #[arg(long, value_name = "SIZE", value_parser = parse_size,
              long_help = size_help!("The volume's size."))]
        size: u64,
        #[arg(long)]
        thin: bool,
        /// Default: the only pool.
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Copies, each an lvol on a distinct node (1 to 5; more than 1 needs a
        /// cluster). Not mirrored yet.
        #[arg(long, value_name = "N", default_value_t = 1)]
        replicas: u32,
        /// The node label the replicas are spread over (zone, rack), or node.
        #[arg(long, value_name = "KEY")]
        spread: Option<String>,
    },
    /// Grow or shrink a volume. A published volume grows online (its hosts are told
    /// and see the new size); it cannot shrink while published.
    #[command(after_help = "Example:\n  ferroxctl volume resize vol1 --size 20GiB")]
    Resize {
        name: String,
        /// The new size.
        #[arg(long, value_name = "SIZE", value_parser = parse_size,
              long_help = size_help!("The new size."))]
        size: u64,
        /// Allow shrinking below allocated data.
        #[arg(long)]
        force: bool,
    },
    /// Delete a volume (deleting one that does not exist succeeds).
    #[command(after_help = "Example:\n  ferroxctl volume delete vol1")]
    Delete { name: String },
    /// List volumes.
    #[command(after_help = "Example:\n  ferroxctl volume list --pool pool0")]
    List {
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
    },
    /// Show one volume.
    #[command(after_help = "Example:\n  ferroxctl volume get vol1")]
    Get { name: String },
    /// Export a volume over NVMe/TCP and print the `nvme connect` line.
    #[command(
        after_help = "Examples:\n  ferroxctl volume publish vol1 --any-host\n  ferroxctl volume publish vol1 --any-host --address 127.0.0.1 --port 4420\n  ferroxctl volume publish vol1 --host nqn.2014-08.org.nvmexpress:uuid:5c6b7a0e-8f3c-4c2e-9a51-3c1f0a0d2b11"
    )]
    Publish {
        name: String,
        /// Subsystem NQN (default: nqn.2026-11.io.ferrox:volume:<name>).
        #[arg(long, value_name = "NQN")]
        nqn: Option<String>,
        /// A host NQN allowed to connect (repeatable).
        #[arg(long = "host", value_name = "NQN")]
        hosts: Vec<String>,
        /// Let any host connect.
        #[arg(long, conflicts_with = "hosts")]
        any_host: bool,
        /// Reachable only through listeners on this IP address (with --port and no
        /// such listener running, one is opened).
        #[arg(long, value_name = "IP")]
        address: Option<String>,
        /// Reachable only through listeners on this port.
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
    },
    /// I/O of a published volume: totals, rates and latency over a sampling window.
    #[command(
        after_help = "Examples:\n  ferroxctl volume stats vol1\n  ferroxctl volume stats vol1 --window 5s -o json"
    )]
    Stats {
        name: String,
        /// Sampling window: milliseconds ("500ms") or seconds ("2s"), at most 10s.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_window)]
        window: u32,
    },
    /// Stop exporting a volume.
    #[command(after_help = "Example:\n  ferroxctl volume unpublish vol1")]
    Unpublish { name: String },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Snapshot a volume.
    #[command(after_help = "Example:\n  ferroxctl snapshot create vol1 vol1-snap1")]
    Create {
        volume: String,
        name: String,
        /// Record the snapshot as part of a group.
        #[arg(long, value_name = "ID")]
        group: Option<String>,
    },
    /// Delete a snapshot without clones.
    #[command(after_help = "Example:\n  ferroxctl snapshot delete vol1-snap1")]
    Delete { name: String },
    /// Make a writable volume from a snapshot.
    #[command(after_help = "Example:\n  ferroxctl snapshot clone vol1-snap1 vol2")]
    Clone {
        snapshot: String,
        name: String,
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List snapshots.
    #[command(after_help = "Example:\n  ferroxctl snapshot list --volume vol1")]
    List {
        #[arg(long, value_name = "VOLUME")]
        volume: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SubsystemCmd {
    /// Subsystems with namespaces, allowed hosts and connected controllers.
    #[command(after_help = "Example:\n  ferroxctl subsystem list")]
    List,
}

/// A SIZE argument's `--help`: what it is, then the size rule.
macro_rules! size_help {
    ($what:literal) => {
        concat!(
            $what,
            "\n\nSIZE is bytes, or a number with a binary unit: k, m, g, t, KiB, MiB, GiB, TiB \
             (powers of 1024, any case; 1.5GiB when that is a whole number of bytes). \
             Decimal units (kB, MB, GB, TB: powers of 1000) are refused, because ferroxctl \
             read them as binary before: write 10GiB or 10G, or the bytes."
        )
    };
}
use size_help;

/// Sizes by the one rule ([`ferrox_bdev::size`]); the decimal units ferroxctl read as
/// binary before are refused with both readings.
fn parse_size(s: &str) -> Result<u64, String> {
    ferrox_bdev::size::parse_legacy_binary(s, "ferroxctl").map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("FERROX_SOCKET") {
        return s.into();
    }
    let dir = if let Some(d) = std::env::var_os("FERROX_DATA_DIR") {
        PathBuf::from(d)
    } else if std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    }) {
        PathBuf::from("/var/lib/ferrox")
    } else {
        std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".local/share/ferrox")
    };
    dir.join("ferrox.sock")
}

fn base(b: BaseArgs, size: Option<u64>) -> PoolBase {
    PoolBase {
        base: match (b.bdev, b.path) {
            (Some(n), _) => Some(pool_base::Base::Bdev(n)),
            (None, Some(p)) => Some(pool_base::Base::Path(p.display().to_string())),
            (None, None) => None,
        },
        size_bytes: size.unwrap_or(0),
    }
}

async fn run(cli: Cli, ch: Channel) -> Result<(), tonic::Status> {
    let out = output::Out(cli.output == Format::Json);
    match cli.cmd {
        Cmd::Node(NodeCmd::Info) => {
            let r = NodeServiceClient::new(ch)
                .get_info(GetNodeInfoRequest {})
                .await?;
            out.node(&r.into_inner());
        }
        Cmd::Node(NodeCmd::List) => {
            let r = NodeServiceClient::new(ch).list(ListNodesRequest {}).await?;
            out.nodes(&r.into_inner());
        }
        Cmd::Node(NodeCmd::Get { node }) => {
            let r = NodeServiceClient::new(ch)
                .get(GetNodeRequest { name: node })
                .await?;
            out.cluster_node(&r.into_inner());
        }
        Cmd::Node(NodeCmd::Cordon { node }) => {
            let r = NodeServiceClient::new(ch)
                .cordon(CordonNodeRequest { name: node })
                .await?;
            out.cluster_node(&r.into_inner());
        }
        Cmd::Node(NodeCmd::Uncordon { node }) => {
            let r = NodeServiceClient::new(ch)
                .uncordon(CordonNodeRequest { name: node })
                .await?;
            out.cluster_node(&r.into_inner());
        }
        Cmd::Pool(c) => {
            let mut p = PoolServiceClient::new(ch);
            match c {
                PoolCmd::Create {
                    name,
                    base: b,
                    size,
                    cluster_size,
                    max_overcommit,
                } => {
                    let r = p
                        .create(CreatePoolRequest {
                            name,
                            base: Some(base(b, size)),
                            cluster_size: cluster_size.unwrap_or(0),
                            max_overcommit: max_overcommit.unwrap_or(0),
                        })
                        .await?;
                    out.pools(&[r.into_inner()]);
                }
                PoolCmd::Import { base: b } => {
                    let r = p
                        .import(ImportPoolRequest {
                            base: Some(base(b, None)),
                        })
                        .await?;
                    out.pools(&[r.into_inner()]);
                }
                PoolCmd::List => out.pools(&p.list(ListPoolsRequest {}).await?.into_inner().pools),
                PoolCmd::Get { name } => {
                    out.pools(&[p.get(GetPoolRequest { name }).await?.into_inner()])
                }
                PoolCmd::Destroy { name } => {
                    let r = p.destroy(DestroyPoolRequest { name: name.clone() }).await?;
                    out.deleted("pool", &name, r.into_inner().existed);
                }
                PoolCmd::Export { name } => {
                    let r = p.export(ExportPoolRequest { name: name.clone() }).await?;
                    out.deleted("pool (exported)", &name, r.into_inner().existed);
                }
            }
        }
        Cmd::Volume(c) => {
            let mut v = VolumeServiceClient::new(ch.clone());
            match c {
                VolumeCmd::Create {
                    name,
                    size,
                    thin,
                    pool,
                    labels,
                    replicas,
                    spread,
                } => {
                    let r = v
                        .create(CreateVolumeRequest {
                            name,
                            size_bytes: size,
                            thin,
                            pool: pool.unwrap_or_default(),
                            labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                            replicas,
                            topology: String::new(),
                            spread: spread.unwrap_or_default(),
                        })
                        .await?;
                    out.volumes(&[r.into_inner()]);
                }
                VolumeCmd::Resize { name, size, force } => {
                    let r = v
                        .resize(ResizeVolumeRequest {
                            name,
                            size_bytes: size,
                            force,
                        })
                        .await?;
                    out.volumes(&[r.into_inner()]);
                }
                VolumeCmd::Delete { name } => {
                    let r = v
                        .destroy(DestroyVolumeRequest { name: name.clone() })
                        .await?;
                    out.deleted("volume", &name, r.into_inner().existed);
                }
                VolumeCmd::List { pool } => {
                    let r = v
                        .list(ListVolumesRequest {
                            pool: pool.unwrap_or_default(),
                        })
                        .await?;
                    out.volumes(&r.into_inner().volumes);
                }
                VolumeCmd::Stats { name, window } => out.volume_stats(
                    &v.stats(VolumeStatsRequest {
                        name,
                        window_ms: window,
                    })
                    .await?
                    .into_inner(),
                ),
                VolumeCmd::Get { name } => {
                    out.volumes(&[v.get(GetVolumeRequest { name }).await?.into_inner()])
                }
                VolumeCmd::Publish {
                    name,
                    nqn,
                    hosts,
                    any_host,
                    address,
                    port,
                } => {
                    let r = TargetServiceClient::new(ch)
                        .publish(PublishRequest {
                            volume: name,
                            nqn: nqn.unwrap_or_default(),
                            hosts,
                            any_host,
                            address: address.unwrap_or_default(),
                            port: port.map_or(0, u32::from),
                        })
                        .await?;
                    out.published(&r.into_inner());
                }
                VolumeCmd::Unpublish { name } => {
                    let r = TargetServiceClient::new(ch)
                        .unpublish(UnpublishRequest {
                            volume: name.clone(),
                        })
                        .await?;
                    out.deleted("publication of volume", &name, r.into_inner().existed);
                }
            }
        }
        Cmd::Snapshot(c) => {
            let mut s = SnapshotServiceClient::new(ch);
            match c {
                SnapshotCmd::Create {
                    volume,
                    name,
                    group,
                } => {
                    let r = s
                        .create(CreateSnapshotRequest {
                            volume,
                            name,
                            group_id: group.unwrap_or_default(),
                        })
                        .await?;
                    out.snapshots(&[r.into_inner()]);
                }
                SnapshotCmd::Delete { name } => {
                    let r = s
                        .destroy(DestroySnapshotRequest { name: name.clone() })
                        .await?;
                    out.deleted("snapshot", &name, r.into_inner().existed);
                }
                SnapshotCmd::Clone {
                    snapshot,
                    name,
                    labels,
                } => {
                    let r = s
                        .clone_snapshot(CloneSnapshotRequest {
                            snapshot,
                            name,
                            labels: labels.into_iter().collect(),
                        })
                        .await?;
                    out.volumes(&[r.into_inner()]);
                }
                SnapshotCmd::List { volume } => {
                    let r = s
                        .list(ListSnapshotsRequest {
                            volume: volume.unwrap_or_default(),
                        })
                        .await?;
                    out.snapshots(&r.into_inner().snapshots);
                }
            }
        }
        Cmd::Subsystem(SubsystemCmd::List) => {
            let r = TargetServiceClient::new(ch)
                .list_subsystems(ListSubsystemsRequest {})
                .await?;
            out.subsystems(&r.into_inner().subsystems);
        }
        // Answered in `main`, before connecting.
        Cmd::Completions { .. } => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "ferroxctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferroxctl: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let connected = match (&cli.addr, &cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
            (Some(addr), Some(ca), Some(cert), Some(key)) => {
                match ferrox_control::ClientTls::load(ca, cert, key) {
                    Ok(tls) => ferrox_control::connect_tls(addr, &tls)
                        .await
                        .map_err(|e| format!("{e} (does the daemon run with --control-tcp?)")),
                    Err(e) => Err(e),
                }
            }
            (Some(_), ..) => Err("--addr needs --tls-ca, --tls-cert and --tls-key".to_string()),
            (None, ..) => ferrox_control::connect(&socket)
                .await
                .map_err(|e| format!("{e} (is the daemon running? --socket PATH)")),
        };
        let ch = match connected {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ferroxctl: {e}");
                return ExitCode::FAILURE;
            }
        };
        match run(cli, ch).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(s) => {
                eprintln!("ferroxctl: {:?}: {}", s.code(), s.message());
                ExitCode::FAILURE
            }
        }
    })
}

/// "500ms" or "2s" as milliseconds (1 to 10000).
fn parse_window(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else {
        return Err(format!("{s:?}: give a unit, e.g. 500ms or 2s"));
    };
    let n: u32 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a whole number of ms or s"))?;
    match n.checked_mul(scale) {
        Some(ms) if (1..=10_000).contains(&ms) => Ok(ms),
        _ => Err(format!("{s:?}: the window is 1ms to 10s")),
    }
}
