//! More large writes in flight than the buffer pool holds: commands wait for buffers
//! (back-pressure) and all complete, with the right data. A host that stops reading
//! its responses cannot keep the pool from everyone else.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use common::*;
use ferrox_nvme_spec::{Command, Completion, SglDescriptor, Status};
use ferrox_nvmeof::pdu::{DataHeader, Digests, PduType};
use zerocopy::FromBytes;

const CMDS: u16 = 32;
const LEN: usize = 128 << 10;

fn pipelined_writes(mut q: Host, base_lba: u64) -> Host {
    for i in 0..CMDS {
        let mut cmd = Command::write(0, 1, base_lba + u64::from(i) * 256, 255);
        cmd.cid = i;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(LEN as u32).to_dptr();
        q.send_cmd(&cmd, &[]);
    }
    let mut done = 0;
    while done < CMDS {
        let p = q.recv();
        match p.ch.pdu_type {
            PduType::R2T => {
                let r = DataHeader::parse(&p.header);
                let data = pattern(r.cccid as u8, LEN);
                q.send_h2c(r.cccid, r.ttag, 0, &data, true);
            }
            PduType::CAPSULE_RESP => {
                let c = Completion::read_from_bytes(&p.header[8..24]).unwrap();
                assert_eq!(c.status(), Status::SUCCESS, "cid {}", c.cid);
                done += 1;
            }
            t => panic!("unexpected {t:?}"),
        }
    }
    q
}

#[test]
fn writes_wait_for_buffers_and_all_complete() {
    let f = fixture(); // 32 buffers of 128 KiB
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let threads: Vec<_> = (1..=2u16)
        .map(|qid| {
            let q = Host::io_queue(f.addr, Digests::default(), cntlid, qid);
            std::thread::spawn(move || pipelined_writes(q, u64::from(qid - 1) * 8192))
        })
        .collect();
    let mut queues: Vec<Host> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Read back one command's worth from each queue's region.
    for (i, q) in queues.iter_mut().enumerate() {
        let base = i as u64 * 8192;
        for cid in [0u16, 7, CMDS - 1] {
            let (st, d) = q.read(base + u64::from(cid) * 256, 256);
            assert_eq!(st, Status::SUCCESS);
            assert!(d == pattern(cid as u8, LEN), "queue {i} cid {cid}");
        }
    }
}

#[test]
fn a_host_that_reads_nothing_cannot_starve_the_others() {
    use std::io::Read;
    // One reactor, so no other reactor's cache of free buffers serves the good
    // queue: 32 buffers of 128 KiB for both.
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    t.set_stall_timeout(std::time::Duration::from_millis(500));
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut good = Host::io_queue(f.addr, Digests::default(), cntlid, 2);

    // A queue whose host never reads: a small receive buffer, then 127 reads of
    // 128 KiB, far more than the socket buffers and the pool hold together.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    sock.connect(&f.addr.into()).unwrap();
    let mut bad = Host::from_stream(sock.into());
    bad.ic_on(Digests::default());
    let cmd: Command = ferrox_nvme_spec::ConnectCommand::new(0, 1, 127, 0).into();
    let data = ferrox_nvme_spec::ConnectData::new([1; 16], cntlid, NQN, HOSTNQN).unwrap();
    let c = bad.exec(cmd, zerocopy::IntoBytes::as_bytes(&data), 0).0;
    assert!(c.status().is_success(), "{}", c.status());
    let exhausted = || {
        let h = f.group.as_ref().unwrap().handles()[0].clone();
        h.call(|r| r.pool().exhausted_count())
            .unwrap()
            .wait()
            .unwrap()
    };
    let before = exhausted();
    for i in 0..127u16 {
        let mut cmd = Command::read(0, 1, u64::from(i) * 256, 255);
        cmd.cid = i;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(LEN as u32).to_dptr();
        bad.send_cmd(&cmd, &[]);
    }
    // Bounded wait until the pool has run dry.
    let t0 = std::time::Instant::now();
    while exhausted() == before {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the pool never ran out"
        );
        std::thread::yield_now();
    }
    // The silent host's queue is closed once its responses have been stuck for the
    // stall timeout (bounded wait), which gives its buffers back; another queue's
    // 128 KiB read then completes.
    let ctrl = t.subsystem(NQN).unwrap().controller(cntlid).unwrap();
    assert_eq!(ctrl.io_queue_count(), 2);
    let t1 = std::time::Instant::now();
    while ctrl.io_queue_count() > 1 {
        assert!(
            t1.elapsed() < std::time::Duration::from_secs(10),
            "the queue of a host that reads nothing stays open"
        );
        std::thread::yield_now();
    }
    let (st, _) = good.read(0, 256);
    assert_eq!(st, Status::SUCCESS);
    let mut sink = [0u8; 64 << 10];
    let mut total = 0usize;
    loop {
        match bad.sock.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if is_reset(&e) => break,
            Err(e) => panic!("the silent host's connection stayed open ({e})"),
        }
        assert!(total < 64 << 20, "the target keeps sending");
    }
}

