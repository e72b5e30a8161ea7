//! Every host may reach the discovery subsystem: its controllers are capped per
//! peer address, and none lives without a keep-alive (KATO 0 gets the target's).
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrox_nvme_spec::{Command, ConnectCommand, ConnectData, Status, DISCOVERY_NQN};
use ferrox_nvmeof::pdu::Digests;
use zerocopy::IntoBytes;

fn healthy_io_works(io: &mut Host, seed: u8) {
    let d = pattern(seed, 4096);
    assert_eq!(io.write(16, &d), Status::SUCCESS);
    assert_eq!(io.read(16, 8).1, d);
}

/// Polls `cond` until it holds (bounded).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::yield_now();
    }
}

fn discovery_connect(h: &mut Host) -> Status {
    let cmd: Command = ConnectCommand::new(0, 0, 31, 0).into();
    let data = ConnectData::new([2; 16], 0xFFFF, DISCOVERY_NQN, HOSTNQN).unwrap();
    h.exec(cmd, data.as_bytes(), 0).0.status()
}

#[test]
fn discovery_controllers_are_capped_per_peer_address() {
    let f = fixture();
    let t = f.target.shared();
    t.discovery_limits.set(3);
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let mut held: Vec<Host> = (0..3).map(|_| Host::discovery(f.addr)).collect();
    // The fourth from the same address is refused; NVM controllers are not counted.
    let mut extra = Host::ic(f.addr, Digests::default());
    assert_eq!(
        discovery_connect(&mut extra),
        Status::CONNECT_CONTROLLER_BUSY
    );
    assert_eq!(t.discovery_limits.refused(), 1);
    healthy_io_works(&mut io, 1);
    let (_admin2, _) = Host::admin(f.addr, Digests::default(), 0);
    // One closed gives its place back.
    drop(held.pop());
    let ip = f.addr.ip();
    wait_for("the closed discovery connection keeps its place", || {
        t.discovery_limits.held(ip) < 3
    });
    let mut again = Host::ic(f.addr, Digests::default());
    assert_eq!(discovery_connect(&mut again), Status::SUCCESS);
    healthy_io_works(&mut io, 2);
}

#[test]
fn a_kato_0_discovery_controller_does_not_live_forever() {
    let f = fixture();
    let t = f.target.shared();
    t.set_discovery_kato(Duration::from_millis(300));
    let (_admin, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    // The one-shot use of `nvme discover` (KATO 0) is served.
    let mut d = Host::discovery(f.addr);
    let id = Command::new(0x06, 0).with_cdws([1, 0, 0, 0, 0, 0]);
    let (c, data) = d.exec(id, &[], 4096);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(data.len(), 4096);
    // KATO 0 cannot be set afterwards either.
    let sf = Command::new(0x09, 0).with_cdws([0x0f, 0, 0, 0, 0, 0]); // Keep Alive Timer
    assert_eq!(d.exec(sf, &[], 0).0.status(), Status::INVALID_FIELD);
    // Left idle, it is torn down once the target's keep-alive runs out, and its
    // connection closed; the NVM controller (KATO 0 too) stays.
    let disc = t.subsystem(DISCOVERY_NQN).unwrap();
    wait_for("an idle KATO-0 discovery controller stays", || {
        disc.controllers().is_empty()
    });
    d.expect_closed("an idle KATO-0 discovery controller");
    wait_for("the closed discovery controller keeps its place", || {
        t.discovery_limits.held(f.addr.ip()) == 0
    });
    healthy_io_works(&mut io, 3);
}
