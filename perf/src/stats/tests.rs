use super::*;
use crate::verify::Problem;

fn core(values: &[u64], writes: &[u64], seconds: f64, timeline: Vec<u64>) -> CoreResult {
    let mut c = CoreResult::new(0, 0, 0.5);
    for &v in values {
        c.read.ios += 1;
        c.read.bytes += 4096;
        c.read.hist.record(v).unwrap();
    }
    for &v in writes {
        c.write.ios += 1;
        c.write.bytes += 4096;
        c.write.hist.record(v).unwrap();
    }
    c.seconds = seconds;
    c.timeline = timeline;
    c
}

#[test]
fn merge_adds_counts_histograms_and_timelines() {
    let mut a = core(&[1000, 2000, 3000], &[10_000], 1.0, vec![1, 2, 3]);
    let mut b = core(&[4000], &[], 1.5, vec![5]);
    a.io_errors = 1;
    a.first_io_error = Some("LBA 1: boom".to_string());
    b.verify.errors = 2;
    b.verify.checked_sectors = 10;
    let m = merge(&[a, b]);
    assert_eq!(m.read.ios, 4);
    assert_eq!(m.write.ios, 1);
    assert_eq!(m.read.bytes, 4 * 4096);
    assert_eq!(m.read.hist.len(), 4);
    assert_eq!(m.all().hist.len(), 5);
    assert_eq!(m.seconds, 1.5);
    assert_eq!(m.timeline, vec![6, 2, 3]);
    assert_eq!(
        (m.io_errors, m.verify.errors, m.verify.checked_sectors),
        (1, 2, 10)
    );
    assert_eq!(m.first_io_error.as_deref(), Some("LBA 1: boom"));
    let f = Figures::of(&m.read, m.seconds);
    assert!((f.iops - 4.0 / 1.5).abs() < 1e-9);
    assert_eq!(f.latency.max_us, m.read.hist.max() as f64 / 1000.0);
    assert!(merge(&[]).read.ios == 0);
}

#[test]
fn merged_percentiles_are_those_of_all_samples() {
    let a = core(
        &(1..=500).map(|i| i * 1000).collect::<Vec<_>>(),
        &[],
        1.0,
        vec![],
    );
    let b = core(
        &(501..=1000).map(|i| i * 1000).collect::<Vec<_>>(),
        &[],
        1.0,
        vec![],
    );
    let l = Latency::of(&merge(&[a, b]).read.hist);
    // 1..=1000 µs: p50 ~ 500 µs, p99 ~ 990 µs (3 significant digits).
    assert!((l.p50_us - 500.0).abs() <= 1.0, "{l:?}");
    assert!((l.p90_us - 900.0).abs() <= 1.0, "{l:?}");
    assert!((l.p99_us - 990.0).abs() <= 1.0, "{l:?}");
    assert!((l.mean_us - 500.5).abs() <= 1.0, "{l:?}");
    assert!(l.min_us <= 1.001 && l.max_us >= 999.0, "{l:?}");
    assert_eq!(Latency::of(&new_histogram()), Latency::default());
}

#[test]
fn verify_mismatches_are_capped() {
    let mut a = CoreResult::new(0, 0, 1.0);
    for i in 0..MAX_MISMATCHES as u64 {
        a.verify.errors += 1;
        a.verify.first_errors.push(Mismatch {
            lba: i,
            sector: i,
            problem: Problem::NeverWritten,
        });
    }
    let m = merge(&[a.clone(), a]);
    assert_eq!(m.verify.errors, 2 * MAX_MISMATCHES as u64);
    assert_eq!(m.verify.first_errors.len(), MAX_MISMATCHES);
}

#[test]
fn huge_latencies_saturate() {
    let mut d = DirStats::default();
    d.hist.saturating_record(u64::MAX);
    assert!(d.hist.max() >= MAX_LATENCY_NS);
}

#[test]
fn the_last_timeline_interval_uses_its_real_length() {
    let c = core(&[], &[], 1.25, vec![50, 50, 25]);
    // Intervals of 0.5 s: the last one covers 0.25 s.
    assert_eq!(c.timeline_iops(), vec![100.0, 100.0, 100.0]);
}
