//! A workload as the user asked for it, checked against a device and split into one
//! job per core.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::BdevInfo;
use serde::Serialize;

use crate::parse::{format_size, Dist, RangeSpec, Rw};
use crate::verify::{Tracker, TRACKER_UNIT_BYTES};
use crate::worker::{JobKind, JobSpec, Verify};
use crate::Error;

/// Default measured time when neither `--time` nor `--ios` is given.
pub const DEFAULT_SECONDS: f64 = 10.0;
/// Points of the IOPS-over-time series kept per job (the last one absorbs overflow).
pub const TIMELINE_POINTS: usize = 4096;
/// Most memory the `--verify` tracker may take.
pub const MAX_TRACKER_BYTES: u64 = 1 << 30;

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

    /// Blocks every request starts and ends on (except at the end of the range): the
    /// `--verify` tracker's unit.
    pub fn unit_blocks(&self) -> u64 {
        let (mut a, mut b) = (self.bs_blocks, self.align_blocks);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }

    /// The `--verify` tracker for this plan (every block unknown).
    pub fn tracker(&self) -> Tracker {
        Tracker::new(self.range_blocks, self.unit_blocks(), self.block_size)
    }

    /// The slots random requests of core `i` of `n` start at: all of them, or with
    /// `own`, those whose blocks lie in core `i`'s slice of the range (whole requests,
    /// as sequential workloads split it), so no two cores write the same block.
    pub fn own_slots(&self, i: u64, n: u64, own: bool) -> (u64, u64) {
        if !own || n == 1 {
            return (0, self.slots);
        }
        let chunks = self.range_blocks / self.bs_blocks;
        let lo = chunks * i / n * self.bs_blocks;
        let hi = if i + 1 == n {
            self.range_blocks
        } else {
            chunks * (i + 1) / n * self.bs_blocks
        };
        let first = lo.div_ceil(self.align_blocks);
        let end = match hi.checked_sub(self.bs_blocks) {
            Some(last) => last / self.align_blocks + 1,
            None => 0,
        };
        (first, end.max(first))
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
    let p = Plan {
        block_size: info.block_size,
        bs_blocks,
        align_blocks,
        range_blocks,
        slots,
        cores,
    };
    if w.verify {
        let unit = p.unit_blocks() * bsz;
        let bytes = range_blocks.div_ceil(p.unit_blocks()) * TRACKER_UNIT_BYTES;
        if bytes > MAX_TRACKER_BYTES {
            return Err(Error::usage(format!(
                "--verify keeps {TRACKER_UNIT_BYTES} bytes per {} of the range: --range {} \
                 would take {}; use at most {}",
                format_size(unit),
                format_size(range),
                format_size(bytes),
                format_size(MAX_TRACKER_BYTES / TRACKER_UNIT_BYTES * unit)
            )));
        }
        let n = u64::from(cores);
        if w.rw.is_random()
            && (0..n).any(|i| p.own_slots(i, n, true).0 == p.own_slots(i, n, true).1)
        {
            return Err(Error::usage(format!(
                "--range {} is too small for --verify on {cores} cores: each core needs \
                 its own slice holding a {} request",
                format_size(range),
                format_size(w.bs)
            )));
        }
    }
    Ok(p)
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

/// One job per core for `kind`; with `tracker` (`--verify`), every job checks what it
/// reads and records what it writes there.
///
/// - `Workload`: random workloads spread over the whole range, each core with its own
///   seed (with `--verify`, over its own slice: see [`Plan::own_slots`]); sequential
///   ones give each core its own slice of whole requests.
/// - `Fill` (write) and `ReadBack` (read): one sequential pass over the whole range,
///   each core over its slice (whole tracker units), the last request of a slice
///   possibly shorter.
pub fn jobs(
    w: &Workload,
    p: &Plan,
    kind: JobKind,
    progress: &Arc<Progress>,
    tracker: Option<&Arc<Tracker>>,
) -> Vec<JobSpec> {
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
                let (unit, units) = (p.unit_blocks(), p.range_blocks.div_ceil(p.unit_blocks()));
                let at = |k: u64| (units * k / n * unit).min(p.range_blocks);
                (at(i64_), at(i64_ + 1))
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
                own: p.own_slots(i64_, n, tracker.is_some()),
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
                verify: tracker.map(|t| Verify {
                    seed: w.seed,
                    // After a fill every block holds a header; a read-back after a
                    // write workload also meets blocks it never wrote.
                    expect_written: kind == JobKind::Workload,
                    tracker: t.clone(),
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

#[cfg(test)]
mod tests;
