use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use super::*;
use crate::pdu::{validate_h2c, DataHeader, Digests, HeaderBuf, Limits, PduType};

/// An in-memory transport: reads hand out at most `chunk` bytes of `input`
/// (`WouldBlock` when it is empty, end of stream once `eof`); writes take at most
/// `write_cap` bytes. It counts its calls, as a socket's syscalls.
struct Mem {
    input: VecDeque<u8>,
    chunk: usize,
    eof: bool,
    reads: usize,
    out: Vec<u8>,
    write_cap: usize,
    writes: usize,
}

impl Mem {
    fn new(input: &[u8], chunk: usize) -> Self {
        Self {
            input: input.iter().copied().collect(),
            chunk,
            eof: false,
            reads: 0,
            out: Vec::new(),
            write_cap: usize::MAX,
            writes: 0,
        }
    }
}

impl Transport for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.chunk).min(self.input.len());
        for b in &mut buf[..n] {
            *b = self.input.pop_front().expect("counted");
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writes += 1;
        if self.write_cap == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.write_cap - n);
            self.out.extend_from_slice(&b[..take]);
            n += take;
            if n == self.write_cap {
                break;
            }
        }
        Ok(n)
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
    max_h2c_data: 128 << 10,
};

/// An H2CData PDU carrying `data` at offset 0.
fn h2c(data: &[u8], d: Digests, corrupt_ddgst: bool) -> Vec<u8> {
    let dh = DataHeader {
        cccid: 1,
        ttag: 0,
        offset: 0,
        length: data.len() as u32,
    };
    let mut v = HeaderBuf::h2c_data(dh, true, d).as_slice().to_vec();
    v.extend_from_slice(data);
    if d.data {
        let crc = crc32c(data) ^ u32::from(corrupt_ddgst);
        v.extend_from_slice(&crc.to_le_bytes());
    }
    v
}

type S = Stream<Mem, Vec<u8>>;

/// Receives one PDU into a buffer of `cap` bytes the way a connection does;
/// returns (header type, data, digest verdict).
fn receive_one(s: &mut S, d: Digests, cap: usize) -> (PduType, Vec<u8>, bool, usize, usize) {
    let ch = loop {
        match s.recv_header(|ch| validate_h2c(ch, Some(d), &LIMITS)) {
            Ok(Some(ch)) => break ch,
            Ok(None) => assert!(s.fill(None).expect("no error"), "stalled in a header"),
            Err(e) => panic!("refused: {e:?}"),
        }
    };
    let mut buf = vec![0u8; cap];
    let (mut copied, mut direct) = (0, 0);
    s.begin_data(0, false);
    loop {
        let r = s.recv_data(Some(&mut buf));
        copied += r.copied;
        direct += r.direct;
        match r.step {
            DataStep::Progress => {}
            DataStep::NeedBytes => assert!(s.fill(None).expect("no error"), "stalled in data"),
            DataStep::Blocked => panic!("blocked with input left"),
            DataStep::Failed(e) => panic!("{e}"),
            DataStep::Done { digest_ok, end } => {
                buf.truncate(end);
                return (ch.pdu_type, buf, digest_ok, copied, direct);
            }
        }
    }
}

#[test]
fn frames_pdus_delivered_a_byte_at_a_time() {
    let d = Digests {
        header: true,
        data: true,
    };
    let data: Vec<u8> = (0..100u8).collect();
    let mut wire = h2c(&data, d, false);
    wire.extend(h2c(&data[..10], d, false));
    let mut s = S::new(Mem::new(&wire, 1), 4096, 4);
    let (t, got, ok, copied, direct) = receive_one(&mut s, d, 256);
    assert_eq!((t, ok), (PduType::H2C_DATA, true));
    assert_eq!(got, data);
    // Short data comes through staging, never straight.
    assert_eq!((copied, direct), (100, 0));
    let (_, got, ok, _, _) = receive_one(&mut s, d, 256);
    assert!(ok);
    assert_eq!(got, &data[..10]);
    assert_eq!(s.staged(), 0);
    assert!(s.at_header());
}

#[test]
fn long_data_not_staged_goes_straight_to_the_buffer() {
    let d = Digests {
        header: false,
        data: true,
    };
    let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    let wire = h2c(&data, d, false);
    let mut s = S::new(Mem::new(&wire, 1 << 20), 64 << 10, 4);
    // Stage the header only, as the target does with R2Ts out.
    assert!(s.fill(Some(24)).expect("no error"));
    assert_eq!(s.staged(), 24);
    let (_, got, ok, copied, direct) = receive_one(&mut s, d, 8192);
    assert!(ok);
    assert_eq!(got, data);
    assert_eq!((copied, direct), (0, 8192));
    // One read for the header, one for the data, one for the digest.
    assert_eq!(s.transport().reads, 3);
}

