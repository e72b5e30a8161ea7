//! Malformed PDUs and bad commands are answered as the spec says, and a healthy
//! connection keeps working meanwhile.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::Write;

use common::*;
use ferrox_nvme_spec::{Command, PropertySize, Status};
use ferrox_nvmeof::pdu::{
    le16, le32, CommonHeader, DataHeader, Digests, HeaderBuf, PduFlags, PduType,
};

/// Sends raw bytes on a fresh connection and expects a C2HTermReq with `fes`/`fei`,
/// then the connection closed.
fn expect_term(f: &Fixture, after_ic: bool, bytes: &[u8], fes: u16, fei: Option<u32>) {
    let mut h = if after_ic {
        Host::ic(f.addr, Digests::default())
    } else {
        Host::raw(f.addr)
    };
    h.sock.write_all(bytes).unwrap();
    let p = h.recv();
    assert_eq!(p.ch.pdu_type, PduType::C2H_TERM_REQ, "{p:?}");
    assert_eq!(le16(&p.header, 8), fes, "FES");
    if let Some(fei) = fei {
        assert_eq!(le32(&p.header, 10), fei, "FEI");
    }
    let extra = h.expect_closed("the target closes after a termination request");
    assert_eq!(extra, 0, "nothing follows the termination request");
}

fn healthy_io_works(io: &mut Host, seed: u8) {
    let d = pattern(seed, 4096);
    assert_eq!(io.write(16, &d), Status::SUCCESS);
    assert_eq!(io.read(16, 8).1, d);
}

fn header(t: u8, flags: u8, hlen: u8, pdo: u8, plen: u32) -> Vec<u8> {
    let mut b = vec![0u8; plen.max(8) as usize];
    CommonHeader {
        pdu_type: PduType(t),
        flags: PduFlags::from_bits_retain(flags),
        hlen,
        pdo,
        plen,
    }
    .write(&mut b);
    b
}

#[test]
fn protocol_violations_end_only_that_connection() {
    let f = fixture();
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    healthy_io_works(&mut io, 1);

    // A capsule before ICReq.
    expect_term(&f, false, &header(4, 0, 72, 0, 72), 0x02, None);
    healthy_io_works(&mut io, 2);
    // Unknown PDU type.
    expect_term(&f, true, &header(0x42, 0, 24, 0, 24), 0x01, Some(0));
    // A controller-to-host type sent by a host.
    expect_term(&f, true, &header(5, 0, 24, 0, 24), 0x01, Some(0));
    // Wrong HLEN for a command capsule.
    expect_term(&f, true, &header(4, 0, 24, 0, 72), 0x01, Some(2));
    // PLEN shorter than the header.
    expect_term(&f, true, &header(4, 0, 72, 0, 16), 0x01, Some(4));
    // In-capsule data beyond the admin limit (8 KiB): data transfer out of range.
    let mut big = header(4, 0, 72, 72, 72 + 9000);
    big.truncate(72);
    expect_term(&f, true, &big, 0x04, None);
    // A second ICReq.
    let ic = ferrox_nvmeof::pdu::IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }
    .encode();
    expect_term(&f, true, &ic, 0x02, None);
    // ICReq with an unsupported PDU format version.
    let mut bad_ic = ic;
    bad_ic[8] = 1;
    expect_term(&f, false, &bad_ic, 0x06, Some(8));
    healthy_io_works(&mut io, 3);
}

#[test]
fn host_termination_requests_are_never_answered() {
    let f = fixture();
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    // A well-formed H2CTermReq quoting a header, a bare one before ICReq, and
    // malformed ones (wrong HLEN, longer than any quoted header may make it).
    let mut quoted = header(2, 0, 24, 24, 24 + 72);
    quoted[8] = 0x01; // FES: invalid header field
    let cases: [(bool, Vec<u8>); 4] = [
        (true, quoted),
        (false, header(2, 0, 24, 0, 24)),
        (true, header(2, 0, 8, 0, 24)),
        (true, header(2, 0, 24, 24, 24 + 4096)),
    ];
    for (i, (after_ic, bytes)) in cases.into_iter().enumerate() {
        let mut h = if after_ic {
            Host::ic(f.addr, Digests::default())
        } else {
            Host::raw(f.addr)
        };
        h.sock.write_all(&bytes).unwrap();
        let sent = h.expect_closed("the target closes on an H2CTermReq");
        assert_eq!(sent, 0, "case {i}: a termination request is not answered");
        healthy_io_works(&mut io, 10 + i as u8);
    }
}

