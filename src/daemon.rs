//! Start-up, the embedded default, and shutdown.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::size::human;
use ferrox_bdev::{BdevFields, BdevSpec, BlockDevice, NvmeSpec, Registry, RegistryError};
use ferrox_nvme::bdev::NvmeController;
use ferrox_nvme::driver::ControllerOptions;
use ferrox_nvme::Error as NvmeError;
use ferrox_nvmeof::{SubsystemConfig, Target};
use ferrox_reactor::{
    available_cores, parse_cores, BufferPool, ClassConfig, PollMode, PoolConfig, ReactorGroup,
    ReactorOptions,
};

use crate::config::{self, Config, ConfigError, Cores, ListenerSection};
use crate::Cli;

pub const DEFAULT_NQN: &str = "nqn.2026-11.io.ferrox:default";

pub enum Failure {
    /// Something the operator fixes (exit code 2): the configuration, or a
    /// `--cluster` etcd that does not answer at start.
    Config(ConfigError),
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Creating a malloc or uring bdev: what the operator fixes in the configuration.
impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Self::Config(ConfigError(e.to_string()))
    }
}

pub(crate) fn cfg_err(msg: impl Into<String>) -> Failure {
    Failure::Config(ConfigError(msg.into()))
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERROX_DATA_DIR") {
        return d.into();
    }
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.unwrap_or(false) {
        return "/var/lib/ferrox".into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/ferrox")
}

fn embedded_default(cli: &Cli, data_dir: &Path) -> Result<Config, Failure> {
    let size = config::parse_size(
        "--default-size",
        &config::Size::Text(cli.default_size.clone()),
    )?;
    let addr: SocketAddr = cli
        .listen
        .parse()
        .map_err(|_| cfg_err(format!("--listen {:?}: expected ADDR:PORT", cli.listen)))?;
    let text = format!(
        r#"
[[bdev]]
name = "default0"
kind = "uring"
path = {path:?}
size = {size}
block_size = 512

[[subsystem]]
nqn = "{DEFAULT_NQN}"
serial = "FERROXDEFAULT0001"
model = "Ferrox default volume"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "default0"

[[subsystem.listener]]
address = "{ip}"
port = {port}
"#,
        path = data_dir.join("default0.img").display().to_string(),
        ip = addr.ip(),
        port = addr.port(),
    );
    toml::from_str(&text).map_err(|e| cfg_err(format!("embedded default: {e}")))
}

/// Attached NVMe controllers. They are shut down (CC.SHN) after the reactors stop:
/// each reactor's I/O queue pair is deleted as its poller is dropped, and only then may
/// the controller be handed back, so that the kernel can bind the device again. On an
/// early return (a configuration error after the attach) `Drop` does the same.
#[derive(Default)]
pub struct Controllers(Vec<NvmeController>);

