//! Starting and stopping a set of reactors, one per core, and talking to them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mailbox::{oneshot, MailboxFull, Message, Reply, ReplyError};
use crate::pool::BufferPool;
use crate::reactor::{Reactor, ReactorOptions, ReactorStats, Shared};
use crate::ring::RingFeatures;
use crate::Error;

/// A `Send + Sync` handle to one reactor: send it work, read its statistics.
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("id", &self.shared.id)
            .field("core", &self.shared.core)
            .finish()
    }
}

impl ReactorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub fn id(&self) -> usize {
        self.shared.id
    }

    pub fn core(&self) -> usize {
        self.shared.core
    }

    /// Queues `f` to run on the reactor. A full mailbox hands the message back.
    pub fn send(&self, f: impl FnOnce(&Reactor) + Send + 'static) -> Result<(), MailboxFull> {
        self.send_boxed(Box::new(f))
    }

    pub fn send_boxed(&self, msg: Message) -> Result<(), MailboxFull> {
        if let Err(msg) = self.shared.mailbox.push(msg) {
            self.shared
                .stats
                .mailbox_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(MailboxFull(msg));
        }
        self.shared.kick();
        Ok(())
    }

    /// Runs `f` on the reactor and returns a reply to wait on or `.await` (from a
    /// plain thread, the tokio control plane, or a task on another reactor).
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Reactor) -> R + Send + 'static,
    ) -> Result<Reply<R>, ReplyError> {
        let (tx, rx) = oneshot();
        self.send(move |r| tx.send(f(r)))
            .map_err(|_| ReplyError::MailboxFull)?;
        Ok(rx)
    }

    /// Like [`ReactorHandle::call`], but rides out a full mailbox for up to `patience`
    /// (yielding between attempts), then blocks for the reply.
    pub fn call_wait<R: Send + 'static>(
        &self,
        patience: Duration,
        f: impl FnOnce(&Reactor) -> R + Send + 'static,
    ) -> Result<R, ReplyError> {
        let (tx, rx) = oneshot();
        let mut msg: Message = Box::new(move |r| tx.send(f(r)));
        let deadline = Instant::now() + patience;
        loop {
            match self.send_boxed(msg) {
                Ok(()) => return rx.wait(),
                Err(MailboxFull(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::yield_now();
                }
                Err(_) => return Err(ReplyError::MailboxFull),
            }
        }
    }

    pub fn stats(&self) -> ReactorStats {
        self.shared.snapshot()
    }
}

/// Which cores to run reactors on: a list (`0,1,4-6`) or a hex mask (`0x3`).
pub fn parse_cores(spec: &str) -> Result<Vec<usize>, Error> {
    let bad = |why: &str| Error::BadCores {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let spec_t = spec.trim();
    let mut cores = Vec::new();
    if let Some(hex) = spec_t
        .strip_prefix("0x")
        .or_else(|| spec_t.strip_prefix("0X"))
    {
        let mask = u128::from_str_radix(hex, 16).map_err(|_| bad("not a hex mask"))?;
        for bit in 0..128 {
            if mask & (1u128 << bit) != 0 {
                cores.push(bit);
            }
        }
    } else {
        for part in spec_t.split(',') {
            let part = part.trim();
            if let Some((a, b)) = part.split_once('-') {
                let a: usize = a.trim().parse().map_err(|_| bad("not a number"))?;
                let b: usize = b.trim().parse().map_err(|_| bad("not a number"))?;
                if a > b {
                    return Err(bad("a range must go upwards"));
                }
                cores.extend(a..=b);
            } else {
                cores.push(part.parse().map_err(|_| bad("not a number"))?);
            }
        }
    }
    if cores.is_empty() {
        return Err(bad("no core selected"));
    }
    let mut seen = cores.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != cores.len() {
        return Err(bad("a core is listed twice"));
    }
    Ok(cores)
}

/// Cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if v.is_empty() {
        v = (0..crate::sys::configured_cpus()).collect();
    }
    v.sort_unstable();
    v
}

/// Running reactors, one per core, stopped (and joined) on [`ReactorGroup::shutdown`]
/// or drop.
pub struct ReactorGroup {
    handles: Vec<ReactorHandle>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pool: &'static BufferPool,
    features: RingFeatures,
}

impl ReactorGroup {
    /// Starts one pinned reactor per core; either all start or none is left running.
    pub fn start(
        cores: &[usize],
        opts: &ReactorOptions,
        pool: &'static BufferPool,
    ) -> Result<Self, Error> {
        let avail = available_cores();
        for &c in cores {
            if !avail.contains(&c) {
                return Err(Error::NoSuchCore {
                    core: c,
                    available: avail.clone(),
                });
            }
        }
        crate::ring::sqpoll_supported();
        let stop = Arc::new(AtomicBool::new(false));
        let mut group = Self {
            handles: Vec::new(),
            threads: Vec::new(),
            stop: stop.clone(),
            pool,
            features: RingFeatures::default(),
        };
        for (id, &core) in cores.iter().enumerate() {
            let shared = Arc::new(Shared::new(id, core, opts.mailbox_capacity).map_err(Error::Io)?);
            let (ready_tx, ready_rx) = mpsc::channel();
            let opts = opts.clone();
            let stop = stop.clone();
            let sh = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("reactor-{id}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        let _ = ready_tx.send(Err(Error::Pin { core }));
                        return;
                    }
                    let reactor = match Reactor::new(sh, pool, opts) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(Error::Io(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((reactor.ring().features(), reactor.fixed_buffers())));
                    reactor.run(&stop);
                })
                .map_err(Error::Io)?;
            group.threads.push(thread);
            match ready_rx.recv() {
                Ok(Ok((features, fixed))) => {
                    if id == 0 {
                        tracing::info!(?features, fixed_buffers = fixed, "io_uring features");
                        group.features = features;
                    }
                    tracing::debug!(reactor = id, core, "reactor started");
                }
                Ok(Err(e)) => {
                    group.stop_all();
                    return Err(e);
                }
                Err(_) => {
                    group.stop_all();
                    return Err(Error::ThreadDied);
                }
            }
            group.handles.push(ReactorHandle { shared });
        }
        Ok(group)
    }

    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    pub fn pool(&self) -> &'static BufferPool {
        self.pool
    }

    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Stops every reactor (each drains its in-flight I/O) and joins its thread.
    pub fn shutdown(mut self) -> Vec<ReactorStats> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Vec<ReactorStats> {
        self.stop.store(true, Ordering::Release);
        for h in &self.handles {
            // Wake parked reactors so they see the flag.
            h.shared.wake.notify();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.handles.iter().map(|h| h.stats()).collect()
    }
}

impl Drop for ReactorGroup {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_all();
        }
    }
}
