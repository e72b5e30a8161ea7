//! Running benchmarks: a [`Session`] (the reactors), and [`run`], which takes one
//! workload through its passes — fill, measured workload, read-back — on a device.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrox_bdev::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::{oneshot, Replier, Reply};
use ferrox_reactor::{
    BufferPool, ClassConfig, DmaBuf, PollMode, PoolConfig, Reactor, ReactorGroup, ReactorHandle,
    ReactorOptions,
};

use crate::plan::{self, Plan, Progress, Workload};
use crate::stats::{self, CoreResult};
use crate::worker::{JobKind, JobSpec, Worker};
use crate::Error;

/// Pools are process-lifetime (leaked by design); reuse one per layout.
static POOLS: Mutex<Vec<(Vec<ClassConfig>, &'static BufferPool)>> = Mutex::new(Vec::new());

fn pool_for(classes: Vec<ClassConfig>) -> Result<&'static BufferPool, Error> {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(c, _)| *c == classes) {
        return Ok(p);
    }
    let p = BufferPool::new(&PoolConfig {
        classes: classes.clone(),
        hugepages: true,
    })
    .map_err(|e| Error::Run(format!("cannot map the buffer pool: {e}")))?;
    pools.push((classes, p));
    Ok(p)
}

/// How to start the reactors.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub cores: Vec<usize>,
    pub poll_mode: PollMode,
    /// Largest request and deepest queue any job will use (sizes the buffer pool).
    pub max_bs: u64,
    pub max_qd: u32,
}

/// Running reactors, one per core, with a buffer pool big enough for the jobs.
pub struct Session {
    group: ReactorGroup,
}

impl Session {
    pub fn start(o: &SessionOptions) -> Result<Self, Error> {
        let n = o.cores.len();
        // Our own requests need qd buffers per core; the rest is for targets and
        // host connections sharing these reactors (their PDUs and staging).
        let ours = n * o.max_qd as usize + 64;
        let mut classes = vec![
            ClassConfig {
                size: 4096,
                count: 2048 + if o.max_bs <= 4096 { ours } else { 0 },
            },
            ClassConfig {
                size: 128 << 10,
                count: 256
                    + if o.max_bs > 4096 && o.max_bs <= 128 << 10 {
                        ours
                    } else {
                        0
                    },
            },
        ];
        if o.max_bs > 128 << 10 {
            classes.push(ClassConfig {
                size: (o.max_bs as usize).next_power_of_two(),
                count: ours,
            });
        }
        let pool = pool_for(classes)?;
        let opts = ReactorOptions {
            poll_mode: o.poll_mode,
            ..Default::default()
        };
        let group = ReactorGroup::start(&o.cores, &opts, pool).map_err(Error::Reactor)?;
        Ok(Self { group })
    }

    pub fn handles(&self) -> &[ReactorHandle] {
        self.group.handles()
    }

    pub fn pool(&self) -> &'static BufferPool {
        self.group.pool()
    }

    pub fn cores(&self) -> usize {
        self.group.handles().len()
    }

    /// Runs one job per reactor and returns their results in reactor order.
    pub fn run_job(
        &self,
        dev: &Arc<dyn BlockDevice>,
        jobs: Vec<JobSpec>,
        patience: Option<Duration>,
    ) -> Result<Vec<CoreResult>, Error> {
        let mut replies: Vec<Reply<Result<CoreResult, String>>> = Vec::new();
        for (h, job) in self.handles().iter().zip(jobs) {
            let (tx, rx) = oneshot();
            let dev = dev.clone();
            h.send(move |r| Worker::start(r, dev, job, tx))
                .map_err(|_| Error::Run(format!("reactor {} has a full mailbox", h.id())))?;
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(replies.len());
        for (i, rx) in replies.into_iter().enumerate() {
            let got = match patience {
                Some(p) => rx.wait_timeout(p),
                None => rx.wait(),
            };
            match got {
                Ok(Ok(res)) => out.push(res),
                Ok(Err(why)) => return Err(Error::Run(format!("reactor {i}: {why}"))),
                Err(e) => return Err(Error::Run(format!("reactor {i}: {e}"))),
            }
        }
        Ok(out)
    }

    /// Writes `data` at `lba` through reactor 0's own channel, behind the workers'
    /// back: the test seam for corrupting a block between the fill and the check.
    pub fn write_raw(
        &self,
        dev: &Arc<dyn BlockDevice>,
        lba: u64,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        type Tx = Replier<Result<(), String>>;
        /// Keeps the channel open until its one request completes.
        struct Once {
            tx: RefCell<Option<Tx>>,
            chan: RefCell<Option<IoChannel>>,
        }
        impl IoSink for Once {
            fn io_done(&self, _: u64, r: Result<(), BdevError>, _: Option<DmaBuf>) {
                if let Some(tx) = self.tx.borrow_mut().take() {
                    tx.send(r.map_err(|e| e.to_string()));
                }
                self.chan.borrow_mut().take();
            }
        }
        let (tx, rx) = oneshot();
        let dev = dev.clone();
        let go = move |r: &Reactor, tx: Tx| {
            let chan = match IoChannel::open(dev, r) {
                Ok(c) => c,
                Err(e) => return tx.send(Err(e.to_string())),
            };
            let Some(mut buf) = r.pool().alloc(data.len()) else {
                return tx.send(Err("no buffer for the raw write".to_string()));
            };
            buf.as_mut_slice().copy_from_slice(&data);
            let blocks = (data.len() / chan.info().block_size as usize) as u64;
            let once = Rc::new(Once {
                tx: RefCell::new(Some(tx)),
                chan: RefCell::new(None),
            });
            let op = IoOp::Write {
                lba,
                blocks,
                buf,
                fua: false,
            };
            let done = Completion {
                sink: once.clone(),
                tag: 0,
            };
            match chan.submit(op, done) {
                Ok(()) => *once.chan.borrow_mut() = Some(chan),
                Err((e, _)) => {
                    if let Some(tx) = once.tx.borrow_mut().take() {
                        tx.send(Err(e.to_string()));
                    }
                }
            }
        };
        self.handles()[0]
            .send(move |r| go(r, tx))
            .map_err(|_| Error::Run("reactor 0 has a full mailbox".to_string()))?;
        rx.wait_timeout(Duration::from_secs(30))
            .map_err(|e| Error::Run(e.to_string()))?
            .map_err(Error::Run)
    }
}

