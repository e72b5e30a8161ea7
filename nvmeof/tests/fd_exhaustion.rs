//! A target whose process runs out of file descriptors (EMFILE) accepts and at once
//! closes the connections in its listener's backlog, through a descriptor it holds
//! in reserve, instead of spinning on a readable listener nobody can accept from;
//! when descriptors come back, hosts connect again. A test binary of its own: it
//! lowers the whole process's open-file limit (with `prlimit`, on its own PID).
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ferrox_nvmeof::pdu::Digests;

/// One above the highest descriptor open now.
fn fd_ceiling() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
        + 1
}

/// Sets this process's soft open-file limit.
fn set_nofile_soft(n: u64) {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap();
    let ok = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={n}:{hard}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --nofile={n}:{hard}");
}

#[test]
fn out_of_descriptors_the_backlog_is_shed_not_spun_on() {
    let f = fixture();
    let limits = f.target.shared().limits.clone();
    // Client sockets are made first: once the limit is down, nothing new can be.
    let socks: Vec<socket2::Socket> = (0..4)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let to: SocketAddr = f.addr;
    let original = std::fs::read_to_string("/proc/self/limits").unwrap();
    // Room for exactly one accepted connection: no descriptor above the highest one
    // open now, every free one below it taken, then one given back.
    set_nofile_soft(fd_ceiling());
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    assert!(!fillers.is_empty(), "no descriptor left to give back");
    fillers.pop();
    let mut hosts: Vec<Host> = socks
        .into_iter()
        .map(|s| {
            s.connect(&to.into()).unwrap();
            Host::from_stream(TcpStream::from(s))
        })
        .collect();
    hosts[0].ic_on(Digests::default());
    for h in &mut hosts[1..] {
        h.expect_closed("a connection accepted with no descriptor left");
    }
    assert_eq!(limits.refused(), 3);
    // Descriptors come back: a host connects and is served.
    drop(hosts);
    drop(fillers);
    let deadline = Instant::now() + Duration::from_secs(20);
    while limits.open() != 0 {
        assert!(
            Instant::now() < deadline,
            "the first connection never closed"
        );
        std::thread::yield_now();
    }
    let soft = original
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .parse()
        .unwrap();
    set_nofile_soft(soft);
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let d = pattern(5, 4096);
    assert_eq!(io.write(0, &d), ferrox_nvme_spec::Status::SUCCESS);
    assert_eq!(io.read(0, 8).1, d);
}
