use super::*;

fn small_pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 64,
            },
            ClassConfig {
                size: 128 << 10,
                count: 4,
            },
        ],
        hugepages: false,
    })
    .unwrap()
}

#[test]
fn buffers_are_aligned_and_distinct() {
    let pool = small_pool();
    let a = pool.alloc(4096).unwrap();
    let b = pool.alloc(100).unwrap();
    let c = pool.alloc(64 << 10).unwrap();
    assert_eq!(a.as_ptr() as usize % 4096, 0);
    assert_eq!(c.as_ptr() as usize % 4096, 0);
    assert_ne!(a.as_ptr(), b.as_ptr());
    assert_eq!(b.len(), 100);
    assert_eq!(b.capacity(), 4096);
    assert_eq!(c.capacity(), 128 << 10);
}

#[test]
fn exhaustion_returns_none_and_recovers() {
    let pool = small_pool();
    let mut held: Vec<DmaBuf> = (0..4).map(|_| pool.alloc(128 << 10).unwrap()).collect();
    assert!(
        pool.alloc(128 << 10).is_none(),
        "pool must report exhaustion"
    );
    assert!(pool.exhausted_count() >= 1);
    held.pop();
    assert!(
        pool.alloc(128 << 10).is_some(),
        "a freed buffer is reusable"
    );
}

#[test]
fn small_class_spills_to_large_when_empty() {
    let pool = small_pool();
    let held: Vec<DmaBuf> = (0..64).map(|_| pool.alloc(512).unwrap()).collect();
    let big = pool.alloc(512).expect("falls back to the larger class");
    assert_eq!(big.capacity(), 128 << 10);
    drop(held);
}

#[test]
fn buffers_cross_threads_and_return() {
    let pool = small_pool();
    let bufs: Vec<DmaBuf> = (0..64).map(|_| pool.alloc(4096).unwrap()).collect();
    std::thread::spawn(move || drop(bufs)).join().unwrap();
    // The other thread's cache was flushed at its exit: all 64 are allocatable again.
    let again: Vec<DmaBuf> = (0..64).map(|_| pool.alloc(4096).unwrap()).collect();
    assert_eq!(again.len(), 64);
}

#[test]
fn data_round_trips() {
    let pool = small_pool();
    let mut b = pool.alloc(4096).unwrap();
    b.as_mut_slice().fill(0xa5);
    assert!(b.as_slice().iter().all(|&x| x == 0xa5));
}