#[test]
fn header_digest_errors_terminate() {
    let f = fixture();
    let d = Digests {
        header: true,
        data: false,
    };
    let mut h = Host::ic(f.addr, d);
    let cmd = Command::new(0x06, 1);
    let mut sqe = [0u8; 64];
    sqe.copy_from_slice(zerocopy::IntoBytes::as_bytes(&cmd));
    let mut b = HeaderBuf::capsule_cmd(&sqe, 0, d).as_slice().to_vec();
    b[72] ^= 0xff; // corrupt the digest
    h.sock.write_all(&b).unwrap();
    let p = h.recv();
    assert_eq!(p.ch.pdu_type, PduType::C2H_TERM_REQ);
    assert_eq!(le16(&p.header, 8), 0x03);
    // The FEI of a header digest error carries the digest received.
    assert_eq!(le32(&p.header, 10), le32(&b, 72), "FEI");
    h.expect_closed("the target closes after a header digest error");
}

#[test]
fn data_digest_error_fails_the_command_not_the_connection() {
    let f = fixture();
    let d = Digests {
        header: true,
        data: true,
    };
    let (_a, cntlid) = Host::admin(f.addr, d, 0);
    let mut io = Host::io_queue(f.addr, d, cntlid, 1);
    let mut cmd = Command::write(0, 1, 0, 7);
    cmd.cid = 77;
    cmd.flags = 0x40;
    cmd.dptr = ferrox_nvme_spec::SglDescriptor::in_capsule(0, 4096).to_dptr();
    let mut sqe = [0u8; 64];
    sqe.copy_from_slice(zerocopy::IntoBytes::as_bytes(&cmd));
    let mut b = HeaderBuf::capsule_cmd(&sqe, 4096, d).as_slice().to_vec();
    b.extend_from_slice(&[0x5a; 4096]);
    b.extend_from_slice(&[0, 0, 0, 0]); // wrong data digest
    io.sock.write_all(&b).unwrap();
    let (c, _) = io.wait_resp(77);
    assert_eq!(c.status().code(), Status::TRANSIENT_TRANSPORT_ERROR);
    healthy_io_works(&mut io, 9);
}

#[test]
fn h2c_data_checks() {
    let f = fixture();
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    // H2CData for a tag that was never sent.
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    io.send_h2c(1, 99, 0, &[0u8; 512], true);
    let p = io.recv();
    assert_eq!(p.ch.pdu_type, PduType::C2H_TERM_REQ);
    assert_eq!(le32(&p.header, 10), 10, "FEI points at TTAG");

    // H2CData at the wrong offset.
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 2);
    let mut cmd = Command::write(0, 1, 0, 31);
    cmd.cid = 5;
    cmd.flags = 0x40;
    cmd.dptr = ferrox_nvme_spec::SglDescriptor::transport(16384).to_dptr();
    io.send_cmd(&cmd, &[]);
    let r2t = DataHeader::parse(&io.recv().header);
    io.send_h2c(5, r2t.ttag, 4096, &[0u8; 4096], false);
    let p = io.recv();
    assert_eq!(p.ch.pdu_type, PduType::C2H_TERM_REQ);
    assert_eq!(le16(&p.header, 8), 0x04, "data transfer out of range");
}

