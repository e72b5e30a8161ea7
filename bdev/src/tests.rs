use std::sync::Arc;

use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, ReactorGroup, ReactorOptions,
};

use super::testing::{run, Req};
use super::*;

fn pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 256,
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

fn group(n: usize) -> ReactorGroup {
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(n).collect();
    ReactorGroup::start(&cores, &ReactorOptions::default(), pool()).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn malloc() -> Arc<dyn BlockDevice> {
    malloc::MallocBdev::new("m0", 2048, 512).unwrap()
}

fn uring(dir: &tempfile::TempDir) -> Arc<dyn BlockDevice> {
    uring::UringBdev::open("u0", &dir.path().join("disk.img"), Some(1 << 20), 512, 8).unwrap()
}

fn data_round_trip(dev: Arc<dyn BlockDevice>, reactors: usize) {
    let g = group(reactors);
    // Each reactor writes its own region, then reads it back, at the same time.
    let threads: Vec<_> = g
        .handles()
        .iter()
        .map(|h| {
            let h = h.clone();
            let dev = dev.clone();
            std::thread::spawn(move || {
                let base = h.id() as u64 * 512;
                let writes: Vec<Req> = (0..32u64)
                    .map(|i| {
                        let (lba, data) = (base + i * 8, pattern(i as u8 + h.id() as u8, 4096));
                        // Every other write with FUA.
                        if i % 2 == 0 {
                            Req::Fua(lba, data)
                        } else {
                            Req::Write(lba, data)
                        }
                    })
                    .collect();
                for o in run(&h, dev.clone(), writes) {
                    assert!(o.is_ok(), "{o:?}");
                }
                let reads: Vec<Req> = (0..32u64).map(|i| Req::Read(base + i * 8, 8)).collect();
                for (i, o) in run(&h, dev, reads).into_iter().enumerate() {
                    assert_eq!(
                        o.unwrap().unwrap(),
                        pattern(i as u8 + h.id() as u8, 4096),
                        "reactor {} block {}",
                        h.id(),
                        i * 8
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn malloc_round_trip_one_reactor() {
    data_round_trip(malloc(), 1);
}

#[test]
fn malloc_round_trip_two_reactors() {
    data_round_trip(malloc(), 2);
}

#[test]
fn uring_round_trip_one_reactor() {
    let d = tempfile::tempdir().unwrap();
    data_round_trip(uring(&d), 1);
}

#[test]
fn uring_round_trip_two_reactors() {
    let d = tempfile::tempdir().unwrap();
    data_round_trip(uring(&d), 2);
}

fn bad_requests(dev: Arc<dyn BlockDevice>) {
    let g = group(1);
    let h = &g.handles()[0];
    let nb = dev.info().num_blocks;
    let out = run(
        h,
        dev,
        vec![
            Req::Read(nb, 1),
            Req::Read(nb - 1, 2),
            Req::Read(u64::MAX, 2),
            Req::Zero(0, 0),
            Req::Unmap(nb, 1),
            Req::Read(0, 1),
        ],
    );
    for o in &out[..5] {
        assert!(matches!(o, Err(BdevError::OutOfRange { .. })), "{o:?}");
    }
    assert!(out[5].is_ok());
}

#[test]
fn malloc_rejects_out_of_range() {
    bad_requests(malloc());
}

#[test]
fn uring_rejects_out_of_range() {
    let d = tempfile::tempdir().unwrap();
    bad_requests(uring(&d));
}

#[test]
fn buffer_length_must_match_blocks() {
    let dev = malloc();
    let info = dev.info().clone();
    let p = pool();
    let op = IoOp::Read {
        lba: 0,
        blocks: 2,
        buf: p.alloc(700).unwrap(),
    };
    assert!(matches!(
        check(&info, &op),
        Err(BdevError::BadLength { len: 700, .. })
    ));
}

fn zeroes_and_unmap(dev: Arc<dyn BlockDevice>) {
    let g = group(1);
    let h = &g.handles()[0];
    let ones = vec![0xffu8; 8192];
    run(
        h,
        dev.clone(),
        vec![Req::Write(0, ones.clone()), Req::Write(64, ones)],
    );
    let out = run(
        h,
        dev.clone(),
        vec![Req::Zero(0, 16), Req::Unmap(64, 16), Req::Flush],
    );
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    let out = run(h, dev, vec![Req::Read(0, 16), Req::Read(64, 16)]);
    assert_eq!(out[0].clone().unwrap().unwrap(), vec![0u8; 8192]);
    assert_eq!(
        out[1].clone().unwrap().unwrap(),
        vec![0u8; 8192],
        "a punched hole reads back as zeroes"
    );
}

#[test]
fn malloc_write_zeroes_and_unmap() {
    zeroes_and_unmap(malloc());
}

#[test]
fn uring_write_zeroes_and_unmap() {
    let d = tempfile::tempdir().unwrap();
    zeroes_and_unmap(uring(&d));
}

#[test]
fn uring_queues_beyond_its_depth() {
    let d = tempfile::tempdir().unwrap();
    let dev = uring::UringBdev::open("q", &d.path().join("q.img"), Some(1 << 20), 512, 2).unwrap();
    let g = group(1);
    let h = &g.handles()[0];
    let writes: Vec<Req> = (0..64u64)
        .map(|i| Req::Write(i * 8, pattern(i as u8, 4096)))
        .collect();
    assert!(run(h, dev.clone(), writes).iter().all(|o| o.is_ok()));
    let reads: Vec<Req> = (0..64u64).map(|i| Req::Read(i * 8, 8)).collect();
    for (i, o) in run(h, dev, reads).into_iter().enumerate() {
        assert_eq!(o.unwrap().unwrap(), pattern(i as u8, 4096));
    }
}

#[test]
fn uring_data_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let g = group(1);
    let h = &g.handles()[0];
    run(
        h,
        uring(&d),
        vec![Req::Fua(10, pattern(9, 1024)), Req::Flush],
    );
    let again: Arc<dyn BlockDevice> =
        uring::UringBdev::open("u1", &d.path().join("disk.img"), None, 512, 8).unwrap();
    assert_eq!(again.info().num_blocks, 2048);
    let out = run(h, again, vec![Req::Read(10, 2)]);
    assert_eq!(out[0].clone().unwrap().unwrap(), pattern(9, 1024));
}

#[test]
fn uring_open_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let missing = uring::UringBdev::open("x", &d.path().join("nope"), None, 512, 8)
        .err()
        .unwrap();
    assert!(
        missing.to_string().contains("no size was given"),
        "{missing}"
    );
    let bad = uring::UringBdev::open("x", &d.path().join("a"), Some(1000), 512, 8)
        .err()
        .unwrap();
    assert!(
        bad.to_string().contains("multiple of the block size"),
        "{bad}"
    );
    let bs = uring::UringBdev::open("x", &d.path().join("b"), Some(4096), 1000, 8)
        .err()
        .unwrap();
    assert!(bs.to_string().contains("power of two"), "{bs}");
}

#[test]
fn registry_names_are_unique() {
    let r = Registry::new();
    r.add(malloc()).unwrap();
    assert!(matches!(r.add(malloc()), Err(RegistryError::Exists(_))));
    assert!(r.get("m0").is_ok());
    assert!(matches!(r.get("zz"), Err(RegistryError::NotFound(_))));
    assert_eq!(r.names(), vec!["m0".to_string()]);
}