#[test]
fn data_digest_mismatch_is_reported_not_fatal() {
    let d = Digests {
        header: false,
        data: true,
    };
    let mut wire = h2c(&[7; 64], d, true);
    wire.extend(h2c(&[8; 64], d, false));
    let mut s = S::new(Mem::new(&wire, 1 << 20), 4096, 4);
    let (_, _, ok, _, _) = receive_one(&mut s, d, 64);
    assert!(!ok);
    let (_, got, ok, _, _) = receive_one(&mut s, d, 64);
    assert!(ok);
    assert_eq!(got, [8; 64]);
}

#[test]
fn header_digest_mismatch_names_the_digest_received() {
    let d = Digests {
        header: true,
        data: false,
    };
    let mut wire = h2c(&[1; 16], d, false);
    wire[24] ^= 0xff;
    let received = le32(&wire, 24);
    let mut s = S::new(Mem::new(&wire, 1 << 20), 4096, 4);
    s.fill(None).expect("no error");
    match s.recv_header(|ch| validate_h2c(ch, Some(d), &LIMITS)) {
        Err(HeaderError::Digest(got)) => assert_eq!(got, received),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refused_header_is_quoted() {
    let mut wire = [0u8; 30];
    wire[0] = 0x42; // no such PDU type
    wire[2] = 24;
    wire[4] = 30;
    wire[9] = 0x99;
    let mut s = S::new(Mem::new(&wire, 1 << 20), 4096, 4);
    s.fill(None).expect("no error");
    let r = s.recv_header(|ch| validate_h2c(ch, None, &LIMITS));
    assert!(matches!(r, Err(HeaderError::Invalid(_))), "{r:?}");
    assert_eq!(s.quoted(), &wire[..]);
}

#[test]
fn dropped_data_is_consumed() {
    let d = Digests::default();
    let mut wire = h2c(&[5; 4000], d, false);
    wire.extend(h2c(&[6; 4], d, false));
    let mut s = S::new(Mem::new(&wire, 1 << 20), 64 << 10, 4);
    s.fill(None).expect("no error");
    assert!(s
        .recv_header(|ch| validate_h2c(ch, Some(d), &LIMITS))
        .expect("valid")
        .is_some());
    s.begin_data(0, true);
    let r = s.recv_data(None);
    assert_eq!((r.copied, r.direct), (0, 0));
    assert!(matches!(
        r.step,
        DataStep::Done {
            digest_ok: true,
            ..
        }
    ));
    let (_, got, _, _, _) = receive_one(&mut s, d, 4);
    assert_eq!(got, [6; 4]);
}

#[test]
fn end_of_stream_is_unexpected_eof() {
    let mut m = Mem::new(&[], 1);
    m.eof = true;
    let mut s = S::new(m, 4096, 4);
    let e = s.fill(None).expect_err("the peer closed");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

struct Items {
    returned: Vec<Vec<u8>>,
}

impl TxSource<Vec<u8>> for Items {
    fn bytes<'a>(&'a self, item: &'a Vec<u8>) -> &'a [u8] {
        item
    }

    fn sent(&mut self, item: Vec<u8>) {
        self.returned.push(item);
    }
}

#[test]
fn transmit_batches_and_resumes_partial_writes() {
    let mut s = S::new(Mem::new(&[], 1), 64, 200);
    let items: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 3]).collect();
    for i in &items {
        s.push(i.clone());
    }
    let mut src = Items {
        returned: Vec::new(),
    };
    let sent = s.send(&mut src).expect("no error");
    assert_eq!(
        sent,
        Sent {
            progress: true,
            blocked: false,
            bytes: 300
        }
    );
    // 100 items: one write of 64, one of 36.
    assert_eq!(s.transport().writes, 2);
    assert_eq!(src.returned, items);
    assert_eq!(s.transport().out, items.concat());

    // A write that takes part of an item resumes inside it.
    let mut s = S::new(Mem::new(&[], 1), 64, 8);
    s.io.write_cap = 4;
    s.push(vec![1, 2, 3]);
    s.push(vec![4, 5, 6]);
    src.returned.clear();
    s.send(&mut src).expect("no error");
    assert_eq!(s.transport().out, [1, 2, 3, 4, 5, 6]);
    assert_eq!(src.returned.len(), 2);

    // A full transport: blocked, nothing lost.
    let mut s = S::new(Mem::new(&[], 1), 64, 8);
    s.io.write_cap = 0;
    s.push(vec![9]);
    let sent = s.send(&mut src).expect("no error");
    assert!(sent.blocked && !sent.progress);
    assert_eq!(s.tx_len(), 1);
}

#[test]
fn fill_stops_at_upto_only_while_short_of_it() {
    let wire: Vec<u8> = (0..100u8).collect();
    let mut s = S::new(Mem::new(&wire, 1 << 20), 4096, 4);
    assert!(s.fill(Some(10)).expect("no error"));
    assert_eq!(s.staged(), 10);
    // Already 10 staged: a limit of 8 no longer holds the read back.
    assert!(s.fill(Some(8)).expect("no error"));
    assert_eq!(s.staged(), 100);
    assert_eq!(s.staged_bytes(), &wire[..]);
}
