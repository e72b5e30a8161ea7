//! Bounded, deterministic wire fuzzing: mutated PDU streams on fresh connections must
//! never take the target down; a healthy queue keeps working throughout.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::*;
use ferrox_nvme_spec::{Command, SglDescriptor, Status};
use ferrox_nvmeof::pdu::{DataHeader, Digests, HeaderBuf, IcReq};
use zerocopy::IntoBytes;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn random_stream(rng: &mut Rng) -> Vec<u8> {
    let d = Digests {
        header: rng.below(2) == 1,
        data: rng.below(2) == 1,
    };
    let mut out = IcReq {
        pfv: 0,
        hpda: 0,
        digests: d,
        maxr2t: 0,
    }
    .encode()
    .to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 | 1 => {
                let mut cmd = Command::new(rng.below(256) as u8, rng.below(65536) as u16)
                    .with_nsid(rng.below(3) as u32)
                    .with_cdws([
                        rng.next() as u32,
                        rng.next() as u32,
                        rng.below(64) as u32,
                        0,
                        0,
                        0,
                    ]);
                if rng.below(2) == 0 {
                    cmd = Command::new(0x7f, 1).with_cdws([0; 6]);
                    cmd.as_mut_bytes()[4] = rng.below(9) as u8; // fctype
                }
                cmd.flags = 0x40;
                let len = [0usize, 16, 512, 1024, 4096, 9000][rng.below(6) as usize];
                cmd.dptr = if rng.below(2) == 0 {
                    SglDescriptor::in_capsule(0, len as u32).to_dptr()
                } else {
                    SglDescriptor::transport(rng.below(300_000) as u32).to_dptr()
                };
                let mut sqe = [0u8; 64];
                sqe.copy_from_slice(cmd.as_bytes());
                out.extend_from_slice(HeaderBuf::capsule_cmd(&sqe, len, d).as_slice());
                out.extend((0..len).map(|_| rng.next() as u8));
                if d.data && len > 0 {
                    out.extend_from_slice(&(rng.next() as u32).to_le_bytes());
                }
            }
            2 => {
                let dh = DataHeader {
                    cccid: rng.below(4) as u16,
                    ttag: rng.below(4) as u16,
                    offset: rng.below(8192) as u32,
                    length: 512,
                };
                out.extend_from_slice(HeaderBuf::h2c_data(dh, true, d).as_slice());
                out.extend((0..512).map(|_| rng.next() as u8));
            }
            _ => out.extend((0..rng.below(200)).map(|_| rng.next() as u8)),
        }
    }
    // Mutate a few bytes anywhere (including the ICReq and length fields).
    for _ in 0..rng.below(4) {
        let i = rng.below(out.len() as u64) as usize;
        out[i] = rng.next() as u8;
    }
    out
}

#[test]
fn mutated_streams_never_take_the_target_down() {
    let f = fixture();
    let (_a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let mut rng = Rng(0x5eed_f00d_1234_5678);
    for i in 0..300 {
        let stream = random_stream(&mut rng);
        let mut h = Host::raw(f.addr);
        // The target may close early; a failed write is a valid outcome.
        let _ = h.sock.write_all(&stream);
        let _ = h.sock.shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        // EOF (or reset) must come: the host half-closed, the target must close too.
        if let Err(e) = h.sock.read_to_end(&mut sink) {
            assert!(
                is_reset(&e),
                "iteration {i}: the target left a half-closed connection open ({e})"
            );
        }
        if i % 25 == 0 {
            let d = pattern(i as u8, 4096);
            assert_eq!(io.write(40, &d), Status::SUCCESS, "iteration {i}");
            assert_eq!(io.read(40, 8).1, d, "iteration {i}");
        }
    }
    let d = pattern(0xee, 65536);
    assert_eq!(io.write(100, &d), Status::SUCCESS);
    assert_eq!(io.read(100, 128).1, d);
}