/// A queue whose host has a small receive window, with 127 reads of 128 KiB queued
/// (more than the pool and the socket buffers hold together).
fn flooded_queue(f: &Fixture, cntlid: u16, qid: u16) -> Host {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    sock.connect(&f.addr.into()).unwrap();
    let mut bad = Host::from_stream(sock.into());
    bad.ic_on(Digests::default());
    let cmd: Command = ferrox_nvme_spec::ConnectCommand::new(0, qid, 127, 0).into();
    let data = ferrox_nvme_spec::ConnectData::new([1; 16], cntlid, NQN, HOSTNQN).unwrap();
    let c = bad.exec(cmd, zerocopy::IntoBytes::as_bytes(&data), 0).0;
    assert!(c.status().is_success(), "{}", c.status());
    for i in 0..127u16 {
        let mut cmd = Command::read(0, 1, u64::from(i) * 256, 255);
        cmd.cid = i;
        cmd.flags = 0x40;
        cmd.dptr = SglDescriptor::transport(LEN as u32).to_dptr();
        bad.send_cmd(&cmd, &[]);
    }
    bad
}

#[test]
fn a_host_that_reads_a_trickle_cannot_keep_the_pool() {
    use std::io::Read;
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    // Windows of 300 ms in which a host with responses waiting must read 4 MiB.
    t.set_stall_timeout(std::time::Duration::from_millis(300));
    t.set_stall_min_bytes(4 << 20);
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut good = Host::io_queue(f.addr, Digests::default(), cntlid, 2);
    let mut bad = flooded_queue(&f, cntlid, 1);
    let ctrl = t.subsystem(NQN).unwrap().controller(cntlid).unwrap();
    assert_eq!(ctrl.io_queue_count(), 2);
    // The trickle: 4 KiB at a time, paced, far below the minimum; each read lets
    // the target send a little more, which used to reset the stall clock. The
    // queue is closed all the same (bounded: at this pace the target would send its
    // ~16 MiB of responses for some 40 s).
    let mut buf = [0u8; 4 << 10];
    let t0 = std::time::Instant::now();
    let mut total = 0usize;
    while ctrl.io_queue_count() > 1 {
        match bad.sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if is_reset(&e) => break,
            Err(e) => panic!("the trickling host's connection stayed open ({e})"),
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "a host that reads a trickle keeps its queue ({total} bytes read)"
        );
        // The attacker's pace, not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Its queue is gone (bounded wait, in case the loop ended on EOF first), and
    // what the sockets still held ends in EOF.
    let t1 = std::time::Instant::now();
    while ctrl.io_queue_count() > 1 {
        assert!(t1.elapsed() < std::time::Duration::from_secs(10));
        std::thread::yield_now();
    }
    let mut sink = vec![0u8; 256 << 10];
    loop {
        match bad.sock.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if is_reset(&e) => break,
            Err(e) => panic!("the trickling host's connection stayed open ({e})"),
        }
        assert!(total < 64 << 20, "the target keeps sending");
    }
    // The buffers are back: the other queue's 128 KiB reads complete.
    for lba in [0u64, 256, 512] {
        let (st, _) = good.read(lba, 256);
        assert_eq!(st, Status::SUCCESS);
    }
}

#[test]
fn a_slow_host_that_reads_enough_is_served() {
    use std::io::Read;
    let f = fixture_on(1, &["127.0.0.1:0"], Vec::new(), |_| Vec::new());
    let t = f.target.shared();
    t.set_stall_timeout(std::time::Duration::from_millis(500));
    t.set_stall_min_bytes(64 << 10);
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut slow = flooded_queue(&f, cntlid, 1);
    // It reads all its data, 64 KiB at a time with pauses: well above the minimum.
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0usize;
    while total < 127 * LEN {
        let n = slow.sock.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "the slow host was closed after {total} bytes");
        total += n;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let ctrl = t.subsystem(NQN).unwrap().controller(cntlid).unwrap();
    assert_eq!(ctrl.io_queue_count(), 1, "the slow host's queue was closed");
}
