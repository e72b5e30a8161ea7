//! A workload as the user asked for it, checked against a device and split into one
//! job per core.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::BdevInfo;
use serde::Serialize;

use crate::parse::{format_size, Dist, RangeSpec, Rw};
use crate::worker::{JobKind, JobSpec, Verify};
use crate::Error;

/// Default measured time when neither `--time` nor `--ios` is given.
pub const DEFAULT_SECONDS: f64 = 10.0;
/// Points of the IOPS-over-time series kept per job (the last one absorbs overflow).
pub const TIMELINE_POINTS: usize = 4096;

/// What to run, as typed (sizes in bytes).
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub rw: Rw,
    /// Read percentage of randrw.
    pub mix: u8,
    pub bs: u64,
    pub qd: u32,
    /// Measured seconds; `None` with `ios` set.
    pub time: Option<f64>,
    /// Total requests to measure, spread over the cores.
    pub ios: Option<u64>,
    pub ramp: f64,
    #[serde(skip)]
    pub range: Option<RangeSpec>,
    /// Offset granularity of random workloads (default: `bs`).
    pub align: Option<u64>,
    pub dist: Dist,
    pub verify: bool,
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            rw: Rw::RandRead,
            mix: 70,
            bs: 4096,
            qd: 32,
            time: Some(DEFAULT_SECONDS),
            ios: None,
            ramp: 0.0,
            range: None,
            align: None,
            dist: Dist::Uniform,
            verify: false,
            seed: 1,
        }
    }
}

impl Workload {
    /// One line: `randrw 70% read, 4KiB, QD 32, uniform`.
    pub fn describe(&self) -> String {
        let rw = match self.rw {
            Rw::RandRw => format!("randrw {}% read", self.mix),
            rw => rw.name().to_string(),
        };
        let len = match (self.time, self.ios) {
            (_, Some(n)) => format!("{n} I/Os"),
            (Some(t), None) => format!("{t} s"),
            (None, None) => String::new(),
        };
        format!(
            "{rw}, {}, QD {}, {}, {len}{}{}",
            format_size(self.bs),
            self.qd,
            self.dist,
            if self.ramp > 0.0 {
                format!(" after {} s ramp", self.ramp)
            } else {
                String::new()
            },
            if self.verify { ", verify" } else { "" }
        )
    }
}

/// A workload checked against a device's geometry (units: device blocks).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub block_size: u32,
    pub bs_blocks: u64,
    pub align_blocks: u64,
    pub range_blocks: u64,
    /// Positions a random request may start at.
    pub slots: u64,
    pub cores: u32,
}

impl Plan {
    pub fn range_bytes(&self) -> u64 {
        self.range_blocks * u64::from(self.block_size)
    }
}

/// Checks `w` against `info` for `cores` reactors.
pub fn plan(w: &Workload, info: &BdevInfo, cores: usize) -> Result<Plan, Error> {
    let bsz = u64::from(info.block_size);
    if w.qd == 0 {
        return Err(Error::usage("--qd must be at least 1"));
    }
    if w.bs == 0 || !w.bs.is_multiple_of(bsz) {
        return Err(Error::usage(format!(
            "--bs {} is not a multiple of the device block size {}",
            w.bs, info.block_size
        )));
    }
    if w.bs > u64::from(info.max_transfer) {
        return Err(Error::usage(format!(
            "--bs {} exceeds the device's largest transfer, {}",
            format_size(w.bs),
            format_size(u64::from(info.max_transfer))
        )));
    }
    let dev_bytes = info.num_blocks * bsz;
    let range = w.range.map_or(dev_bytes, |r| r.resolve(dev_bytes));
    if range > dev_bytes {
        return Err(Error::usage(format!(
            "--range {} is larger than the device ({})",
            format_size(range),
            format_size(dev_bytes)
        )));
    }
    let range_blocks = range / bsz;
    let bs_blocks = w.bs / bsz;
    if range_blocks < bs_blocks {
        return Err(Error::usage(format!(
            "--range {} is smaller than one request of {}",
            format_size(range),
            format_size(w.bs)
        )));
    }
    let align = w.align.unwrap_or(w.bs);
    if align == 0 || !align.is_multiple_of(bsz) {
        return Err(Error::usage(format!(
            "--align {align} is not a multiple of the device block size {}",
            info.block_size
        )));
    }
    let align_blocks = align / bsz;
    let slots = (range_blocks - bs_blocks) / align_blocks + 1;
    let cores = u32::try_from(cores).map_err(|_| Error::usage("too many cores"))?;
    if !w.rw.is_random() && range_blocks / bs_blocks < u64::from(cores) {
        return Err(Error::usage(format!(
            "--range {} holds fewer {} requests than there are cores ({cores})",
            format_size(range),
            format_size(w.bs)
        )));
    }
    if w.time.is_some_and(|t| t <= 0.0) && w.ios.is_none() {
        return Err(Error::usage("--time must be more than 0"));
    }
    if w.ios == Some(0) {
        return Err(Error::usage("--ios must be at least 1"));
    }
    Ok(Plan {
        block_size: info.block_size,
        bs_blocks,
        align_blocks,
        range_blocks,
        slots,
        cores,
    })
}

