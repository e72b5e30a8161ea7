use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::mailbox::{oneshot, ReplyError};
use crate::{available_cores, BufferPool, ClassConfig, PoolConfig, ReactorGroup, ReactorOptions};

fn pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![ClassConfig {
            size: 4096,
            count: 16,
        }],
        hugepages: false,
    })
    .unwrap()
}

fn group(n: usize) -> ReactorGroup {
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(n).collect();
    ReactorGroup::start(&cores, &ReactorOptions::default(), pool()).unwrap()
}

/// Waits (bounded, without sleeping) until reactor `h` has parked more than `p0` times.
fn wait_parked(h: &crate::ReactorHandle, p0: u64) {
    for _ in 0..10_000_000 {
        if h.stats().parks > p0 {
            return;
        }
        std::thread::yield_now();
    }
    panic!("the reactor never parked");
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn tasks_run_and_join() {
    let g = group(1);
    let v = g.handles()[0]
        .call(|r| {
            let (tx, rx) = oneshot();
            let a = r.spawn_local(async { 20 });
            let b = r.spawn_local(async move {
                yield_now().await;
                22
            });
            // A task awaits the two others; the reply leaves from it.
            r.spawn_local(async move { tx.send(a.await.unwrap() + b.await.unwrap()) });
            rx
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(v.wait_timeout(LONG), Ok(42));
}

#[test]
fn a_dropped_handle_detaches_the_task() {
    let g = group(1);
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            drop(r.spawn_local(async move {
                sleep(Duration::from_millis(1)).await;
                tx.send(7u32);
            }));
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(LONG), Ok(7));
}

#[test]
fn a_wake_from_another_thread_wakes_a_parked_reactor() {
    let g = group(1);
    let h = &g.handles()[0];
    let (wake_tx, wake_rx) = oneshot::<u32>();
    let (done_tx, done_rx) = oneshot::<u32>();
    h.send(move |r| {
        r.spawn_local(async move { done_tx.send(wake_rx.await.unwrap() + 1) });
    })
    .unwrap();
    // The task waits on the reply; nothing else can wake the reactor but the
    // eventfd: park, then answer from this thread.
    let p0 = h.stats().parks;
    wait_parked(h, p0);
    let parks = h.stats().parks;
    wake_tx.send(41);
    assert_eq!(done_rx.wait_timeout(LONG), Ok(42));
    assert!(parks > p0, "it was parked when woken");
}

#[test]
fn a_task_awaits_a_call_to_another_reactor() {
    let g = group(2);
    let h1 = g.handles()[1].clone();
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            r.spawn_local(async move {
                let there = h1.call(|r1| r1.id()).unwrap().await.unwrap();
                let here = Reactor::with(|r0| r0.id());
                tx.send((there, here));
            });
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(LONG), Ok((1, 0)));
}

#[test]
fn a_sleeping_task_lets_the_reactor_park() {
    const ROUNDS: u64 = 10;
    let g = group(1);
    let h = &g.handles()[0];
    let before = h.call(|r| r.stats()).unwrap().wait().unwrap();
    let (tx, rx) = oneshot();
    h.send(move |r| {
        r.spawn_local(async move {
            for _ in 0..ROUNDS {
                sleep(Duration::from_millis(20)).await;
            }
            tx.send(());
        });
    })
    .unwrap();
    rx.wait_timeout(LONG).unwrap();
    let after = h.call(|r| r.stats()).unwrap().wait().unwrap();
    // Each round costs a turn or two of work (the timer, the task); a task that kept
    // the reactor busy while it waited would show thousands.
    let busy = after.busy_turns - before.busy_turns;
    assert!(
        busy <= 4 * ROUNDS + 8,
        "{busy} busy turns for {ROUNDS} sleeps"
    );
    assert!(after.parks > before.parks, "the reactor never parked");
}

#[test]
fn timeout_fires_and_passes_through() {
    let g = group(1);
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            r.spawn_local(async move {
                let late = timeout(Duration::from_millis(5), std::future::pending::<()>()).await;
                let early = timeout(LONG, async { 5 }).await;
                tx.send((late, early));
            });
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(LONG), Ok((Err(Elapsed), Ok(5))));
}

