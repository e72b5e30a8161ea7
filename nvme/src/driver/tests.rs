//! The driver against the emulated controller: bring-up, I/O with PRP lists, batching,
//! and every injected fault ending in a clear error (never a hang).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_reactor::{BufferPool, ClassConfig, DmaBuf, PoolConfig};

use super::*;
use crate::emu::{EmuConfig, EmulatedController, Fault, FaultKind, QueueKind};
use crate::spec::{IoOpcode, Status};

pub(crate) fn pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 64,
            },
            ClassConfig {
                size: 128 << 10,
                count: 16,
            },
        ],
        hugepages: false,
    })
    .unwrap()
}

pub(crate) fn opts() -> ControllerOptions {
    ControllerOptions {
        io_queues: 2,
        queue_depth: 32,
        admin_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(200),
        interrupts: false,
    }
}

fn up(
    cfg: EmuConfig,
) -> (
    Arc<EmulatedController>,
    Arc<Controller>,
    &'static BufferPool,
) {
    let emu = EmulatedController::new(cfg);
    let pool = pool();
    let ctrl = Controller::init(emu.clone(), pool, opts()).unwrap();
    (emu, ctrl, pool)
}

type Q = IoQueue<u32>;

/// Submits one command, commits, and polls (checking deadlines) until it completes.
fn run(q: &mut Q, cmd: Command, data: Data) -> Result<crate::spec::Completion, Error> {
    q.submit(cmd, data, 7).map_err(|(e, _)| e)?;
    q.commit();
    let mut out = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        q.poll(&mut out);
        if out.is_empty() {
            q.check_timeouts(Instant::now(), &mut out);
        }
        if let Some((ctx, r)) = out.pop() {
            assert_eq!(ctx, 7);
            return r;
        }
        assert!(
            Instant::now() < give_up,
            "command never completed: the driver hung"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pattern(buf: &mut DmaBuf, seed: u8) {
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
}

fn write(
    q: &mut Q,
    pool: &'static BufferPool,
    lba: u64,
    len: usize,
    seed: u8,
) -> Result<DmaBuf, Error> {
    let mut buf = pool.alloc(len).unwrap();
    pattern(&mut buf, seed);
    let cmd = Command::write(0, 1, lba, (len / 512 - 1) as u16);
    run(q, cmd, Data::Buf(BufRef::of(&buf)))?;
    Ok(buf)
}

fn read(q: &mut Q, pool: &'static BufferPool, lba: u64, len: usize) -> Result<DmaBuf, Error> {
    let mut buf = pool.alloc(len).unwrap();
    buf.as_mut_slice().fill(0xEE);
    run(
        q,
        Command::read(0, 1, lba, (len / 512 - 1) as u16),
        Data::Buf(BufRef::of(&buf)),
    )?;
    Ok(buf)
}

#[test]
fn bring_up_identifies_controller_and_namespaces() {
    let (emu, ctrl, _) = up(EmuConfig {
        namespaces: vec![(2048, 512), (64, 4096)],
        ..EmuConfig::default()
    });
    assert_eq!(ctrl.identify().mn[..20], *b"Ferrox emulated NVMe");
    assert_eq!(
        ctrl.namespaces(),
        [
            Namespace {
                nsid: 1,
                block_size: 512,
                num_blocks: 2048,
                nguid: [0; 16],
                eui64: [0; 8],
            },
            Namespace {
                nsid: 2,
                block_size: 4096,
                num_blocks: 64,
                nguid: [0xa2; 16],
                eui64: [0; 8],
            }
        ]
    );
    assert_eq!(ctrl.io_queues(), 2);
    assert_eq!(ctrl.max_transfer(), 128 << 10, "MDTS 5 = 32 pages");
    let ops = emu.opcodes();
    assert_eq!(ops[0], (QueueKind::Admin, AdminOpcode::IDENTIFY.0));
    assert_eq!(ops[1], (QueueKind::Admin, AdminOpcode::SET_FEATURES.0));
    ctrl.shutdown().unwrap();
}

#[test]
fn io_round_trips_with_prp_lists_up_to_128k() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    for (i, len) in [512usize, 4096, 8192, 12288, 64 << 10, 128 << 10]
        .into_iter()
        .enumerate()
    {
        let lba = i as u64 * 300;
        let w = write(&mut q, pool, lba, len, i as u8).unwrap();
        let r = read(&mut q, pool, lba, len).unwrap();
        assert!(r.as_slice() == w.as_slice(), "{len}-byte round trip");
        assert_eq!(emu.ns_bytes(1, lba as usize * 512, len), w.as_slice());
    }
    run(&mut q, Command::flush(0, 1), Data::None).unwrap();
    run(&mut q, Command::write_zeroes(0, 1, 0, 7), Data::None).unwrap();
    assert!(emu.ns_bytes(1, 0, 4096).iter().all(|&b| b == 0));
    let mut dsm = Command::new(IoOpcode::DATASET_MANAGEMENT.0, 0).with_nsid(1);
    dsm.cdw11 = 4;
    run(
        &mut q,
        dsm,
        Data::Dsm(crate::spec::DsmRange {
            context_attributes: 0,
            nlb: 8,
            slba: 300,
        }),
    )
    .unwrap();
    assert!(emu.ns_bytes(1, 300 * 512, 4096).iter().all(|&b| b == 0));
    let e = run(
        &mut q,
        Command::read(0, 1, 2047, 1),
        Data::Buf(BufRef::of(&pool.alloc(1024).unwrap())),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Command { status, .. } if status.code() == Status::LBA_OUT_OF_RANGE),
        "{e}"
    );
    drop(q);
    ctrl.shutdown().unwrap();
}

