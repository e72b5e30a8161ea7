//! Connection limits: a peer address over its cap, or a target over its own, has
//! further connections closed as they are accepted, while other peers are still
//! served; and a process out of file descriptors sheds its backlog instead of
//! spinning on a listener it cannot accept from.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use ferrox_nvmeof::pdu::Digests;

/// A TCP connection to `to` from the local address `from`.
fn connect_from(from: &str, to: SocketAddr) -> Host {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    Host::from_stream(TcpStream::from(sock))
}

/// Waits (bounded) until the target counts `n` open connections.
fn wait_open(f: &Fixture, n: usize) {
    let limits = &f.target.shared().limits;
    let deadline = Instant::now() + Duration::from_secs(20);
    while limits.open() != n {
        assert!(
            Instant::now() < deadline,
            "{} connections open, expected {n}",
            limits.open()
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_peer_over_its_cap_is_refused_and_others_are_served() {
    let f = fixture();
    let limits = &f.target.shared().limits;
    limits.set(3, 2);
    let a1 = Host::ic(f.addr, Digests::default());
    let _a2 = Host::ic(f.addr, Digests::default());
    // The third from 127.0.0.1 is closed as soon as it is accepted.
    let mut a3 = Host::raw(f.addr);
    a3.expect_closed("a third connection from one peer with a cap of 2");
    assert_eq!(limits.refused(), 1);
    // Another peer address still gets in, and then the target is full.
    let l = f.target.listen_addrs()[0];
    let _b1 = {
        let mut b = connect_from("127.0.0.2", l);
        b.ic_on(Digests::default());
        b
    };
    let mut b2 = connect_from("127.0.0.3", l);
    b2.expect_closed("a fourth connection to a target with a cap of 3");
    assert_eq!(limits.refused(), 2);
    // A connection that goes gives its place back.
    drop(a1);
    wait_open(&f, 2);
    let mut a4 = Host::raw(f.addr);
    a4.ic_on(Digests::default());
    // A real host still connects and does I/O within the caps.
    drop(a4);
    wait_open(&f, 2);
    limits.set(8, 4);
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let d = pattern(3, 4096);
    assert_eq!(io.write(8, &d), ferrox_nvme_spec::Status::SUCCESS);
    assert_eq!(io.read(8, 8).1, d);
}
