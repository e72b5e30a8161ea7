//! A host on loopback brings a controller up and moves data both ways.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use common::*;
use ferrox_nvme_spec::{Command, Status};
use ferrox_nvmeof::pdu::Digests;

fn round_trip(digests: Digests) {
    let f = fixture();
    let (mut admin, cntlid) = Host::admin(f.addr, digests, 0);
    // Number of Queues: ask for 2.
    let nq = admin.exec(
        Command::new(0x09, 0).with_cdws([0x07, 1 | (1 << 16), 0, 0, 0, 0]),
        &[],
        0,
    );
    assert!(nq.0.status().is_success());
    let mut io = Host::io_queue(f.addr, digests, cntlid, 1);
    for (lba, len) in [
        (0u64, 512usize),
        (8, 4096),
        (64, 8192),
        (200, 65536),
        (1000, 131072),
    ] {
        let data = pattern(lba as u8, len);
        assert_eq!(
            io.write(lba, &data),
            Status::SUCCESS,
            "write {len} at {lba}"
        );
        let (st, back) = io.read(lba, (len / 512) as u32);
        assert_eq!(st, Status::SUCCESS);
        assert!(back == data, "read back {len} bytes at {lba}");
    }
    // Flush and write zeroes.
    assert!(io
        .exec(Command::flush(0, 1), &[], 0)
        .0
        .status()
        .is_success());
    assert!(io
        .exec(Command::write_zeroes(0, 1, 8, 7), &[], 0)
        .0
        .status()
        .is_success());
    let (_, z) = io.read(8, 8);
    assert!(z.iter().all(|&b| b == 0));
    // Every I/O command above landed in the controller's latency histogram.
    let ctrl = f.target.shared().subsystem(NQN).unwrap().controllers()[0].clone();
    let lat = ctrl.latency();
    assert_eq!(
        lat.count,
        5 * 2 + 3,
        "10 reads/writes, flush, write zeroes, read"
    );
    assert_eq!(lat.buckets.iter().sum::<u64>(), lat.count);
    assert!(lat.sum_ns > 0);
}

#[test]
fn data_round_trips_without_digests() {
    round_trip(Digests::default());
}

#[test]
fn data_round_trips_with_header_and_data_digests() {
    round_trip(Digests {
        header: true,
        data: true,
    });
}

/// Large writes go through R2T; their data must land straight in the command's
/// buffer, not through the staging buffer (the zero-copy receive).
fn r2t_writes_are_received_zero_copy(digests: Digests) {
    let f = fixture();
    let (_a, cntlid) = Host::admin(f.addr, digests, 0);
    let mut io = Host::io_queue(f.addr, digests, cntlid, 1);
    let ctrl = f
        .target
        .shared()
        .subsystem(NQN)
        .unwrap()
        .controller(cntlid)
        .unwrap();
    let (d0, c0) = ctrl.received_bytes();
    let len = 128 << 10;
    for i in 0..8u64 {
        let d = pattern(i as u8, len);
        let cmd = Command::write(0, 1, i * 256, 255);
        assert_eq!(io.exec_r2t(cmd, &d).status(), Status::SUCCESS);
        assert_eq!(io.read(i * 256, 256).1, d, "write {i}");
    }
    let (d1, c1) = ctrl.received_bytes();
    assert_eq!(
        (d1 - d0) + (c1 - c0),
        8 * len as u64,
        "every data byte counted"
    );
    assert_eq!(c1 - c0, 0, "no write data copied out of the staging buffer");
}

#[test]
fn r2t_writes_are_received_zero_copy_without_digests() {
    r2t_writes_are_received_zero_copy(Digests::default());
}

#[test]
fn r2t_writes_are_received_zero_copy_with_digests() {
    r2t_writes_are_received_zero_copy(Digests {
        header: true,
        data: true,
    });
}