impl Controllers {
    /// Shuts every controller down, in attach order. Call after the reactors stopped.
    pub fn shutdown(&mut self) {
        for c in self.0.drain(..) {
            let (name, id) = (c.name.clone(), c.ctrl.id().to_string());
            match c.shutdown() {
                Ok(()) => tracing::info!(
                    controller = name,
                    pci = id,
                    "NVMe controller shut down (CC.SHN) and handed back"
                ),
                Err(e) => {
                    tracing::error!(controller = name, pci = id, error = %e, "NVMe controller shutdown failed")
                }
            }
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What an `nvme` bdev is attached with: the buffer pool its DMA mapping covers, one
/// I/O queue pair per reactor, and interrupts for adaptive parking.
pub struct NvmeSetup {
    pub pool: &'static BufferPool,
    pub reactors: usize,
    pub poll_mode: PollMode,
}

fn attach_nvme(
    key: &str,
    name: &str,
    n: &NvmeSpec,
    setup: &NvmeSetup,
) -> Result<NvmeController, Failure> {
    let bdf =
        ferrox_nvme::bdev::parse_bdf(&n.pci).map_err(|e| cfg_err(format!("{key}.pci = {e}")))?;
    let queue_depth = n
        .queue_entries()
        .expect("BdevSpec::validate checked the queue depth");
    let opts = ControllerOptions {
        io_queues: u16::try_from(setup.reactors.max(1)).unwrap_or(u16::MAX),
        queue_depth,
        interrupts: setup.poll_mode == PollMode::Adaptive,
        ..ControllerOptions::default()
    };
    let c = ferrox_nvme::bdev::attach_named(name, &bdf, setup.pool, opts).map_err(|e| {
        let msg = format!("{key}: cannot attach the NVMe controller {bdf}: {e}");
        match e {
            // Something the operator fixes on this machine (driver binding, IOMMU,
            // permissions): the driver's message carries the one-line hint.
            NvmeError::Setup { .. } => cfg_err(msg),
            _ => Failure::Runtime(msg),
        }
    })?;
    if c.bdevs.is_empty() {
        tracing::warn!(
            controller = name,
            pci = bdf,
            "the NVMe controller has no active namespace"
        );
    }
    Ok(c)
}

/// A `[[bdev]]` table as a [`BdevSpec`]: the size parsed, the keys checked.
fn bdev_spec(key: &str, b: &config::BdevSection) -> Result<BdevSpec, Failure> {
    let size = b
        .size
        .as_ref()
        .map(|s| config::parse_size(&format!("{key}.size"), s))
        .transpose()?;
    BdevSpec::from_fields(BdevFields {
        name: b.name.clone(),
        kind: b.kind.clone(),
        size,
        block_size: b.block_size,
        path: b.path.clone(),
        pci: b.pci.clone(),
        queue_depth: b.queue_depth,
    })
    .map_err(|e| cfg_err(e.at(key)))
}

fn create_bdevs(
    cfg: &Config,
    registry: &Registry,
    nvme: &NvmeSetup,
    ctrls: &mut Controllers,
) -> Result<(), Failure> {
    for (i, b) in cfg.bdev.iter().enumerate() {
        let key = format!("bdev[{i}] ({:?})", b.name);
        let spec = bdev_spec(&key, b)?;
        let devs = spec.create_with(|name, n| {
            // Kept before registering: a failure below still shuts the controller down.
            ctrls.0.push(attach_nvme(&key, name, n, nvme)?);
            let c = ctrls.0.last().expect("just pushed");
            Ok::<_, Failure>(
                c.bdevs
                    .iter()
                    .map(|d| {
                        let i = d.info();
                        tracing::info!(
                            bdev = i.name,
                            pci = c.ctrl.id(),
                            blocks = i.num_blocks,
                            block_size = i.block_size,
                            "NVMe namespace attached"
                        );
                        d.clone() as Arc<dyn BlockDevice>
                    })
                    .collect(),
            )
        })?;
        for d in devs {
            registry
                .add(d)
                .map_err(|e| cfg_err(format!("{key}: {e}")))?;
        }
    }
    Ok(())
}

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let (max_conns, per_host) = connection_limits(cli)?;
    check_hardening(cli)?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        Failure::Runtime(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let (cfg, embedded) = match &cli.config {
        Some(p) => (config::load(p)?, false),
        None => (embedded_default(cli, &data_dir)?, true),
    };
    if let Some(n) = &cli.node_name {
        crate::node::check_name(n).map_err(|why| cfg_err(format!("--node-name {n:?}: {why}")))?;
    }
    let cluster = cluster_endpoints(cli, &cfg)?;

    // Everything is checked before anything starts.
    let cores = match (&cli.cores, &cfg.reactor.cores) {
        (Some(s), _) => parse_cores(s).map_err(|e| cfg_err(format!("--cores: {e}")))?,
        (None, Some(Cores::Spec(s))) => {
            parse_cores(s).map_err(|e| cfg_err(format!("reactor.cores: {e}")))?
        }
        (None, Some(Cores::List(v))) if !v.is_empty() => v.clone(),
        (None, Some(Cores::List(_))) => {
            return Err(cfg_err("reactor.cores = []: name at least one core"))
        }
        (None, None) => available_cores(),
    };
    let mode_text = cli
        .poll_mode
        .clone()
        .or_else(|| cfg.reactor.poll_mode.clone())
        .unwrap_or_else(|| "adaptive".to_string());
    let poll_mode: PollMode = mode_text
        .parse()
        .map_err(|e: String| cfg_err(format!("poll mode: {e}")))?;
    let idle_us = cli
        .idle_threshold_us
        .or(cfg.reactor.idle_threshold_us)
        .unwrap_or(100);
    // Top-level listeners serve every subsystem; a subsystem with listeners of its own
    // is reachable through those only.
    let mut listeners = Vec::new();
    for (i, l) in cfg.listener.iter().enumerate() {
        listeners.push(config::listener_addr(&format!("listener[{i}]"), l)?);
    }
    let mut own_listeners = Vec::new();
    for (si, s) in cfg.subsystem.iter().enumerate() {
        let mut own = Vec::new();
        for (li, l) in s.listener.iter().enumerate() {
            let a = config::listener_addr(&format!("subsystem[{si}].listener[{li}]"), l)?;
            if !listeners.contains(&a) {
                listeners.push(a);
            }
            own.push(a);
        }
        own_listeners.push(own);
    }
    if listeners.is_empty() && !cfg.subsystem.is_empty() {
        listeners.push(config::listener_addr(
            "listener",
            &ListenerSection {
                address: "127.0.0.1".to_string(),
                port: 4420,
            },
        )?);
    }
    if cfg.pool.buffers_4k == 0 || cfg.pool.buffers_128k == 0 {
        return Err(cfg_err(
            "pool.buffers_4k and pool.buffers_128k must be at least 1",
        ));
    }

    // Control API over TCP (opt-in, --control-tcp): the TLS files are checked now.
    let control_tls = match (
        &cli.control_tcp,
        &cli.tls_cert,
        &cli.tls_key,
        &cli.tls_client_ca,
    ) {
        (None, ..) => None,
        (Some(_), Some(cert), Some(key), Some(ca)) => Some(
            ferrox_control::ServerTls::load(cert, key, ca)
                .map_err(|e| cfg_err(format!("--control-tcp: {e}")))?,
        ),
        (Some(_), ..) => {
            return Err(cfg_err(
                "--control-tcp needs --tls-cert, --tls-key and --tls-client-ca",
            ))
        }
    };
    // With the cluster's certificates, a node forwards requests to the others' TCP
    // listeners as a client: its own certificate and key, their CA as the servers'.
    let peer_tls = match (&cli.tls_cert, &cli.tls_key, &cli.tls_client_ca) {
        (Some(cert), Some(key), Some(ca)) if control_tls.is_some() => Some(
            ferrox_control::tls::ClientTls::load(ca, cert, key)
                .map_err(|e| cfg_err(format!("--control-tcp: {e}")))?,
        ),
        _ => None,
    };
    // End of control API over TCP.

    // The pool first: an nvme bdev maps it for DMA when it attaches. Declared before
    // the reactor group, `ctrls` is dropped (shut down) after it on any early return.
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: cfg.pool.buffers_4k,
            },
            ClassConfig {
                size: 8192,
                count: cfg.pool.buffers_8k,
            },
            ClassConfig {
                size: 128 << 10,
                count: cfg.pool.buffers_128k,
            },
        ],
        hugepages: cfg.pool.hugepages,
    })
    .map_err(|e| Failure::Runtime(format!("cannot map the buffer pool: {e}")))?;
    let registry = Arc::new(Registry::new());
    let mut ctrls = Controllers::default();
    let nvme = NvmeSetup {
        pool,
        reactors: cores.len(),
        poll_mode,
    };
    create_bdevs(&cfg, &registry, &nvme, &mut ctrls)?;
    let node = crate::node::load(&data_dir, cli.node_name.as_deref())?;
    let mut subsystems = Vec::new();
    let mut summary = Vec::new();
    for (si, s) in cfg.subsystem.iter().enumerate() {
        let mut namespaces = Vec::new();
        let mut bytes = 0;
        for (ni, n) in s.namespace.iter().enumerate() {
            let dev = registry.get(&n.bdev).map_err(|_| {
                cfg_err(format!(
                    "subsystem[{si}].namespace[{ni}].bdev = {:?}: no bdev of that name (have: {:?})",
                    n.bdev,
                    registry.names()
                ))
            })?;
            bytes += dev.info().num_blocks * u64::from(dev.info().block_size);
            namespaces.push((n.nsid, dev));
        }
        summary.push((s.nqn.clone(), bytes, s.namespace.len()));
        subsystems.push(SubsystemConfig {
            nqn: s.nqn.clone(),
            serial: s.serial.clone(),
            model: s.model.clone(),
            allow_any_host: s.allow_any_host,
            hosts: s.hosts.clone(),
            namespaces,
            listeners: own_listeners[si].clone(),
        });
    }

    let opts = ReactorOptions {
        poll_mode,
        idle_threshold: Duration::from_micros(idle_us),
        ..Default::default()
    };
    let group = ReactorGroup::start(&cores, &opts, pool).map_err(|e| match e {
        ferrox_reactor::Error::NoSuchCore { .. } | ferrox_reactor::Error::BadCores { .. } => {
            cfg_err(e.to_string())
        }
        other => Failure::Runtime(other.to_string()),
    })?;
    tracing::info!(?cores, ?poll_mode, idle_threshold_us = idle_us, data_dir = %data_dir.display(), node = %node.name, "reactors started");
    let target = match Target::start(group.handles(), node.id, subsystems, &listeners) {
        Ok(t) => t,
        Err(e) => {
            group.shutdown();
            return Err(match e {
                ferrox_nvmeof::TargetError::Bind { .. } | ferrox_nvmeof::TargetError::Reactor => {
                    Failure::Runtime(e.to_string())
                }
                other => cfg_err(other.to_string()),
            });
        }
    };
    target.shared().limits.set(max_conns, per_host);
    apply_hardening(cli, target.shared());
    let started = Instant::now();

    // The control plane: after the target is up (it re-publishes volumes), before
    // "ready" is printed.
    let control = if cli.no_control {
        None
    } else {
        let socket = cli
            .control_socket
            .clone()
            .unwrap_or_else(|| data_dir.join("ferrox.sock"));
        let ctx = ferrox_control::ControlContext {
            target: target.shared().clone(),
            registry: registry.clone(),
            reactors: group.handles().to_vec(),
            node_id: node.id,
            node_name: node.name.clone(),
            data_dir: data_dir.clone(),
        };
        let started = match &cluster {
            Some(opts) => ferrox_control::ControlServer::start_cluster(ctx, &socket, opts.clone()),
            None => ferrox_control::ControlServer::start(ctx, &socket),
        };
        match started {
            Ok(c) => Some(c),
            Err(e) => {
                drop(target);
                group.shutdown();
                return Err(match (&cluster, e.kind()) {
                    (Some(opts), ferrox_control::Kind::Unavailable) => cfg_err(format!(
                        "cannot reach the cluster store (etcd at {}): {}",
                        opts.endpoints.join(","),
                        ferrox_control::error_chain(&e)
                    )),
                    (Some(_), ferrox_control::Kind::AlreadyExists) => {
                        cfg_err(format!("cannot join the cluster: {e}"))
                    }
                    _ => Failure::Runtime(format!(
                        "cannot start the control API on {}: {}",
                        socket.display(),
                        ferrox_control::error_chain(&e)
                    )),
                });
            }
        }
    };

    // Metrics (opt-in, --metrics-addr): served from the control plane's runtime.
    let metrics = match (&control, cli.metrics_addr) {
        (Some(c), Some(addr)) => match c.serve_metrics(addr) {
            Ok(a) => Some(a),
            Err(e) => {
                if let Some(c) = control {
                    c.stop();
                }
                drop(target);
                group.shutdown();
                return Err(Failure::Runtime(format!(
                    "cannot serve metrics on {addr}: {e}"
                )));
            }
        },
        _ => None,
    };
    // End of metrics.

    // Control API over TCP (opt-in, --control-tcp), mutual TLS.
    let control_tcp = match (&control, cli.control_tcp, control_tls) {
        (Some(c), Some(addr), Some(tls)) => match c.serve_tcp(addr, tls) {
            Ok(a) => {
                if let Some(p) = peer_tls {
                    c.set_peer_tls(p);
                }
                Some(a)
            }
            Err(e) => {
                if let Some(c) = control {
                    c.stop();
                }
                drop(target);
                group.shutdown();
                return Err(Failure::Runtime(format!(
                    "cannot serve the control API on {addr}: {e}"
                )));
            }
        },
        _ => None,
    };
    // End of control API over TCP.

    let mut out = std::io::stdout().lock();
    for (nqn, bytes, nns) in &summary {
        let t = target.shared();
        let reach = t
            .subsystem(nqn)
            .map(|s| t.listeners_of(&s))
            .unwrap_or_default();
        for a in reach {
            let what = if embedded {
                format!(
                    "the embedded default volume ({}, file {})",
                    human(*bytes),
                    data_dir.join("default0.img").display()
                )
            } else {
                format!("{nns} namespace(s), {}", human(*bytes))
            };
            let _ = writeln!(out, "ferrox: serving {nqn} on {a}: {what}");
            let _ = writeln!(
                out,
                "ferrox: connect with: nvme connect -t tcp -a {} -s {} -n {nqn}",
                a.ip(),
                a.port()
            );
        }
    }
    if let Some(c) = &control {
        let _ = writeln!(out, "ferrox: control socket {}", c.socket().display());
    }
    if let Some(a) = control_tcp {
        let _ = writeln!(out, "ferrox: control API on https://{a} (mutual TLS)");
    }
    if let Some(a) = metrics {
        let _ = writeln!(
            out,
            "ferrox: metrics on http://{a}{}",
            ferrox_control::METRICS_PATH
        );
    }
    let _ = writeln!(out, "ferrox: ready; stop with Ctrl-C or SIGTERM");
    let _ = out.flush();
    drop(out);

    let sig = crate::signals::wait();
    tracing::info!(signal = sig, "stopping");
    // The control plane first: it closes its pools while the reactors still run.
    if let Some(c) = control {
        c.stop();
    }
    drop(target);
    let stats = group.shutdown();
    // Every reactor has stopped and deleted its queue pairs: now CC.SHN.
    ctrls.shutdown();
    for s in stats {
        tracing::info!(
            reactor = s.id,
            core = s.core,
            turns = s.turns,
            busy_turns = s.busy_turns,
            parks = s.parks,
            messages = s.messages,
            completions = s.completions,
            uptime_s = started.elapsed().as_secs(),
            "reactor stopped"
        );
    }
    Ok(())
}