#[test]
fn abort_drops_the_future_and_cancels_the_handle() {
    let g = group(1);
    let (held_tx, held_rx) = oneshot::<()>();
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r| {
            // The task holds a replier: dropping its future cancels that reply.
            let t = r.spawn_local(async move {
                let _held = held_tx;
                std::future::pending::<()>().await;
            });
            r.spawn_local(async move {
                yield_now().await;
                t.abort();
                tx.send(t.await);
            });
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(LONG), Ok(Err(Cancelled)));
    assert_eq!(held_rx.wait_timeout(LONG), Err(ReplyError::Canceled));
}

#[test]
fn an_abort_handle_works_from_another_thread() {
    let g = group(1);
    let h = &g.handles()[0];
    let (held_tx, held_rx) = oneshot::<()>();
    let abort = h
        .call(move |r| {
            r.spawn_local(async move {
                let _held = held_tx;
                sleep(LONG).await;
            })
            .abort_handle()
        })
        .unwrap()
        .wait()
        .unwrap();
    abort.abort();
    assert_eq!(held_rx.wait_timeout(LONG), Err(ReplyError::Canceled));
    assert_eq!(h.call(|r| r.tasks()).unwrap().wait(), Ok(0));
}

#[test]
fn stopping_the_reactor_drops_its_tasks() {
    let g = group(1);
    let (held_tx, held_rx) = oneshot::<()>();
    g.handles()[0]
        .send(move |r| {
            r.spawn_local(async move {
                let _held = held_tx;
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    g.shutdown();
    assert_eq!(held_rx.wait_timeout(LONG), Err(ReplyError::Canceled));
}

#[test]
fn a_panicking_task_unwinds_out_of_the_reactor_like_a_poller() {
    // On this thread: the loop's panic reaches the caller of `run`.
    let shared = Arc::new(Shared::new(0, 0, 16).unwrap());
    let r = Reactor::new(shared, pool(), ReactorOptions::default()).unwrap();
    r.spawn_local(async {
        yield_now().await;
        panic!("task panic");
    });
    let stop = AtomicBool::new(false);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.run(&stop)));
    let msg = res.expect_err("the panic reached run's caller");
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"task panic"));
}

#[test]
fn a_task_waits_for_a_socket_while_the_reactor_parks() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    let g = group(1);
    let h = &g.handles()[0];
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    // Nothing is ever written to this one.
    let (_quiet_peer, quiet) = UnixStream::pair().unwrap();
    let (tx, rx) = oneshot();
    // The park count just before the task waits on the socket (+1, 0 = not yet).
    let armed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let armed2 = armed.clone();
    h.send(move |r| {
        r.spawn_local(async move {
            let mut theirs = theirs;
            let pollin = libc::POLLIN as u32;
            // A poll dropped unfinished is cancelled, and its slot serves again.
            let late = timeout(Duration::from_millis(1), ready(quiet.as_raw_fd(), pollin)).await;
            assert!(late.is_err(), "{late:?}");
            let parks = Reactor::with(|r| r.stats().parks);
            armed2.store(parks + 1, std::sync::atomic::Ordering::SeqCst);
            let ev = ready(theirs.as_raw_fd(), pollin).await.unwrap();
            let mut b = [0u8; 4];
            let n = theirs.read(&mut b).unwrap();
            tx.send((ev & pollin != 0, b[..n].to_vec()));
        });
    })
    .unwrap();
    let mut p0 = 0;
    for _ in 0..10_000_000 {
        p0 = armed.load(std::sync::atomic::Ordering::SeqCst);
        if p0 > 0 {
            break;
        }
        std::thread::yield_now();
    }
    assert!(p0 > 0, "the task never reached the socket");
    // Parked after the task started waiting: only the socket can wake it now.
    wait_parked(h, p0 - 1);
    ours.write_all(b"ping").unwrap();
    assert_eq!(rx.wait_timeout(LONG), Ok((true, b"ping".to_vec())));
    assert_eq!(h.call(|r| r.tasks()).unwrap().wait(), Ok(0));
}
