//! More large writes in flight than the buffer pool holds: commands wait for buffers
//! (back-pressure) and all complete, with the right data.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use common::*;
use ferrox_nvme::spec::{Command, Completion, SglDescriptor, Status};
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
