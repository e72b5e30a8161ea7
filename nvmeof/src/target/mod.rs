//! The NVMe/TCP target: subsystems, listeners, and the connections they accept.

mod admin;
pub mod conn;
pub mod ctrl;
mod fabrics;
mod io;
pub mod limits;
pub mod queue;
pub mod subsystem;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferrox_bdev::BlockDevice;
use ferrox_nvme_spec::{validate_nqn, NqnError, DISCOVERY_NQN};
use ferrox_reactor::{PollStatus, Poller, Reactor, ReactorHandle, WakeSource};

pub use subsystem::{Namespace, Subsystem};

/// A subsystem to export.
#[derive(Clone, Default)]
pub struct SubsystemConfig {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    /// (NSID, device); NSID 0 picks the next free one.
    pub namespaces: Vec<(u32, Arc<dyn BlockDevice>)>,
    /// The target listeners (as configured, or as bound) through which hosts reach
    /// it; empty: every listener.
    pub listeners: Vec<SocketAddr>,
}

/// Errors setting up the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("subsystem NQN {nqn:?} is not valid: {source}")]
    Nqn {
        nqn: String,
        #[source]
        source: NqnError,
    },
    #[error("host NQN {nqn:?} is not valid: {source}")]
    HostNqn {
        nqn: String,
        #[source]
        source: NqnError,
    },
    #[error("subsystem {nqn}: {why}")]
    Subsystem { nqn: String, why: String },
    #[error("subsystem {0} is configured twice")]
    Duplicate(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the reactors did not answer while starting the target")]
    Reactor,
}

/// Default of [`TargetShared::connect_timeout`]. Hosts connect right after the TCP
/// handshake; this only has to be generous.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`TargetShared::stall_timeout`]: far beyond any pause of a live host.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`TargetShared::stall_min_bytes`]: 1 MiB per stall window (about
/// 280 kbit/s over the default 30 s).
pub const DEFAULT_STALL_MIN_BYTES: u64 = 1 << 20;

/// Default of [`TargetShared::discovery_kato`]: the keep-alive timeout a discovery
/// controller connected with KATO 0 gets (Linux's nvmet does the same, with this
/// value).
pub const DEFAULT_DISCOVERY_KATO: Duration = Duration::from_secs(120);

/// Default share of the bytes of the buffer pool's largest class the R2Ts of one
/// controller may hold
/// (see [`TargetShared::r2t_caps`]).
pub const DEFAULT_R2T_CTRL_PCT: usize = 25;
/// Default share of the same that all R2Ts together may hold; the rest
/// is a reserve for reads, in-capsule writes and Connects.
pub const DEFAULT_R2T_TOTAL_PCT: usize = 75;

/// Default of [`TargetShared::r2t_timeout`]: the host answers an R2T at once; this
/// leaves room for 32 R2Ts of 128 KiB on a link of about 1 Mbit/s.
pub const DEFAULT_R2T_TIMEOUT: Duration = Duration::from_secs(30);

/// A duration other threads may change, kept in whole milliseconds (at least 1).
struct AtomicDuration(AtomicU64);

impl AtomicDuration {
    fn new(d: Duration) -> Self {
        let a = Self(AtomicU64::new(0));
        a.set(d);
        a
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        self.0.store(ms, Ordering::Relaxed);
    }
}

/// One bound listener.
#[derive(Debug, Clone)]
struct ListenerEntry {
    configured: SocketAddr,
    /// Port 0 resolved.
    bound: SocketAddr,
    /// From the configuration: it serves every subsystem without listeners of its
    /// own, and stays until the target stops. Listeners opened at run time serve
    /// only the subsystems that name them and close when none does any more.
    shared: bool,
    /// Set to make its poller close the socket.
    closed: Arc<AtomicBool>,
}

