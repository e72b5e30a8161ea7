//! A host that asks for R2Ts and never sends the data cannot pin the pool buffers
//! that every other host needs: commands are checked before any R2T, and an R2T
//! left unanswered closes its connection.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ferrox_nvme_spec::{
    Command, Completion, ConnectCommand, SglDescriptor, Status, CONNECT_DATA_LEN,
};
use ferrox_nvmeof::pdu::{DataHeader, Digests, PduType};
use zerocopy::FromBytes;

const LEN: usize = 128 << 10;

/// Sends `opcode` with a transport SGL of `len` bytes as `cid`.
fn send_transport(h: &mut Host, opcode: u8, cid: u16, len: usize) {
    let mut cmd = Command::new(opcode, 0);
    cmd.cid = cid;
    cmd.flags = 0x40;
    cmd.dptr = SglDescriptor::transport(len as u32).to_dptr();
    h.send_cmd(&cmd, &[]);
}

/// The next PDU must be a response (no R2T) with `status`.
fn expect_refused(h: &mut Host, status: Status) {
    let p = h.recv();
    assert_eq!(
        p.ch.pdu_type,
        PduType::CAPSULE_RESP,
        "an R2T went out: {p:?}"
    );
    let c = Completion::read_from_bytes(&p.header[8..24]).unwrap();
    assert_eq!(c.status(), status.with_dnr(), "cid {}", c.cid);
}

fn healthy_io_works(io: &mut Host, seed: u8) {
    let d = pattern(seed, LEN);
    assert_eq!(io.write(64, &d), Status::SUCCESS);
    assert_eq!(io.read(64, 256).1, d);
}

#[test]
fn commands_are_checked_before_any_r2t() {
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);

    // The attack of issue 14: a discovery controller, 32 Set Features (0x09) with a
    // 128 KiB transport SGL each. None gets an R2T: no feature of a discovery
    // controller takes data.
    let mut disc = Host::discovery(f.addr);
    for cid in 0..32u16 {
        send_transport(&mut disc, 0x09, 100 + cid, LEN);
    }
    for _ in 0..32 {
        expect_refused(&mut disc, Status::INVALID_FIELD);
    }
    // Host-to-controller opcodes the queue does not implement: refused, no R2T.
    for (cid, op) in [(200u16, 0x0du8), (201, 0x11), (202, 0x1d)] {
        send_transport(&mut disc, op, cid, 4096);
        expect_refused(&mut disc, Status::INVALID_OPCODE);
    }
    // The same on an NVM admin queue and on an I/O queue (Write Uncorrectable has
    // no data; 0x0d is not an I/O command here).
    let (mut admin2, cntlid2) = Host::admin(f.addr, Digests::default(), 0);
    send_transport(&mut admin2, 0x0d, 300, 4096);
    expect_refused(&mut admin2, Status::INVALID_OPCODE);
    // Set Features takes at most 4 KiB.
    send_transport(&mut admin2, 0x09, 303, LEN);
    expect_refused(&mut admin2, Status::DATA_SGL_LENGTH_INVALID);
    let mut io2 = Host::io_queue(f.addr, Digests::default(), cntlid2, 1);
    send_transport(&mut io2, 0x0d, 301, LEN);
    expect_refused(&mut io2, Status::INVALID_OPCODE);
    // Dataset Management takes at most 256 ranges of 16 bytes.
    send_transport(&mut io2, 0x09, 302, 8192);
    expect_refused(&mut io2, Status::DATA_SGL_LENGTH_INVALID);

    // The legitimate host is served throughout, and the attackers still are too.
    healthy_io_works(&mut io, 1);
    healthy_io_works(&mut io2, 2);
}

