//! `nvme`: each namespace of a controller driven through the user-space driver as a
//! [`BlockDevice`] named `nvme<N>n<nsid>`.
//!
//! A reactor that opens a channel on any namespace of a controller gets that
//! controller's I/O queue pair for itself (created on first use, shared by every
//! namespace on that reactor) and a poller that rings the SQ doorbell once per loop turn
//! for everything submitted since, reaps completions and checks deadlines.
//!
//! # Parking on the interrupt (adaptive mode)
//!
//! While I/O is in flight the poller polls the CQ every turn. When the reactor has been
//! idle past its threshold it parks and asks each poller for a wake source: the queue's
//! MSI-X eventfd. The handshake, in [`Poller::wake_source`]: drain the eventfd first,
//! then look at the CQ once more; a completion that arrived before the drain is seen
//! there and answered by signalling the eventfd ourselves (so the reactor's poll fires at
//! once), and one that arrives after the drain raises the interrupt, which the reactor is
//! now waiting for. No completion can slip between the two. In busy mode no vector is
//! routed (IEN=0), so interrupts cost nothing.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::{BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoOp, Ops};
use ferrox_reactor::{BufferPool, DmaBuf, PollMode, PollStatus, Poller, Reactor, WakeSource};

use crate::backing::DeviceBacking;
use crate::driver::{BufRef, Controller, ControllerOptions, Data, IoQueue, Namespace};
use crate::spec::{Command, DsmRange, IoOpcode, Oncs};
use crate::Error;

/// An attached controller and its namespaces as block devices.
#[derive(Debug)]
pub struct NvmeController {
    /// `nvme<N>`.
    pub name: String,
    /// The driver's controller.
    pub ctrl: Arc<Controller>,
    /// One block device per namespace.
    pub bdevs: Vec<Arc<NvmeBdev>>,
}

static NEXT_CTRL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Attaches the NVMe function at `bdf` (e.g. `0000:00:04.0`, bound to vfio-pci).
pub fn attach(
    bdf: &str,
    pool: &'static BufferPool,
    opts: ControllerOptions,
) -> Result<NvmeController, Error> {
    let dev = crate::vfio::VfioDevice::open(bdf)?;
    attach_backing(Arc::new(dev), pool, opts)
}

/// Like [`attach`], with the controller named `name` (its namespaces `<name>n<nsid>`)
/// instead of the next `nvme<N>`: what the daemon's `[[bdev]] kind = "nvme"` does.
pub fn attach_named(
    name: &str,
    bdf: &str,
    pool: &'static BufferPool,
    opts: ControllerOptions,
) -> Result<NvmeController, Error> {
    let dev = crate::vfio::VfioDevice::open(bdf)?;
    let ctrl = Controller::init(Arc::new(dev), pool, opts)?;
    Ok(wrap(name.to_string(), ctrl))
}

/// Attaches a controller behind any backing (the emulator in tests).
pub fn attach_backing(
    backing: Arc<dyn DeviceBacking>,
    pool: &'static BufferPool,
    opts: ControllerOptions,
) -> Result<NvmeController, Error> {
    let ctrl = Controller::init(backing, pool, opts)?;
    let name = format!(
        "nvme{}",
        NEXT_CTRL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    Ok(wrap(name, ctrl))
}

fn wrap(name: String, ctrl: Arc<Controller>) -> NvmeController {
    let bdevs = ctrl
        .namespaces()
        .iter()
        .map(|ns| Arc::new(NvmeBdev::new(&ctrl, &name, *ns)))
        .collect();
    NvmeController { name, ctrl, bdevs }
}

/// Checks a PCI address and writes it the way sysfs names it: `0000:00:04.0`, or
/// `00:04.0` (domain 0), hex digits in either case.
pub fn parse_bdf(s: &str) -> Result<String, String> {
    let bad =
        || format!("{s:?} is not a PCI address (expected DOMAIN:BUS:DEV.FN, e.g. 0000:00:04.0)");
    let t = s.trim().to_ascii_lowercase();
    let full = if t.matches(':').count() == 1 {
        format!("0000:{t}")
    } else {
        t
    };
    let (rest, func) = full.rsplit_once('.').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |p: &str, n: usize, max: u32| {
        p.len() == n
            && p.chars().all(|c| c.is_ascii_hexdigit())
            && u32::from_str_radix(p, 16).is_ok_and(|v| v <= max)
    };
    match parts.as_slice() {
        [d, b, dev]
            if hex(d, 4, 0xffff) && hex(b, 2, 0xff) && hex(dev, 2, 0x1f) && hex(func, 1, 7) =>
        {
            Ok(full)
        }
        _ => Err(bad()),
    }
}

impl NvmeController {
    /// Shuts the controller down and hands the device back. Every channel must have been
    /// closed and its reactor stopped (or its queue dropped) first.
    pub fn shutdown(self) -> Result<(), Error> {
        drop(self.bdevs);
        self.ctrl.shutdown()
    }
}

/// One namespace as a block device.
pub struct NvmeBdev {
    ctrl: Arc<Controller>,
    nsid: u32,
    info: BdevInfo,
}

impl std::fmt::Debug for NvmeBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeBdev")
            .field("info", &self.info)
            .finish()
    }
}