/// State every connection and controller of the target shares.
pub struct TargetShared {
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    listeners: RwLock<Vec<ListenerEntry>>,
    pub reactors: Arc<[ReactorHandle]>,
    next_conn: AtomicU64,
    next_reactor: AtomicUsize,
    pub discovery_genctr: AtomicU64,
    node_id: [u8; 16],
    /// Milliseconds an accepted connection may take to become a connected queue
    /// (ICReq and Fabrics Connect) before it is closed.
    connect_timeout: AtomicDuration,
    /// Milliseconds a connection's responses may wait for a host that reads less
    /// than `stall_min_bytes` of them before the connection is closed.
    stall_timeout: AtomicDuration,
    /// Bytes a host with responses waiting must read per stall window.
    stall_min_bytes: AtomicU64,
    /// Bytes of pool buffers all R2Ts hold (see [`Self::r2t_caps`]).
    pub r2t_held: Arc<AtomicUsize>,
    /// Percent of the largest pool class's bytes one controller's R2Ts may hold.
    r2t_ctrl_pct: AtomicUsize,
    /// Percent of the same all R2Ts together may hold.
    r2t_total_pct: AtomicUsize,
    /// The bytes of the pool's largest class, read once.
    pool_bytes: std::sync::OnceLock<usize>,
    /// Milliseconds an R2T may wait for all of its data before the connection is
    /// closed.
    r2t_timeout: AtomicDuration,
    /// Connections closed because an R2T went unanswered ([`Self::r2t_timeout`]).
    pub r2t_timeouts: AtomicU64,
    /// Caps on open connections, in all and per peer address.
    pub limits: Arc<limits::ConnLimits>,
    /// The cap on discovery controllers per peer address.
    pub discovery_limits: Arc<limits::DiscoveryLimits>,
    /// Milliseconds of keep-alive a discovery controller connected with KATO 0 gets.
    discovery_kato: AtomicDuration,
}

