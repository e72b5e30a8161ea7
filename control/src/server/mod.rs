//! The gRPC server: its runtime thread, the shared [`Core`], and `rpc_submit`, the one
//! way a handler reaches the data plane.

mod grpc;
mod leader;
mod lock;
mod metrics;
mod nodes;

pub use metrics::METRICS_PATH;
pub use nodes::{ClusterOptions, NodePoolRec, NodeRec, NODE_TTL};
mod pools;
mod publish;
mod reconcile;
mod replicas;
mod stats;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrox_bdev::lvol::{LvolCall, LvolStore};
use ferrox_bdev::{BdevKind, BdevSpec, BlockDevice, Registry};
use ferrox_nvmeof::TargetShared;
use ferrox_reactor::{Reactor, ReactorHandle};

use crate::error::ControlError;
use crate::state::{EtcdStore, PoolRec, RedbStore, StateStore};
use crate::tls::ServerTls;

/// Largest request the server decodes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest response the server encodes (lists of many volumes).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Largest HTTP/2 header list the server accepts (metadata of one request).
pub const MAX_HEADER_BYTES: u32 = 16 << 10;

/// What the daemon hands the control plane.
pub struct ControlContext {
    pub target: Arc<TargetShared>,
    pub registry: Arc<Registry>,
    pub reactors: Vec<ReactorHandle>,
    pub node_id: [u8; 16],
    /// The node's name (a DNS name), kept in the data directory.
    pub node_name: String,
    pub data_dir: PathBuf,
}

/// A pool the server knows: its record, and the open store (or why it is not open).
pub(crate) struct PoolEntry {
    pub rec: PoolRec,
    pub lvs: Option<Arc<LvolStore>>,
    /// The bdev the pool is on (registered under this name).
    pub bdev: String,
    pub error: Option<String>,
}

/// State shared by every handler.
pub(crate) struct Core {
    pub ctx: ControlContext,
    pub store: Arc<dyn StateStore>,
    /// Control-plane bookkeeping only (never held across an await or a data-plane call).
    pub pools: Mutex<BTreeMap<String, PoolEntry>>,
    /// This instance's session lease in the store (0: none yet): what its locks
    /// ([`Core::lock`]) are attached to.
    session: tokio::sync::Mutex<crate::state::LeaseId>,
    pub ready: AtomicBool,
    pub started: Instant,
    /// This node's place in a cluster (`--cluster`), or `None`.
    membership: Option<nodes::Membership>,
    /// Where the control API is served ("unix:/path", "https://ip:port").
    control_addrs: Mutex<Vec<String>>,
    /// This node's client identity towards other nodes' TCP listeners (a cluster
    /// with certificates): see `server/replicas.rs`.
    peer_tls: Mutex<Option<crate::tls::ClientTls>>,
    next_meta: std::sync::atomic::AtomicUsize,
}

type ReactorFn<T> = Box<dyn FnOnce(&Reactor) -> Result<T, ControlError> + Send>;

/// Data-plane work, in one of the two forms the control plane may do it.
pub(crate) enum Job<T> {
    /// A blocking call (an [`LvolStore`] method) for tokio's blocking pool.
    Blocking(Box<dyn FnOnce() -> Result<T, ControlError> + Send>),
    /// A closure for the reactor that owns the resource.
    OnReactor(ReactorHandle, ReactorFn<T>),
    /// An operation of a pool's lvol engine, run on its metadata reactor (what it
    /// is doing, for the error).
    Lvol(LvolCall<T>, String),
}

impl<T> Job<T> {
    pub fn blocking(f: impl FnOnce() -> Result<T, ControlError> + Send + 'static) -> Self {
        Self::Blocking(Box::new(f))
    }

    pub fn on_reactor(
        h: &ReactorHandle,
        f: impl FnOnce(&Reactor) -> Result<T, ControlError> + Send + 'static,
    ) -> Self {
        Self::OnReactor(h.clone(), Box::new(f))
    }

    /// `call` (an `LvolStore::*_async` operation) on the pool's metadata reactor,
    /// awaited without a blocking thread; `during` names it in an error.
    pub fn lvol(during: impl Into<String>, call: LvolCall<T>) -> Self {
        Self::Lvol(call, during.into())
    }
}

/// How long a reactor mailbox that is full is retried before the call gives up.
const MAILBOX_PATIENCE: Duration = Duration::from_secs(5);