#[test]
fn one_doorbell_per_batch_and_a_full_queue_says_so() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    let before = emu.stats().sq_doorbells;
    let bufs: Vec<DmaBuf> = (0..31).map(|_| pool.alloc(4096).unwrap()).collect();
    for (i, b) in bufs.iter().enumerate() {
        q.submit(
            Command::write(0, 1, i as u64 * 8, 7),
            Data::Buf(BufRef::of(b)),
            i as u32,
        )
        .unwrap();
    }
    let extra = pool.alloc(4096).unwrap();
    let (e, ctx) = q
        .submit(
            Command::write(0, 1, 0, 7),
            Data::Buf(BufRef::of(&extra)),
            99,
        )
        .unwrap_err();
    assert!(matches!(e, Error::QueueFull) && ctx == 99);
    assert!(q.commit());
    assert!(!q.commit(), "nothing new: no doorbell");
    assert_eq!(emu.stats().sq_doorbells - before, 1);
    let mut out = Vec::new();
    assert_eq!(q.poll(&mut out), 31);
    assert!(out.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn a_failing_command_reports_its_status() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    emu.inject(Fault {
        queue: QueueKind::Io,
        opcode: IoOpcode::WRITE.0,
        kind: FaultKind::Status(Status::WRITE_FAULT),
        times: 1,
    });
    let e = write(&mut q, pool, 0, 4096, 1).unwrap_err();
    assert!(e.to_string().contains("Write Fault"), "{e}");
    write(&mut q, pool, 0, 4096, 1).unwrap();
}

#[test]
fn an_io_timeout_aborts_resets_and_recovers() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    write(&mut q, pool, 8, 4096, 3).unwrap();
    emu.inject(Fault {
        queue: QueueKind::Io,
        opcode: IoOpcode::READ.0,
        kind: FaultKind::Drop,
        times: 1,
    });
    let t = Instant::now();
    let e = read(&mut q, pool, 8, 4096).unwrap_err();
    assert!(
        matches!(
            e,
            Error::IoTimeout {
                opcode: 2,
                ms: 200,
                ..
            }
        ),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(e.to_string().contains("timed out after 200 ms"), "{e}");
    assert!(
        emu.opcodes()
            .contains(&(QueueKind::Admin, AdminOpcode::ABORT.0)),
        "Abort was sent"
    );
    assert!(emu.stats().resets >= 1, "controller was reset");
    let r = read(&mut q, pool, 8, 4096).unwrap();
    let mut want = pool.alloc(4096).unwrap();
    pattern(&mut want, 3);
    assert!(r.as_slice() == want.as_slice(), "data survives the reset");
}

