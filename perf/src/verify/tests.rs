use super::*;

fn stamped(first_sector: u64, sectors: usize, generation: u64, seed: u64) -> Vec<u8> {
    let mut b = vec![0xeeu8; sectors * SECTOR];
    stamp(&mut b, first_sector, generation, seed);
    b
}

#[test]
fn stamp_then_check() {
    let b = stamped(1000, 8, 3, 0xabc);
    assert_eq!(&b[0..8], b"FXPERFV1");
    assert_eq!(
        u64::from_le_bytes(b[512 + 8..512 + 16].try_into().unwrap()),
        1001
    );
    assert_eq!(check(&b, 1000, 0xabc, 1, true), Ok(8));
    // Core 1 of 2 wrote it.
    let b = stamped(8, 1, (1 << GEN_CORE_SHIFT) | 5, 9);
    assert_eq!(check(&b, 8, 9, 2, true), Ok(1));
}

#[test]
fn never_written_is_an_error_only_after_a_fill() {
    let mut b = stamped(0, 4, 0, 1);
    b[SECTOR * 2..SECTOR * 3].fill(0);
    assert_eq!(check(&b, 0, 1, 1, false), Ok(3));
    assert_eq!(check(&b, 0, 1, 1, true), Err((2, Problem::NeverWritten)));
}

#[test]
fn mismatches_are_found() {
    let b = stamped(100, 2, 0, 1);
    assert_eq!(
        check(&b, 200, 1, 1, true),
        Err((200, Problem::WrongSector { found: 100 }))
    );
    assert_eq!(
        check(&b, 100, 2, 1, true),
        Err((100, Problem::WrongSeed { found: 1 }))
    );
    let b2 = stamped(100, 1, 3 << GEN_CORE_SHIFT, 1);
    assert!(matches!(
        check(&b2, 100, 1, 2, true),
        Err((100, Problem::BadGeneration { .. }))
    ));
    let mut b3 = stamped(100, 2, 0, 1);
    b3[SECTOR..SECTOR + 8].copy_from_slice(&[0xab; 8]);
    assert_eq!(
        check(&b3, 100, 1, 1, false),
        Err((
            101,
            Problem::BadMagic {
                found: 0xabab_abab_abab_abab
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
