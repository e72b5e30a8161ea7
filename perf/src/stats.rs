//! Per-core results, their merge into totals, and the figures a report shows.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::verify::Problem;

/// Largest latency a histogram tracks (longer ones are clamped): 60 s, in ns.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

/// Completed requests of one direction.
#[derive(Debug, Clone)]
pub struct DirStats {
    pub ios: u64,
    pub bytes: u64,
    pub hist: Histogram<u64>,
}

impl Default for DirStats {
    fn default() -> Self {
        Self {
            ios: 0,
            bytes: 0,
            hist: new_histogram(),
        }
    }
}

impl DirStats {
    pub fn merge(&mut self, o: &DirStats) {
        self.ios += o.ios;
        self.bytes += o.bytes;
        self.hist
            .add(&o.hist)
            .expect("histograms with the same bounds always merge");
    }
}

/// A bad sector found by `--verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Device logical block holding the sector.
    pub lba: u64,
    /// 512-byte sector number on the device.
    pub sector: u64,
    pub problem: Problem,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LBA {} (sector {}): {}",
            self.lba, self.sector, self.problem
        )
    }
}

/// Most mismatches kept per core (all are counted).
pub const MAX_MISMATCHES: usize = 16;

/// What `--verify` saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyStats {
    /// Sectors that held this run's data.
    pub checked_sectors: u64,
    /// Of those, the ones also checked against the last write acknowledged there (no
    /// write to them in flight while they were read).
    pub tracked_sectors: u64,
    pub errors: u64,
    pub first_errors: Vec<Mismatch>,
}

impl VerifyStats {
    pub fn merge(&mut self, o: &VerifyStats) {
        self.checked_sectors += o.checked_sectors;
        self.tracked_sectors += o.tracked_sectors;
        self.errors += o.errors;
        for m in &o.first_errors {
            if self.first_errors.len() < MAX_MISMATCHES {
                self.first_errors.push(*m);
            }
        }
    }
}

/// What one core measured in one job.
#[derive(Debug, Clone)]
pub struct CoreResult {
    /// Reactor index and the CPU it is pinned to.
    pub reactor: usize,
    pub core: usize,
    /// Seconds from the end of the ramp to the last measured completion.
    pub seconds: f64,
    pub read: DirStats,
    pub write: DirStats,
    /// Measured completions per `interval` seconds.
    pub timeline: Vec<u64>,
    pub interval: f64,
    pub verify: VerifyStats,
    pub io_errors: u64,
    pub first_io_error: Option<String>,
}

impl CoreResult {
    pub fn new(reactor: usize, core: usize, interval: f64) -> Self {
        Self {
            reactor,
            core,
            seconds: 0.0,
            read: DirStats::default(),
            write: DirStats::default(),
            timeline: Vec::new(),
            interval,
            verify: VerifyStats::default(),
            io_errors: 0,
            first_io_error: None,
        }
    }

    /// IOPS of each timeline interval; the last interval is usually cut short by the
    /// end of the run, so its rate uses the time it actually covered.
    pub fn timeline_iops(&self) -> Vec<f64> {
        let n = self.timeline.len();
        self.timeline
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let span = if i + 1 == n {
                    (self.seconds - i as f64 * self.interval)
                        .clamp(self.interval / 100.0, self.interval)
                } else {
                    self.interval
                };
                c as f64 / span
            })
            .collect()
    }

    /// Both directions together.
    pub fn all(&self) -> DirStats {
        let mut d = self.read.clone();
        d.merge(&self.write);
        d
    }
}

/// Merges per-core results: counts and histograms add, timelines add bucket by
/// bucket, and the duration is the longest core's (so rates are not overstated).
pub fn merge(cores: &[CoreResult]) -> CoreResult {
    let interval = cores.first().map_or(1.0, |c| c.interval);
    let mut t = CoreResult::new(usize::MAX, usize::MAX, interval);
    for c in cores {
        t.seconds = t.seconds.max(c.seconds);
        t.read.merge(&c.read);
        t.write.merge(&c.write);
        if t.timeline.len() < c.timeline.len() {
            t.timeline.resize(c.timeline.len(), 0);
        }
        for (a, b) in t.timeline.iter_mut().zip(&c.timeline) {
            *a += b;
        }
        t.verify.merge(&c.verify);
        t.io_errors += c.io_errors;
        if t.first_io_error.is_none() {
            t.first_io_error.clone_from(&c.first_io_error);
        }
    }
    t
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |p: f64| us(h.value_at_quantile(p));
        Self {
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: us(h.max()),
        }
    }
}

/// Throughput and latency of some set of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    pub ios: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub iops: f64,
    pub mib_s: f64,
    pub latency: Latency,
}

impl Figures {
    pub fn of(d: &DirStats, seconds: f64) -> Self {
        let rate = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Self {
            ios: d.ios,
            bytes: d.bytes,
            seconds,
            iops: rate(d.ios as f64),
            mib_s: rate(d.bytes as f64) / f64::from(1u32 << 20),
            latency: Latency::of(&d.hist),
        }
    }
}

/// One core's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CoreFigures {
    pub reactor: usize,
    pub core: usize,
    #[serde(flatten)]
    pub figures: Figures,
}

#[cfg(test)]
mod tests;