/// The one way a handler reaches the data plane: never blocks a runtime worker, never
/// takes a data-plane lock itself.
pub(crate) async fn rpc_submit<T: Send + 'static>(job: Job<T>) -> Result<T, ControlError> {
    match job {
        Job::Blocking(f) => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ControlError::Internal(format!("blocking task failed: {e}")))?,
        Job::Lvol(call, during) => call.await.map_err(|e| ControlError::lvol(during, e)),
        Job::OnReactor(h, f) => {
            // `call` hands a full mailbox back as an error; retry with a bounded
            // patience, yielding to the runtime between attempts.
            let f = Arc::new(Mutex::new(Some(f)));
            let deadline = Instant::now() + MAILBOX_PATIENCE;
            loop {
                let f2 = f.clone();
                let res = h.call(move |r| {
                    let f = f2.lock().unwrap_or_else(|e| e.into_inner()).take();
                    f.map(|f| f(r))
                });
                match res {
                    Ok(reply) => {
                        return reply
                            .await
                            .map_err(ControlError::Reactor)?
                            .unwrap_or_else(|| {
                                Err(ControlError::Internal("reactor job ran twice".into()))
                            })
                    }
                    Err(e) if Instant::now() >= deadline => return Err(ControlError::Reactor(e)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
    }
}

impl Core {
    /// `Unavailable` until start-up reconciliation is done.
    pub fn check_ready(&self) -> Result<(), ControlError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ControlError::Unavailable(
                "reconciling state after start; retry shortly".into(),
            ))
        }
    }

    /// The reactor that runs the target's listener and owns subsystem changes.
    pub fn target_reactor(&self) -> &ReactorHandle {
        &self.ctx.reactors[0]
    }

    /// A metadata reactor for a new pool (round robin).
    pub fn meta_reactor(&self) -> ReactorHandle {
        let n = self.ctx.reactors.len();
        let i = self.next_meta.fetch_add(1, Ordering::Relaxed) % n;
        self.ctx.reactors[i].clone()
    }

    pub fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolEntry>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open store of pool `name`.
    pub fn lvs(&self, name: &str) -> Result<Arc<LvolStore>, ControlError> {
        let pools = self.pools();
        let p = pools
            .get(name)
            .ok_or_else(|| ControlError::not_found("pool", name))?;
        p.lvs.clone().ok_or_else(|| {
            ControlError::FailedPrecondition(format!(
                "pool {name:?} is unavailable: {}",
                p.error.as_deref().unwrap_or("not open")
            ))
        })
    }

    pub fn records(&self) -> crate::state::Records<'_> {
        crate::state::Records(&*self.store)
    }

    /// Runs blocking work (an [`LvolStore`] call) with the core at hand, through
    /// [`rpc_submit`].
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Core) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        let core = self.clone();
        rpc_submit(Job::blocking(move || f(&core))).await
    }

    /// Whether any subsystem exports the bdev named `bdev`.
    pub fn bdev_exported(&self, bdev: &str) -> Option<String> {
        self.ctx.target.subsystems().iter().find_map(|s| {
            s.namespaces()
                .iter()
                .any(|n| n.bdev.info().name == bdev)
                .then(|| s.nqn.clone())
        })
    }
}

/// Opens the base of a path-based pool (creating a sparse file of `size` when absent).
pub(crate) fn open_path_base(
    pool: &str,
    path: &Path,
    size: Option<u64>,
) -> Result<Arc<dyn BlockDevice>, ControlError> {
    let spec = BdevSpec {
        name: base_bdev_name(pool),
        kind: BdevKind::Uring {
            path: path.to_path_buf(),
            size,
            block_size: 512,
            queue_depth: 128,
        },
    };
    spec.create().map_err(|source| ControlError::Registry {
        during: format!("opening {}", path.display()),
        source,
    })
}

/// The registry name of a path-based pool's base.
pub(crate) fn base_bdev_name(pool: &str) -> String {
    format!("pool:{pool}")
}

/// The running control server. [`ControlServer::stop`] (or drop) stops it.
pub struct ControlServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The control runtime and state, for the metrics endpoint.
    rt: tokio::runtime::Handle,
    core: Arc<Core>,
    /// Stops the metrics endpoint and the TCP listener (when started).
    metrics_stop: tokio::sync::watch::Sender<bool>,
    /// The TCP listener's server task (when started), awaited on stop.
    tcp: Mutex<Option<tokio::task::JoinHandle<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
}

