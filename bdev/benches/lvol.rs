//! Logical-volume write costs, as ratios to the raw base device, in one run:
//! `cargo bench -p ferrox-bdev --bench lvol`.
//!
//! 4 KiB writes at queue depth 32 from one I/O reactor (core 1), the pool's metadata
//! reactor on core 0, a malloc base device, 1 MiB clusters, each figure the median of
//! three rounds (each round on a freshly formatted pool):
//!
//! * **base**: the raw malloc device, random 4 KiB writes over a 1 GiB range — the
//!   reference.
//! * **first touch**: a fresh thin 1 GiB volume, one write at a random 4 KiB offset in
//!   each cluster, clusters in random order: every write allocates its cluster (a message to the metadata reactor, zeroing the cluster,
//!   a metadata commit).
//! * **overwrite**: random 4 KiB writes over the now fully allocated volume.
//! * **after snapshot**: a snapshot of the volume, then one write per cluster again:
//!   every write copies its 1 MiB cluster from the snapshot first (copy-on-write).
//!
//! * **big DSM** (after the table): 64 unmaps, each over the whole of a 16 TiB thin
//!   volume holding 64 clusters, submitted at once (one DSM deallocate): the time it
//!   takes and what the pool's deallocation counters say it looked at.
//!
//! `--quick` runs one round on a 256 MiB volume; `--cluster-kib N` picks another
//! cluster size; `--file PATH` puts the pool on a file (io_uring, O_DIRECT where the
//! file system allows; created and removed per round) instead of malloc. The base device is written through once before anything is timed,
//! so no pass pays for the malloc memory's first page faults.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ferrox_bdev::lvol::LvolStore;
use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::uring::UringBdev;
use ferrox_bdev::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::{oneshot, Replier};
use ferrox_reactor::{
    available_cores, BufferPool, DmaBuf, PollStatus, Poller, PoolConfig, Reactor, ReactorGroup,
    ReactorHandle, ReactorOptions,
};

const BLOCK: u64 = 512;
const IO: u64 = 4096;
const QD: usize = 32;

/// What one pass measured.
#[derive(Clone, Copy, Debug)]
struct Pass {
    iops: f64,
    mean_us: f64,
}

/// A closed loop of 4 KiB writes at the given LBAs, `QD` in flight.
struct Writer {
    me: RefCell<Option<Rc<Writer>>>,
    chan: RefCell<Option<IoChannel>>,
    lbas: Vec<u64>,
    /// Bytes per write.
    len: u64,
    next: Cell<usize>,
    in_flight: Cell<usize>,
    started: RefCell<Vec<Instant>>,
    lat_ns: Cell<u128>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    t0: Instant,
    reply: RefCell<Option<Replier<Result<Pass, String>>>>,
}

impl Writer {
    /// Starts the next write; one refused at submission counts as failed and the
    /// next is tried, so the loop never stalls.
    fn submit(&self, r: &Reactor) {
        loop {
            let i = self.next.get();
            if i >= self.lbas.len() {
                return;
            }
            self.next.set(i + 1);
            let mut buf = r.pool().alloc(self.len as usize).expect("a buffer");
            buf.as_mut_slice().fill(i as u8 | 1);
            self.started.borrow_mut()[i] = Instant::now();
            let done = Completion {
                sink: self.me.borrow().clone().expect("running") as Rc<dyn IoSink>,
                tag: i as u64,
            };
            let op = IoOp::Write {
                lba: self.lbas[i],
                blocks: self.len / BLOCK,
                buf,
                fua: false,
            };
            match self.chan.borrow().as_ref().expect("open").submit(op, done) {
                Ok(()) => {
                    self.in_flight.set(self.in_flight.get() + 1);
                    return;
                }
                Err((e, _)) => self.fail(&e),
            }
        }
    }

    fn fail(&self, e: &BdevError) {
        self.errors.set(self.errors.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| e.to_string());
    }
}

impl IoSink for Writer {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, _buf: Option<DmaBuf>) {
        self.in_flight.set(self.in_flight.get() - 1);
        let t = self.started.borrow()[tag as usize].elapsed().as_nanos();
        self.lat_ns.set(self.lat_ns.get() + t);
        if let Err(e) = result {
            self.fail(&e);
        }
        Reactor::with(|r| self.submit(r));
    }
}

impl Poller for Writer {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        if self.in_flight.get() > 0 || self.next.get() < self.lbas.len() {
            return PollStatus::Idle;
        }
        let secs = self.t0.elapsed().as_secs_f64();
        self.chan.borrow_mut().take();
        self.me.borrow_mut().take();
        if let Some(tx) = self.reply.borrow_mut().take() {
            let n = self.lbas.len() as f64;
            tx.send(match self.first_error.borrow_mut().take() {
                Some(e) => Err(format!("{} of {n} writes failed: {e}", self.errors.get())),
                None => Ok(Pass {
                    iops: n / secs,
                    mean_us: self.lat_ns.get() as f64 / n / 1e3,
                }),
            });
        }
        PollStatus::Done
    }
}