impl NvmeBdev {
    fn new(ctrl: &Arc<Controller>, prefix: &str, ns: Namespace) -> Self {
        let oncs = ctrl.oncs();
        let mut ops = Ops::FLUSH | Ops::FUA | Ops::STABLE_UUID;
        if oncs.contains(Oncs::WRITE_ZEROES) {
            ops |= Ops::WRITE_ZEROES;
        }
        if oncs.contains(Oncs::DSM) {
            ops |= Ops::UNMAP;
        }
        Self::with_uuid(ctrl, prefix, ns, ops)
    }

    /// The namespace's lasting identity: the drive's NGUID, else its EUI-64, else the
    /// NSID with a digest of the controller's whole serial and model numbers.
    fn uuid_of(ctrl: &Controller, ns: &Namespace) -> [u8; 16] {
        let mut uuid = [0u8; 16];
        if ns.nguid != [0; 16] {
            return ns.nguid;
        }
        if ns.eui64 != [0; 8] {
            uuid[..8].copy_from_slice(&ns.eui64);
            uuid[8..12].copy_from_slice(&ns.nsid.to_le_bytes());
            return uuid;
        }
        let id = ctrl.identify();
        // FNV-1a over the serial and model numbers, twice with different seeds.
        let fnv = |seed: u64| {
            id.sn.iter().chain(&id.mn).fold(seed, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        uuid[..4].copy_from_slice(&ns.nsid.to_le_bytes());
        uuid[4..12].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_le_bytes());
        uuid[12..].copy_from_slice(&fnv(0x5bd1_e995).to_le_bytes()[..4]);
        uuid
    }

    fn with_uuid(ctrl: &Arc<Controller>, prefix: &str, ns: Namespace, ops: Ops) -> Self {
        let uuid = Self::uuid_of(ctrl, &ns);
        Self {
            ctrl: ctrl.clone(),
            nsid: ns.nsid,
            info: BdevInfo {
                name: format!("{prefix}n{}", ns.nsid),
                uuid,
                block_size: ns.block_size,
                num_blocks: ns.num_blocks,
                optimal_io_boundary: 0,
                max_transfer: ctrl.max_transfer(),
                ops,
                volatile_cache: ctrl.identify().vwc & 1 != 0,
            },
        }
    }

    /// The namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }
}

type Ctx = (Completion, Option<DmaBuf>);

/// A reactor's queue pair on one controller, and its poller.
struct Runner {
    q: RefCell<IoQueue<Ctx>>,
    waiting: RefCell<VecDeque<(u32, IoOp, Completion)>>,
    done: RefCell<Vec<(Ctx, Result<crate::spec::Completion, Error>)>>,
    next_check: Cell<Instant>,
}

thread_local! {
    static RUNNERS: RefCell<HashMap<usize, Weak<Runner>>> = RefCell::new(HashMap::new());
}

const TIMEOUT_CHECK: Duration = Duration::from_millis(1);

impl Runner {
    fn get(ctrl: &Arc<Controller>, r: &Reactor) -> Result<Rc<Self>, BdevError> {
        let key = Arc::as_ptr(ctrl) as usize;
        if let Some(run) = RUNNERS.with(|m| m.borrow().get(&key).and_then(Weak::upgrade)) {
            return Ok(run);
        }
        let interrupts = r.poll_mode() == PollMode::Adaptive;
        let q = IoQueue::create(ctrl, interrupts).map_err(|e| {
            tracing::error!(error = %e, "cannot create an NVMe I/O queue for this reactor");
            BdevError::Io(libc::EBUSY)
        })?;
        let run = Rc::new(Self {
            done: RefCell::new(Vec::with_capacity(q.in_flight() + 1024)),
            q: RefCell::new(q),
            waiting: RefCell::new(VecDeque::with_capacity(256)),
            next_check: Cell::new(r.now() + TIMEOUT_CHECK),
        });
        r.add_poller(run.clone());
        // A command that never completes raises no interrupt: a parked reactor still
        // wakes this often to check deadlines (twice per I/O timeout; idle cost nil).
        let period = (ctrl.options().io_timeout / 2).max(TIMEOUT_CHECK);
        r.add_periodic(period, |_| {});
        RUNNERS.with(|m| m.borrow_mut().insert(key, Rc::downgrade(&run)));
        Ok(run)
    }