impl ControlServer {
    /// Opens the state store (`control.redb` in the data directory) and starts
    /// ([`ControlServer::start_with_store`]).
    pub fn start(ctx: ControlContext, socket: &Path) -> Result<Self, ControlError> {
        let store = RedbStore::open(&ctx.data_dir.join("control.redb"))?;
        Self::start_with_store(ctx, socket, Arc::new(store))
    }

    /// Starts on the etcd cluster at `endpoints` (`http://HOST:PORT`) instead of the
    /// data directory's redb: a node of a cluster. An etcd that does not answer is an
    /// error ([`StoreError::Unavailable`](crate::state::StoreError::Unavailable), with
    /// etcd's reason) before anything is served; there is no fallback to redb.
    ///
    /// The node registers itself ([`NodeRec`] under `/ferrox/v1/node/<id>`, up while
    /// its lease lives); a name another node holds is
    /// [`ControlError::AlreadyExists`] naming that node.
    pub fn start_cluster(
        ctx: ControlContext,
        socket: &Path,
        opts: ClusterOptions,
    ) -> Result<Self, ControlError> {
        let rt = runtime()?;
        // On the control runtime: the client's connections live on it.
        let store = rt.block_on(EtcdStore::connect(&opts.endpoints))?;
        tracing::info!(endpoints = ?opts.endpoints, "control-plane state in etcd");
        let rec = NodeRec {
            id: pools::hex(&ctx.node_id),
            name: ctx.node_name.clone(),
            labels: opts.labels.clone(),
            listeners: ctx
                .target
                .listeners()
                .iter()
                .map(ToString::to_string)
                .collect(),
            control: vec![format!("unix:{}", socket.display())],
            ..NodeRec::default()
        };
        let lease = rt.block_on(nodes::register(&store, &rec, opts.lease_ttl))?;
        tracing::info!(
            node = rec.name,
            id = rec.id,
            lease,
            "registered in the cluster"
        );
        let m = nodes::Membership {
            opts,
            rec: tokio::sync::Mutex::new(rec),
            lease: tokio::sync::Mutex::new(lease),
            view: Default::default(),
        };
        Self::start_on(rt, ctx, socket, Arc::new(store), Some(m))
    }

