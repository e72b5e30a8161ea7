//! `NvmfBdev`: a remote namespace as a block device, and the controller session its
//! queues share.

use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrox_bdev::{BdevError, BdevInfo, BlockDevice, ChannelImpl, Ops};
use ferrox_nvme_spec::{Command, IdentifyController, IdentifyNamespace, Status};
use ferrox_reactor::{AbortHandle, Reactor};
use zerocopy::FromBytes;

use super::qpair::QPair;
use super::sync::{block, pause, ConnectParams, Mode, SyncQueue};
use super::{HostError, HostOptions, TargetUrl};
use crate::pdu::Digests;

struct Ctrl {
    admin: Option<SyncQueue>,
    cntlid: u16,
    /// Bumped each time the controller is re-created.
    generation: u64,
    /// The controller accepted SQ flow control disable: I/O queues ask for it too.
    sqflow_off: bool,
    /// Someone re-creates the admin queue (without holding the lock): wait for it.
    recreating: bool,
}

/// Clears [`Ctrl::recreating`] however the re-creation ends (a task may be dropped).
struct Recreating<'a>(&'a Mutex<Ctrl>);

impl Drop for Recreating<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).recreating = false;
    }
}

/// What [`Session::io_queue_in`] finds of the controller.
enum Claim {
    Have(u16, u64, bool),
    Wait,
    Recreate,
}

/// What every queue of one remote controller shares.
pub(super) struct Session {
    pub url: TargetUrl,
    pub opts: HostOptions,
    pub digests: Digests,
    ctrl: Mutex<Ctrl>,
    next_qid: AtomicU16,
    max_qid: u16,
    pub in_capsule: usize,
    stop: AtomicBool,
    /// A keep-alive task runs (on the reactor of a channel), and how to stop it.
    pub(super) ka_running: AtomicBool,
    ka: Mutex<Option<AbortHandle>>,
}

/// What the controller set-up learned.
struct Setup {
    admin: SyncQueue,
    cntlid: u16,
    ctrl: IdentifyController,
    ns: IdentifyNamespace,
    queues: u16,
    sqflow_off: bool,
}

impl Session {
    /// The device is being dropped: nothing may connect any more.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Creates the controller: admin queue, enable, Identify, Number of Queues. In
    /// [`Mode::Task`] it runs as a task of a reactor; the admin queue it returns is a
    /// blocking one either way.
    async fn setup(
        mode: Mode,
        url: &TargetUrl,
        opts: &HostOptions,
        digests: Digests,
    ) -> Result<Setup, HostError> {
        let connect = async |disable_sq_flow_control| {
            let mut a = SyncQueue::open_in(mode, &url.addr, digests, opts.connect_timeout).await?;
            let c = a
                .fabrics_connect_in(&ConnectParams {
                    qid: 0,
                    sqsize: 31,
                    kato: opts.kato_ms,
                    cntlid: 0xFFFF,
                    subnqn: &url.nqn,
                    hostnqn: &opts.hostnqn,
                    hostid: opts.hostid,
                    disable_sq_flow_control,
                })
                .await?;
            Ok::<_, HostError>((a, c))
        };
        let mut sqflow_off = opts.disable_sq_flow_control;
        let (mut a, mut c) = connect(sqflow_off).await?;
        if sqflow_off && !c.status().is_success() {
            // A controller that cannot disable SQ flow control refuses the Connect
            // asking for it: ask again, on a new connection, without. (Any other
            // refusal comes back the same way.)
            tracing::info!(status = %c.status(), "Connect disabling SQ flow control refused; connecting with it");
            sqflow_off = false;
            (a, c) = connect(false).await?;
        }
        if !c.status().is_success() {
            return Err(HostError::Status {
                what: "Connect (admin queue)",
                status: c.status(),
            });
        }
        let cntlid = c.dw0 as u16;
        a.enable_in().await?;
        let (_, d) = a
            .exec_ok_in(
                "Identify Controller",
                Command::new(0x06, 0).with_cdws([1, 0, 0, 0, 0, 0]),
                &[],
                4096,
            )
            .await?;
        let ctrl = IdentifyController::read_from_bytes(&d)
            .map_err(|_| HostError::Protocol("short Identify Controller".into()))?;
        let (_, d) = a
            .exec_ok_in(
                "Identify Namespace",
                Command::new(0x06, 0)
                    .with_nsid(url.nsid)
                    .with_cdws([0, 0, 0, 0, 0, 0]),
                &[],
                4096,
            )
            .await?;
        let ns = IdentifyNamespace::read_from_bytes(&d)
            .map_err(|_| HostError::Protocol("short Identify Namespace".into()))?;
        if ns.nsze == 0 {
            return Err(HostError::NoNamespace(url.nsid));
        }
        let want = 63u32;
        let (c, _) = a
            .exec_ok_in(
                "Set Features (Number of Queues)",
                Command::new(0x09, 0).with_cdws([0x07, want | (want << 16), 0, 0, 0, 0]),
                &[],
                0,
            )
            .await?;
        let queues = ((c.dw0 & 0xffff).min(c.dw0 >> 16) + 1) as u16;
        Ok(Setup {
            admin: a.into_blocking()?,
            cntlid,
            ctrl,
            ns,
            queues,
            sqflow_off,
        })
    }

