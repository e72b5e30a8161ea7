//! The report: built from an [`Outcome`], printed as a table or as JSON.
//!
//! JSON field names are stable (`version` changes when one does); latencies are in
//! microseconds, rates per second, sizes in bytes.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::Outcome;
use crate::plan::Workload;
use crate::stats::{CoreFigures, Figures, Mismatch};

/// The JSON schema version.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub target: String,
    pub workload: Workload,
    pub block_size: u32,
    pub range_bytes: u64,
    /// CPUs the reactors ran on.
    pub cores: Vec<usize>,
    pub total: Figures,
    pub read: Figures,
    pub write: Figures,
    pub per_core: Vec<CoreFigures>,
    /// CPU seconds the whole process used during the measured pass (reactors and, with
    /// `--spawn-target`, the in-process target too).
    pub cpu_seconds: f64,
    pub cpu_us_per_io: f64,
    pub verify: Option<VerifyReport>,
    pub io_errors: u64,
    pub first_io_error: Option<String>,
    pub timeline: Timeline,
    /// No verify mismatch and no I/O error.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub checked_sectors: u64,
    /// Of those, the ones also checked against the last write acknowledged there.
    pub tracked_sectors: u64,
    pub errors: u64,
    pub first_errors: Vec<Mismatch>,
}

/// Measured IOPS per interval.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub interval_s: f64,
    pub iops: Vec<f64>,
}

impl Report {
    pub fn new(target: &str, w: &Workload, o: &Outcome) -> Self {
        let t = &o.total;
        let all = t.all();
        let mut verify = None;
        if w.verify {
            let mut v = t.verify.clone();
            for p in [&o.fill, &o.readback].into_iter().flatten() {
                v.merge(&p.verify);
            }
            verify = Some(VerifyReport {
                checked_sectors: v.checked_sectors,
                tracked_sectors: v.tracked_sectors,
                errors: v.errors,
                first_errors: v.first_errors,
            });
        }
        let (verr, ioerr) = o.failures();
        let first_io_error = [Some(t), o.fill.as_ref(), o.readback.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|p| p.first_io_error.clone());
        Self {
            version: VERSION,
            target: target.to_string(),
            workload: w.clone(),
            block_size: o.plan.block_size,
            range_bytes: o.plan.range_bytes(),
            cores: o.cores.iter().map(|c| c.core).collect(),
            total: Figures::of(&all, t.seconds),
            read: Figures::of(&t.read, t.seconds),
            write: Figures::of(&t.write, t.seconds),
            per_core: o
                .cores
                .iter()
                .map(|c| CoreFigures {
                    reactor: c.reactor,
                    core: c.core,
                    figures: Figures::of(&c.all(), c.seconds),
                })
                .collect(),
            cpu_seconds: o.cpu_seconds,
            cpu_us_per_io: if all.ios > 0 {
                o.cpu_seconds * 1e6 / all.ios as f64
            } else {
                0.0
            },
            verify,
            io_errors: ioerr,
            first_io_error,
            timeline: Timeline {
                interval_s: t.interval,
                iops: t.timeline_iops(),
            },
            passed: verr == 0 && ioerr == 0,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ferrox-perf: {} — {}\n  block {} B, range {}, {} reactor(s) on CPU {:?}",
            self.target,
            self.workload.describe(),
            self.block_size,
            crate::parse::format_size(self.range_bytes),
            self.cores.len(),
            self.cores
        );
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   latency µs",
            "", "IOPS", "MiB/s", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let row = |s: &mut String, name: &str, f: &Figures| {
            let l = &f.latency;
            let _ = writeln!(
                s,
                "{name:<10} {:>9} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                thousands(f.iops),
                f.mib_s,
                l.mean_us,
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p99_9_us,
                l.p99_99_us,
                l.max_us
            );
        };
        if self.per_core.len() > 1 {
            for c in &self.per_core {
                row(&mut s, &format!("cpu {}", c.core), &c.figures);
            }
        }
        row(&mut s, "total", &self.total);
        if self.read.ios > 0 && self.write.ios > 0 {
            row(&mut s, "  read", &self.read);
            row(&mut s, "  write", &self.write);
        }
        let _ = writeln!(
            s,
            "{} I/Os in {:.2} s; CPU {:.2} s ({:.0}% of one core, {:.2} µs per I/O)",
            self.total.ios,
            self.total.seconds,
            self.cpu_seconds,
            if self.total.seconds > 0.0 {
                self.cpu_seconds / self.total.seconds * 100.0
            } else {
                0.0
            },
            self.cpu_us_per_io
        );
        if let Some(v) = &self.verify {
            let _ = writeln!(
                s,
                "verify: {} sectors checked ({} against their last write), {} error(s)",
                v.checked_sectors, v.tracked_sectors, v.errors
            );
            for m in &v.first_errors {
                let _ = writeln!(s, "  verify error at {m}");
            }
        }
        if self.io_errors > 0 {
            let _ = writeln!(
                s,
                "I/O errors: {} (first: {})",
                self.io_errors,
                self.first_io_error.as_deref().unwrap_or("?")
            );
        }
        s
    }
}

/// `812.3k`, `1.20M`, `950`.
pub fn thousands(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
