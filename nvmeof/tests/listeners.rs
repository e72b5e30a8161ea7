//! Subsystems reachable through some listeners only: Connect through another listener
//! is refused as for an unknown subsystem, and the discovery log lists each subsystem
//! with the listeners that reach it.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::net::SocketAddr;

use common::*;
use ferrox_nvme_spec::{Command, DiscoveryLogEntry, DiscoveryLogHeader, Status, DISCOVERY_NQN};
use ferrox_nvmeof::pdu::Digests;
use ferrox_nvmeof::{SubsystemConfig, Target};
use zerocopy::FromBytes;

const OPEN_NQN: &str = "nqn.2026-11.io.ferrox:everywhere";

/// The test subsystem only on 127.0.0.2, a second one on every listener.
fn two_listeners() -> (Fixture, SocketAddr, SocketAddr) {
    let f = fixture_with(
        &["127.0.0.1:0", "127.0.0.2:0"],
        vec!["127.0.0.2:0".parse().unwrap()],
        |dev| {
            vec![SubsystemConfig {
                nqn: OPEN_NQN.to_string(),
                serial: "SN0002".to_string(),
                model: "Ferrox test".to_string(),
                allow_any_host: true,
                namespaces: vec![(1, dev)],
                ..Default::default()
            }]
        },
    );
    let l = f.target.listen_addrs();
    (f, l[0], l[1])
}

/// (subsystem NQN, traddr) of every entry of the discovery log read through `addr`.
fn discovery_entries(addr: SocketAddr) -> Vec<(String, String)> {
    let mut h = Host::discovery(addr);
    let records = 8u32;
    let len = 1024 * (records + 1);
    let glp = Command::new(0x02, 0).with_cdws([0x70 | ((len / 4 - 1) << 16), 0, 0, 0, 0, 0]);
    let (c, d) = h.exec(glp, &[], len);
    assert!(c.status().is_success());
    let hdr = DiscoveryLogHeader::read_from_bytes(&d[..1024]).unwrap();
    assert!(hdr.numrec <= u64::from(records), "{} records", hdr.numrec);
    (0..hdr.numrec as usize)
        .map(|i| {
            let e = DiscoveryLogEntry::read_from_bytes(&d[1024 * (i + 1)..1024 * (i + 2)]).unwrap();
            let traddr = String::from_utf8_lossy(e.traddr_bytes())
                .trim_end()
                .to_string();
            (e.subnqn_str().unwrap().to_string(), traddr)
        })
        .collect()
}

#[test]
fn a_subsystem_is_reachable_only_through_its_listeners() {
    let (_f, one, two) = two_listeners();
    let mut h = Host::ic(one, Digests::default());
    let c = h.connect_to(NQN, HOSTNQN, 0, 0xFFFF);
    assert_eq!(c.status().code(), Status::CONNECT_INVALID_PARAMETERS);
    let mut h = Host::ic(two, Digests::default());
    assert!(h.connect_to(NQN, HOSTNQN, 0, 0xFFFF).status().is_success());
    for addr in [one, two] {
        let mut h = Host::ic(addr, Digests::default());
        assert!(
            h.connect_to(OPEN_NQN, HOSTNQN, 0, 0xFFFF)
                .status()
                .is_success(),
            "{OPEN_NQN} through {addr}"
        );
    }
}

#[test]
fn discovery_lists_each_subsystem_with_the_listeners_that_reach_it() {
    let (_f, one, two) = two_listeners();
    for through in [one, two] {
        let mut got = discovery_entries(through);
        got.retain(|(nqn, _)| nqn != DISCOVERY_NQN);
        got.sort();
        assert_eq!(
            got,
            vec![
                (OPEN_NQN.to_string(), "127.0.0.1".to_string()),
                (OPEN_NQN.to_string(), "127.0.0.2".to_string()),
                (NQN.to_string(), "127.0.0.2".to_string()),
            ],
            "read through {through}"
        );
    }
}

#[test]
fn a_listener_the_target_does_not_have_is_refused_before_binding() {
    let pool = ferrox_reactor::BufferPool::new(&ferrox_reactor::PoolConfig {
        classes: vec![ferrox_reactor::ClassConfig {
            size: 4096,
            count: 16,
        }],
        hugepages: false,
    })
    .unwrap();
    let core = ferrox_reactor::available_cores()[0];
    let g = ferrox_reactor::ReactorGroup::start(&[core], &Default::default(), pool).unwrap();
    // Bound by nobody else: if the target bound it, it would still be bound.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = probe.local_addr().unwrap();
    drop(probe);
    let e = Target::start(
        g.handles(),
        [1; 16],
        vec![SubsystemConfig {
            nqn: OPEN_NQN.to_string(),
            serial: "SN0003".to_string(),
            model: "Ferrox test".to_string(),
            allow_any_host: true,
            listeners: vec!["127.0.0.3:4420".parse().unwrap()],
            ..Default::default()
        }],
        &[free],
    )
    .err()
    .expect("a subsystem listener that is not the target's");
    assert!(e.to_string().contains("127.0.0.3:4420"), "{e}");
    std::net::TcpListener::bind(free).expect("nothing was left bound");
    g.shutdown();
}

