//! Reconnection starts no OS thread: while the target is down and N controllers are
//! each in the middle of a reconnection, the process has no more threads than before.
//! (A process of its own: the test counts the process's threads.)
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::cell::RefCell;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrox_bdev::{BlockDevice, IoChannel, IoOp};
use ferrox_nvmeof::host::NvmfBdev;
use ferrox_reactor::Reactor;

const N: usize = 8;

thread_local! {
    /// The test's channels, kept on the host reactor's thread.
    static CHANS: RefCell<Vec<Rc<IoChannel>>> = const { RefCell::new(Vec::new()) };
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn controllers_reconnecting_to_a_down_target_add_no_threads() {
    let f = fixture();
    let addr = f.addr;
    let mut o = host_opts(false, 8);
    // An attempt waits for an ICResp that never comes for as long as the test runs.
    o.connect_timeout = Duration::from_secs(60);
    o.io_timeout = Duration::from_secs(60);
    let url = format!("nvme+tcp://{addr}/{NQN}");
    let devs: Vec<Arc<dyn BlockDevice>> = (0..N)
        .map(|_| NvmfBdev::connect(&url, &o).unwrap())
        .collect();
    let g = host_group();
    let h = &g.handles()[0];
    // A channel (an I/O queue) per controller on the reactor, each with one read
    // that succeeds.
    let ds = devs.clone();
    let ok = h
        .call(move |r| {
            CHANS.with(|c| {
                for d in ds {
                    c.borrow_mut()
                        .push(Rc::new(IoChannel::open(d, r).expect("a channel")));
                }
            });
        })
        .unwrap()
        .wait_timeout(Duration::from_secs(30));
    assert!(ok.is_ok());

    // The target goes away (its threads end with it); the port then accepts TCP but
    // never answers.
    drop(f);
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let before = threads();
    // A task per channel keeps a read submitted: the first fails on the lost
    // connection, the next starts a reconnection and waits for it.
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    h.call(move |r| {
        CHANS.with(|c| {
            for ch in c.borrow().iter() {
                let (ch, st) = (ch.clone(), st.clone());
                r.spawn_local(async move {
                    while !st.load(Ordering::Acquire) {
                        let buf = Reactor::with(|r| r.pool().alloc(4096)).expect("a buffer");
                        let _ = ch
                            .submit_async(IoOp::Read {
                                lba: 0,
                                blocks: 8,
                                buf,
                            })
                            .await;
                        ferrox_reactor::task::yield_now().await;
                    }
                });
            }
        });
    })
    .unwrap()
    .wait_timeout(Duration::from_secs(30))
    .unwrap();
    // Each controller's attempt connects (one at a time per controller: its I/O
    // queue's reconnection, or the admin queue it re-creates first) and then waits.
    let mut held: Vec<TcpStream> = Vec::new();
    let t0 = Instant::now();
    while held.len() < N {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} of {N} controllers tried to reconnect",
            held.len()
        );
        match listener.accept() {
            Ok((s, _)) => held.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("accept: {e}"),
        }
    }
    let during = threads();
    eprintln!("threads: {before} before, {during} while {N} controllers reconnect");
    assert!(
        during <= before,
        "{N} controllers reconnecting took {before} to {during} threads"
    );

    stop.store(true, Ordering::Release);
    // The attempts end (the connections close), their reads fail, the tasks stop.
    drop(held);
    drop(listener);
    h.call(|_r| CHANS.with(|c| c.borrow_mut().clear()))
        .unwrap()
        .wait_timeout(Duration::from_secs(30))
        .unwrap();
    drop(devs);
}
