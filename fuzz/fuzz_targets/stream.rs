//! Drives `pdu::Stream` the way the target's connection does, over a transport that
//! hands the input out in chunks of fuzzer-chosen sizes: headers checked by
//! `validate_h2c`, data received into a buffer of its length (staged or direct).
//! Every PDU accepted must deliver exactly its data length; nothing may panic.
#![no_main]

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use ferrox_nvmeof::pdu::stream::{DataStep, Stream, Transport};
use ferrox_nvmeof::pdu::{validate_h2c, Digests, IcReq, Limits, PduType, DIGEST_LEN};
use libfuzzer_sys::fuzz_target;

/// Input handed out in chunks; end of stream when it runs out.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Transport for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = match self.sizes.len() {
            0 => usize::MAX,
            n => usize::from(self.sizes[self.turn % n]).max(1),
        };
        self.turn += 1;
        let n = buf.len().min(size).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn raw_fd(&self) -> RawFd {
        -1
    }

    fn shutdown(&self) -> io::Result<()> {
        Ok(())
    }
}

const LIMITS: Limits = Limits {
    in_capsule: 8192,
    max_h2c_data: 131072,
};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let n_sizes = usize::from(mode >> 4).min(rest.len());
    let (sizes, data) = rest.split_at(n_sizes);
    let mut digests: Option<Digests> = (mode & 4 != 0).then_some(Digests {
        header: mode & 1 != 0,
        data: mode & 2 != 0,
    });
    // Read only up to an H2CData header at a time, as with R2Ts out.
    let header_only = mode & 8 != 0;
    let mut s: Stream<Chunks<'_>, ()> = Stream::new(
        Chunks {
            data,
            sizes,
            turn: 0,
        },
        64 << 10,
        1,
    );
    let upto = header_only.then_some(24 + DIGEST_LEN);
    for _ in 0..100_000 {
        let ch = match s.recv_header(|ch| validate_h2c(ch, digests, &LIMITS)) {
            Ok(Some(ch)) => ch,
            Ok(None) => match s.fill(upto) {
                Ok(true) => continue,
                _ => return,
            },
            Err(_) => return, // a termination request; the connection ends
        };
        let l = s.layout();
        assert!(l.header_bytes() <= ch.plen as usize);
        if ch.pdu_type == PduType::IC_REQ {
            let r = IcReq::parse(s.header());
            if r.check(s.header()[11]).is_err() {
                return;
            }
            digests = Some(r.digests);
        }
        if l.data_len == 0 {
            continue;
        }
        let mut buf = vec![0u8; l.data_len];
        s.begin_data(0, ch.pdu_type == PduType::H2C_DATA);
        let mut moved = 0;
        loop {
            let r = s.recv_data(Some(&mut buf));
            moved += r.copied + r.direct;
            match r.step {
                DataStep::Progress => {}
                DataStep::NeedBytes => match s.fill(None) {
                    Ok(true) => {}
                    _ => return,
                },
                DataStep::Blocked | DataStep::Failed(_) => return,
                DataStep::Done { end, .. } => {
                    assert_eq!(end, l.data_len);
                    assert_eq!(moved, l.data_len);
                    break;
                }
            }
        }
        assert!(s.at_header());
    }
});