/// The cluster of `--cluster` (or `[cluster] endpoints`) and `--labels`, each
/// checked; `None` without either (the embedded redb store).
fn cluster_endpoints(
    cli: &Cli,
    cfg: &Config,
) -> Result<Option<ferrox_control::ClusterOptions>, Failure> {
    let labels = match &cli.labels {
        Some(l) => ferrox_control::validate::labels(l)
            .map_err(|why| cfg_err(format!("--labels {l:?}: {why}")))?,
        None => Default::default(),
    };
    let (key, eps): (&str, Vec<String>) = match (&cli.cluster, &cfg.cluster) {
        (Some(s), _) => (
            "--cluster",
            s.split(',').map(|e| e.trim().to_string()).collect(),
        ),
        (None, Some(c)) => ("cluster.endpoints", c.endpoints.clone()),
        (None, None) if cli.labels.is_some() => {
            return Err(cfg_err(
                "--labels: labels are a cluster's (give --cluster or [cluster] endpoints)",
            ))
        }
        (None, None) => return Ok(None),
    };
    if eps.iter().all(String::is_empty) {
        return Err(cfg_err(format!(
            "{key}: name at least one etcd endpoint (http://HOST:PORT)"
        )));
    }
    for e in &eps {
        ferrox_control::state::etcd::check_endpoint(e)
            .map_err(|why| cfg_err(format!("{key}: endpoint {e:?}: {why}")))?;
    }
    if cli.no_control {
        return Err(cfg_err(format!(
            "{key}: the cluster store is the control plane's; it needs the control API (drop --no-control)"
        )));
    }
    let mut opts = ferrox_control::ClusterOptions::new(eps);
    opts.labels = labels;
    Ok(Some(opts))
}

