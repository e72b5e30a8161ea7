//! The host library against Ferrox's target on loopback: data both ways, digests,
//! queue-full back-pressure, errors, and a target restart in the middle.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::proxy::{opcode, pdu_type, Dir, IoQueues, Proxy, Verdict};
use common::*;
use ferrox_bdev::testing::{run_kept, Outcome, Req};
use ferrox_bdev::{BdevError, BlockDevice};
use ferrox_nvmeof::host::NvmfBdev;
use ferrox_nvmeof::pdu::PduType;
use ferrox_reactor::ReactorHandle;

/// The host's channel is kept across batches: reconnecting is what is tested.
fn run(h: &ReactorHandle, dev: &Arc<dyn BlockDevice>, reqs: Vec<Req>) -> Vec<Outcome> {
    run_kept(h, dev.clone(), reqs)
}

fn url(f: &Fixture) -> String {
    format!("nvme+tcp://{}/{NQN}", f.addr)
}

fn round_trip(digests: bool) {
    let f = fixture();
    let dev = NvmfBdev::connect(&url(&f), &host_opts(digests, 32)).unwrap();
    assert_eq!(dev.info().num_blocks, f.dev.info().num_blocks);
    assert_eq!(dev.info().block_size, 512);
    let g = host_group();
    let h = &g.handles()[0];
    let sizes = [512usize, 4096, 8192, 65536, 131072];
    let writes: Vec<Req> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Req::Write(i as u64 * 512, pattern(i as u8, n)))
        .collect();
    assert!(run(h, &dev, writes).iter().all(Result::is_ok));
    let reads: Vec<Req> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Req::Read(i as u64 * 512, (n / 512) as u64))
        .collect();
    for (i, o) in run(h, &dev, reads).into_iter().enumerate() {
        assert!(
            o.unwrap().unwrap() == pattern(i as u8, sizes[i]),
            "size {}",
            sizes[i]
        );
    }
    let out = run(
        h,
        &dev,
        vec![
            Req::Flush,
            Req::Zero(0, 8),
            Req::Unmap(512, 8),
            Req::Read(0, 8),
        ],
    );
    assert!(out[..3].iter().all(Result::is_ok), "{out:?}");
    assert_eq!(out[3].clone().unwrap().unwrap(), vec![0u8; 4096]);
}

#[test]
fn data_round_trips() {
    round_trip(false);
}

#[test]
fn data_round_trips_with_digests() {
    round_trip(true);
}

#[test]
fn more_requests_than_queue_entries_wait_and_complete() {
    let f = fixture();
    let dev = NvmfBdev::connect(&url(&f), &host_opts(false, 4)).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    let writes: Vec<Req> = (0..100u64)
        .map(|i| Req::Write(i * 8, pattern(i as u8, 4096)))
        .collect();
    assert!(run(h, &dev, writes).iter().all(Result::is_ok));
    let reads: Vec<Req> = (0..100u64).map(|i| Req::Read(i * 8, 8)).collect();
    for (i, o) in run(h, &dev, reads).into_iter().enumerate() {
        assert!(o.unwrap().unwrap() == pattern(i as u8, 4096));
    }
}

