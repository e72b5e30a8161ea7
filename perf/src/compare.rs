//! `compare A B`: runs two targets alternately (A B A B …) with the same workload and
//! reports each figure's min/median/max per target and the A/B ratio, pair by pair.

use serde::Serialize;

use crate::report::Report;

/// Reads one figure from a report.
pub type Getter = fn(&Report) -> f64;

/// The figures compared, with how to read them from a report.
pub const FIGURES: &[(&str, Getter)] = &[
    ("iops", |r| r.total.iops),
    ("mib_s", |r| r.total.mib_s),
    ("lat_mean_us", |r| r.total.latency.mean_us),
    ("lat_p50_us", |r| r.total.latency.p50_us),
    ("lat_p99_us", |r| r.total.latency.p99_us),
    ("lat_p99_9_us", |r| r.total.latency.p99_9_us),
    ("cpu_us_per_io", |r| r.cpu_us_per_io),
];

/// Min, median and max of some values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Self {
            min: s[0],
            median,
            max: s[n - 1],
        }
    }
}

/// One compared figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub a: Spread,
    pub b: Spread,
    /// A/B of each round's pair.
    pub ratio: Spread,
}

/// The comparison's result.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub version: u32,
    pub a: String,
    pub b: String,
    pub rounds: usize,
    pub rows: Vec<Row>,
    /// No verify mismatch or I/O error in any run.
    pub passed: bool,
    pub runs_a: Vec<Report>,
    pub runs_b: Vec<Report>,
}

impl Comparison {
    pub fn new(a: &str, b: &str, runs_a: Vec<Report>, runs_b: Vec<Report>) -> Self {
        let rows = FIGURES
            .iter()
            .map(|(name, get)| {
                let va: Vec<f64> = runs_a.iter().map(get).collect();
                let vb: Vec<f64> = runs_b.iter().map(get).collect();
                let ratios: Vec<f64> = va
                    .iter()
                    .zip(&vb)
                    .map(|(x, y)| if *y != 0.0 { x / y } else { f64::NAN })
                    .filter(|r| r.is_finite())
                    .collect();
                Row {
                    figure: name,
                    a: Spread::of(&va),
                    b: Spread::of(&vb),
                    ratio: Spread::of(&ratios),
                }
            })
            .collect();
        Self {
            version: crate::report::VERSION,
            a: a.to_string(),
            b: b.to_string(),
            rounds: runs_a.len().min(runs_b.len()),
            passed: runs_a.iter().chain(&runs_b).all(|r| r.passed),
            rows,
            runs_a,
            runs_b,
        }
    }

    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "compare, {} round(s) run A B A B …\n  A = {}\n  B = {}",
            self.rounds, self.a, self.b
        );
        let _ = writeln!(
            s,
            "{:<14} {:>30} {:>30} {:>24}",
            "figure", "A min / median / max", "B min / median / max", "A/B min / median / max"
        );
        let f = |v: f64| {
            if v.abs() >= 1e4 {
                crate::report::thousands(v)
            } else {
                format!("{v:.2}")
            }
        };
        for r in &self.rows {
            let three = |sp: &Spread| format!("{} / {} / {}", f(sp.min), f(sp.median), f(sp.max));
            let _ = writeln!(
                s,
                "{:<14} {:>30} {:>30} {:>24}",
                r.figure,
                three(&r.a),
                three(&r.b),
                format!(
                    "{:.3} / {:.3} / {:.3}",
                    r.ratio.min, r.ratio.median, r.ratio.max
                )
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