    /// Connects I/O queue `qid` (blocking). When the controller is gone (the target
    /// restarted), re-creates it once and retries.
    pub fn io_queue(&self, qid: u16) -> Result<SyncQueue, HostError> {
        block(self.io_queue_in(Mode::Blocking, qid))
    }

    /// [`Session::io_queue`] in `mode`: as a reactor's task in [`Mode::Task`]. The
    /// session's lock is never held across a wait: one caller re-creates the admin
    /// queue while the others (tasks) wait for it; a blocking caller, which may be a
    /// reactor's thread that the re-creating task needs, gives up instead.
    pub(super) async fn io_queue_in(&self, mode: Mode, qid: u16) -> Result<SyncQueue, HostError> {
        let wait_until = std::time::Instant::now() + self.opts.connect_timeout * 8;
        let mut attempt = 0;
        while attempt < 2 {
            if self.stopping() {
                // The device is closing: no new admin queue or I/O queue on the target.
                return Err(HostError::Io(std::io::Error::other(
                    "the device is closing",
                )));
            }
            let claim = {
                let mut c = self.ctrl.lock().unwrap_or_else(|e| e.into_inner());
                if c.admin.is_some() {
                    Claim::Have(c.cntlid, c.generation, c.sqflow_off)
                } else if c.recreating {
                    Claim::Wait
                } else {
                    c.recreating = true;
                    Claim::Recreate
                }
            };
            let (cntlid, generation, sqflow_off) = match claim {
                Claim::Have(cntlid, generation, sqflow_off) => (cntlid, generation, sqflow_off),
                Claim::Wait => {
                    if mode == Mode::Blocking || std::time::Instant::now() > wait_until {
                        return Err(HostError::Io(std::io::Error::other(
                            "the controller is being re-created",
                        )));
                    }
                    pause(mode, std::time::Duration::from_millis(10)).await;
                    continue;
                }
                Claim::Recreate => {
                    let _flag = Recreating(&self.ctrl);
                    self.recreate(mode).await?;
                    continue;
                }
            };
            attempt += 1;
            let mut q = SyncQueue::open_in(
                mode,
                &self.url.addr,
                self.digests,
                self.opts.connect_timeout,
            )
            .await?;
            // Even the Connect data goes by R2T when IOCCSZ leaves it no room.
            q.in_capsule = self.in_capsule;
            let sqsize = self.opts.queue_depth.clamp(2, 128) - 1;
            let r = q
                .fabrics_connect_in(&ConnectParams {
                    qid,
                    sqsize,
                    kato: 0,
                    cntlid,
                    subnqn: &self.url.nqn,
                    hostnqn: &self.opts.hostnqn,
                    hostid: self.opts.hostid,
                    disable_sq_flow_control: sqflow_off,
                })
                .await?;
            if r.status().is_success() {
                return Ok(q);
            }
            if attempt == 1 && r.status().code() == Status::CONNECT_INVALID_PARAMETERS {
                let mut c = self.ctrl.lock().unwrap_or_else(|e| e.into_inner());
                if c.generation == generation {
                    c.admin = None;
                }
                continue;
            }
            return Err(HostError::Status {
                what: "Connect (I/O queue)",
                status: r.status(),
            });
        }
        unreachable!("the second attempt returns")
    }

