//! The host library against targets that break the protocol: malformed PDUs, reads
//! completed without all their data, digests left out. Each is an error, never a
//! panic and never a success.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use common::proxy::{
    on_io_responses, pdu_type, strip_data_digest, strip_header_digest, truncate_c2h_data, Dir,
    Proxy, Verdict,
};
use common::*;
use ferrox_bdev::testing::{run, Req};
use ferrox_bdev::BdevError;
use ferrox_nvme_spec::Completion;
use ferrox_nvmeof::host::{HostError, NvmfBdev};
use ferrox_nvmeof::pdu::{le32, Digests, HeaderBuf, IcResp, PduType, CH_LEN};
use zerocopy::IntoBytes;

/// A fake target: answers the ICReq, reads the admin Connect capsule, answers it with
/// `bad`, and waits for the host to hang up.
fn fake_target(bad: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut icreq = [0u8; 128];
        s.read_exact(&mut icreq).unwrap();
        let icresp = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata: 128 << 10,
        };
        s.write_all(&icresp.encode()).unwrap();
        let mut ch = [0u8; CH_LEN];
        s.read_exact(&mut ch).unwrap();
        let mut rest = vec![0u8; le32(&ch, 4) as usize - CH_LEN];
        s.read_exact(&mut rest).unwrap();
        s.write_all(&bad).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    });
    (addr, t)
}

#[test]
fn malformed_pdus_from_the_target_are_errors_not_panics() {
    // HLEN = PLEN = 8: a PDU without its type-specific header.
    let short = |t: u8| vec![t, 0, 8, 0, 8, 0, 0, 0];
    let mut resp16 = vec![0u8; 16];
    resp16[..8].copy_from_slice(&[0x05, 0, 16, 0, 16, 0, 0, 0]);
    // A valid Connect response, but with a header digest nobody negotiated.
    let mut cqe = [0u8; 16];
    cqe.copy_from_slice(Completion::success(1).as_bytes());
    let undigested = HeaderBuf::capsule_resp(&cqe, true).as_slice().to_vec();
    let cases = [
        ("CapsuleResp, HLEN 8", short(0x05)),
        ("CapsuleResp, HLEN 16", resp16),
        ("C2HData, HLEN 8", short(0x07)),
        ("R2T, HLEN 8", short(0x09)),
        ("C2HTermReq, HLEN 8", short(0x03)),
        ("unknown type 0x0f", short(0x0f)),
        ("CapsuleCmd from the target", short(0x04)),
        (
            "a second ICResp",
            IcResp {
                pfv: 0,
                cpda: 0,
                digests: Digests::default(),
                maxh2cdata: 4096,
            }
            .encode()
            .to_vec(),
        ),
        ("HDGSTF not negotiated", undigested),
    ];
    for (what, bad) in cases {
        let (addr, t) = fake_target(bad);
        let url = format!("nvme+tcp://{addr}/{NQN}");
        let e = NvmfBdev::connect(&url, &host_opts(false, 8))
            .err()
            .unwrap_or_else(|| panic!("{what}: connected"));
        assert!(matches!(e, HostError::Protocol(_)), "{what}: {e}");
        t.join().unwrap();
    }
}

#[test]
fn a_read_completed_without_all_its_data_fails() {
    let f = fixture();
    let g = host_group();
    for keep in [None, Some(2048)] {
        let proxy = Proxy::start(
            f.addr,
            on_io_responses(move |pdu| {
                if pdu_type(pdu) != PduType::C2H_DATA {
                    return Verdict::Forward;
                }
                match keep {
                    None => Verdict::Drop,
                    Some(n) => {
                        truncate_c2h_data(pdu, n);
                        Verdict::Forward
                    }
                }
            }),
        );
        let url = format!("nvme+tcp://{}/{NQN}", proxy.addr);
        let dev = NvmfBdev::connect(&url, &host_opts(false, 8)).unwrap();
        let out = run(&g.handles()[0], dev, vec![Req::Read(0, 8)]);
        assert!(
            matches!(out[0], Err(BdevError::Io(_))),
            "{keep:?} of 4096 bytes: {:?}",
            out[0]
        );
    }
}

#[test]
fn digests_the_target_leaves_out_are_errors() {
    let f = fixture();
    let g = host_group();
    type Strip = fn(&mut Vec<u8>);
    let strips: [(&str, Strip); 2] = [
        ("header digest", strip_header_digest),
        ("data digest", strip_data_digest),
    ];
    for (what, strip) in strips {
        // On an I/O queue: the read fails with its connection.
        let proxy = Proxy::start(
            f.addr,
            on_io_responses(move |pdu| {
                strip(pdu);
                Verdict::Forward
            }),
        );
        let url = format!("nvme+tcp://{}/{NQN}", proxy.addr);
        let dev = NvmfBdev::connect(&url, &host_opts(true, 8)).unwrap();
        let out = run(&g.handles()[0], dev, vec![Req::Read(0, 8)]);
        assert!(
            matches!(out[0], Err(BdevError::Io(_))),
            "read without its {what}: {:?}",
            out[0]
        );
        // On the admin queue: connecting fails.
        let proxy = Proxy::start(f.addr, move |conn, dir, pdu| {
            if conn == 0 && dir == Dir::ToHost {
                strip(pdu);
            }
            Verdict::Forward
        });
        let url = format!("nvme+tcp://{}/{NQN}", proxy.addr);
        let e = NvmfBdev::connect(&url, &host_opts(true, 8))
            .err()
            .unwrap_or_else(|| panic!("connected without the {what}s"));
        assert!(matches!(e, HostError::Protocol(_)), "{what}: {e}");
    }
}

#[test]
fn a_write_completed_before_its_data_was_sent_fails() {
    let f = fixture();
    let g = host_group();
    // Right behind its R2T, the write's (successful) response: the host has not sent
    // the data it was just asked for.
    let proxy = Proxy::start(
        f.addr,
        on_io_responses(|pdu| {
            if pdu_type(pdu) == PduType::R2T {
                let cid = u16::from_le_bytes([pdu[8], pdu[9]]);
                let mut cqe = [0u8; 16];
                cqe.copy_from_slice(Completion::success(cid).as_bytes());
                pdu.extend_from_slice(HeaderBuf::capsule_resp(&cqe, false).as_slice());
            }
            Verdict::Forward
        }),
    );
    let url = format!("nvme+tcp://{}/{NQN}", proxy.addr);
    let dev = NvmfBdev::connect(&url, &host_opts(false, 8)).unwrap();
    // 64 KiB: more than the in-capsule 8 KiB, so it goes by R2T.
    let out = run(&g.handles()[0], dev, vec![Req::Write(0, pattern(5, 65536))]);
    assert!(matches!(out[0], Err(BdevError::Io(_))), "{:?}", out[0]);
}
