//! Foundation figures (not a test: nothing here asserts a time).
//!
//! `cargo bench --bench foundation` prints:
//! 1. CPU seconds an idle `ferrox` daemon with 2 reactors uses over 5 s, in
//!    `adaptive` and in `busy` poll mode, and the ratio;
//! 2. mailbox round-trip latency from a plain thread to a reactor (both modes);
//! 3. malloc-bdev 4 KiB random-read IOPS on one reactor at queue depth 32.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::{BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::{oneshot, Replier};
use ferrox_reactor::{
    available_cores, BufferPool, DmaBuf, PollMode, PollStatus, Poller, PoolConfig, Reactor,
    ReactorGroup, ReactorOptions,
};

fn proc_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / tick
}

fn idle_daemon(mode: &str) -> f64 {
    let dir = std::env::temp_dir().join(format!("ferrox-bench-{}-{mode}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--cores",
            "0,1",
            "--poll-mode",
            mode,
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "64MiB",
            "--log",
            "warn",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrox");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for l in lines.by_ref() {
        if l.expect("read").contains("ready") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    let before = proc_cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(5));
    let used = proc_cpu_seconds(pid) - before;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    used
}

fn mailbox_rtt(mode: PollMode) -> (f64, f64, f64) {
    let pool = BufferPool::new(&PoolConfig::default()).expect("pool");
    let core = *available_cores().last().expect("a core");
    let g = ReactorGroup::start(
        &[core],
        &ReactorOptions {
            poll_mode: mode,
            ..Default::default()
        },
        pool,
    )
    .expect("reactor");
    let h = g.handles()[0].clone();
    let mut v = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        h.call(|r| r.id()).expect("send").wait().expect("reply");
        v.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    g.shutdown();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, v[v.len() / 2], v[v.len() * 99 / 100])
}

struct Load {
    chan: RefCell<Option<IoChannel>>,
    sink: RefCell<Option<Rc<dyn IoSink>>>,
    done: Cell<u64>,
    rng: Cell<u64>,
    end: Instant,
    inflight: Cell<u32>,
    reply: RefCell<Option<Replier<u64>>>,
    blocks: u64,
}

impl Load {
    fn submit(&self, r: &Reactor) {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        let lba = (x % (self.blocks / 8)) * 8;
        let buf = r.pool().alloc(4096).expect("buffer");
        let c = Completion {
            sink: self.sink.borrow().clone().expect("sink"),
            tag: 0,
        };
        let chan = self.chan.borrow();
        let _ = chan.as_ref().expect("chan").submit(
            IoOp::Read {
                lba,
                blocks: 8,
                buf,
            },
            c,
        );
        self.inflight.set(self.inflight.get() + 1);
    }
}

impl IoSink for Load {
    fn io_done(&self, _tag: u64, _r: Result<(), ferrox_bdev::BdevError>, _b: Option<DmaBuf>) {
        self.inflight.set(self.inflight.get() - 1);
        self.done.set(self.done.get() + 1);
        if Instant::now() < self.end {
            Reactor::with(|r| self.submit(r));
        }
    }
}

impl Poller for Load {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        if self.inflight.get() == 0 {
            if let Some(tx) = self.reply.borrow_mut().take() {
                self.chan.borrow_mut().take();
                self.sink.borrow_mut().take();
                tx.send(self.done.get());
            }
            return PollStatus::Done;
        }
        PollStatus::Idle
    }
}

fn malloc_iops() -> f64 {
    let pool = BufferPool::new(&PoolConfig::default()).expect("pool");
    let core = *available_cores().last().expect("a core");
    let g = ReactorGroup::start(&[core], &ReactorOptions::default(), pool).expect("reactor");
    let dev: Arc<dyn BlockDevice> =
        MallocBdev::new("bench", (256 << 20) / 512, 512).expect("malloc");
    let secs = 3.0;
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            let load = Rc::new(Load {
                chan: RefCell::new(Some(IoChannel::open(dev, r).expect("channel"))),
                sink: RefCell::new(None),
                done: Cell::new(0),
                rng: Cell::new(0x9e37_79b9_7f4a_7c15),
                end: Instant::now() + Duration::from_secs_f64(secs),
                inflight: Cell::new(0),
                reply: RefCell::new(Some(tx)),
                blocks: (256 << 20) / 512,
            });
            *load.sink.borrow_mut() = Some(load.clone());
            for _ in 0..32 {
                load.submit(r);
            }
            r.add_poller(load);
        })
        .expect("send");
    let n = rx.wait().expect("done");
    g.shutdown();
    n as f64 / secs
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    println!("== idle daemon, 2 reactors, 5 s ==");
    let adaptive = idle_daemon("adaptive");
    let busy = idle_daemon("busy");
    println!(
        "adaptive: {adaptive:.3} CPU s ({:.2}% of one core)",
        adaptive / 5.0 * 100.0
    );
    println!(
        "busy:     {busy:.3} CPU s ({:.2}% of one core)",
        busy / 5.0 * 100.0
    );
    println!("ratio adaptive/busy: {:.4}", adaptive / busy.max(1e-9));
    println!("== mailbox round trip, thread -> reactor -> thread (µs) ==");
    for (name, m) in [("adaptive", PollMode::Adaptive), ("busy", PollMode::Busy)] {
        let (mean, p50, p99) = mailbox_rtt(m);
        println!("{name:8}: mean {mean:.2}  p50 {p50:.2}  p99 {p99:.2}");
    }
    println!("== malloc bdev, 4 KiB random read, QD32, one reactor, 3 s ==");
    println!("IOPS: {:.0}", malloc_iops());
}