#[test]
fn an_unconnected_queue_gets_one_connect_r2t_at_a_time() {
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    // Before Connect, only Connect runs: 32 of them with a transport SGL would
    // each hold a buffer. The first gets its R2T, the others are refused.
    let mut h = Host::ic(f.addr, Digests::default());
    for cid in 0..32u16 {
        let mut cmd: Command = ConnectCommand::new(cid, 0, 31, 0).into();
        cmd.cid = cid;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(CONNECT_DATA_LEN as u32).to_dptr();
        h.send_cmd(&cmd, &[]);
    }
    let (mut r2ts, mut refused) = (0, 0);
    for _ in 0..32 {
        let p = h.recv();
        match p.ch.pdu_type {
            PduType::R2T => r2ts += 1,
            PduType::CAPSULE_RESP => {
                let c = Completion::read_from_bytes(&p.header[8..24]).unwrap();
                assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR.with_dnr());
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((r2ts, refused), (1, 31));
    assert_eq!(t.r2t_held.load(Ordering::Relaxed), CONNECT_DATA_LEN);
    healthy_io_works(&mut io, 5);
}

#[test]
fn an_unanswered_r2t_closes_its_connection_and_frees_the_pool() {
    // One reactor: 32 buffers of 128 KiB for everyone.
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    t.set_r2t_timeout(Duration::from_millis(300));
    // No quotas in this test: the deadline alone.
    t.set_r2t_shares(100, 100);
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut good = Host::io_queue(f.addr, Digests::default(), cntlid, 2);
    // The attacker: 32 writes of 128 KiB, all their R2Ts taken, no data sent; that
    // pins every 128 KiB buffer of the pool.
    let mut bad = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    for cid in 0..32u16 {
        let mut cmd = Command::write(0, 1, u64::from(cid) * 256, 255);
        cmd.cid = cid;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(LEN as u32).to_dptr();
        bad.send_cmd(&cmd, &[]);
    }
    for _ in 0..32 {
        let p = bad.recv();
        assert_eq!(p.ch.pdu_type, PduType::R2T);
        let r = DataHeader::parse(&p.header);
        assert_eq!(r.length as usize, LEN);
    }
    // The legitimate host's 128 KiB write waits for a buffer until the attacker's
    // connection is closed for its overdue R2Ts; then it completes.
    let d = pattern(7, LEN);
    assert_eq!(good.write(1024, &d), Status::SUCCESS);
    assert_eq!(good.read(1024, 256).1, d);
    bad.expect_closed("a host that never answers its R2Ts");
    let t0 = Instant::now();
    while t.r2t_timeouts.load(Ordering::Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no R2T timeout counted"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_host_that_answers_its_r2ts_is_not_closed() {
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    t.set_r2t_timeout(Duration::from_millis(200));
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    // Writes spread over more than the timeout, each answered at once.
    let t0 = Instant::now();
    let mut seed = 0u8;
    while t0.elapsed() < Duration::from_millis(600) {
        seed = seed.wrapping_add(1);
        let d = pattern(seed, LEN);
        assert_eq!(io.write(0, &d), Status::SUCCESS);
    }
    assert_eq!(t.r2t_timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(io.read(0, 256).1, pattern(seed, LEN));
}

#[test]
fn r2t_buffers_are_shared_under_quotas() {
    // One reactor: 32 buffers of 128 KiB. One controller's R2Ts may hold 25% of
    // them (8), all R2Ts together 75% (24).
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut good = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let (per_ctrl, total) = (8 * LEN, 24 * LEN);
    // Four controllers of an attacker (any allowed host NQN can be claimed), one
    // queue each, 32 writes of 128 KiB whose data never comes.
    let mut bad = Vec::new();
    for _ in 0..4 {
        let (a, c) = Host::admin(f.addr, Digests::default(), 0);
        let mut q = Host::io_queue(f.addr, Digests::default(), c, 1);
        for cid in 0..32u16 {
            let mut cmd = Command::write(0, 1, u64::from(cid) * 256, 255);
            cmd.cid = cid;
            cmd.flags = 0x40;
            cmd.dptr = SglDescriptor::transport(LEN as u32).to_dptr();
            q.send_cmd(&cmd, &[]);
        }
        bad.push((a, c, q));
    }
    // Bounded wait until the R2Ts the quotas allow are out.
    let t0 = Instant::now();
    while t.r2t_held.load(Ordering::Relaxed) < total {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the R2Ts never went out"
        );
        std::thread::yield_now();
    }
    assert_eq!(t.r2t_held.load(Ordering::Relaxed), total);
    let sub = t.subsystem(NQN).unwrap();
    for (_, c, _) in &bad {
        let held = sub.controller(*c).unwrap().r2t_held.load(Ordering::Relaxed);
        assert!(
            held <= per_ctrl,
            "controller {c} holds {held} bytes of R2Ts"
        );
    }
    // The reserve: the legitimate host's 128 KiB reads and its in-capsule writes
    // are served. (Its writes through R2T wait for the target-wide cap: until the
    // attackers send their data, or their R2Ts expire.)
    let d = pattern(3, 4096);
    assert_eq!(good.write(8, &d), Status::SUCCESS);
    for _ in 0..4 {
        let (st, data) = good.read(0, 256);
        assert_eq!(st, Status::SUCCESS);
        assert_eq!(&data[4096..8192], &d[..]);
    }
    // The attackers' R2Ts are answered (each host on its own thread, as real hosts
    // are): all their writes complete.
    let threads: Vec<_> = bad
        .into_iter()
        .map(|(a, _, mut q)| {
            std::thread::spawn(move || {
                answer_all(&mut q);
                (a, q)
            })
        })
        .collect();
    let _keep: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(t.r2t_held.load(Ordering::Relaxed), 0);
    healthy_io_works(&mut good, 4);
}

/// Answers every R2T of 32 pipelined writes until all completed.
fn answer_all(q: &mut Host) {
    {
        let mut done = 0;
        while done < 32 {
            let p = q.recv();
            match p.ch.pdu_type {
                PduType::R2T => {
                    let r = DataHeader::parse(&p.header);
                    q.send_h2c(r.cccid, r.ttag, 0, &pattern(1, LEN), true);
                }
                PduType::CAPSULE_RESP => {
                    let c = Completion::read_from_bytes(&p.header[8..24]).unwrap();
                    assert_eq!(c.status(), Status::SUCCESS);
                    done += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
