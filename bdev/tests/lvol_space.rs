#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Running out of space: the write that needed a cluster fails with NoSpace, nothing
//! else changes, and the pool works again once space is freed.

mod lvol_util;

use ferrox_bdev::lvol::{LvolError, LvolStore};
use ferrox_bdev::BdevError;
use lvol_util::*;

const CS: u64 = 4096;

#[test]
fn no_space_fails_the_write_and_recovers_after_a_delete() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let base = malloc("base", 1 << 20);
    let store = LvolStore::create(base.clone(), "pool", CS, meta.clone()).unwrap();
    let total = store.stats().unwrap().total_clusters;
    // Thin volumes promise more than the pool has.
    store.create_volume("big", 2 * total * CS, true).unwrap();
    store.create_volume("other", 4 * CS, true).unwrap();
    let big = store.volume("big").unwrap();
    let reqs: Vec<Req> = (0..total)
        .map(|c| Req::Write(c * 8, pattern(c, 4096)))
        .collect();
    assert!(run(&io, big.clone(), reqs).iter().all(|o| o.is_ok()));
    assert_eq!(store.stats().unwrap().free_clusters, 0);

    let other = store.volume("other").unwrap();
    assert_eq!(
        write(&io, other.clone(), 0, pattern(7, 512)),
        Err(BdevError::NoSpace)
    );
    assert_eq!(
        write(&io, big.clone(), total * 8, pattern(7, 512)),
        Err(BdevError::NoSpace)
    );
    let e = store.create_volume("thick", CS, false).unwrap_err();
    assert!(
        matches!(e, LvolError::NoSpace { needed: 1, free: 0 }),
        "{e}"
    );
    // Nothing was corrupted: every cluster reads back, and the volume reads zeroes.
    for (c, o) in run(
        &io,
        big.clone(),
        (0..total).map(|c| Req::Read(c * 8, 8)).collect(),
    )
    .into_iter()
    .enumerate()
    {
        assert_eq!(o.unwrap().unwrap(), pattern(c as u64, 4096));
    }
    assert_eq!(read(&io, other.clone(), 0, 1).unwrap(), vec![0; 512]);

    // Space accounting: what deleting "big" frees.
    let info = store
        .list()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "big")
        .unwrap();
    assert_eq!(
        (info.allocated_clusters, info.freed_on_delete),
        (total, total)
    );
    drop(big);
    store.delete("big").unwrap();
    assert_eq!(store.stats().unwrap().free_clusters, total);
    write(&io, other.clone(), 0, pattern(8, 512)).unwrap();
    assert_eq!(read(&io, other, 0, 1).unwrap(), pattern(8, 512));
    check_accounting(&store).unwrap();
    drop(store);
    let store = LvolStore::load(base, meta).unwrap();
    assert_eq!(store.stats().unwrap().allocated_clusters, 1);
}
