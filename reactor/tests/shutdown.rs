//! Shutdown leaves no reactor thread behind (its own process, so no other test's
//! threads are counted).
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::time::Duration;

use ferrox_reactor::{available_cores, BufferPool, PoolConfig, ReactorGroup, ReactorOptions};

fn reactor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("reactor-"))
        .count()
}

#[test]
fn shutdown_joins_every_reactor_thread() {
    let pool = BufferPool::new(&PoolConfig::default()).unwrap();
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(2).collect();
    let g = ReactorGroup::start(&cores, &ReactorOptions::default(), pool).unwrap();
    assert!(reactor_threads() >= 2);
    for h in g.handles() {
        h.call(|_| ())
            .unwrap()
            .wait_timeout(Duration::from_secs(10))
            .unwrap();
    }
    let stats = g.shutdown();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.turns > 0));
    // Joined threads are gone at once; the bounded loop only absorbs kernel io_uring
    // helper threads that inherit a reactor's name and exit asynchronously.
    let mut left = reactor_threads();
    for _ in 0..500 {
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        left = reactor_threads();
    }
    assert_eq!(left, 0);
}
