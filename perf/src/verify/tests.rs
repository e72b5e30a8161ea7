use super::*;

fn stamped(first_sector: u64, sectors: usize, generation: u64, seed: u64) -> Vec<u8> {
    let mut b = vec![0xeeu8; sectors * SECTOR];
    stamp(&mut b, first_sector, generation, seed);
    b
}

fn any(_: u64) -> u64 {
    ANY
}

#[test]
fn stamp_then_check() {
    let b = stamped(1000, 8, 3, 0xabc);
    assert_eq!(&b[0..8], b"FXPERFV2");
    assert_eq!(
        u64::from_le_bytes(b[512 + 8..512 + 16].try_into().unwrap()),
        1001
    );
    assert_eq!(
        check(&b, 1000, 0xabc, 1, true, any),
        Ok(Checked {
            sectors: 8,
            tracked: 0
        })
    );
    // Core 1 of 2 wrote it.
    let g = generation(1, 1, 5);
    assert_eq!(g, (1 << GEN_CORE_SHIFT) | (1 << GEN_PASS_SHIFT) | 5);
    let b = stamped(8, 1, g, 9);
    assert_eq!(check(&b, 8, 9, 2, true, any).map(|c| c.sectors), Ok(1));
    // The body is neither constant nor the same from one sector to the next.
    let b = stamped(0, 2, 0, 1);
    assert_ne!(b[32..40], b[40..48]);
    assert_ne!(b[32..SECTOR], b[SECTOR + 32..]);
}

#[test]
fn never_written_is_an_error_only_after_a_fill() {
    let mut b = stamped(0, 4, 0, 1);
    b[SECTOR * 2..SECTOR * 3].fill(0);
    assert_eq!(check(&b, 0, 1, 1, false, any).map(|c| c.sectors), Ok(3));
    assert_eq!(
        check(&b, 0, 1, 1, true, any),
        Err((2, Problem::NeverWritten))
    );
    // Or where the tracker knows a write landed.
    assert_eq!(
        check(&b, 0, 1, 1, false, |_| 0),
        Err((2, Problem::NeverWritten))
    );
}

#[test]
fn mismatches_are_found() {
    let b = stamped(100, 2, 0, 1);
    assert_eq!(
        check(&b, 200, 1, 1, true, any),
        Err((200, Problem::WrongSector { found: 100 }))
    );
    assert_eq!(
        check(&b, 100, 2, 1, true, any),
        Err((100, Problem::WrongSeed { found: 1 }))
    );
    let b2 = stamped(100, 1, 3 << GEN_CORE_SHIFT, 1);
    assert!(matches!(
        check(&b2, 100, 1, 2, true, any),
        Err((100, Problem::BadGeneration { .. }))
    ));
    let mut b3 = stamped(100, 2, 0, 1);
    b3[SECTOR..SECTOR + 8].copy_from_slice(&[0xab; 8]);
    assert_eq!(
        check(&b3, 100, 1, 1, false, any),
        Err((
            101,
            Problem::BadMagic {
                found: 0xabab_abab_abab_abab
            }
        ))
    );
}

#[test]
fn every_byte_after_the_header_is_checked() {
    for at in [32, 100, 255, 511] {
        let mut b = stamped(40, 3, 7, 1);
        b[SECTOR + at] ^= 0x10;
        assert_eq!(
            check(&b, 40, 1, 1, true, any),
            Err((41, Problem::BadData { offset: at as u16 })),
            "byte {at}"
        );
    }
    // A body copied from another write of the same sector does not pass either.
    let mut b = stamped(40, 1, 7, 1);
    b[32..].copy_from_slice(&stamped(40, 1, 8, 1)[32..]);
    assert!(
        matches!(
            check(&b, 40, 1, 1, true, any),
            Err((40, Problem::BadData { offset: 32..=39 }))
        ),
        "{:?}",
        check(&b, 40, 1, 1, true, any)
    );
}

#[test]
fn an_older_write_than_the_last_acknowledged_is_stale() {
    let old = generation(0, 0, 3);
    let new = generation(0, 1, 9);
    let b = stamped(16, 2, old, 1);
    assert_eq!(
        check(&b, 16, 1, 1, true, |_| old),
        Ok(Checked {
            sectors: 2,
            tracked: 2
        })
    );
    assert_eq!(
        check(&b, 16, 1, 1, true, |s| if s == 17 { new } else { old }),
        Err((
            17,
            Problem::Stale {
                expected: new,
                found: old
            }
        ))
    );
}

#[test]
fn mismatch_names_the_device_lba() {
    let m = mismatch(17, 4096, Problem::NeverWritten);
    assert_eq!((m.lba, m.sector), (2, 17));
    let m = mismatch(17, 512, Problem::NeverWritten);
    assert_eq!(m.lba, 17);
    assert!(m.to_string().starts_with("LBA 17 (sector 17)"), "{m}");
}

#[test]
fn the_tracker_knows_the_last_write_acknowledged_alone() {
    // 64 blocks of 512 bytes, units of 8 blocks.
    let t = Tracker::new(64, 8, 512);
    assert_eq!(t.expected(0), ANY);
    let w = t.start_write(8, 16);
    t.end_write(8, 16, w, 5, true);
    assert_eq!((t.expected(7), t.expected(8), t.expected(23)), (ANY, 5, 5));
    assert_eq!(t.expected(24), ANY);
    // A read with nothing else going on sees it.
    let r = t.start_read(8, 8);
    assert!(t.read_was_quiet(8, 8, r));
    // A write started during the read makes the read's result open.
    let r = t.start_read(8, 8);
    let w = t.start_write(8, 8);
    assert!(!t.read_was_quiet(8, 8, r));
    // ... as does a write already in flight when it started, even one that ends first.
    let r = t.start_read(8, 8);
    t.end_write(8, 8, w, 6, true);
    assert!(!t.read_was_quiet(8, 8, r));
    assert_eq!((t.expected(8), t.expected(16)), (6, 5));
    // A failed write leaves its blocks unknown.
    let w = t.start_write(8, 8);
    t.end_write(8, 8, w, 7, false);
    assert_eq!(t.expected(8), ANY);
}

#[test]
fn overlapping_writes_leave_their_units_unknown_until_one_lands_alone() {
    let t = Tracker::new(32, 8, 512);
    let a = t.start_write(0, 8);
    let b = t.start_write(0, 8);
    t.end_write(0, 8, b, 2, true);
    t.end_write(0, 8, a, 1, true);
    assert_eq!(t.expected(0), ANY, "either may have landed last");
    let a = t.start_write(0, 8);
    let b = t.start_write(0, 8);
    t.end_write(0, 8, a, 3, true);
    t.end_write(0, 8, b, 4, true);
    assert_eq!(
        t.expected(0),
        ANY,
        "acknowledged in order, still overlapping"
    );
    let c = t.start_write(0, 8);
    t.end_write(0, 8, c, 5, true);
    assert_eq!(t.expected(0), 5);
}

#[test]
fn units_of_large_blocks_map_sectors() {
    // 4 KiB blocks, units of 2 blocks: 16 sectors a unit.
    let t = Tracker::new(8, 2, 4096);
    let w = t.start_write(2, 2);
    t.end_write(2, 2, w, 9, true);
    assert_eq!(
        (t.expected(15), t.expected(16), t.expected(31)),
        (ANY, 9, 9)
    );
    assert_eq!(t.expected(32), ANY);
    assert_eq!(t.expected(1 << 20), ANY, "beyond the range");
}
