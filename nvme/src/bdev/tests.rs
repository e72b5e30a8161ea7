//! Namespaces as block devices on reactors, against the emulated controller.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::{BdevError, BlockDevice, Completion, IoChannel, IoOp, IoSink};
use ferrox_reactor::mailbox::oneshot;
use ferrox_reactor::{available_cores, DmaBuf, PollMode, ReactorGroup, ReactorOptions};

use super::*;
use crate::driver::tests::{opts, pool};
use crate::emu::{EmuConfig, EmulatedController, Fault, FaultKind, QueueKind};

#[derive(Clone, Debug)]
enum Req {
    Read(u64, u64),
    Write(u64, Vec<u8>, bool),
    Flush,
    Zero(u64, u64),
    Unmap(u64, u64),
}

type Outcome = Result<Option<Vec<u8>>, BdevError>;

struct Sink(RefCell<Vec<(u64, Outcome)>>);

impl IoSink for Sink {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        self.0
            .borrow_mut()
            .push((tag, result.map(|()| buf.map(|b| b.as_slice().to_vec()))));
    }
}

/// Runs `reqs` one after the other on the first reactor of `g` (each waits for the
/// previous one) and returns the outcomes.
fn run(g: &ReactorGroup, dev: Arc<dyn BlockDevice>, reqs: Vec<Req>) -> Vec<Outcome> {
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            let chan = Rc::new(IoChannel::open(dev, r).unwrap());
            let sink = Rc::new(Sink(RefCell::new(Vec::new())));
            struct Driver {
                chan: Rc<IoChannel>,
                sink: Rc<Sink>,
                reqs: RefCell<std::collections::VecDeque<Req>>,
                out: RefCell<Vec<Outcome>>,
                waiting: std::cell::Cell<bool>,
                tx: RefCell<Option<ferrox_reactor::mailbox::Replier<Vec<Outcome>>>>,
            }
            impl ferrox_reactor::Poller for Driver {
                fn poll(&self, r: &Reactor) -> PollStatus {
                    if self.waiting.get() {
                        let Some((_, o)) = self.sink.0.borrow_mut().pop() else {
                            return PollStatus::Idle;
                        };
                        self.out.borrow_mut().push(o);
                        self.waiting.set(false);
                    }
                    let Some(req) = self.reqs.borrow_mut().pop_front() else {
                        if let Some(tx) = self.tx.borrow_mut().take() {
                            tx.send(std::mem::take(&mut *self.out.borrow_mut()));
                        }
                        return PollStatus::Done;
                    };
                    let bs = self.chan.info().block_size as usize;
                    let op = match req {
                        Req::Read(lba, blocks) => IoOp::Read {
                            lba,
                            blocks,
                            buf: r.pool().alloc(blocks as usize * bs).unwrap(),
                        },
                        Req::Write(lba, data, fua) => {
                            let mut buf = r.pool().alloc(data.len()).unwrap();
                            buf.as_mut_slice().copy_from_slice(&data);
                            IoOp::Write {
                                lba,
                                blocks: (data.len() / bs) as u64,
                                buf,
                                fua,
                            }
                        }
                        Req::Flush => IoOp::Flush,
                        Req::Zero(lba, blocks) => IoOp::WriteZeroes { lba, blocks },
                        Req::Unmap(lba, blocks) => IoOp::Unmap { lba, blocks },
                    };
                    match self.chan.submit(
                        op,
                        Completion {
                            sink: self.sink.clone(),
                            tag: 0,
                        },
                    ) {
                        Ok(()) => self.waiting.set(true),
                        Err((e, _)) => self.out.borrow_mut().push(Err(e)),
                    }
                    PollStatus::Busy
                }
            }
            r.add_poller(Rc::new(Driver {
                chan,
                sink,
                reqs: RefCell::new(reqs.into()),
                out: RefCell::new(Vec::new()),
                waiting: std::cell::Cell::new(false),
                tx: RefCell::new(Some(tx)),
            }));
        })
        .unwrap();
    rx.wait_timeout(Duration::from_secs(30)).unwrap()
}