    /// A new controller for the session (the target lost it), without its lock held.
    async fn recreate(&self, mode: Mode) -> Result<(), HostError> {
        let s = Self::setup(mode, &self.url, &self.opts, self.digests).await?;
        let mut c = self.ctrl.lock().unwrap_or_else(|e| e.into_inner());
        c.admin = Some(s.admin);
        c.cntlid = s.cntlid;
        c.sqflow_off = s.sqflow_off;
        c.generation += 1;
        tracing::info!(target_addr = %self.url.addr, nqn = %self.url.nqn, cntlid = s.cntlid, "reconnected to the target controller");
        Ok(())
    }

    pub fn next_qid(&self) -> u16 {
        let q = self.next_qid.fetch_add(1, Ordering::Relaxed);
        (q - 1) % self.max_qid + 1
    }

    pub(super) fn ka_period(&self) -> Duration {
        Duration::from_millis(u64::from(self.opts.kato_ms / 2).max(50))
    }

    /// For one Keep Alive: a clone of the admin socket, a command id and the digests;
    /// `None` (skip this round) when there is no admin queue or the lock is taken (a
    /// blocking set-up or shutdown holds it).
    pub(super) fn admin_for_keep_alive(
        &self,
    ) -> Result<Option<(TcpStream, u16, Digests)>, HostError> {
        let Ok(mut c) = self.ctrl.try_lock() else {
            return Ok(None);
        };
        let Some(a) = c.admin.as_mut() else {
            return Ok(None);
        };
        Ok(Some((a.sock.try_clone()?, a.next_cid(), self.digests)))
    }

    pub(super) fn keep_alive_failed(&self, e: &HostError) {
        if self.stopping() {
            return;
        }
        // Never wait for the lock on a reactor: a busy lock is someone re-creating it.
        if let Ok(mut c) = self.ctrl.try_lock() {
            tracing::warn!(target_addr = %self.url.addr, error = %e, "keep alive failed; the controller will be re-created on the next I/O");
            c.admin = None;
        }
    }

    /// Starts the keep-alive task on `r` unless one runs.
    fn start_keep_alive(self: &Arc<Self>, r: &Reactor) {
        if self.opts.kato_ms == 0 || self.stopping() || self.ka_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let t = r.spawn_local(super::keepalive::run(self.clone()));
        *self.ka.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.abort_handle());
    }
}

/// A namespace on a remote NVMe/TCP target.
pub struct NvmfBdev {
    info: BdevInfo,
    session: Arc<Session>,
}

impl NvmfBdev {
    /// Connects to `url` (`nvme+tcp://ADDR:PORT/NQN[?nsid=N]`) and identifies the
    /// namespace; I/O queues connect when reactors open channels.
    pub fn connect(url: &str, opts: &HostOptions) -> Result<Arc<dyn BlockDevice>, HostError> {
        Ok(Self::connect_typed(url, opts)?)
    }