#[test]
fn a_stopped_target_releases_its_ports() {
    let f = fixture();
    let addr = f.addr;
    // Wait (bounded) until the listener's reactor has parked: its socket's wake-up
    // poll is then armed in the ring.
    let h = f.group.as_ref().unwrap().handles()[0].clone();
    // Parks while the fixture was set up do not count (the listener may not have
    // existed): wake the reactor and wait for its next park.
    let p0 = h.stats().parks;
    h.send(|_| {}).unwrap();
    let t0 = std::time::Instant::now();
    while h.stats().parks <= p0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the reactor never parked"
        );
        std::thread::yield_now();
    }
    drop(f);
    std::net::TcpListener::bind(addr).expect("the port is free once the target stopped");
}

#[test]
fn a_listener_opened_at_run_time_serves_only_the_subsystems_that_name_it() {
    let f = fixture();
    let t = f.target.shared();
    let private = t.add_listener("127.0.0.2:0".parse().unwrap()).unwrap();
    assert!(t.listeners().contains(&private));
    let side = "nqn.2026-11.io.ferrox:side";
    t.add_subsystem(SubsystemConfig {
        nqn: side.to_string(),
        serial: "SN0004".to_string(),
        model: "Ferrox test".to_string(),
        allow_any_host: true,
        namespaces: vec![(1, f.dev.clone())],
        listeners: vec![private],
        ..Default::default()
    })
    .unwrap();
    let connect = |addr: SocketAddr, nqn: &str| {
        let mut h = Host::ic(addr, Digests::default());
        h.connect_to(nqn, HOSTNQN, 0, 0xFFFF).status()
    };
    assert!(connect(private, side).is_success());
    assert_eq!(
        connect(f.addr, side).code(),
        Status::CONNECT_INVALID_PARAMETERS
    );
    // The test subsystem names no listener: the configuration's ones only.
    assert!(connect(f.addr, NQN).is_success());
    assert_eq!(
        connect(private, NQN).code(),
        Status::CONNECT_INVALID_PARAMETERS
    );
    let mut got = discovery_entries(private);
    got.retain(|(nqn, _)| nqn != DISCOVERY_NQN);
    got.sort();
    assert_eq!(
        got,
        vec![
            (side.to_string(), "127.0.0.2".to_string()),
            (NQN.to_string(), "127.0.0.1".to_string()),
        ]
    );

    // A second subsystem on the same listener keeps it open until both are gone;
    // then it closes, and the configuration's listener stays.
    let side2 = "nqn.2026-11.io.ferrox:side2";
    t.add_subsystem(SubsystemConfig {
        nqn: side2.to_string(),
        serial: "SN0005".to_string(),
        model: "Ferrox test".to_string(),
        allow_any_host: true,
        namespaces: vec![(1, f.dev.clone())],
        listeners: vec![private],
        ..Default::default()
    })
    .unwrap();
    t.remove_subsystem(side).unwrap();
    assert!(t.listeners().contains(&private));
    assert!(connect(private, side2).is_success());
    t.remove_subsystem(side2).unwrap();
    assert_eq!(t.listeners(), vec![f.addr]);
    wait_refused(private);
    assert!(connect(f.addr, NQN).is_success());
    // An unused listener (its subsystem never came) is closed on request.
    let spare = t.add_listener("127.0.0.2:0".parse().unwrap()).unwrap();
    assert_eq!(t.close_unused_listeners(), vec![spare]);
    // Opened again at once (an unpublish then a publish on the same address): the
    // closing one is out of the way in time.
    assert_eq!(t.add_listener(spare).unwrap(), spare);
    assert_eq!(t.close_unused_listeners(), vec![spare]);
    wait_refused(spare);
}

/// Waits (at most 10 s) until nothing accepts TCP connections on `addr`.
fn wait_refused(addr: SocketAddr) {
    let t0 = std::time::Instant::now();
    loop {
        match std::net::TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "{addr} still accepts connections: {other:?}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
