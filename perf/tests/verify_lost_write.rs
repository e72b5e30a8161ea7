// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! A device that acknowledges a write it drops, or corrupts byte 100 of one, fails
//! `--verify` with the LBA; the same device without the fault passes.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::{
    defer_completion, BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoOp,
};
use ferrox_perf::bench::{self, Session, SessionOptions};
use ferrox_perf::parse::{RangeSpec, Rw};
use ferrox_perf::plan::Workload;
use ferrox_perf::report::Report;
use ferrox_perf::verify::{Problem, GEN_PASS_SHIFT};
use ferrox_reactor::{available_cores, PollMode, Reactor};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Acknowledge the write without doing it.
    Drop,
    /// Flip byte 100 of its first sector on the way.
    Corrupt,
}

/// A malloc bdev that, once armed, applies `fault` to the next write and notes its LBA.
struct Faulty {
    inner: Arc<dyn BlockDevice>,
    fault: Fault,
    armed: AtomicBool,
    hit: Mutex<Option<u64>>,
}

struct FaultyChannel {
    dev: Arc<Faulty>,
    inner: Rc<dyn ChannelImpl>,
}

impl BlockDevice for Faulty {
    fn info(&self) -> &BdevInfo {
        self.inner.info()
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let inner = self.inner.clone().open_channel(r)?;
        Ok(Rc::new(FaultyChannel { dev: self, inner }))
    }
}

impl ChannelImpl for FaultyChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        let op = match op {
            IoOp::Write {
                lba,
                blocks,
                mut buf,
                fua,
            } if self.dev.armed.swap(false, Ordering::SeqCst) => {
                *self.dev.hit.lock().unwrap() = Some(lba);
                match self.dev.fault {
                    Fault::Drop => {
                        Reactor::with(|r| defer_completion(r, done, Ok(()), Some(buf)));
                        return;
                    }
                    Fault::Corrupt => {
                        buf.as_mut_slice()[100] ^= 0x5a;
                        IoOp::Write {
                            lba,
                            blocks,
                            buf,
                            fua,
                        }
                    }
                }
            }
            op => op,
        };
        self.inner.submit(op, done);
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn close(&self) {
        self.inner.close();
    }
}

/// A sequential write of every 4 KiB of 64 KiB once (so nothing rewrites the faulty
/// block), on up to two cores, after the fill; `fault` armed between the two. The
/// read-back pass checks it all. Returns the report and the LBA the fault hit.
fn run(fault: Option<Fault>) -> (Report, Option<u64>) {
    let cores: Vec<usize> = available_cores().into_iter().take(2).collect();
    let session = Session::start(&SessionOptions {
        cores,
        poll_mode: PollMode::Adaptive,
        max_bs: 4096,
        max_qd: 4,
    })
    .unwrap();
    let dev = Arc::new(Faulty {
        inner: MallocBdev::new("m", (4 << 20) / 512, 512).unwrap(),
        fault: fault.unwrap_or(Fault::Drop),
        armed: AtomicBool::new(false),
        hit: Mutex::new(None),
    });
    let w = Workload {
        rw: Rw::Write,
        bs: 4096,
        qd: 4,
        time: None,
        ios: Some(16),
        range: Some(RangeSpec::Bytes(64 << 10)),
        verify: true,
        seed: 11,
        ..Workload::default()
    };
    let d = dev.clone();
    let armed = fault.is_some();
    let bdev: Arc<dyn BlockDevice> = dev.clone();
    let o = bench::run(
        &session,
        &bdev,
        &w,
        false,
        Some(Box::new(move |_: &Session, _: &Arc<dyn BlockDevice>| {
            d.armed.store(armed, Ordering::SeqCst);
        })),
    )
    .unwrap();
    let hit = *dev.hit.lock().unwrap();
    (Report::new("faulty malloc", &w, &o), hit)
}

#[test]
fn a_clean_device_passes() {
    let (r, hit) = run(None);
    let v = r.verify.as_ref().unwrap();
    assert_eq!(hit, None);
    assert!(r.passed, "{}", r.table());
    assert_eq!(v.errors, 0);
    // The read-back held every sector to the workload's write there.
    assert_eq!(v.tracked_sectors, (64 << 10) / 512, "{}", r.table());
}

#[test]
fn a_lost_write_is_reported_with_its_lba() {
    let (r, hit) = run(Some(Fault::Drop));
    let lba = hit.expect("a write was dropped");
    let v = r.verify.as_ref().unwrap();
    assert!(!r.passed, "{}", r.table());
    let m = v.first_errors[0];
    assert_eq!(m.lba, lba, "{}", r.table());
    // What the block still holds is the fill's write (pass 0), not the workload's.
    let Problem::Stale { expected, found } = m.problem else {
        panic!("{m}");
    };
    assert_eq!((found >> GEN_PASS_SHIFT) & 0xff, 0, "{m}");
    assert_eq!((expected >> GEN_PASS_SHIFT) & 0xff, 1, "{m}");
    assert!(r.table().contains(&format!("LBA {lba} ")), "{}", r.table());
}

#[test]
fn a_corrupted_byte_after_the_header_is_reported_with_its_lba() {
    let (r, hit) = run(Some(Fault::Corrupt));
    let lba = hit.expect("a write was corrupted");
    let v = r.verify.as_ref().unwrap();
    assert!(!r.passed, "{}", r.table());
    let m = v.first_errors[0];
    assert_eq!(m.lba, lba, "{}", r.table());
    assert_eq!(m.problem, Problem::BadData { offset: 100 });
}