impl TargetShared {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(nqn)
            .cloned()
    }

    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Adds a subsystem while the target runs (discovery log generation bumps).
    pub fn add_subsystem(&self, sc: SubsystemConfig) -> Result<Arc<Subsystem>, TargetError> {
        let nqn = sc.nqn.clone();
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let sub = Arc::new(build_subsystem(sc, self.node_id, &listeners)?);
        let mut map = self.subsystems.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&nqn) {
            return Err(TargetError::Duplicate(nqn));
        }
        map.insert(nqn, sub.clone());
        drop(map);
        self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
        Ok(sub)
    }

    /// Removes a subsystem; its controllers are torn down and their queues closed.
    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), TargetError> {
        if nqn == DISCOVERY_NQN {
            return Err(TargetError::Subsystem {
                nqn: nqn.to_string(),
                why: "the discovery subsystem cannot be removed".to_string(),
            });
        }
        let sub = self
            .subsystems
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(nqn)
            .ok_or_else(|| TargetError::Subsystem {
                nqn: nqn.to_string(),
                why: "no such subsystem".to_string(),
            })?;
        self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
        for c in sub.controllers() {
            c.teardown("subsystem removed");
        }
        self.close_unused_listeners();
        Ok(())
    }

    /// Closes the listeners opened at run time ([`Self::add_listener`]) that no
    /// subsystem names any more, and returns their addresses. Connections accepted
    /// through them stay. [`Self::remove_subsystem`] calls it; call it after an
    /// `add_listener` whose subsystem could not be added.
    pub fn close_unused_listeners(&self) -> Vec<SocketAddr> {
        let subs = self.subsystems();
        let mut closed = Vec::new();
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| {
                let used = l.shared || subs.iter().any(|s| s.listeners.contains(&l.bound));
                if !used {
                    l.closed.store(true, Ordering::Release);
                    closed.push(l.bound);
                }
                used
            });
        if !closed.is_empty() {
            self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
            // A parked reactor 0 polls its listeners again once it has a message.
            if self.reactors[0].send(|_r| {}).is_err() {
                tracing::warn!("reactor 0's mailbox is full: listeners close on its next turn");
            }
            tracing::info!(?closed, "closing listeners no subsystem uses any more");
        }
        closed
    }

    /// Every listener, as bound (port 0 resolved).
    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.bound)
            .collect()
    }

    fn shared_listeners(&self) -> Vec<SocketAddr> {
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.shared)
            .map(|l| l.bound)
            .collect()
    }

    /// Whether a host connected through `listener` (as bound) reaches `sub`: the
    /// discovery subsystem through every listener, a subsystem with listeners of its
    /// own through those, any other through the configuration's listeners.
    pub fn reaches(&self, sub: &Subsystem, listener: SocketAddr) -> bool {
        if sub.discovery {
            return true;
        }
        if !sub.listeners.is_empty() {
            return sub.listeners.contains(&listener);
        }
        self.listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.shared && l.bound == listener)
    }

    /// Binds a listener while the target runs (a volume published on an address
    /// nobody listens on yet) and returns its bound address. It serves only the
    /// subsystems that name it (and discovery). Blocks until reactor 0
    /// has taken it: not to be called on a reactor.
    pub fn add_listener(self: &Arc<Self>, addr: SocketAddr) -> Result<SocketAddr, TargetError> {
        // A listener on the same address that was just closed goes away on reactor
        // 0's next turn: give it a moment before calling the address taken.
        let mut tries = 0;
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => return Err(TargetError::Bind { addr, source }),
            }
        };
        l.set_nonblocking(true)
            .map_err(|source| TargetError::Bind { addr, source })?;
        let local = l.local_addr().unwrap_or(addr);
        let closed = Arc::new(AtomicBool::new(false));
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(ListenerEntry {
                configured: addr,
                bound: local,
                shared: false,
                closed: closed.clone(),
            });
        let t = self.clone();
        let added = self.reactors[0]
            .call(move |r| {
                r.add_poller(Rc::new(Listener::new(l, local, t, closed)));
            })
            .map_err(|_| TargetError::Reactor)
            .and_then(|reply| reply.wait().map_err(|_| TargetError::Reactor));
        if let Err(e) = added {
            self.listeners
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|l| l.bound != local);
            return Err(e);
        }
        self.discovery_genctr.fetch_add(1, Ordering::AcqRel);
        tracing::info!("listening on {local} (added at run time)");
        Ok(local)
    }

    /// How long an accepted connection may take to send ICReq and a Fabrics
    /// Connect; one that has not is closed, so idle sockets cannot pile up.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.get()
    }

    /// Sets [`Self::connect_timeout`] for connections accepted from now on.
    pub fn set_connect_timeout(&self, d: Duration) {
        self.connect_timeout.set(d);
    }

    /// How long a connection's responses may wait for a host that reads less than
    /// [`Self::stall_min_bytes`] of them (its socket stays full); then the
    /// connection is closed and the buffers its responses held go back to the pool
    /// for everyone else.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout.get()
    }

    /// Sets [`Self::stall_timeout`] (stalls that start from now on).
    pub fn set_stall_timeout(&self, d: Duration) {
        self.stall_timeout.set(d);
    }

    /// What a host whose responses wait (its socket is full) must read of them in
    /// each [`Self::stall_timeout`]: a window in which it reads less, without
    /// catching up, closes the connection.
    pub fn stall_min_bytes(&self) -> u64 {
        self.stall_min_bytes.load(Ordering::Relaxed)
    }

    /// Sets [`Self::stall_min_bytes`] (at least 1).
    pub fn set_stall_min_bytes(&self, bytes: u64) {
        self.stall_min_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    /// The keep-alive timeout given to a discovery controller whose host connected
    /// with KATO 0 (the kernel's one-shot `nvme discover` does, and is done within
    /// it): such a controller, idle that long, is torn down like any whose
    /// keep-alive expired, so it cannot be held forever.
    pub fn discovery_kato(&self) -> Duration {
        self.discovery_kato.get()
    }

    /// Sets [`Self::discovery_kato`] for discovery controllers created from now on.
    pub fn set_discovery_kato(&self, d: Duration) {
        self.discovery_kato.set(d);
    }

    /// What R2Ts may hold of the buffer pool, in bytes: (one controller, all
    /// together), as shares of the bytes of the pool's largest class. A write whose R2T would pass a cap waits (queued in its
    /// connection, like one waiting for a free buffer) until others' data is in.
    /// Read on the reactors, at accept and at Connect.
    pub fn r2t_caps(&self) -> (usize, usize) {
        // The largest class: what the largest transfers come from, and the scarce
        // one (smaller buffers fall back to it when their class runs out).
        let pool = *self.pool_bytes.get_or_init(|| {
            Reactor::with(|r| r.pool().class_stats())
                .iter()
                .map(|c| c.size * c.count)
                .next_back()
                .unwrap_or(0)
        });
        let pct = |a: &AtomicUsize| {
            (pool.saturating_mul(a.load(Ordering::Relaxed)) / 100).max(conn::MAX_TRANSFER)
        };
        (pct(&self.r2t_ctrl_pct), pct(&self.r2t_total_pct))
    }

    /// Sets the shares of [`Self::r2t_caps`] in percent (1 to 100) for queues
    /// connected from now on.
    pub fn set_r2t_shares(&self, ctrl_pct: usize, total_pct: usize) {
        self.r2t_ctrl_pct
            .store(ctrl_pct.clamp(1, 100), Ordering::Relaxed);
        self.r2t_total_pct
            .store(total_pct.clamp(1, 100), Ordering::Relaxed);
    }

    /// How long an R2T may wait for the host's data (all of it); then the
    /// connection is closed and the buffers its R2Ts held go back to the pool.
    pub fn r2t_timeout(&self) -> Duration {
        self.r2t_timeout.get()
    }

    /// Sets [`Self::r2t_timeout`] (checked against R2Ts out, from the next check).
    pub fn set_r2t_timeout(&self, d: Duration) {
        self.r2t_timeout.set(d);
    }

    /// The listeners through which hosts reach `sub`.
    pub fn listeners_of(&self, sub: &Subsystem) -> Vec<SocketAddr> {
        if sub.discovery {
            self.listeners()
        } else if sub.listeners.is_empty() {
            self.shared_listeners()
        } else {
            sub.listeners.clone()
        }
    }
}

