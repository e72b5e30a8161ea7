#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Metadata writes that report an error although they reached the disk: what is
//! acknowledged afterwards must still be there after a restart, and clusters of the
//! failed change must not be handed out while a landed image or record may name them.

mod lvol_util;

use std::sync::atomic::Ordering;

use ferrox_bdev::lvol::LvolStore;
use lvol_util::*;

const CS: u64 = 4096;

/// Runs `fail` with the device's next flush failing (after its writes landed), then
/// writes a new cluster of `v`, restarts the pool, and reads everything back.
fn after_a_failed_commit(fail: impl FnOnce(&LvolStore) -> bool) {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let mem = malloc("m", 2 << 20);
    let dev = FlakyBdev::new(mem.clone());
    let store = LvolStore::create(dev.clone(), "pool", CS, meta.clone()).unwrap();
    store.create_volume("v", 16 * CS, true).unwrap();
    let v = store.volume("v").unwrap();
    write(&io, v.clone(), 0, pattern(1, CS as usize)).unwrap();

    dev.fail_flushes.store(1, Ordering::SeqCst);
    assert!(
        fail(&store),
        "the injected flush error must fail the change"
    );
    assert_eq!(
        dev.fail_flushes.load(Ordering::SeqCst),
        0,
        "the flush was reached"
    );

    // Acknowledged after the failure, and the last change before the restart: a
    // write to a new cluster (an allocation commit, which a full commit made later
    // would otherwise cover up).
    write(&io, v.clone(), 8, pattern(2, CS as usize)).unwrap();
    check_accounting(&store).unwrap();
    drop((v, store));

    let store = LvolStore::load(mem, meta.clone()).unwrap();
    check_accounting(&store).unwrap();
    let v = store.volume("v").unwrap();
    assert_eq!(read(&io, v.clone(), 0, 8).unwrap(), pattern(1, CS as usize));
    assert_eq!(
        read(&io, v, 8, 8).unwrap(),
        pattern(2, CS as usize),
        "a write acknowledged after the failed commit"
    );
    // The pool keeps working.
    store.create_volume("w", 4 * CS, true).unwrap();
    let w = store.volume("w").unwrap();
    write(&io, w.clone(), 0, pattern(3, CS as usize)).unwrap();
    assert_eq!(read(&io, w, 0, 8).unwrap(), pattern(3, CS as usize));
    check_accounting(&store).unwrap();
}

#[test]
fn a_failed_full_commit_that_landed_hides_nothing_acknowledged_later() {
    // A thin create commits a whole image and nothing else.
    after_a_failed_commit(|s| s.create_volume("x", 4 * CS, true).is_err());
}

#[test]
fn a_failed_allocation_record_that_landed_hides_nothing_acknowledged_later() {
    after_a_failed_commit(|s| {
        let v = s.volume("v").unwrap();
        let g = group(1);
        write(&g.handles()[0], v, 16, pattern(9, CS as usize)).is_err()
    });
}