#[test]
fn errors_come_back_as_errors() {
    let f = fixture();
    let dev = NvmfBdev::connect(&url(&f), &host_opts(false, 8)).unwrap();
    let g = host_group();
    let nb = dev.info().num_blocks;
    let out = run(
        &g.handles()[0],
        &dev,
        vec![Req::Read(nb, 1), Req::Read(0, 1)],
    );
    assert!(
        matches!(out[0], Err(BdevError::OutOfRange { .. })),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok());
    // Wrong NQN and unreachable targets fail at connect with a clear error.
    let bad = format!("nvme+tcp://{}/nqn.2026-11.io.ferrox:nope", f.addr);
    let e = NvmfBdev::connect(&bad, &host_opts(false, 8)).err().unwrap();
    assert!(e.to_string().contains("Connect"), "{e}");
    let e = NvmfBdev::connect(
        "nvme+tcp://127.0.0.1:1/nqn.2026-11.io.ferrox:x",
        &host_opts(false, 8),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[test]
fn a_reconnection_never_blocks_the_reactor() {
    let f = fixture();
    // While `hold` is set, new connections hang after the TCP handshake: their ICReq
    // waits in the proxy (at most 60 s), as with a target that accepts and says
    // nothing.
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = hold.clone();
    let proxy = Proxy::start(f.addr, move |_conn, dir, pdu| {
        if dir == Dir::ToTarget && pdu_type(pdu) == PduType::IC_REQ {
            let t0 = std::time::Instant::now();
            while h2.load(std::sync::atomic::Ordering::SeqCst)
                && t0.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Verdict::Forward
    });
    let mut o = host_opts(false, 8);
    o.connect_timeout = Duration::from_secs(60);
    let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    assert!(run(h, &dev, vec![Req::Write(0, pattern(1, 4096))])[0].is_ok());

    hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = proxy.connections();
    proxy.cut();
    std::thread::scope(|s| {
        // Commands (from another thread: one may get stuck if the reconnection runs
        // on the reactor) fail until a reconnection attempt has reached the proxy,
        // where it hangs.
        s.spawn(|| {
            let t0 = std::time::Instant::now();
            while proxy.connections() == before && t0.elapsed() < Duration::from_secs(30) {
                let _ = run(h, &dev, vec![Req::Read(0, 8)]);
            }
        });
        let t0 = std::time::Instant::now();
        while proxy.connections() == before {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no reconnection attempt"
            );
            std::thread::yield_now();
        }
        // The reactor that owns the queue still answers meanwhile.
        let answered = h
            .call(|_r| ())
            .unwrap()
            .wait_timeout(Duration::from_secs(20));
        assert!(answered.is_ok(), "the reactor is stuck in the reconnection");
    });
    // A command submitted meanwhile waits for the reconnection (at most the I/O
    // timeout, 5 s here) and succeeds once the target answers.
    let out = std::thread::scope(|s| {
        let waiter = s.spawn(|| run(h, &dev, vec![Req::Read(0, 8)]).remove(0));
        hold.store(false, std::sync::atomic::Ordering::SeqCst);
        waiter.join().unwrap()
    });
    assert!(
        matches!(&out, Ok(Some(d)) if *d == pattern(1, 4096)),
        "{out:?}"
    );
}

#[test]
fn target_restart_fails_in_flight_then_reconnects() {
    let f = fixture();
    let addr = f.addr.to_string();
    let dev = NvmfBdev::connect(&url(&f), &host_opts(false, 8)).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    assert!(run(h, &dev, vec![Req::Write(0, pattern(1, 4096))])
        .iter()
        .all(Result::is_ok));
    drop(f); // the target goes away
    let out = run(h, &dev, vec![Req::Read(0, 8)]);
    assert!(
        out[0].is_err(),
        "I/O to a stopped target must fail, not hang"
    );
    // A new target on the same address (fresh RAM): the host reconnects by itself.
    let f2 = fixture_at(&addr);
    let mut ok = false;
    for _ in 0..50 {
        let out = run(
            h,
            &dev,
            vec![Req::Write(8, pattern(2, 4096)), Req::Read(8, 8)],
        );
        if let (Ok(_), Ok(Some(d))) = (&out[0], &out[1]) {
            assert!(*d == pattern(2, 4096));
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // reconnects are rate-limited
    }
    assert!(ok, "the host never reconnected");
    drop(f2);
}

#[test]
fn a_silent_target_times_out_instead_of_hanging() {
    let f = fixture();
    let mut o = host_opts(false, 8);
    o.io_timeout = Duration::from_millis(500);
    let dev = NvmfBdev::connect(&url(&f), &o).unwrap();
    // The host's reactors park when idle (adaptive): only its timer can notice.
    let g = host_group();
    let h = &g.handles()[0];
    assert!(run(h, &dev, vec![Req::Read(0, 8)])[0].is_ok());
    // Freeze every target reactor: the target stays connected and says nothing.
    let gate = Arc::new(std::sync::Barrier::new(3));
    for t in f.group.as_ref().unwrap().handles() {
        let gate = gate.clone();
        t.send(move |_| {
            gate.wait();
        })
        .unwrap();
    }
    let out = run(h, &dev, vec![Req::Read(0, 8)]);
    assert!(
        matches!(out[0], Err(BdevError::Io(e)) if e == libc::ETIMEDOUT),
        "{:?}",
        out[0]
    );
    gate.wait();
}

/// A proxy hook that lets the I/O queues connect and then withholds every response
/// to an I/O command; each Read the host sends is reported on `seen`.
fn withhold_io_responses(
    seen: mpsc::Sender<()>,
) -> impl Fn(usize, Dir, &mut Vec<u8>) -> Verdict + Send + Sync {
    let io = IoQueues::default();
    let seen = Mutex::new(seen);
    move |conn, dir, pdu| {
        if conn > 0
            && dir == Dir::ToTarget
            && pdu_type(pdu) == PduType::CAPSULE_CMD
            && opcode(pdu) == 0x02
        {
            let _ = seen.lock().unwrap().send(());
        }
        if io.after_connect(conn, dir, pdu) {
            Verdict::Drop
        } else {
            Verdict::Forward
        }
    }
}

#[test]
fn commands_queued_beyond_the_depth_fail_when_the_target_goes_away() {
    let f = fixture();
    let (tx, rx) = mpsc::channel();
    let proxy = Proxy::start(f.addr, withhold_io_responses(tx));
    let mut o = host_opts(false, 4);
    // Far beyond the test's patience: the lost connection must fail them, not a timeout.
    o.io_timeout = Duration::from_secs(600);
    let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    // 4 queue entries, 16 reads: 4 in flight, 12 queued behind them.
    let reads: Vec<Req> = (0..16u64).map(|i| Req::Read(i * 8, 8)).collect();
    let out = std::thread::scope(|sc| {
        let batch = sc.spawn(|| run(h, &dev, reads));
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the host fills its queue");
        }
        proxy.sever(); // the target goes away, responses never came
        batch.join().unwrap() // bounded: run_kept gives up after 60 s
    });
    assert_eq!(out.len(), 16);
    for (i, o) in out.iter().enumerate() {
        assert!(matches!(o, Err(BdevError::Io(_))), "read {i}: {o:?}");
    }
}

#[test]
fn a_command_queued_longer_than_the_io_timeout_fails() {
    let f = fixture();
    // A slow target: each response reaches the host 1 s after the one before it
    // (the proxy's forwarding thread holds it; this is the target's latency, not a
    // synchronisation of the test).
    let proxy = Proxy::start(f.addr, |conn, dir, pdu| {
        if conn > 0 && dir == Dir::ToHost && pdu_type(pdu) == PduType::CAPSULE_RESP {
            std::thread::sleep(Duration::from_millis(1000));
        }
        Verdict::Forward
    });
    let mut o = host_opts(false, 2);
    o.io_timeout = Duration::from_millis(3500);
    let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    // 2 entries, 6 reads at once: read k completes (k + 1) s later or after, reads 0
    // and 1 after at most 2 s in flight (1.5 s of margin); read 5 could start at 4 s
    // at the earliest, after its 3.5 s in the queue. Slowness only delays responses,
    // so read 5 always times out.
    let reads: Vec<Req> = (0..6u64).map(|i| Req::Read(i * 8, 8)).collect();
    let out = run(&g.handles()[0], &dev, reads);
    assert!(out[0].is_ok() && out[1].is_ok(), "{out:?}");
    assert!(
        matches!(out[5], Err(BdevError::Io(e)) if e == libc::ETIMEDOUT),
        "{:?}",
        out[5]
    );
}

#[test]
fn unmap_goes_by_r2t_to_a_target_without_in_capsule_data() {
    let f = fixture();
    // What the host sends on its I/O queues: (opcode, PLEN) of each capsule, and the
    // number of H2CData PDUs.
    let capsules = Arc::new(Mutex::new(Vec::new()));
    let h2c = Arc::new(Mutex::new(0usize));
    let (c, d) = (capsules.clone(), h2c.clone());
    // The Identify Controller data is rewritten to IOCCSZ = 4 (a 64-byte capsule, no
    // room for data), as Linux nvmet advertises with inline_data_size = 0.
    let proxy = Proxy::start(f.addr, move |conn, dir, pdu| {
        match (conn, dir, pdu_type(pdu)) {
            (0, Dir::ToHost, PduType::C2H_DATA) => {
                let data = usize::from(pdu[3]);
                if pdu.len() - data == 4096 && pdu[data + 4..data + 10] == *b"SN0001" {
                    pdu[data + 1792..data + 1796].copy_from_slice(&4u32.to_le_bytes());
                }
            }
            (1.., Dir::ToTarget, PduType::CAPSULE_CMD) => {
                c.lock().unwrap().push((opcode(pdu), pdu.len()));
            }
            (1.., Dir::ToTarget, PduType::H2C_DATA) => *d.lock().unwrap() += 1,
            _ => {}
        }
        Verdict::Forward
    });
    let dev = NvmfBdev::connect(
        &format!("nvme+tcp://{}/{NQN}", proxy.addr),
        &host_opts(false, 8),
    )
    .unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    let out = run(h, &dev, vec![Req::Write(512, pattern(3, 8192))]);
    assert!(out[0].is_ok(), "{out:?}");
    let out = run(h, &dev, vec![Req::Unmap(512, 8)]);
    assert!(out[0].is_ok(), "{out:?}");
    let out = run(h, &dev, vec![Req::Read(512, 16)]);
    let mut want = vec![0u8; 4096];
    want.extend_from_slice(&pattern(3, 8192)[4096..]);
    assert!(out[0].clone().unwrap().unwrap() == want, "unmapped blocks");
    let capsules = capsules.lock().unwrap();
    let dsm: Vec<_> = capsules.iter().filter(|(op, _)| *op == 0x09).collect();
    assert_eq!(dsm, [&(0x09, 72)], "one DSM, without in-capsule data");
    assert!(
        capsules.iter().all(|&(_, plen)| plen == 72),
        "no in-capsule data at all: {capsules:?}"
    );
    // The Connect data, the write's data and the DSM range each went after an R2T.
    assert_eq!(*h2c.lock().unwrap(), 3);
}

#[test]
fn reads_end_with_c2h_success_when_sq_flow_control_is_disabled() {
    for (digests, sqflow_off) in [(false, true), (true, true), (false, false)] {
        let f = fixture();
        // Responses on the I/O queues after their Connect: C2HData PDUs with SUCCESS,
        // and response capsules.
        let counts = Arc::new(Mutex::new((0usize, 0usize)));
        let c = counts.clone();
        let io = IoQueues::default();
        let proxy = Proxy::start(f.addr, move |conn, dir, pdu| {
            if io.after_connect(conn, dir, pdu) {
                let mut c = c.lock().unwrap();
                match pdu_type(pdu) {
                    PduType::C2H_DATA if pdu[1] & 0x08 != 0 => c.0 += 1,
                    PduType::CAPSULE_RESP => c.1 += 1,
                    _ => {}
                }
            }
            Verdict::Forward
        });
        let mut o = host_opts(digests, 8);
        o.disable_sq_flow_control = sqflow_off;
        let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
        let g = host_group();
        let h = &g.handles()[0];
        let sizes = [512usize, 4096, 65536, 131072];
        let writes: Vec<Req> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Req::Write(i as u64 * 256, pattern(i as u8 + 7, n)))
            .collect();
        assert!(run(h, &dev, writes).iter().all(Result::is_ok));
        let before = *counts.lock().unwrap();
        assert_eq!(
            before,
            (0, sizes.len()),
            "writes end with a response capsule"
        );
        let reads: Vec<Req> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Req::Read(i as u64 * 256, (n / 512) as u64))
            .collect();
        for (i, o) in run(h, &dev, reads).into_iter().enumerate() {
            assert!(
                o.unwrap().unwrap() == pattern(i as u8 + 7, sizes[i]),
                "size {} digests {digests} sqflow_off {sqflow_off}",
                sizes[i]
            );
        }
        let after = *counts.lock().unwrap();
        let n = sizes.len();
        let want = if sqflow_off {
            (n, n) // SUCCESS on every read's data, no response capsule for any read
        } else {
            (0, 2 * n)
        };
        assert_eq!(after, want, "digests {digests} sqflow_off {sqflow_off}");
    }
}