/// A running NVMe/TCP target.
pub struct Target {
    shared: Arc<TargetShared>,
}

fn check_text(nqn: &str, what: &str, s: &str, max: usize) -> Result<(), TargetError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(TargetError::Subsystem {
            nqn: nqn.to_string(),
            why: format!("{what} {s:?} must be 1 to {max} printable ASCII characters"),
        });
    }
    Ok(())
}

/// Checks one subsystem's configuration and builds it.
fn build_subsystem(
    sc: SubsystemConfig,
    node_id: [u8; 16],
    listeners: &[ListenerEntry],
) -> Result<Subsystem, TargetError> {
    validate_nqn(&sc.nqn).map_err(|source| TargetError::Nqn {
        nqn: sc.nqn.clone(),
        source,
    })?;
    if sc.nqn == DISCOVERY_NQN {
        return Err(TargetError::Subsystem {
            nqn: sc.nqn,
            why: "the discovery NQN cannot be configured".to_string(),
        });
    }
    check_text(&sc.nqn, "serial number", &sc.serial, 20)?;
    check_text(&sc.nqn, "model number", &sc.model, 40)?;
    for h in &sc.hosts {
        validate_nqn(h).map_err(|source| TargetError::HostNqn {
            nqn: h.clone(),
            source,
        })?;
    }
    if !sc.allow_any_host && sc.hosts.is_empty() {
        return Err(TargetError::Subsystem {
            nqn: sc.nqn,
            why: "no host may connect: set allow_any_host or list hosts".to_string(),
        });
    }
    let mut sub = Subsystem::new(
        &sc.nqn,
        &sc.serial,
        &sc.model,
        sc.allow_any_host,
        sc.hosts,
        node_id,
    );
    for want in &sc.listeners {
        let Some(got) = listeners
            .iter()
            .find(|l| l.configured == *want || l.bound == *want)
            .map(|l| l.bound)
        else {
            return Err(TargetError::Subsystem {
                nqn: sc.nqn,
                why: format!(
                    "listener {want} is not one of the target's ({:?})",
                    listeners.iter().map(|l| l.bound).collect::<Vec<_>>()
                ),
            });
        };
        if !sub.listeners.contains(&got) {
            sub.listeners.push(got);
        }
    }
    for (nsid, dev) in sc.namespaces {
        sub.add_namespace(nsid, dev)
            .map_err(|why| TargetError::Subsystem {
                nqn: sc.nqn.clone(),
                why,
            })?;
    }
    Ok(sub)
}