fn group(mode: PollMode) -> ReactorGroup {
    let core = available_cores()[0];
    let o = ReactorOptions {
        poll_mode: mode,
        ..ReactorOptions::default()
    };
    ReactorGroup::start(&[core], &o, pool()).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn attach_emu(
    g: &ReactorGroup,
    mode_interrupts: bool,
) -> (Arc<EmulatedController>, NvmeController) {
    let emu = EmulatedController::new(EmuConfig {
        namespaces: vec![(4096, 512), (256, 4096)],
        ..EmuConfig::default()
    });
    let mut o = opts();
    o.interrupts = mode_interrupts;
    o.io_timeout = Duration::from_millis(300);
    let c = attach_backing(emu.clone(), g.pool(), o).unwrap();
    (emu, c)
}

fn exercise(mode: PollMode) {
    let g = group(mode);
    let (emu, c) = attach_emu(&g, mode == PollMode::Adaptive);
    assert!(c.bdevs[0].info().name.starts_with("nvme") && c.bdevs[0].info().name.ends_with("n1"));
    assert_eq!(c.bdevs[1].info().block_size, 4096);
    // Lasting identities: the drive's NGUID where it has one, else one derived from
    // the NSID and the whole serial and model numbers.
    assert_eq!(c.bdevs[1].info().uuid, [0xa2; 16]);
    let u1 = c.bdevs[0].info().uuid;
    assert_eq!(u1[..4], 1u32.to_le_bytes());
    assert_ne!(u1[4..], [0; 12]);
    assert!(c.bdevs[0]
        .info()
        .ops
        .contains(ferrox_bdev::Ops::STABLE_UUID));
    let dev: Arc<dyn BlockDevice> = c.bdevs[0].clone();
    let big = pattern(9, 128 << 10);
    let out = run(
        &g,
        dev.clone(),
        vec![
            Req::Write(16, big.clone(), false),
            Req::Read(16, 256),
            Req::Write(0, pattern(1, 4096), true),
            Req::Flush,
            Req::Zero(0, 4),
            Req::Read(0, 8),
            Req::Unmap(16, 8),
            Req::Read(16, 8),
        ],
    );
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(out[1].as_ref().unwrap().as_deref(), Some(&big[..]));
    let mut want = vec![0u8; 4096];
    want[2048..].copy_from_slice(&pattern(1, 4096)[2048..]);
    assert_eq!(out[5].as_ref().unwrap().as_deref(), Some(&want[..]));
    assert!(out[7]
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(emu.ns_bytes(1, 24 * 512, 4096), big[4096..8192]);
    // The second namespace shares the reactor's queue pair.
    let out = run(
        &g,
        c.bdevs[1].clone(),
        vec![Req::Write(3, pattern(5, 4096), false), Req::Read(3, 1)],
    );
    assert_eq!(
        out[1].as_ref().unwrap().as_deref(),
        Some(&pattern(5, 4096)[..])
    );
    // A timed-out command: a clear error, then the device works again.
    emu.inject(Fault {
        queue: QueueKind::Io,
        opcode: 0x02,
        kind: FaultKind::Drop,
        times: 1,
    });
    let out = run(&g, dev.clone(), vec![Req::Read(16, 8), Req::Read(0, 8)]);
    assert_eq!(out[0], Err(BdevError::Io(libc::ETIMEDOUT)));
    assert!(out[1].is_ok());
    if mode == PollMode::Adaptive {
        std::thread::sleep(Duration::from_millis(50));
        let parks = g.handles()[0].stats().parks;
        assert!(
            parks > 0,
            "an idle adaptive reactor parks (on the queue's eventfd)"
        );
        let out = run(&g, dev, vec![Req::Read(0, 8)]);
        assert!(out[0].is_ok());
    }
    g.shutdown();
    c.shutdown().unwrap();
}

#[test]
fn namespaces_serve_io_in_busy_mode() {
    exercise(PollMode::Busy);
}

#[test]
fn namespaces_serve_io_in_adaptive_mode_with_interrupts() {
    exercise(PollMode::Adaptive);
}

#[test]
fn pci_addresses_are_checked_and_normalised() {
    assert_eq!(parse_bdf("0000:00:04.0").unwrap(), "0000:00:04.0");
    assert_eq!(parse_bdf("00:04.0").unwrap(), "0000:00:04.0");
    assert_eq!(parse_bdf("0000:3B:1F.7").unwrap(), "0000:3b:1f.7");
    for bad in [
        "",
        "04.0",
        "0000:00:04",
        "0000:00:20.0",
        "0000:00:04.8",
        "x:00:04.0",
        "0000:000:04.0",
    ] {
        let e = parse_bdf(bad).unwrap_err();
        assert!(e.contains("not a PCI address"), "{bad}: {e}");
    }
}