#[test]
fn a_target_refusing_sq_flow_control_disable_still_connects() {
    let f = fixture();
    // Connects that ask for SQ flow control disable (CATTR, SQE byte 46) get SQSIZE 0,
    // which the target refuses; C2HData PDUs with SUCCESS are counted.
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let c = counts.clone();
    let proxy = Proxy::start(f.addr, move |_, dir, pdu| {
        let mut c = c.lock().unwrap();
        match (dir, pdu_type(pdu)) {
            (Dir::ToTarget, PduType::CAPSULE_CMD)
                if opcode(pdu) == 0x7f && pdu[8 + 46] & 4 != 0 =>
            {
                pdu[8 + 44..8 + 46].fill(0);
                c.0 += 1;
            }
            (Dir::ToHost, PduType::C2H_DATA) if pdu[1] & 0x08 != 0 => c.1 += 1,
            _ => {}
        }
        Verdict::Forward
    });
    let mut o = host_opts(false, 8);
    o.disable_sq_flow_control = true;
    let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    assert!(run(h, &dev, vec![Req::Write(0, pattern(9, 4096))])[0].is_ok());
    let out = run(h, &dev, vec![Req::Read(0, 8)]);
    assert!(out[0].clone().unwrap().unwrap() == pattern(9, 4096));
    // One refused admin Connect; the retry and the I/O queue did not ask again.
    assert_eq!(*counts.lock().unwrap(), (1, 0));
}