impl Target {
    /// Checks the configuration, creates the subsystems (and the discovery
    /// subsystem), binds every listener and starts accepting on the first reactor.
    pub fn start(
        reactors: &[ReactorHandle],
        node_id: [u8; 16],
        subsystems: Vec<SubsystemConfig>,
        listeners: &[SocketAddr],
    ) -> Result<Self, TargetError> {
        // Checked without binding first, so a configuration error binds nothing.
        let unbound: Vec<ListenerEntry> = listeners
            .iter()
            .map(|&a| ListenerEntry {
                configured: a,
                bound: a,
                shared: true,
                closed: Arc::default(),
            })
            .collect();
        for sc in &subsystems {
            build_subsystem(
                SubsystemConfig {
                    namespaces: Vec::new(),
                    ..sc.clone()
                },
                node_id,
                &unbound,
            )?;
        }
        let mut bound = Vec::new();
        for &addr in listeners {
            let l = TcpListener::bind(addr).map_err(|source| TargetError::Bind { addr, source })?;
            l.set_nonblocking(true)
                .map_err(|source| TargetError::Bind { addr, source })?;
            let local = l.local_addr().unwrap_or(addr);
            bound.push((addr, local, l));
        }
        let pairs: Vec<ListenerEntry> = bound
            .iter()
            .map(|b| ListenerEntry {
                configured: b.0,
                bound: b.1,
                shared: true,
                closed: Arc::default(),
            })
            .collect();
        let mut map = BTreeMap::new();
        let disc = Subsystem::new(DISCOVERY_NQN, "", "", true, Vec::new(), node_id);
        map.insert(DISCOVERY_NQN.to_string(), Arc::new(disc));
        for sc in subsystems {
            let nqn = sc.nqn.clone();
            let sub = build_subsystem(sc, node_id, &pairs)?;
            if map.insert(nqn.clone(), Arc::new(sub)).is_some() {
                return Err(TargetError::Duplicate(nqn));
            }
        }
        let shared = Arc::new(TargetShared {
            subsystems: RwLock::new(map),
            listeners: RwLock::new(pairs),
            reactors: reactors.to_vec().into(),
            next_conn: AtomicU64::new(1),
            next_reactor: AtomicUsize::new(0),
            discovery_genctr: AtomicU64::new(1),
            node_id,
            connect_timeout: AtomicDuration::new(DEFAULT_CONNECT_TIMEOUT),
            stall_timeout: AtomicDuration::new(DEFAULT_STALL_TIMEOUT),
            stall_min_bytes: AtomicU64::new(DEFAULT_STALL_MIN_BYTES),
            r2t_timeout: AtomicDuration::new(DEFAULT_R2T_TIMEOUT),
            r2t_held: Arc::default(),
            r2t_ctrl_pct: AtomicUsize::new(DEFAULT_R2T_CTRL_PCT),
            r2t_total_pct: AtomicUsize::new(DEFAULT_R2T_TOTAL_PCT),
            pool_bytes: std::sync::OnceLock::new(),
            r2t_timeouts: AtomicU64::new(0),
            limits: Arc::default(),
            discovery_limits: Arc::default(),
            discovery_kato: AtomicDuration::new(DEFAULT_DISCOVERY_KATO),
        });
        for (_, addr, l) in bound {
            let t = shared.clone();
            reactors[0]
                .call(move |r| {
                    r.add_poller(Rc::new(Listener::new(l, addr, t, Arc::default())));
                })
                .map_err(|_| TargetError::Reactor)?
                .wait()
                .map_err(|_| TargetError::Reactor)?;
            tracing::info!("listening on {addr}");
        }
        Ok(Self { shared })
    }

    pub fn shared(&self) -> &Arc<TargetShared> {
        &self.shared
    }

    /// Addresses actually bound (port 0 resolved).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.shared.listeners()
    }

    pub fn node_id(&self) -> [u8; 16] {
        self.shared.node_id
    }
}

