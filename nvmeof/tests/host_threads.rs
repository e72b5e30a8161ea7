//! The host library starts no OS thread per controller: keep-alive runs as a task
//! of a reactor. (A process of its own: the test counts the process's threads.)
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::sync::Arc;

use common::*;
use ferrox_bdev::testing::{run_kept, Req};
use ferrox_bdev::BlockDevice;
use ferrox_nvmeof::host::NvmfBdev;
use ferrox_reactor::ReactorHandle;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn open(f: &Fixture, h: &ReactorHandle) -> Arc<dyn BlockDevice> {
    let url = format!("nvme+tcp://{}/{NQN}", f.addr);
    let dev = NvmfBdev::connect(&url, &host_opts(false, 8)).unwrap();
    // A channel, kept: its I/O queue and the controller's keep-alive stay up.
    assert!(run_kept(h, dev.clone(), vec![Req::Read(0, 8)])[0].is_ok());
    dev
}

#[test]
fn controllers_with_keep_alive_add_no_threads() {
    let f = fixture();
    let g = host_group();
    let h = &g.handles()[0];
    // Whatever starts once per process has started with the first controller.
    let first = open(&f, h);
    let before = threads();
    let devs: Vec<_> = (0..16).map(|_| open(&f, h)).collect();
    let after = threads();
    // (Threads the fixture started may end meanwhile: the count must not grow.)
    assert!(
        after <= before,
        "16 more controllers (keep-alive on) took {before} to {after} threads"
    );
    drop(devs);
    drop(first);
}