    pub fn connect_typed(url: &str, opts: &HostOptions) -> Result<Arc<NvmfBdev>, HostError> {
        let url = TargetUrl::parse(url)?;
        let digests = Digests {
            header: opts.header_digest,
            data: opts.data_digest,
        };
        let s = block(Session::setup(Mode::Blocking, &url, opts, digests))?;
        let lbaf = s.ns.lbaf[usize::from(s.ns.flbas & 0xf)];
        let block_size = 1u32
            .checked_shl(u32::from(lbaf.lbads))
            .filter(|b| *b >= 512)
            .ok_or_else(|| {
                HostError::Protocol(format!("unsupported LBA data size 2^{}", lbaf.lbads))
            })?;
        // MDTS is in units of the minimum page size (4 KiB); 0 means no limit. Our
        // buffers are at most 128 KiB.
        let mdts = if s.ctrl.mdts == 0 {
            u32::MAX
        } else {
            4096u32 << s.ctrl.mdts.min(20)
        };
        let max_transfer = mdts.min(128 << 10);
        let mut ops = Ops::FUA;
        if s.ctrl.vwc & 1 != 0 {
            ops |= Ops::FLUSH;
        }
        if s.ctrl.oncs & (1 << 3) != 0 {
            ops |= Ops::WRITE_ZEROES;
        }
        if s.ctrl.oncs & (1 << 2) != 0 {
            ops |= Ops::UNMAP;
        }
        let info = BdevInfo {
            name: format!("nvmf:{}/{}", url.nqn, url.nsid),
            uuid: s.ns.nguid,
            block_size,
            num_blocks: s.ns.nsze,
            optimal_io_boundary: u32::from(s.ns.noiob),
            max_transfer,
            ops,
            volatile_cache: s.ctrl.vwc & 1 != 0,
        };
        let in_capsule = (s.ctrl.ioccsz as usize * 16).saturating_sub(64);
        let session = Arc::new(Session {
            url,
            opts: opts.clone(),
            digests,
            ctrl: Mutex::new(Ctrl {
                admin: Some(s.admin),
                cntlid: s.cntlid,
                generation: 0,
                sqflow_off: s.sqflow_off,
                recreating: false,
            }),
            next_qid: AtomicU16::new(1),
            max_qid: s.queues.max(1),
            in_capsule,
            stop: AtomicBool::new(false),
            ka_running: AtomicBool::new(false),
            ka: Mutex::new(None),
        });
        // Connected on a reactor: keep-alive starts here and now. Otherwise it starts
        // with the first channel, or where [`NvmfBdev::keep_alive_on`] says.
        if let Some(r) = Reactor::try_current() {
            session.start_keep_alive(&r);
        }
        Ok(Arc::new(Self { info, session }))
    }

    /// Runs this controller's keep-alive on `reactor` from now on (unless it runs
    /// already): for a caller that connects off the reactors and may open its first
    /// channel later than the target's keep-alive timeout allows.
    pub fn keep_alive_on(&self, reactor: &ferrox_reactor::ReactorHandle) {
        let s = self.session.clone();
        if reactor.send(move |r| s.start_keep_alive(r)).is_err() {
            tracing::warn!(target_addr = %self.session.url.addr, "reactor mailbox full: keep-alive starts with the first channel");
        }
    }
}

impl Drop for NvmfBdev {
    fn drop(&mut self) {
        self.session.stop.store(true, Ordering::Release);
        if let Some(t) = self
            .session
            .ka
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        // Orderly shutdown of the controller: CC.SHN = normal.
        let mut c = self.session.ctrl.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = c.admin.as_mut() {
            let _ = a.prop_set(0x14, (6 << 16) | (4 << 20) | 1 | (1 << 14));
        }
        c.admin = None;
    }
}

fn errno_of(e: &HostError) -> i32 {
    match e {
        HostError::Connect { source, .. } | HostError::Io(source) => {
            source.raw_os_error().unwrap_or(libc::ECONNREFUSED)
        }
        _ => libc::EIO,
    }
}

impl BlockDevice for NvmfBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        self.session.start_keep_alive(r);
        let qid = self.session.next_qid();
        let q = self.session.io_queue(qid).map_err(|e| {
            tracing::warn!(error = %e, "cannot connect an I/O queue");
            BdevError::Io(errno_of(&e))
        })?;
        let sock: TcpStream = q.sock;
        let qp = QPair::start(r, self.session.clone(), qid, sock, q.maxh2cdata)
            .map_err(|e| BdevError::Io(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(qp)
    }
}