/// Writes `len` bytes at each of `lbas` on `dev` from reactor `h`.
fn write_pass(h: &ReactorHandle, dev: Arc<dyn BlockDevice>, lbas: Vec<u64>, len: u64) -> Pass {
    let (tx, rx) = oneshot();
    h.send(move |r| {
        let n = lbas.len();
        let w = Rc::new(Writer {
            me: RefCell::new(None),
            chan: RefCell::new(Some(IoChannel::open(dev, r).expect("channel"))),
            lbas,
            len,
            next: Cell::new(0),
            in_flight: Cell::new(0),
            started: RefCell::new(vec![Instant::now(); n]),
            lat_ns: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            t0: Instant::now(),
            reply: RefCell::new(Some(tx)),
        });
        *w.me.borrow_mut() = Some(w.clone());
        for _ in 0..QD {
            w.submit(r);
        }
        r.add_poller(w);
    })
    .expect("send to the I/O reactor");
    rx.wait()
        .expect("the pass answers")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// xorshift64*: reproducible patterns without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// One write at a random 4 KiB offset inside each cluster, clusters in random order.
fn one_per_cluster(rng: &mut Rng, cluster: u64, clusters: u64) -> Vec<u64> {
    let per = cluster / IO;
    let mut v: Vec<u64> = (0..clusters)
        .map(|c| (c * cluster + rng.below(per) * IO) / BLOCK)
        .collect();
    rng.shuffle(&mut v);
    v
}

/// `n` writes at random 4 KiB offsets over `bytes`.
fn uniform(rng: &mut Rng, bytes: u64, n: u64) -> Vec<u64> {
    (0..n).map(|_| rng.below(bytes / IO) * IO / BLOCK).collect()
}

/// Where the pool lives.
#[derive(Clone)]
enum Base {
    Malloc,
    /// A file through io_uring (O_DIRECT when the file system allows), recreated per
    /// round and removed afterwards.
    File(PathBuf),
}

/// The four passes on a fresh base device and pool. `bytes` is the volume size.
fn round(
    io: &ReactorHandle,
    meta: &ReactorHandle,
    base_kind: &Base,
    cluster: u64,
    bytes: u64,
    seed: u64,
) -> [Pass; 4] {
    let mut rng = Rng(seed);
    let clusters = bytes / cluster;
    // Room for the volume, its snapshot's copies, and the pool's metadata.
    let base_bytes = 2 * bytes + (64 << 20);
    let base: Arc<dyn BlockDevice> = match base_kind {
        Base::Malloc => MallocBdev::new("base", base_bytes / BLOCK, BLOCK as u32).expect("malloc"),
        Base::File(p) => {
            let _ = std::fs::remove_file(p);
            UringBdev::open("base", p, Some(base_bytes), BLOCK as u32, 128).expect("base file")
        }
    };
    // Write every byte once (untimed: malloc pages are faulted in, file blocks
    // allocated), then the reference: random 4 KiB writes.
    const FILL: u64 = 128 << 10;
    let fill = (0..base_bytes / FILL).map(|i| i * FILL / BLOCK).collect();
    let _ = write_pass(io, base.clone(), fill, FILL);
    let n = clusters.max(1024) * 4;
    let raw = write_pass(io, base.clone(), uniform(&mut rng, bytes, n), IO);

    let lvs = LvolStore::create(base, "bench", cluster, meta.clone()).expect("pool");
    lvs.create_volume("v", bytes, true).expect("thin volume");
    let vol: Arc<dyn BlockDevice> = lvs.volume("v").expect("open the volume");
    let first = write_pass(
        io,
        vol.clone(),
        one_per_cluster(&mut rng, cluster, clusters),
        IO,
    );
    let over = write_pass(io, vol.clone(), uniform(&mut rng, bytes, n), IO);
    lvs.snapshot("v", "s").expect("snapshot");
    let vol: Arc<dyn BlockDevice> = lvs.volume("v").expect("reopen the volume");
    let cow = write_pass(io, vol, one_per_cluster(&mut rng, cluster, clusters), IO);
    if let Base::File(p) = base_kind {
        let _ = std::fs::remove_file(p);
    }
    [raw, first, over, cow]
}

/// 64 whole-volume unmaps on a 16 TiB thin volume that holds 64 clusters.
fn big_dsm(io: &ReactorHandle, meta: &ReactorHandle) {
    const VIRT: u64 = 16 << 40;
    let cluster = 1 << 20;
    let base = MallocBdev::new("dsm-base", (256 << 20) / BLOCK, BLOCK as u32).expect("malloc");
    let lvs = LvolStore::create(base, "dsm", cluster, meta.clone()).expect("pool");
    lvs.create_volume("huge", VIRT, true).expect("thin volume");
    let vol: Arc<dyn BlockDevice> = lvs.volume("huge").expect("open the volume");
    let held = (0..64).map(|i| i * (VIRT / 64) / BLOCK).collect();
    let _ = write_pass(io, vol.clone(), held, IO);
    let (tx, rx) = oneshot();
    let t = Instant::now();
    io.send(move |r| {
        /// Unmaps left, the channel (closed once they are done), the reply.
        struct Done(
            Cell<usize>,
            RefCell<Option<IoChannel>>,
            RefCell<Option<Replier<()>>>,
        );
        impl IoSink for Done {
            fn io_done(&self, _tag: u64, res: Result<(), BdevError>, _buf: Option<DmaBuf>) {
                res.expect("an unmap");
                self.0.set(self.0.get() - 1);
            }
        }
        impl Poller for Done {
            fn poll(&self, _r: &Reactor) -> PollStatus {
                if self.0.get() > 0 {
                    return PollStatus::Idle;
                }
                self.1.borrow_mut().take();
                if let Some(tx) = self.2.borrow_mut().take() {
                    tx.send(());
                }
                PollStatus::Done
            }
        }
        let chan = IoChannel::open(vol, r).expect("channel");
        let blocks = VIRT / BLOCK;
        let done = Rc::new(Done(
            Cell::new(64),
            RefCell::new(None),
            RefCell::new(Some(tx)),
        ));
        for i in 0..64 {
            let c = Completion {
                sink: done.clone(),
                tag: i,
            };
            let op = IoOp::Unmap { lba: 0, blocks };
            chan.submit(op, c).map_err(|(e, _)| e).expect("an unmap");
        }
        *done.1.borrow_mut() = Some(chan);
        r.add_poller(done);
    })
    .expect("send to the I/O reactor");
    rx.wait().expect("the unmaps complete");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let ds = lvs.dealloc_stats().expect("stats");
    println!("big DSM (64 x 16 TiB ranges, 64 clusters held): {ms:.1} ms, {ds:?}");
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let cluster = args
        .iter()
        .position(|a| a == "--cluster-kib")
        .map(|i| {
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|k| k.is_power_of_two() && (4..=65536).contains(k))
                .expect("--cluster-kib takes a power of two from 4 to 65536")
                << 10
        })
        .unwrap_or(1 << 20);
    let (bytes, rounds) = if quick { (256 << 20, 1) } else { (1 << 30, 3) };
    let base = match args.iter().position(|a| a == "--file") {
        Some(i) => Base::File(args.get(i + 1).expect("--file takes a path").into()),
        None => Base::Malloc,
    };
    let cores = available_cores();
    let (meta_core, io_core) = (cores[0], *cores.last().expect("a core"));
    let pool = BufferPool::new(&PoolConfig::default()).expect("buffer pool");
    let opts = ReactorOptions::default();
    let g = if meta_core == io_core {
        ReactorGroup::start(&[io_core], &opts, pool)
    } else {
        ReactorGroup::start(&[meta_core, io_core], &opts, pool)
    }
    .expect("reactors");
    let hs = g.handles();
    let (meta, io) = (&hs[0], hs.last().expect("a reactor"));
    let on = match &base {
        Base::Malloc => "malloc".to_string(),
        Base::File(p) => format!("file {}", p.display()),
    };
    println!(
        "== lvol on {on}: 4 KiB writes, QD{QD}, I/O reactor on core {io_core}, metadata on core {meta_core}, \
         {} MiB thin volume, {} KiB clusters, {rounds} round(s) ==",
        bytes >> 20,
        cluster >> 10
    );
    let t = Instant::now();
    let results: Vec<[Pass; 4]> = (0..rounds)
        .map(|i| round(io, meta, &base, cluster, bytes, 0x9e37_79b9_7f4a_7c15 ^ i))
        .collect();
    let names = [
        "base (raw device)",
        "thin, first touch",
        "overwrite",
        "after snapshot (COW)",
    ];
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pass", "IOPS min", "median", "max", "mean µs", "/ base"
    );
    let base_med = median(results.iter().map(|r| r[0].iops).collect()).1;
    for (k, name) in names.iter().enumerate() {
        let (lo, med, hi) = median(results.iter().map(|r| r[k].iops).collect());
        let lat = median(results.iter().map(|r| r[k].mean_us).collect()).1;
        println!(
            "{name:<22} {lo:>10.0} {med:>10.0} {hi:>10.0} {lat:>10.1} {:>10.3}",
            med / base_med
        );
    }
    println!("({:.1} s)", t.elapsed().as_secs_f64());
    big_dsm(io, meta);
    g.shutdown();
}
