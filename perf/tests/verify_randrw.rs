// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! A one-second malloc randrw with --verify: no mismatch, and I/O happened.

use std::sync::Arc;

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::BlockDevice;
use ferrox_perf::bench::{self, Session, SessionOptions};
use ferrox_perf::parse::Rw;
use ferrox_perf::plan::Workload;
use ferrox_perf::report::Report;
use ferrox_reactor::{available_cores, PollMode};

#[test]
fn malloc_randrw_verify_one_second() {
    let cores: Vec<usize> = available_cores().into_iter().take(2).collect();
    let session = Session::start(&SessionOptions {
        cores,
        poll_mode: PollMode::Adaptive,
        max_bs: 4096,
        max_qd: 16,
    })
    .unwrap();
    let dev: Arc<dyn BlockDevice> = MallocBdev::new("m", (16 << 20) / 512, 512).unwrap();
    let w = Workload {
        rw: Rw::RandRw,
        mix: 50,
        bs: 4096,
        qd: 16,
        time: Some(1.0),
        verify: true,
        seed: 99,
        ..Workload::default()
    };
    let o = bench::run(&session, &dev, &w, false, None).unwrap();
    let r = Report::new("malloc:16MiB", &w, &o);
    let v = r.verify.as_ref().unwrap();
    assert_eq!(v.errors, 0, "{}", r.table());
    assert!(v.checked_sectors > 0);
    // Reads were also held to the last write acknowledged on their blocks.
    assert!(v.tracked_sectors > 0, "{}", r.table());
    assert_eq!(r.io_errors, 0);
    assert!(r.passed);
    assert!(
        r.total.iops > 0.0 && r.read.ios > 0 && r.write.ios > 0,
        "{}",
        r.table()
    );
    assert_eq!(r.total.ios, r.read.ios + r.write.ios);
    // The fill covered the whole range before the workload read it.
    let fill = o.fill.as_ref().unwrap();
    assert_eq!(fill.write.bytes, 16 << 20);
    assert!(r.json().contains("\"checked_sectors\""));
}
