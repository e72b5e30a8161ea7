// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! A block corrupted behind the tool's back, between the fill and the checking
//! workload, is reported with its LBA and fails the run.

use std::sync::Arc;

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::BlockDevice;
use ferrox_perf::bench::{self, Session, SessionOptions};
use ferrox_perf::parse::{RangeSpec, Rw};
use ferrox_perf::plan::Workload;
use ferrox_perf::report::Report;
use ferrox_perf::verify::Problem;
use ferrox_reactor::{available_cores, PollMode};

#[test]
fn corrupted_block_is_reported_with_its_lba() {
    let session = Session::start(&SessionOptions {
        cores: vec![available_cores()[0]],
        poll_mode: PollMode::Adaptive,
        max_bs: 4096,
        max_qd: 8,
    })
    .unwrap();
    let dev: Arc<dyn BlockDevice> = MallocBdev::new("m", (4 << 20) / 512, 512).unwrap();
    // Sequential reads over the first 64 KiB: every block is read, whatever the seed.
    let w = Workload {
        rw: Rw::Read,
        bs: 4096,
        qd: 8,
        time: None,
        ios: Some(64),
        range: Some(RangeSpec::Bytes(64 << 10)),
        verify: true,
        seed: 7,
        ..Workload::default()
    };
    const BAD_LBA: u64 = 40;
    let o = bench::run(
        &session,
        &dev,
        &w,
        false,
        Some(Box::new(|s: &Session, d: &Arc<dyn BlockDevice>| {
            s.write_raw(d, BAD_LBA, vec![0xab; 512]).unwrap();
        })),
    )
    .unwrap();
    let r = Report::new("malloc:4MiB", &w, &o);
    let v = r.verify.as_ref().unwrap();
    assert!(!r.passed);
    assert!(v.errors >= 1, "{}", r.table());
    let m = v.first_errors[0];
    assert_eq!(m.lba, BAD_LBA);
    assert_eq!(
        m.problem,
        Problem::BadMagic {
            found: 0xabab_abab_abab_abab
        }
    );
    assert!(r.table().contains("LBA 40"), "{}", r.table());
    assert!(r.json().contains("\"lba\": 40"), "{}", r.json());
}
