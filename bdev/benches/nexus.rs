//! Nexus (mirror) costs, as ratios to one raw malloc device, in one run:
//! `cargo bench -p ferrox-bdev --bench nexus`.
//!
//! * 4 KiB random writes and reads at queue depth 32 from one reactor (one task per
//!   queue slot, awaiting `submit_async`), on: a malloc device; a nexus over one
//!   malloc child; a nexus over three. Each figure is the median of three passes.
//! * Rebuild throughput: a full rebuild of a 256 MiB child at the highest accepted
//!   rate (effectively unlimited), and of 64 MiB at the default 100 MiB/s.
//!
//! Malloc children cost a `memcpy`; these figures are the nexus's own overhead (a task
//! per request, a buffer copy per extra child), not a replicated volume's over a
//! network. `--quick`: one pass each.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::nexus::{
    ChildRecord, FaultRecorder, LocalFuture, MemDirtyLog, Nexus, NexusConfig, RebuildMode,
    RecordError, DEFAULT_REBUILD_RATE, MAX_REBUILD_RATE,
};
use ferrox_bdev::{BlockDevice, IoChannel, IoOp};
use ferrox_reactor::mailbox::oneshot;
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, Reactor, ReactorGroup, ReactorHandle,
    ReactorOptions,
};

const QD: u64 = 32;
const BLOCKS: u64 = (256 << 20) / 512;

struct NoRecord;

impl FaultRecorder for NoRecord {
    fn record(&self, _rec: ChildRecord) -> LocalFuture<'static, Result<(), RecordError>> {
        Box::pin(async { Ok(()) })
    }
}

fn nexus(n: usize, tag: &str) -> Arc<Nexus> {
    let kids: Vec<Arc<dyn BlockDevice>> = (0..n)
        .map(|i| MallocBdev::new(&format!("{tag}{i}"), BLOCKS, 512).unwrap() as _)
        .collect();
    Nexus::new(
        tag,
        kids,
        NexusConfig::default(),
        Arc::new(NoRecord),
        MemDirtyLog::new(),
    )
    .unwrap()
}

fn on<T: Send + 'static, F>(h: &ReactorHandle, f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = oneshot();
    h.send(move |r: &Reactor| {
        r.spawn_local(async move { tx.send(f().await) });
    })
    .unwrap();
    rx.wait_timeout(Duration::from_secs(600)).unwrap()
}

/// IOPS of `ios` random 4 KiB requests at QD32.
async fn closed_loop(dev: Arc<dyn BlockDevice>, write: bool, ios: u64) -> f64 {
    let ch = Rc::new(Reactor::with(|r| IoChannel::open(dev, r)).unwrap());
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..QD)
        .map(|q| {
            let ch = ch.clone();
            Reactor::with(|r| {
                r.spawn_local(async move {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (q + 1);
                    for _ in 0..ios / QD {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let lba = (x % (BLOCKS / 8)) * 8;
                        let buf = Reactor::with(|r| r.pool().alloc(4096)).expect("a buffer");
                        let op = if write {
                            IoOp::Write {
                                lba,
                                blocks: 8,
                                buf,
                                fua: false,
                            }
                        } else {
                            IoOp::Read {
                                lba,
                                blocks: 8,
                                buf,
                            }
                        };
                        ch.submit_async(op).await.0.expect("the request succeeds");
                    }
                })
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (ios / QD * QD) as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Full rebuild of child 1 (restored as faulted) at `rate`; MiB/s.
fn rebuild(h: &ReactorHandle, blocks: u64, rate: u64) -> f64 {
    let kids: Vec<Arc<dyn BlockDevice>> = (0..2)
        .map(|i| MallocBdev::new(&format!("rb{i}"), blocks, 512).unwrap() as _)
        .collect();
    let nx = Nexus::new(
        "rb",
        kids,
        NexusConfig {
            rebuild_rate: rate,
            ..NexusConfig::default()
        },
        Arc::new(NoRecord),
        MemDirtyLog::new(),
    )
    .unwrap();
    nx.restore_faulted(1, true).unwrap();
    on(h, move || async move {
        let t0 = Instant::now();
        let st = nx.rebuild(1, RebuildMode::Full).await.unwrap();
        st.copied as f64 / t0.elapsed().as_secs_f64() / f64::from(1 << 20)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let passes = if quick { 1 } else { 3 };
    let ios = 200_000;
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 1024,
            },
            ClassConfig {
                size: 128 << 10,
                count: 64,
            },
        ],
        hugepages: false,
    })
    .expect("buffer pool");
    let core = *available_cores().last().expect("a core");
    let g = ReactorGroup::start(&[core], &ReactorOptions::default(), pool).expect("a reactor");
    let h = g.handles()[0].clone();
    let devs: Vec<(&str, Arc<dyn BlockDevice>)> = vec![
        ("malloc", MallocBdev::new("raw", BLOCKS, 512).unwrap()),
        ("nexus, 1 child", nexus(1, "one")),
        ("nexus, 3 children", nexus(3, "three")),
    ];
    println!(
        "== nexus: 4 KiB random I/O, QD{QD}, one reactor on core {core}, 256 MiB malloc \
         children, {ios} requests a pass, median of {passes} ==",
    );
    println!(
        "{:<20} {:>12} {:>8} {:>12} {:>8}",
        "device", "write IOPS", "/ raw", "read IOPS", "/ raw"
    );
    let mut raw = (0.0, 0.0);
    for (name, dev) in devs {
        let mut fig = [0.0; 2];
        for (k, write) in [true, false].into_iter().enumerate() {
            let runs = (0..passes)
                .map(|_| {
                    let dev = dev.clone();
                    on(&h, move || closed_loop(dev, write, ios))
                })
                .collect();
            fig[k] = median(runs);
        }
        if name == "malloc" {
            raw = (fig[0], fig[1]);
        }
        println!(
            "{name:<20} {:>12.0} {:>8.3} {:>12.0} {:>8.3}",
            fig[0],
            fig[0] / raw.0,
            fig[1],
            fig[1] / raw.1
        );
    }
    let fast = rebuild(&h, BLOCKS, MAX_REBUILD_RATE);
    println!("full rebuild, 256 MiB, unlimited:          {fast:.0} MiB/s");
    let paced = rebuild(&h, (64 << 20) / 512, DEFAULT_REBUILD_RATE);
    println!("full rebuild, 64 MiB, at 100 MiB/s limit:  {paced:.0} MiB/s");
    g.shutdown();
}