    /// Binds `socket` (mode 0600), starts serving, and reconciles the state in
    /// `store` with the data plane (re-importing pools and re-publishing volumes).
    /// Returns once reconciliation is done. Several servers may share one store:
    /// their changes never interleave (see `server/lock.rs`).
    pub fn start_with_store(
        ctx: ControlContext,
        socket: &Path,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, ControlError> {
        Self::start_on(runtime()?, ctx, socket, store, None)
    }

    fn start_on(
        rt: tokio::runtime::Runtime,
        ctx: ControlContext,
        socket: &Path,
        store: Arc<dyn StateStore>,
        membership: Option<nodes::Membership>,
    ) -> Result<Self, ControlError> {
        if ctx.reactors.is_empty() {
            return Err(ControlError::Internal("no reactors".into()));
        }
        let listener = bind_socket(socket)?;
        let core = Arc::new(Core {
            ctx,
            store,
            pools: Mutex::new(BTreeMap::new()),
            session: tokio::sync::Mutex::new(0),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            membership,
            control_addrs: Mutex::new(vec![format!("unix:{}", socket.display())]),
            peer_tls: Mutex::new(None),
            next_meta: std::sync::atomic::AtomicUsize::new(0),
        });
        let rt_handle = rt.handle().clone();
        let core2 = core.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sock_path = socket.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ferrox-ctl".into())
            .spawn(move || {
                rt.block_on(async move {
                    let incoming = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => tokio_stream::wrappers::UnixListenerStream::new(l),
                        Err(source) => {
                            let _ = ready_tx.send(Err(ControlError::Io {
                                during: "registering the control socket".into(),
                                source,
                            }));
                            return;
                        }
                    };
                    let stop = async {
                        let _ = stop_rx.await;
                    };
                    tokio::spawn(core.clone().keep_session());
                    tokio::spawn(core.clone().keep_membership());
                    tokio::spawn(core.clone().campaign());
                    tokio::spawn(core.clone().watch_orphans());
                    let server = tokio::spawn(grpc::serve(core.clone(), incoming, None, stop));
                    let res = reconcile::run(&core).await;
                    core.ready.store(true, Ordering::Release);
                    core.refresh_record().await;
                    let _ = ready_tx.send(res);
                    match server.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "control server failed"),
                        Err(e) => tracing::error!(error = %e, "control server task failed"),
                    }
                    // Close the pools (their engines stop on their reactors) while
                    // the reactors still run.
                    core.pools().clear();
                    // Others see this node down now, not after its lease's TTL.
                    core.leave().await;
                });
                rt.shutdown_timeout(Duration::from_secs(10));
            })
            .map_err(|source| ControlError::Io {
                during: "starting the control thread".into(),
                source,
            })?;
        let mut me = Self {
            shutdown: Some(stop_tx),
            rt: rt_handle,
            core: core2,
            metrics_stop: tokio::sync::watch::channel(false).0,
            tcp: Mutex::new(None),
            thread: Some(thread),
            socket: sock_path,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => {
                me.stop_inner();
                Err(e)
            }
            Err(_) => {
                me.stop_inner();
                Err(ControlError::Internal("the control thread ended".into()))
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves Prometheus metrics on `addr` at [`METRICS_PATH`]
    /// from the control runtime until [`ControlServer::stop`]; returns the bound
    /// address (port 0 picks one).
    pub fn serve_metrics(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, ControlError> {
        let (listener, local) = metrics::bind(addr)?;
        self.rt.spawn(metrics::serve(
            self.core.clone(),
            listener,
            self.metrics_stop.subscribe(),
        ));
        Ok(local)
    }

    /// Serves the API — the same services and limits as the Unix socket — on TCP
    /// `addr` with mutual TLS ([`ServerTls`]: only clients whose certificate the client
    /// CA signed get past the handshake) from the control runtime until
    /// [`ControlServer::stop`]; returns the bound address (port 0 picks one). Bound
    /// now, so a bad or busy address fails the caller. At most one TCP listener.
    pub fn serve_tcp(
        &self,
        addr: std::net::SocketAddr,
        tls: ServerTls,
    ) -> Result<std::net::SocketAddr, ControlError> {
        let mut slot = self.tcp.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(ControlError::FailedPrecondition(
                "the TCP listener is already running".into(),
            ));
        }
        let io = |during: String| move |source| ControlError::Io { during, source };
        let l = std::net::TcpListener::bind(addr)
            .map_err(io(format!("binding the control API on {addr}")))?;
        l.set_nonblocking(true)
            .map_err(io("set_nonblocking on the control TCP socket".into()))?;
        let local = l
            .local_addr()
            .map_err(io("reading the control TCP address".into()))?;
        let core = self.core.clone();
        let mut stop = self.metrics_stop.subscribe();
        *slot = Some(self.rt.spawn(async move {
            let incoming = match tokio::net::TcpListener::from_std(l) {
                Ok(l) => tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot register the control TCP socket");
                    return;
                }
            };
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = grpc::serve(core, incoming, Some(tls.config), stop).await {
                tracing::error!(error = %e, %local, "control TCP listener failed");
            }
        }));
        tracing::info!(%local, "control API on TCP (mutual TLS)");
        self.core
            .control_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("https://{local}"));
        // Other nodes forward to this address: in the record before "ready".
        self.rt.block_on(self.core.refresh_record());
        Ok(local)
    }

    /// The client identity this node presents to the other nodes' TCP listeners
    /// when it forwards a request (its certificate and key; the CA that signed
    /// theirs). Without one, it forwards over their Unix sockets (same machine).
    pub fn set_peer_tls(&self, tls: crate::tls::ClientTls) {
        self.core.set_peer_tls(tls);
    }

    /// Stops serving, closes the pools and removes the socket.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.metrics_stop.send(true);
        // The TCP listener drains its calls before the pools close (below).
        let tcp = self.tcp.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = tcp {
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = self
                    .rt
                    .block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await });
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The control plane's runtime: two workers, its own blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime, ControlError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("ferrox-ctl")
        .enable_all()
        .build()
        .map_err(|source| ControlError::Io {
            during: "starting the control runtime".into(),
            source,
        })
}

/// Binds `path` with mode 0600 and no window in which another user could connect:
/// bound under a temporary name, chmod-ed, then renamed into place. A stale socket is
/// replaced; a live one (another daemon) is an error.
fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |during: String| move |source| ControlError::Io { during, source };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::FailedPrecondition(format!(
                "{} is in use: another ferrox daemon serves it",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io(format!("removing stale {}", path.display())))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(io(format!("binding {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod 0600 {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))?;
    l.set_nonblocking(true)
        .map_err(io("set_nonblocking on the control socket".into()))?;
    Ok(l)
}