/// Descriptors kept for everything but connections: files, eventfds, io_uring, the
/// control plane.
const FD_RESERVE: u64 = 256;

/// The connection caps: the flags, with the whole-target cap kept under the open-file
/// limit (raised to its hard limit first) so that connections alone never exhaust it.
fn connection_limits(cli: &Cli) -> Result<(usize, usize), Failure> {
    if cli.max_connections == Some(0) || cli.max_connections_per_host == 0 {
        return Err(cfg_err(
            "--max-connections and --max-connections-per-host must be at least 1",
        ));
    }
    let nofile = match ferrox_reactor::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            u64::MAX
        }
    };
    let room = usize::try_from(nofile.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
    let wanted = cli
        .max_connections
        .unwrap_or(ferrox_nvmeof::target::limits::DEFAULT_MAX_CONNECTIONS);
    if wanted > room {
        let how = if cli.max_connections.is_some() {
            "--max-connections"
        } else {
            "the default connection cap"
        };
        tracing::warn!(
            nofile,
            "{how} of {wanted} is over what the open-file limit leaves room for: {room} connections at most"
        );
    }
    Ok((wanted.min(room), cli.max_connections_per_host))
}

/// The flags that bound what one host can hold, checked before anything starts.
fn check_hardening(cli: &Cli) -> Result<(), Failure> {
    if cli.max_discovery_per_host == 0 || cli.discovery_kato == 0 || cli.r2t_timeout == 0 {
        return Err(cfg_err(
            "--max-discovery-per-host, --discovery-kato and --r2t-timeout must be at least 1",
        ));
    }
    if !(1..=100).contains(&cli.r2t_share) || !(1..=100).contains(&cli.r2t_share_total) {
        return Err(cfg_err(
            "--r2t-share and --r2t-share-total must be 1 to 100",
        ));
    }
    if cli.stall_min_bytes == 0 {
        return Err(cfg_err("--stall-min-bytes must be at least 1"));
    }
    Ok(())
}

fn apply_hardening(cli: &Cli, t: &ferrox_nvmeof::target::TargetShared) {
    t.discovery_limits.set(cli.max_discovery_per_host);
    t.set_discovery_kato(Duration::from_secs(cli.discovery_kato));
    t.set_r2t_timeout(Duration::from_secs(cli.r2t_timeout));
    t.set_r2t_shares(cli.r2t_share, cli.r2t_share_total);
    t.set_stall_min_bytes(cli.stall_min_bytes);
}