#[test]
fn a_fatal_controller_status_ends_in_a_reset_not_a_hang() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    emu.inject(Fault {
        queue: QueueKind::Io,
        opcode: IoOpcode::WRITE.0,
        kind: FaultKind::Fatal,
        times: 1,
    });
    let e = write(&mut q, pool, 0, 4096, 1).unwrap_err();
    assert!(matches!(e, Error::IoTimeout { .. }), "{e}");
    write(&mut q, pool, 0, 4096, 1).unwrap();
}

#[test]
fn other_commands_in_flight_fail_with_reset() {
    let (emu, ctrl, pool) = up(EmuConfig::default());
    let mut q = Q::create(&ctrl, false).unwrap();
    emu.inject(Fault {
        queue: QueueKind::Io,
        opcode: IoOpcode::READ.0,
        kind: FaultKind::Drop,
        times: 2,
    });
    let a = pool.alloc(4096).unwrap();
    let b = pool.alloc(4096).unwrap();
    q.submit(Command::read(0, 1, 0, 7), Data::Buf(BufRef::of(&a)), 1)
        .unwrap();
    q.submit(Command::read(0, 1, 8, 7), Data::Buf(BufRef::of(&b)), 2)
        .unwrap();
    q.commit();
    std::thread::sleep(Duration::from_millis(250));
    let mut out = Vec::new();
    q.check_timeouts(Instant::now(), &mut out);
    out.sort_by_key(|(c, _)| *c);
    assert!(matches!(out[0], (1, Err(Error::IoTimeout { .. }))));
    assert!(matches!(out[1], (2, Err(Error::Reset))));
}

fn init_err(cfg: EmuConfig, setup: impl FnOnce(&EmulatedController)) -> Error {
    let emu = EmulatedController::new(cfg);
    setup(&emu);
    let t = Instant::now();
    let e = Controller::init(emu, pool(), opts()).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bring-up error took {:?}",
        t.elapsed()
    );
    e
}

#[test]
fn bring_up_faults_are_clear_errors() {
    let e = init_err(EmuConfig::default(), |c| c.set_never_ready(true));
    assert!(
        e.to_string()
            .contains("CSTS.RDY did not become 1 within 500 ms"),
        "{e}"
    );
    let e = init_err(EmuConfig::default(), |c| {
        c.inject(Fault {
            queue: QueueKind::Admin,
            opcode: AdminOpcode::IDENTIFY.0,
            kind: FaultKind::Status(Status::INTERNAL_ERROR),
            times: 1,
        })
    });
    assert!(
        e.to_string().contains("Identify Controller failed")
            && e.to_string().contains("Internal Error"),
        "{e}"
    );
    let e = init_err(EmuConfig::default(), |c| {
        c.inject(Fault {
            queue: QueueKind::Admin,
            opcode: AdminOpcode::IDENTIFY.0,
            kind: FaultKind::ShortData(16),
            times: 1,
        })
    });
    assert!(
        e.to_string()
            .contains("Identify Controller returned no data"),
        "{e}"
    );
    let e = init_err(EmuConfig::default(), |c| {
        c.inject(Fault {
            queue: QueueKind::Admin,
            opcode: AdminOpcode::IDENTIFY.0,
            kind: FaultKind::Drop,
            times: 1,
        })
    });
    assert!(
        e.to_string()
            .contains("Identify Controller (opcode 0x06) timed out after 300 ms"),
        "{e}"
    );
    let e = init_err(EmuConfig::default(), |c| {
        c.inject(Fault {
            queue: QueueKind::Admin,
            opcode: AdminOpcode::SET_FEATURES.0,
            kind: FaultKind::Fatal,
            times: 1,
        })
    });
    assert!(e.to_string().contains("CSTS.CFS=1"), "{e}");
    let e = init_err(EmuConfig::default(), |c| c.set_fatal());
    assert!(
        matches!(e, Error::Fatal { .. } | Error::ReadyTimeout { .. }),
        "{e}"
    );
}

#[test]
fn queues_run_out_cleanly_and_come_back() {
    let (_emu, ctrl, _) = up(EmuConfig::default());
    let a = Q::create(&ctrl, false).unwrap();
    let _b = Q::create(&ctrl, false).unwrap();
    let e = Q::create(&ctrl, false).unwrap_err();
    assert!(e.to_string().contains("all 2 I/O queues are in use"), "{e}");
    drop(a);
    Q::create(&ctrl, false).unwrap();
}