#[test]
fn bad_commands_get_nvme_statuses() {
    let f = fixture();
    let (mut admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let nb = f.dev.info().num_blocks;
    // Out-of-range LBAs.
    assert_eq!(io.read(nb, 1).0.code(), Status::LBA_OUT_OF_RANGE);
    assert_eq!(
        io.write(nb - 1, &[0u8; 1024]).code(),
        Status::LBA_OUT_OF_RANGE
    );
    // Unknown I/O and admin opcodes.
    assert_eq!(
        io.exec(Command::new(0x7e, 0).with_nsid(1), &[], 0)
            .0
            .status()
            .code(),
        Status::INVALID_OPCODE
    );
    assert_eq!(
        admin.exec(Command::new(0xc1, 0), &[], 0).0.status().code(),
        Status::INVALID_OPCODE
    );
    // An opcode with a bidirectional transfer (none is implemented).
    assert_eq!(
        io.exec(Command::new(0x03, 0).with_nsid(1), &[], 0)
            .0
            .status()
            .code(),
        Status::INVALID_OPCODE
    );
    // Half of a fused pair: Identify reports FUSES 0, so it must not run alone.
    let mut fused = Command::read(0, 1, 0, 0);
    fused.flags = 0b01;
    assert_eq!(
        io.exec(fused, &[], 512).0.status().code(),
        Status::INVALID_FIELD
    );
    // A transfer beyond MDTS (128 KiB).
    assert_eq!(
        io.exec(Command::read(0, 1, 0, 511), &[], 256 << 10)
            .0
            .status()
            .code(),
        Status::INVALID_FIELD
    );
    // A namespace that does not exist.
    assert_eq!(
        io.exec(Command::read(0, 9, 0, 0), &[], 512)
            .0
            .status()
            .code(),
        Status::INVALID_NAMESPACE
    );
    // SGL length that does not match NLB.
    assert_eq!(
        io.exec(Command::read(0, 1, 0, 0), &[], 1024)
            .0
            .status()
            .code(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // Unknown log page, unknown feature, unknown property.
    let glp = Command::new(0x02, 0).with_cdws([0x7e | (127 << 16), 0, 0, 0, 0, 0]);
    assert_eq!(
        admin.exec(glp, &[], 512).0.status().code(),
        Status::INVALID_LOG_PAGE
    );
    assert_eq!(
        admin
            .exec(
                Command::new(0x0a, 0).with_cdws([0xee, 0, 0, 0, 0, 0]),
                &[],
                0
            )
            .0
            .status()
            .code(),
        Status::INVALID_FIELD
    );
    assert_eq!(
        admin.prop_get(0x44, PropertySize::Four).status().code(),
        Status::INVALID_FIELD
    );
    // Saving a feature is not supported.
    let sv = Command::new(0x09, 0).with_cdws([0x06 | (1 << 31), 1, 0, 0, 0, 0]);
    assert_eq!(
        admin.exec(sv, &[], 0).0.status().code(),
        Status::FEATURE_NOT_SAVEABLE
    );
    // The queue still works.
    healthy_io_works(&mut io, 4);
}

#[test]
fn io_before_connect_is_a_sequence_error() {
    let f = fixture();
    let mut h = Host::ic(f.addr, Digests::default());
    let (c, _) = h.exec(Command::read(0, 1, 0, 0), &[], 512);
    assert_eq!(c.status().code(), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn connect_refuses_unknown_hosts_subsystems_and_controllers() {
    let f = fixture();
    let mut h = Host::ic(f.addr, Digests::default());
    let c = h.connect_to(NQN, "nqn.2026-11.io.ferrox:intruder", 0, 0xFFFF);
    assert_eq!(c.status().code(), Status::CONNECT_INVALID_HOST);
    let mut h = Host::ic(f.addr, Digests::default());
    let c = h.connect_to("nqn.2026-11.io.ferrox:nope", HOSTNQN, 0, 0xFFFF);
    assert_eq!(c.status().code(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        c.dw0,
        (1 << 16) | 256,
        "the bad field is SUBNQN in the data"
    );
    let mut h = Host::ic(f.addr, Digests::default());
    let c = h.connect_to(NQN, HOSTNQN, 1, 0x1234);
    assert_eq!(c.status().code(), Status::CONNECT_INVALID_PARAMETERS);
    // A host NQN with control characters (a terminal escape, a forged log line), even
    // to the discovery subsystem every host may reach.
    for bad in [
        "nqn.2026-11.io.ferrox:a\x1b[2Jb",
        "nqn.2026-11.io.ferrox:host\nERROR forged",
    ] {
        let mut h = Host::ic(f.addr, Digests::default());
        let c = h.connect_to(ferrox_nvme_spec::DISCOVERY_NQN, bad, 0, 0xFFFF);
        assert_eq!(
            c.status().code(),
            Status::CONNECT_INVALID_PARAMETERS,
            "{bad:?}"
        );
        assert_eq!(c.dw0, (1 << 16) | 512, "the bad field is HOSTNQN: {bad:?}");
    }
}

#[test]
fn connections_that_never_connect_are_closed() {
    let f = fixture();
    let limit = std::time::Duration::from_millis(300);
    f.target.shared().set_connect_timeout(limit);
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let t0 = std::time::Instant::now();
    let mut silent = Host::raw(f.addr);
    let mut ic_only = Host::ic(f.addr, Digests::default());
    silent.expect_closed("a connection that never sends ICReq");
    ic_only.expect_closed("a connection that never sends Connect");
    assert!(t0.elapsed() >= limit, "closed early: {:?}", t0.elapsed());
    // Connected queues are not affected, before or after.
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    healthy_io_works(&mut io, 4);
}

#[test]
fn connection_timers_go_when_their_connection_does() {
    let f = fixture();
    let handles = f.group.as_ref().unwrap().handles().to_vec();
    let pending = || -> usize {
        handles
            .iter()
            .map(|h| h.call(|r| r.pending_timers()).unwrap().wait().unwrap())
            .sum()
    };
    let before = pending();
    // Connections that get connected (their connect deadline goes at Connect) and
    // connections the host drops before connecting (it goes when they close).
    let admins: Vec<Host> = (0..8)
        .map(|_| Host::admin(f.addr, Digests::default(), 0).0)
        .collect();
    for _ in 0..8 {
        let h = Host::ic(f.addr, Digests::default());
        drop(h);
    }
    // What stays: one keep-alive check per admin queue.
    let wait_for = |want: usize| {
        let t0 = std::time::Instant::now();
        loop {
            let now = pending();
            if now == want {
                return;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "{now} timers, want {want}"
            );
            std::thread::yield_now();
        }
    };
    wait_for(before + admins.len());
    drop(admins);
    wait_for(before);
}

/// A write whose SGL is neither in-capsule nor transport (a Data Block descriptor of
/// length 0) but whose capsule carries data, sent in two parts so the data arrives
/// after the header: the command fails with Data SGL Length Invalid, the data is
/// dropped, and the connection keeps serving (it used to wait forever for a buffer,
/// spinning on a readable socket).
#[test]
fn in_capsule_data_no_sgl_describes_is_refused_and_dropped() {
    let f = fixture();
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    healthy_io_works(&mut io, 4);
    for len in [512usize, 2048, 8192] {
        let cid = io.next_cid();
        let mut cmd = Command::write(0, 1, 32, (len / 512 - 1) as u16);
        cmd.cid = cid;
        cmd.flags = 0x40; // PSDT = SGL
        cmd.dptr = [0, 0]; // Data Block descriptor, address 0, length 0
        let mut sqe = [0u8; 64];
        sqe.copy_from_slice(zerocopy::IntoBytes::as_bytes(&cmd));
        let h = HeaderBuf::capsule_cmd(&sqe, len, Digests::default());
        io.sock.write_all(h.as_slice()).unwrap();
        io.sock.flush().unwrap();
        io.sock.write_all(&pattern(9, len)).unwrap();
        let (c, _) = io.wait_resp(cid);
        assert_eq!(
            c.status().code(),
            Status::DATA_SGL_LENGTH_INVALID,
            "{len} bytes"
        );
        // The refused data was dropped: the next commands parse and run.
        healthy_io_works(&mut io, 5);
    }
}