struct Listener {
    sock: TcpListener,
    /// As bound.
    addr: SocketAddr,
    target: Arc<TargetShared>,
    closed: Arc<AtomicBool>,
    /// A descriptor held in reserve: when the process runs out (EMFILE), closing it
    /// lets the listener accept, and at once close, the connections in its backlog,
    /// instead of seeing a readable socket it cannot accept from forever.
    spare: RefCell<Option<std::fs::File>>,
    /// Until when the listener neither accepts nor asks to be woken by its socket:
    /// set when accepting fails in a way that would fail again at once (out of
    /// descriptors with no spare to shed through, ENOMEM, …), so a readable listener
    /// it cannot accept from never spins the reactor. A timer wakes it.
    backoff_until: Cell<Option<Instant>>,
}

/// How long a listener rests after an accept failure it cannot get past.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Listener {
    fn new(
        sock: TcpListener,
        addr: SocketAddr,
        target: Arc<TargetShared>,
        closed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            sock,
            addr,
            target,
            closed,
            spare: RefCell::new(open_spare()),
            backoff_until: Cell::new(None),
        }
    }

    /// Stops accepting for [`ACCEPT_BACKOFF`]; a timer wakes the reactor after it.
    fn back_off(&self, r: &Reactor, why: &std::io::Error) {
        tracing::warn!(listener = %self.addr, error = %why, "accepting failed; pausing the listener for {ACCEPT_BACKOFF:?}");
        self.backoff_until.set(Some(r.now() + ACCEPT_BACKOFF));
        r.add_timer(ACCEPT_BACKOFF, |_| {});
    }

    /// Out of descriptors: accepts one connection through the spare descriptor and
    /// closes it. Returns whether one was taken off the backlog.
    fn shed_one(&self) -> bool {
        let mut spare = self.spare.borrow_mut();
        // A spare lost to a race (another thread took the freed descriptor) is
        // taken again as soon as a descriptor is free.
        if spare.take().or_else(open_spare).is_none() {
            return false;
        }
        let shed = match self.sock.accept() {
            Ok((sock, peer)) => {
                // Counted before the host can see the close.
                self.target
                    .limits
                    .refuse(Some(peer.ip()), limits::Refusal::NoDescriptors);
                drop(sock);
                true
            }
            Err(_) => false,
        };
        *spare = open_spare();
        shed
    }
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl Poller for Listener {
    fn poll(&self, r: &Reactor) -> PollStatus {
        if r.is_stopping() {
            return PollStatus::Done;
        }
        if self.closed.load(Ordering::Acquire) {
            tracing::info!("stopped listening on {}", self.addr);
            return PollStatus::Done;
        }
        if let Some(until) = self.backoff_until.get() {
            if r.now() < until {
                return PollStatus::Idle;
            }
            self.backoff_until.set(None);
        }
        let mut busy = false;
        for _ in 0..16 {
            match self.sock.accept() {
                Ok((s, peer)) => {
                    busy = true;
                    // Over a limit: the socket closes here, as it is dropped.
                    let Ok(permit) = self.target.limits.admit(peer.ip()) else {
                        continue;
                    };
                    let n = self.target.reactors.len();
                    let pick = self.target.next_reactor.fetch_add(1, Ordering::Relaxed) % n;
                    let (t, l) = (self.target.clone(), self.addr);
                    if pick == r.id() {
                        conn::Conn::start(r, s, t, l, permit);
                    } else if self.target.reactors[pick]
                        .send(move |r2| conn::Conn::start(r2, s, t, l, permit))
                        .is_err()
                    {
                        tracing::warn!(reactor = pick, "mailbox full: refusing a connection");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.shed_one() {
                        self.back_off(r, &e);
                        break;
                    }
                    busy = true;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR)) => {
                    // That connection is gone (or a signal came): the next may work.
                }
                Err(e) => {
                    self.back_off(r, &e);
                    break;
                }
            }
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn wake_source(&self) -> Option<WakeSource> {
        // Resting after a failure: the timer, not the readable socket, wakes it.
        if self.backoff_until.get().is_some() {
            return None;
        }
        Some(WakeSource {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN as u32,
        })
    }

    fn name(&self) -> &'static str {
        "nvme-tcp-listener"
    }
}
