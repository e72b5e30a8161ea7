//! What a volume create costs as a pool fills, in one run:
//! `cargo bench -p ferrox-bdev --bench lvol_scale`.
//!
//! A pool on a 2 GiB sparse RAM device (`testing::SparseBdev`: it keeps only the pages
//! written, and counts bytes written), 1 MiB clusters, one metadata reactor; thin
//! 1 MiB volumes created one after the other from a plain thread, each call timed
//! (the mailbox round trip included). For each checkpoint (1,024, 10,240 and 65,536
//! volumes) it prints, over the 1,000 creates that reach it, the mean and largest
//! time and the mean bytes written, then the same from the first create on. Format
//! version 4 (a journal record per create, a whole image per compaction) runs to
//! 65,536; format version 3 (a whole image per create) to its limit of 1,024, for
//! comparison. A create that writes more than 4 KiB wrote a whole image (a compaction
//! on version 4, every create on version 3). Last, the process's resident memory per volume of the version-4 pool
//! (its growth over the run, less the device's pages, divided by the volumes).
//!
//! `--quick` stops version 4 at 10,240 volumes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::lvol::{LvolStore, DEFAULT_CLUSTER_SIZE, FULL_SCALE_BYTES, MAX_VOLUMES};
use ferrox_bdev::testing::SparseBdev;
use ferrox_bdev::BlockDevice;
use ferrox_reactor::{available_cores, BufferPool, PoolConfig, ReactorGroup, ReactorOptions};

/// Creates in the window that ends at each checkpoint.
const WINDOW: usize = 1000;
/// No run takes longer than this.
const LIMIT: Duration = Duration::from_secs(600);

/// Resident bytes of this process.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One create: how long it took and the bytes it wrote.
#[derive(Clone, Copy)]
struct Cost {
    time: Duration,
    bytes: u64,
}

fn summary(what: &str, costs: &[Cost]) -> String {
    let n = costs.len().max(1) as f64;
    let mean_us = costs.iter().map(|c| c.time.as_secs_f64()).sum::<f64>() / n * 1e6;
    let max_us = costs
        .iter()
        .map(|c| c.time.as_secs_f64() * 1e6)
        .fold(0.0, f64::max);
    let bytes = costs.iter().map(|c| c.bytes).sum::<u64>() as f64 / n;
    // A create that wrote more than a few blocks wrote a whole image.
    let images = costs.iter().filter(|c| c.bytes > 4096).count();
    format!("{what:>14}: {mean_us:>9.1} us mean, {max_us:>9.1} us max, {bytes:>10.0} bytes written per create, {images} whole images")
}

/// Creates volumes on a fresh pool of `version` up to the last checkpoint, printing
/// each; returns the pool, the device and the resident memory before the first create.
fn run(
    g: &ReactorGroup,
    version: u32,
    checkpoints: &[usize],
) -> (Arc<LvolStore>, Arc<SparseBdev>, u64) {
    let dev = SparseBdev::new("scale", FULL_SCALE_BYTES);
    let base: Arc<dyn BlockDevice> = dev.clone();
    let cs = DEFAULT_CLUSTER_SIZE;
    let meta = g.handles()[0].clone();
    let store =
        LvolStore::create_with_version(base, "scale", cs, meta, version).expect("format the pool");
    let rss0 = rss();
    let last = *checkpoints.last().expect("a checkpoint");
    let mut costs = Vec::with_capacity(last);
    let deadline = Instant::now() + LIMIT;
    println!("format version {version}:");
    for i in 0..last {
        let bytes = dev.bytes_written();
        let t = Instant::now();
        store
            .create_volume(&format!("v{i}"), cs, true)
            .expect("create a volume");
        costs.push(Cost {
            time: t.elapsed(),
            bytes: dev.bytes_written() - bytes,
        });
        if checkpoints.contains(&(i + 1)) {
            println!("  {} volumes", i + 1);
            println!("{}", summary("last 1,000", &costs[i + 1 - WINDOW..]));
            println!("{}", summary("all so far", &costs));
        }
        assert!(Instant::now() < deadline, "{i} creates in {LIMIT:?}");
    }
    (store, dev, rss0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pool = BufferPool::new(&PoolConfig::default()).expect("buffer pool");
    let core = available_cores()[0];
    let g = ReactorGroup::start(&[core], &ReactorOptions::default(), pool).expect("reactors");
    let v4: &[usize] = if quick {
        &[1024, 10_240]
    } else {
        &[1024, 10_240, MAX_VOLUMES]
    };
    let (store, dev, rss0) = run(&g, 4, v4);
    let n = *v4.last().expect("a checkpoint") as u64;
    let grown = rss().saturating_sub(rss0);
    let per = grown.saturating_sub(dev.resident_bytes()) / n;
    println!(
        "  resident memory: {grown} bytes more after {n} volumes, {} of them device pages: about {per} bytes per volume",
        dev.resident_bytes()
    );
    let t = Instant::now();
    drop(store);
    let meta = g.handles()[0].clone();
    let store = LvolStore::load(dev, meta).expect("load");
    println!(
        "  load: {n} volumes in {:?} ({} listed)",
        t.elapsed(),
        store.list().expect("list").len()
    );
    drop(store);
    let (store, _, _) = run(&g, 3, &[1024]);
    drop(store);
}