/// Live counters the main thread reads for the progress line: measured completions
/// per core (each written by its own reactor only).
#[derive(Debug)]
pub struct Progress {
    pub done: Box<[AtomicU64]>,
}

impl Progress {
    pub fn new(cores: usize) -> Arc<Self> {
        Arc::new(Self {
            done: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn total(&self) -> u64 {
        self.done
            .iter()
            .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

/// One job per core for `kind`.
///
/// - `Workload`: random workloads spread over the whole range, each core with its own
///   seed; sequential ones give each core its own slice of whole requests.
/// - `Fill` (write) and `ReadBack` (read): one sequential pass over the whole range,
///   each core over its slice, the last request of a slice possibly shorter.
pub fn jobs(w: &Workload, p: &Plan, kind: JobKind, progress: &Arc<Progress>) -> Vec<JobSpec> {
    let n = u64::from(p.cores);
    let one_pass = kind != JobKind::Workload;
    let interval = match (one_pass, w.time) {
        (false, Some(t)) if w.ios.is_none() => ((w.ramp + t) / 200.0).max(0.1),
        _ => 0.1,
    };
    (0..p.cores)
        .map(|i| {
            let i64_ = u64::from(i);
            let part = if one_pass {
                (p.range_blocks * i64_ / n, p.range_blocks * (i64_ + 1) / n)
            } else {
                let chunks = p.range_blocks / p.bs_blocks;
                (
                    chunks * i64_ / n * p.bs_blocks,
                    chunks * (i64_ + 1) / n * p.bs_blocks,
                )
            };
            let read_pct = match kind {
                JobKind::Fill => 0,
                JobKind::ReadBack => 100,
                JobKind::Workload => w.rw.read_percent(w.mix),
            };
            let ios = w.ios.map(|t| t / n + u64::from(i64_ < t % n));
            JobSpec {
                kind,
                index: i,
                cores: p.cores,
                read_pct,
                random: !one_pass && w.rw.is_random(),
                dist: w.dist,
                block_size: p.block_size,
                bs_blocks: p.bs_blocks,
                align_blocks: p.align_blocks,
                slots: p.slots,
                part,
                qd: w.qd,
                ramp: if one_pass {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(w.ramp)
                },
                time: match (one_pass, w.ios) {
                    (false, None) => {
                        Some(Duration::from_secs_f64(w.time.unwrap_or(DEFAULT_SECONDS)))
                    }
                    _ => None,
                },
                ios: if one_pass { None } else { ios },
                verify: w.verify.then_some(Verify {
                    seed: w.seed,
                    // After a fill every block holds a header; a read-back after a
                    // write workload also meets blocks it never wrote.
                    expect_written: kind == JobKind::Workload,
                }),
                seed: w
                    .seed
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_add(i64_ + 1),
                interval: Duration::from_secs_f64(interval),
                timeline_cap: TIMELINE_POINTS,
                progress: progress.clone(),
            }
        })
        .collect()
}