    /// Builds the command and submits it; gives the request back when the SQ is full.
    fn start(&self, nsid: u32, op: IoOp, done: Completion) -> Option<(u32, IoOp, Completion)> {
        let mut q = self.q.borrow_mut();
        if q.is_full() {
            return Some((nsid, op, done));
        }
        let (cmd, buf, data_len, dsm) = match op {
            IoOp::Read { lba, blocks, buf } => (
                Command::read(0, nsid, lba, (blocks - 1) as u16),
                Some(buf),
                true,
                None,
            ),
            IoOp::Write {
                lba,
                blocks,
                buf,
                fua,
            } => (
                Command::write(0, nsid, lba, (blocks - 1) as u16).with_fua(fua),
                Some(buf),
                true,
                None,
            ),
            IoOp::Flush => (Command::flush(0, nsid), None, false, None),
            IoOp::WriteZeroes { lba, blocks } => {
                if blocks > 65536 {
                    drop(q);
                    complete_later(
                        done,
                        Err(BdevError::TooLarge {
                            bytes: blocks,
                            max: 65536,
                        }),
                        None,
                    );
                    return None;
                }
                (
                    Command::write_zeroes(0, nsid, lba, (blocks - 1) as u16),
                    None,
                    false,
                    None,
                )
            }
            IoOp::Unmap { lba, blocks } => {
                let Ok(nlb) = u32::try_from(blocks) else {
                    drop(q);
                    complete_later(
                        done,
                        Err(BdevError::TooLarge {
                            bytes: blocks,
                            max: u32::MAX,
                        }),
                        None,
                    );
                    return None;
                };
                let mut c = Command::new(IoOpcode::DATASET_MANAGEMENT.0, 0).with_nsid(nsid);
                c.cdw11 = 1 << 2; // AD: deallocate
                (
                    c,
                    None,
                    false,
                    Some(DsmRange {
                        context_attributes: 0,
                        nlb,
                        slba: lba,
                    }),
                )
            }
        };
        let data = match (&buf, dsm) {
            (Some(b), _) if data_len => Data::Buf(BufRef::of(b)),
            (_, Some(r)) => Data::Dsm(r),
            _ => Data::None,
        };
        let r = q.submit(cmd, data, (done, buf));
        drop(q);
        if let Err((e, (done, buf))) = r {
            complete_later(done, Err(to_bdev(&e)), buf);
        }
        None
    }
}

/// Completes on the next loop turn (a completion never runs inside `submit`).
fn complete_later(done: Completion, res: Result<(), BdevError>, buf: Option<DmaBuf>) {
    Reactor::with(|r| ferrox_bdev::defer_completion(r, done, res, buf));
}

fn to_bdev(e: &Error) -> BdevError {
    match e {
        Error::IoTimeout { .. } => BdevError::Io(libc::ETIMEDOUT),
        Error::Reset => BdevError::Io(libc::ECANCELED),
        Error::QueueFull => BdevError::Io(libc::EAGAIN),
        Error::Command { status, .. } if status.code() == crate::spec::Status::LBA_OUT_OF_RANGE => {
            BdevError::Io(libc::ERANGE)
        }
        _ => BdevError::Io(libc::EIO),
    }
}

impl Poller for Runner {
    fn poll(&self, r: &Reactor) -> PollStatus {
        let mut busy = false;
        // Requests that found the SQ full go first, in order.
        loop {
            let next = self.waiting.borrow_mut().pop_front();
            let Some((nsid, op, done)) = next else { break };
            if let Some(back) = self.start(nsid, op, done) {
                self.waiting.borrow_mut().push_front(back);
                break;
            }
            busy = true;
        }
        let mut done = std::mem::take(&mut *self.done.borrow_mut());
        {
            let mut q = self.q.borrow_mut();
            busy |= q.commit();
            q.poll(&mut done);
            let now = r.now();
            if now >= self.next_check.get() {
                self.next_check.set(now + TIMEOUT_CHECK);
                if q.in_flight() > 0 {
                    q.check_timeouts(now, &mut done);
                }
            }
        }
        busy |= !done.is_empty();
        for ((c, buf), res) in done.drain(..) {
            match res {
                Ok(_) => c.complete(Ok(()), buf),
                Err(e) => {
                    tracing::warn!(error = %e, "NVMe I/O failed");
                    c.complete(Err(to_bdev(&e)), buf);
                }
            }
        }
        *self.done.borrow_mut() = done;
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn wake_source(&self) -> Option<WakeSource> {
        let q = self.q.borrow();
        let fd = q.interrupt()?;
        if q.arm_interrupt() {
            // A completion beat the drain: make the reactor's poll fire at once.
            fd.notify();
        }
        Some(WakeSource {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN as u32,
        })
    }

    fn name(&self) -> &'static str {
        "nvme-queue"
    }
}

impl BlockDevice for NvmeBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let runner = Runner::get(&self.ctrl, r)?;
        Ok(Rc::new(NvmeChannel {
            runner,
            nsid: self.nsid,
        }))
    }
}

struct NvmeChannel {
    runner: Rc<Runner>,
    nsid: u32,
}

impl ChannelImpl for NvmeChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        if !self.runner.waiting.borrow().is_empty() {
            self.runner
                .waiting
                .borrow_mut()
                .push_back((self.nsid, op, done));
            return;
        }
        if let Some(back) = self.runner.start(self.nsid, op, done) {
            self.runner.waiting.borrow_mut().push_back(back);
        }
    }

    fn in_flight(&self) -> usize {
        self.runner.q.borrow().in_flight() + self.runner.waiting.borrow().len()
    }
}

#[cfg(test)]
mod tests;