/// Called between the fill pass and the measured workload (a test seam).
pub type AfterFill<'a> = Box<dyn FnOnce(&Session, &Arc<dyn BlockDevice>) + 'a>;

/// What one benchmark produced.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub cores: Vec<CoreResult>,
    pub total: CoreResult,
    pub cpu_seconds: f64,
    /// The fill pass (verify runs with reads), unmeasured but reported.
    pub fill: Option<CoreResult>,
    /// The read-back pass (verify runs without reads).
    pub readback: Option<CoreResult>,
}

impl Outcome {
    /// Verify mismatches and I/O errors over every pass.
    pub fn failures(&self) -> (u64, u64) {
        let mut v = self.total.verify.errors;
        let mut io = self.total.io_errors;
        for p in [&self.fill, &self.readback].into_iter().flatten() {
            v += p.verify.errors;
            io += p.io_errors;
        }
        (v, io)
    }
}

/// Runs `w` on `dev`: with `--verify`, a fill pass first (then
/// `after_fill`); then the measured workload; with `--verify` and only writes, a
/// read-back pass last. `progress` draws a live line on stderr.
pub fn run(
    s: &Session,
    dev: &Arc<dyn BlockDevice>,
    w: &Workload,
    progress: bool,
    after_fill: Option<AfterFill<'_>>,
) -> Result<Outcome, Error> {
    let p = plan::plan(w, dev.info(), s.cores())?;
    let reads = w.rw.read_percent(w.mix) > 0;
    let writes = w.rw.read_percent(w.mix) < 100;
    let counters = Progress::new(s.cores());
    let tracker = w.verify.then(|| Arc::new(p.tracker()));
    let tracker = tracker.as_ref();
    let mut fill = None;
    // Always fill first: then every block of the range carries this run's seed, and a
    // write that did not land reads back as an error instead of passing for a block
    // the workload never touched.
    if w.verify {
        let jobs = plan::jobs(w, &p, JobKind::Fill, &counters, tracker);
        let r = s.run_job(dev, jobs, None)?;
        let merged = stats::merge(&r);
        if merged.io_errors > 0 {
            return Err(Error::Run(format!(
                "the verify fill pass failed: {} I/O errors, first: {}",
                merged.io_errors,
                merged.first_io_error.as_deref().unwrap_or("?")
            )));
        }
        fill = Some(merged);
    }
    if let Some(f) = after_fill {
        f(s, dev);
    }
    let counters = Progress::new(s.cores());
    let jobs = plan::jobs(w, &p, JobKind::Workload, &counters, tracker);
    let patience = match (w.time, w.ios) {
        (Some(t), None) => Some(Duration::from_secs_f64(w.ramp + t + 120.0)),
        _ => None,
    };
    let cpu0 = ferrox_reactor::process_cpu_seconds();
    let stop = AtomicBool::new(false);
    let results = std::thread::scope(|sc| {
        if progress && std::io::stderr().is_terminal() {
            let c = counters.clone();
            let stop = &stop;
            let bs = w.bs;
            sc.spawn(move || draw_progress(&c, stop, bs));
        }
        let r = s.run_job(dev, jobs, patience);
        stop.store(true, Ordering::Relaxed);
        r
    })?;
    let cpu_seconds = ferrox_reactor::process_cpu_seconds() - cpu0;
    let total = stats::merge(&results);
    let mut readback = None;
    if w.verify && writes && !reads {
        let jobs = plan::jobs(w, &p, JobKind::ReadBack, &counters, tracker);
        readback = Some(stats::merge(&s.run_job(dev, jobs, None)?));
    }
    Ok(Outcome {
        plan: p,
        cores: results,
        total,
        cpu_seconds,
        fill,
        readback,
    })
}

/// The live one-line progress: `\r 3.0 s  812.3k IOPS  3173.1 MiB/s`.
fn draw_progress(c: &Progress, stop: &AtomicBool, bs: u64) {
    use std::io::Write;
    let t0 = Instant::now();
    let mut last = (t0, 0u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now - last.0 < Duration::from_millis(500) {
            continue;
        }
        let n = c.total();
        let dt = (now - last.0).as_secs_f64();
        let iops = (n - last.1) as f64 / dt;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[2K{:6.1} s  {:>10} IOPS  {:9.1} MiB/s  {:>12} I/Os",
            (now - t0).as_secs_f64(),
            crate::report::thousands(iops),
            iops * bs as f64 / f64::from(1u32 << 20),
            n
        );
        let _ = e.flush();
        last = (now, n);
    }
    let _ = write!(std::io::stderr(), "\r\x1b[2K");
}
