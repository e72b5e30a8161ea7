//! Admin and discovery: identify fields, logs, features, keep-alive expiry and
//! namespace-change events.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrox_bdev::malloc::MallocBdev;
use ferrox_nvme_spec::{
    Command, DiscoveryLogEntry, DiscoveryLogHeader, IdentifyController, IdentifyNamespace, Status,
    DISCOVERY_NQN,
};
use ferrox_nvmeof::pdu::Digests;
use zerocopy::FromBytes;

fn identify(h: &mut Host, cns: u32, nsid: u32) -> (Status, Vec<u8>) {
    let (c, d) = h.exec(
        Command::new(0x06, 0)
            .with_nsid(nsid)
            .with_cdws([cns, 0, 0, 0, 0, 0]),
        &[],
        4096,
    );
    (c.status(), d)
}

#[test]
fn identify_reports_what_the_kernel_host_checks() {
    let f = fixture();
    let (mut a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let (st, d) = identify(&mut a, 1, 0);
    assert_eq!(st, Status::SUCCESS);
    let c = IdentifyController::read_from_bytes(&d).unwrap();
    assert_eq!(c.cntlid, cntlid);
    assert_eq!(&c.sn[..6], b"SN0001");
    assert_eq!(&c.mn[..11], b"Ferrox test");
    assert!(c.kas > 0 && c.ioccsz >= 4 && c.iorcsz >= 1 && c.icdoff == 0);
    assert!(c.sgls & 3 != 0);
    assert_eq!(c.subnqn_str().unwrap(), NQN);
    let (st, d) = identify(&mut a, 0, 1);
    assert_eq!(st, Status::SUCCESS);
    let n = IdentifyNamespace::read_from_bytes(&d).unwrap();
    assert_eq!(n.nsze, f.dev.info().num_blocks);
    assert!(n.ncap > 0);
    assert_ne!(n.nguid, [0; 16]);
    // Active namespace list and descriptors.
    let (_, d) = identify(&mut a, 2, 0);
    assert_eq!(&d[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let (st, d) = identify(&mut a, 3, 1);
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(d[0], 2, "first descriptor is the NGUID");
    // SMART log: 512 bytes, NSID all.
    let glp =
        Command::new(0x02, 0)
            .with_nsid(0xffff_ffff)
            .with_cdws([0x02 | (127 << 16), 0, 0, 0, 0, 0]);
    let (c, d) = a.exec(glp, &[], 512);
    assert!(c.status().is_success());
    assert_eq!(d.len(), 512);
}

#[test]
fn discovery_lists_the_subsystem() {
    let f = fixture();
    let mut h = Host::discovery(f.addr);
    let glp = Command::new(0x02, 0).with_cdws([0x70 | (((3 * 1024 / 4) - 1) << 16), 0, 0, 0, 0, 0]);
    let (c, d) = h.exec(glp, &[], 3072);
    assert!(c.status().is_success());
    let hdr = DiscoveryLogHeader::read_from_bytes(&d[..1024]).unwrap();
    assert_eq!(
        hdr.numrec, 2,
        "the discovery subsystem and the NVM subsystem"
    );
    let e = DiscoveryLogEntry::read_from_bytes(&d[2048..3072]).unwrap();
    assert_eq!(e.subnqn_str().unwrap(), NQN);
    assert_eq!(e.trsvcid_bytes(), f.addr.port().to_string().as_bytes());
    // Secure channel not required; SQ flow control may be disabled.
    assert_eq!(e.treq, 0b110);
    // I/O opcodes are refused on a discovery controller.
    assert_eq!(identify(&mut h, 0, 1).0.code(), Status::INVALID_FIELD);
}

#[test]
fn silent_host_is_torn_down_after_kato() {
    let f = fixture();
    // Taken before the last admin command, so the target may close no earlier than
    // t0 + KATO.
    let t0 = Instant::now();
    let (mut a, cntlid) = Host::admin(f.addr, Digests::default(), 300);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    // Say nothing: both queues must be closed by the target.
    a.expect_closed("KATO expired: the admin queue");
    io.expect_closed("KATO expired: the I/O queue");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed before KATO: {waited:?}"
    );
    // The controller is gone: an I/O queue for it is refused.
    let mut late = Host::ic(f.addr, Digests::default());
    let c = late.connect(2, cntlid, 0);
    assert_eq!(c.status().code(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn keep_alive_keeps_the_controller() {
    let f = fixture();
    let (mut a, _) = Host::admin(f.addr, Digests::default(), 400);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        assert!(a
            .exec(Command::new(0x18, 0), &[], 0)
            .0
            .status()
            .is_success());
    }
}

/// Enables namespace-attribute notices, then posts an AER with command ID `cid`.
fn post_ns_aer(a: &mut Host, cid: u16) {
    let aec = Command::new(0x09, 0).with_cdws([0x0b, 1 << 8, 0, 0, 0, 0]);
    assert!(a.exec(aec, &[], 0).0.status().is_success());
    let mut aer = Command::new(0x0c, 0);
    aer.cid = cid;
    aer.flags = 0x40;
    a.send_cmd(&aer, &[]);
}

#[test]
fn adding_a_namespace_completes_an_aer() {
    let f = fixture();
    let (mut a, _) = Host::admin(f.addr, Digests::default(), 0);
    post_ns_aer(&mut a, 900);
    let sub = f.target.shared().subsystem(NQN).unwrap();
    let dev: Arc<dyn ferrox_bdev::BlockDevice> = MallocBdev::new("m1", 2048, 512).unwrap();
    assert_eq!(sub.add_namespace(0, dev).unwrap(), 2);
    let (c, _) = a.wait_resp(900);
    assert!(c.status().is_success());
    assert_eq!(c.dw0 & 7, 2, "notice");
    assert_eq!((c.dw0 >> 16) & 0xff, 0x04, "changed namespace list log");
    let glp = Command::new(0x02, 0).with_cdws([0x04 | (1023 << 16), 0, 0, 0, 0, 0]);
    let (_, d) = a.exec(glp, &[], 4096);
    assert_eq!(&d[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn subsystems_come_and_go_while_running() {
    let f = fixture();
    let t = f.target.shared();
    let g0 = t
        .discovery_genctr
        .load(std::sync::atomic::Ordering::Acquire);
    let dev: Arc<dyn ferrox_bdev::BlockDevice> = MallocBdev::new("m2", 2048, 512).unwrap();
    let nqn2 = "nqn.2026-11.io.ferrox:second";
    t.add_subsystem(ferrox_nvmeof::SubsystemConfig {
        nqn: nqn2.to_string(),
        serial: "SN2".to_string(),
        model: "second".to_string(),
        allow_any_host: true,
        hosts: vec![],
        namespaces: vec![(1, dev)],
        listeners: Vec::new(),
    })
    .unwrap();
    assert!(
        t.discovery_genctr
            .load(std::sync::atomic::Ordering::Acquire)
            > g0
    );
    let mut h = Host::ic(f.addr, Digests::default());
    assert!(h.connect_to(nqn2, HOSTNQN, 0, 0xFFFF).status().is_success());
    t.remove_subsystem(nqn2).unwrap();
    h.expect_closed("removing the subsystem closes its controllers");
    assert!(t.remove_subsystem(nqn2).is_err());
    assert!(t.remove_subsystem(DISCOVERY_NQN).is_err());
}

#[test]
fn a_namespace_given_a_larger_device_reports_it_and_serves_the_new_blocks() {
    let f = fixture();
    let (mut a, cntlid) = Host::admin(f.addr, Digests::default(), 0);
    let mut io = Host::io_queue(f.addr, Digests::default(), cntlid, 1);
    let old_blocks = f.dev.info().num_blocks;
    // The old end is out of range; the queue has its channel open.
    assert_eq!(
        io.write(old_blocks, &pattern(1, 512)),
        Status::LBA_OUT_OF_RANGE.with_dnr()
    );
    assert_eq!(io.write(0, &pattern(2, 512)), Status::SUCCESS);

    post_ns_aer(&mut a, 901);

    let sub = f.target.shared().subsystem(NQN).unwrap();
    let (_, d) = identify(&mut a, 0, 1);
    let nguid = IdentifyNamespace::read_from_bytes(&d).unwrap().nguid;
    let wrong: Arc<dyn ferrox_bdev::BlockDevice> = MallocBdev::new("w", 4096, 4096).unwrap();
    let e = sub.replace_namespace_bdev(1, wrong).unwrap_err();
    assert!(e.contains("512-byte") && e.contains("4096-byte"), "{e}");
    assert!(sub.replace_namespace_bdev(7, f.dev.clone()).is_err());
    let smaller: Arc<dyn ferrox_bdev::BlockDevice> =
        MallocBdev::new("s", old_blocks / 2, 512).unwrap();
    let e = sub.replace_namespace_bdev(1, smaller).unwrap_err();
    assert!(e.contains("shrink"), "{e}");

    let bigger: Arc<dyn ferrox_bdev::BlockDevice> =
        MallocBdev::new("grown", old_blocks * 2, 512).unwrap();
    sub.replace_namespace_bdev(1, bigger).unwrap();
    let (c, _) = a.wait_resp(901);
    assert!(c.status().is_success());
    assert_eq!(c.dw0 & 7, 2, "notice");
    let glp = Command::new(0x02, 0).with_cdws([0x04 | (1023 << 16), 0, 0, 0, 0, 0]);
    let (_, d) = a.exec(glp, &[], 4096);
    assert_eq!(&d[..8], &[1, 0, 0, 0, 0, 0, 0, 0], "NSID 1 changed");
    let (st, d) = identify(&mut a, 0, 1);
    assert_eq!(st, Status::SUCCESS);
    let n = IdentifyNamespace::read_from_bytes(&d).unwrap();
    assert_eq!(n.nsze, old_blocks * 2);
    assert_eq!(n.nguid, nguid, "the namespace keeps its identity");

    // The queue opened before the change moves to the new device.
    let data = pattern(3, 4096);
    assert_eq!(io.write(old_blocks + 8, &data), Status::SUCCESS);
    assert_eq!(io.read(old_blocks + 8, 8), (Status::SUCCESS, data));
    assert_eq!(
        io.write(old_blocks * 2, &pattern(4, 512)),
        Status::LBA_OUT_OF_RANGE.with_dnr()
    );
}

/// A device without Write Zeroes and Unmap (as some drives and pools on them are).
struct Plain {
    inner: Arc<dyn ferrox_bdev::BlockDevice>,
    info: ferrox_bdev::BdevInfo,
}

impl ferrox_bdev::BlockDevice for Plain {
    fn info(&self) -> &ferrox_bdev::BdevInfo {
        &self.info
    }

    fn open_channel(
        self: Arc<Self>,
        r: &ferrox_reactor::Reactor,
    ) -> Result<std::rc::Rc<dyn ferrox_bdev::ChannelImpl>, ferrox_bdev::BdevError> {
        self.inner.clone().open_channel(r)
    }
}

#[test]
fn oncs_follows_the_devices_and_identify_needs_its_4k() {
    const PLAIN: &str = "nqn.2026-11.io.ferrox:plain";
    let f = fixture_with(&["127.0.0.1:0"], Vec::new(), |_| {
        let inner: Arc<dyn ferrox_bdev::BlockDevice> = MallocBdev::new("m1", 4096, 512).unwrap();
        let mut info = inner.info().clone();
        info.ops
            .remove(ferrox_bdev::Ops::WRITE_ZEROES | ferrox_bdev::Ops::UNMAP);
        vec![ferrox_nvmeof::SubsystemConfig {
            nqn: PLAIN.to_string(),
            serial: "SN0002".to_string(),
            model: "Ferrox plain".to_string(),
            allow_any_host: true,
            hosts: Vec::new(),
            namespaces: vec![(1, Arc::new(Plain { inner, info }))],
            listeners: Vec::new(),
        }]
    });
    // The malloc-backed subsystem: Compare, DSM and Write Zeroes.
    let (mut a, _) = Host::admin(f.addr, Digests::default(), 0);
    let (_, d) = identify(&mut a, 1, 0);
    assert_eq!(
        IdentifyController::read_from_bytes(&d).unwrap().oncs,
        0b1101
    );
    // Identify into a buffer shorter than its 4 KiB data structure.
    let (c, _) = a.exec(
        Command::new(0x06, 0).with_cdws([1, 0, 0, 0, 0, 0]),
        &[],
        512,
    );
    assert_eq!(c.status().code(), Status::DATA_SGL_LENGTH_INVALID);

    // The plain device's subsystem: no Write Zeroes; deallocation is a no-op.
    let mut pa = Host::ic(f.addr, Digests::default());
    let c = pa.connect_to(PLAIN, HOSTNQN, 0, 0xFFFF);
    assert!(c.status().is_success(), "{}", c.status());
    let cntlid = c.dw0 as u16;
    assert!(pa
        .prop_set(0x14, (6 << 16) | (4 << 20) | 1)
        .status()
        .is_success());
    let (st, d) = identify(&mut pa, 1, 0);
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(
        IdentifyController::read_from_bytes(&d).unwrap().oncs,
        0b0101
    );
    // The Commands Supported and Effects log agrees with ONCS about Write Zeroes.
    let write_zeroes_effects = |h: &mut Host| {
        let glp = Command::new(0x02, 0).with_cdws([0x05 | (1023 << 16), 0, 0, 0, 0, 0]);
        let (c, d) = h.exec(glp, &[], 4096);
        assert!(c.status().is_success());
        let at = 1024 + 4 * 0x08;
        u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
    };
    assert_eq!(write_zeroes_effects(&mut pa), 0);
    assert_ne!(write_zeroes_effects(&mut a), 0);
    let mut io = Host::ic(f.addr, Digests::default());
    assert!(io
        .connect_to(PLAIN, HOSTNQN, 1, cntlid)
        .status()
        .is_success());
    let data = pattern(9, 4096);
    assert_eq!(io.write(8, &data), Status::SUCCESS);
    let wz = Command::new(0x08, 0).with_nsid(1).with_lba_range(8, 7);
    assert_eq!(
        io.exec(wz, &[], 0).0.status().code(),
        Status::INVALID_OPCODE
    );
    let range = ferrox_nvme_spec::DsmRange {
        context_attributes: 0,
        nlb: 8,
        slba: 8,
    };
    let dsm = Command::new(0x09, 0)
        .with_nsid(1)
        .with_cdws([0, 1 << 2, 0, 0, 0, 0]);
    assert_eq!(
        io.exec(dsm, zerocopy::IntoBytes::as_bytes(&range), 0)
            .0
            .status(),
        Status::SUCCESS
    );
    assert_eq!(io.read(8, 8), (Status::SUCCESS, data), "the data stays");
}

#[test]
fn namespace_ids_follow_a_device_with_a_lasting_identity() {
    let f = fixture();
    let sub = f.target.shared().subsystem(NQN).unwrap();
    let dev = |uuid: u8, stable: bool| -> Arc<dyn ferrox_bdev::BlockDevice> {
        let inner: Arc<dyn ferrox_bdev::BlockDevice> = MallocBdev::new("m2", 64, 512).unwrap();
        let mut info = inner.info().clone();
        info.uuid = [uuid; 16];
        info.ops.set(ferrox_bdev::Ops::STABLE_UUID, stable);
        Arc::new(Plain { inner, info })
    };
    let ids = |d: Arc<dyn ferrox_bdev::BlockDevice>| {
        sub.add_namespace(2, d).unwrap();
        let ns = sub.namespace(2).unwrap();
        sub.remove_namespace(2).unwrap();
        (ns.nguid, ns.uuid)
    };
    // Devices without a lasting identity: the IDs depend on the NSID alone.
    assert_eq!(ids(dev(1, false)), ids(dev(2, false)));
    // With one: another device is another disk; the same device, the same IDs.
    let a = ids(dev(1, true));
    assert_ne!(a.0, ids(dev(2, true)).0);
    assert_ne!(a.1, ids(dev(2, true)).1);
    assert_eq!(a, ids(dev(1, true)));
    assert_ne!(a.0, ids(dev(1, false)).0);
}