#[test]
fn keep_alive_goes_out_every_kato_half_from_a_reactor_task() {
    let f = fixture();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let proxy = Proxy::start(f.addr, move |conn, dir, pdu| {
        if conn == 0
            && dir == Dir::ToTarget
            && pdu_type(pdu) == PduType::CAPSULE_CMD
            && opcode(pdu) == 0x18
        {
            let _ = tx.lock().unwrap().send(());
        }
        Verdict::Forward
    });
    // KATO 2 s: one Keep Alive a second.
    let o = host_opts(false, 8);
    let dev = NvmfBdev::connect(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    assert!(run(h, &dev, vec![Req::Read(0, 8)])[0].is_ok());
    // A Keep Alive that failed (no answer, a wrong one) would drop the admin queue and
    // stop the next ones: three in a row were each answered.
    for i in 0..3 {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("Keep Alive {i} never came"));
    }
    assert!(run(h, &dev, vec![Req::Read(0, 8)])[0].is_ok());
    drop(dev);
}

/// A controller connected off the reactors and told where its keep-alive runs sends
/// Keep Alives before any channel is open (the target would otherwise drop it after
/// KATO), and its first I/O, opened only afterwards, finds it alive.
#[test]
fn keep_alive_runs_before_the_first_channel_when_placed() {
    let f = fixture();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let proxy = Proxy::start(f.addr, move |conn, dir, pdu| {
        if conn == 0
            && dir == Dir::ToTarget
            && pdu_type(pdu) == PduType::CAPSULE_CMD
            && opcode(pdu) == 0x18
        {
            let _ = tx.lock().unwrap().send(());
        }
        Verdict::Forward
    });
    let o = host_opts(false, 8);
    let dev = NvmfBdev::connect_typed(&format!("nvme+tcp://{}/{NQN}", proxy.addr), &o).unwrap();
    let g = host_group();
    let h = &g.handles()[0];
    dev.keep_alive_on(h);
    // No channel is open: these come from the placed task alone. Three of them span
    // more than the 2 s KATO.
    for i in 0..3 {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("Keep Alive {i} never came"));
    }
    let dev: Arc<dyn BlockDevice> = dev;
    assert_eq!(proxy.connections(), 1, "only the admin queue so far");
    assert!(run(h, &dev, vec![Req::Read(0, 8)])[0].is_ok());
    assert_eq!(
        proxy.connections(),
        2,
        "the controller was kept: no new admin queue"
    );
}
