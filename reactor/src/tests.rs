use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;

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

fn group(n: usize, opts: ReactorOptions) -> ReactorGroup {
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(n).collect();
    // The same core twice is allowed for tests on small machines: reactors are ids.
    ReactorGroup::start(&cores, &opts, pool()).unwrap()
}

#[test]
fn call_runs_on_the_right_reactor() {
    let g = group(2, ReactorOptions::default());
    for h in g.handles() {
        let (id, core) = h.call(|r| (r.id(), r.core())).unwrap().wait().unwrap();
        assert_eq!(id, h.id());
        assert_eq!(core, h.core());
    }
}

#[test]
fn reactor_to_reactor_message_and_reply() {
    let g = group(2, ReactorOptions::default());
    let h1 = g.handles()[1].clone();
    let h0 = g.handles()[0].clone();
    let (tx, rx) = mailbox::oneshot();
    // Reactor 0 asks reactor 1 for its id; reactor 1 answers with a message back to 0,
    // which reports what it got.
    g.handles()[0]
        .send(move |_r0| {
            h1.send(move |r1| {
                let from = r1.id();
                h0.send(move |r0| tx.send((from, r0.id()))).unwrap();
            })
            .unwrap();
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(Duration::from_secs(10)), Ok((1, 0)));
}

#[test]
fn tokio_task_awaits_a_reply() {
    let g = group(1, ReactorOptions::default());
    let h = g.handles()[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let v = rt.block_on(async move { h.call(|r| r.id() + 41).unwrap().await });
    assert_eq!(v, Ok(41));
}

#[test]
fn full_mailbox_is_reported() {
    let opts = ReactorOptions {
        mailbox_capacity: 2,
        ..Default::default()
    };
    let g = group(1, opts);
    let h = &g.handles()[0];
    let gate = Arc::new(Barrier::new(2));
    let g2 = gate.clone();
    h.send(move |_| {
        g2.wait();
    })
    .unwrap();
    // The reactor may or may not have taken the blocking message yet; fill until full.
    let mut sent = 0;
    let mut full = false;
    for _ in 0..4 {
        match h.send(|_| {}) {
            Ok(()) => sent += 1,
            Err(MailboxFull(_)) => {
                full = true;
                break;
            }
        }
    }
    assert!(
        full,
        "a 2-slot mailbox took {sent} messages without reporting full"
    );
    assert!(h.stats().mailbox_full >= 1);
    gate.wait();
    // After the reactor drains, messages are accepted again.
    assert_eq!(h.call_wait(Duration::from_secs(10), |_| 7).unwrap(), 7);
}

#[test]
fn timers_fire_once_and_periodically() {
    let g = group(1, ReactorOptions::default());
    let h = &g.handles()[0];
    let count = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mailbox::oneshot();
    let c = count.clone();
    h.send(move |r| {
        let mut tx = Some(tx);
        let c2 = c.clone();
        r.add_timer(Duration::from_millis(1), move |_| {
            c.fetch_add(100, Ordering::SeqCst);
        });
        r.add_periodic(Duration::from_millis(2), move |r| {
            if c2.fetch_add(1, Ordering::SeqCst) % 100 == 2 {
                if let Some(tx) = tx.take() {
                    tx.send(r.id());
                }
            }
        });
    })
    .unwrap();
    assert_eq!(rx.wait_timeout(Duration::from_secs(10)), Ok(0));
    let n = count.load(Ordering::SeqCst);
    assert_eq!(n / 100, 1, "the one-shot timer fired exactly once");
    assert!(
        n % 100 >= 3,
        "the periodic timer fired at least three times"
    );
}

#[test]
fn cancelled_timer_never_fires() {
    let g = group(1, ReactorOptions::default());
    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let (tx, rx) = mailbox::oneshot();
    g.handles()[0]
        .send(move |r| {
            let id = r.add_timer(Duration::from_millis(1), move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            });
            r.cancel_timer(id);
            // A later timer proves the loop went past the cancelled deadline.
            let mut tx = Some(tx);
            r.add_timer(Duration::from_millis(5), move |_| {
                if let Some(tx) = tx.take() {
                    tx.send(());
                }
            });
        })
        .unwrap();
    rx.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 0);
}

#[test]
fn idle_adaptive_reactor_parks_and_still_answers() {
    let g = group(1, ReactorOptions::default());
    let h = &g.handles()[0];
    // Wait (bounded) until the reactor has parked at least once.
    let mut parked = false;
    for _ in 0..1000 {
        if h.stats().parks > 0 {
            parked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(parked, "an idle adaptive reactor never parked");
    assert_eq!(
        h.call(|_| 5).unwrap().wait_timeout(Duration::from_secs(10)),
        Ok(5)
    );
}

#[test]
fn busy_reactor_never_parks() {
    let g = group(
        1,
        ReactorOptions {
            poll_mode: PollMode::Busy,
            ..Default::default()
        },
    );
    let h = &g.handles()[0];
    // Let it spin through many turns, then check.
    let mut turns = 0;
    for _ in 0..1000 {
        turns = h.call(|r| r.stats().turns).unwrap().wait().unwrap();
        if turns > 10_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(turns > 10_000);
    assert_eq!(h.stats().parks, 0);
}

#[test]
fn a_core_that_does_not_exist_is_refused() {
    let err = ReactorGroup::start(&[100_000], &ReactorOptions::default(), pool())
        .err()
        .expect("core 100000 must be refused");
    assert!(
        matches!(err, Error::NoSuchCore { core: 100_000, .. }),
        "{err}"
    );
}

#[test]
fn core_lists_and_masks_parse() {
    assert_eq!(parse_cores("0,1").unwrap(), vec![0, 1]);
    assert_eq!(parse_cores("2-4").unwrap(), vec![2, 3, 4]);
    assert_eq!(parse_cores("0x5").unwrap(), vec![0, 2]);
    assert!(parse_cores("").is_err());
    assert!(parse_cores("1,1").is_err());
    assert!(parse_cores("x").is_err());
    assert!(parse_cores("3-1").is_err());
    assert!(parse_cores("0x0").is_err());
}

struct CountPoller {
    left: std::cell::Cell<u32>,
    done: std::cell::RefCell<Option<mailbox::Replier<u32>>>,
}

impl Poller for CountPoller {
    fn poll(&self, _r: &Reactor) -> PollStatus {
        let n = self.left.get();
        if n == 0 {
            if let Some(tx) = self.done.borrow_mut().take() {
                tx.send(0);
            }
            return PollStatus::Done;
        }
        self.left.set(n - 1);
        PollStatus::Busy
    }
}

#[test]
fn pollers_run_until_done() {
    let g = group(1, ReactorOptions::default());
    let (tx, rx) = mailbox::oneshot();
    g.handles()[0]
        .send(move |r| {
            r.add_poller(std::rc::Rc::new(CountPoller {
                left: std::cell::Cell::new(1000),
                done: std::cell::RefCell::new(Some(tx)),
            }));
        })
        .unwrap();
    assert_eq!(rx.wait_timeout(Duration::from_secs(10)), Ok(0));
}
