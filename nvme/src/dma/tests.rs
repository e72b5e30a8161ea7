use std::sync::atomic::Ordering;

use ferrox_reactor::{BufferPool, ClassConfig, PoolConfig};

use super::*;

#[test]
fn region_accessors_round_trip_and_check_bounds() {
    let r = DmaRegion::new(100, 0x1000).unwrap();
    assert_eq!(r.len(), PAGE_SIZE);
    assert_eq!(r.iova(), 0x1000);
    r.write_bytes(3, b"hello world, unaligned");
    let mut out = [0u8; 22];
    r.read_bytes(3, &mut out);
    assert_eq!(&out, b"hello world, unaligned");
    r.write_u64(8, 0x1122_3344_5566_7788);
    assert_eq!(r.read_obj::<u64>(8), 0x1122_3344_5566_7788);
    r.atomic_u16(14).store(0xBEEF, Ordering::Release);
    assert_eq!(r.read_obj::<[u8; 2]>(14), [0xEF, 0xBE]);
    r.fill(0, PAGE_SIZE, 0xAA);
    assert_eq!(r.read_obj::<u32>(PAGE_SIZE - 4), 0xAAAA_AAAA);
    assert!(std::panic::catch_unwind(|| r.read_obj::<u64>(PAGE_SIZE - 4)).is_err());
    assert!(std::panic::catch_unwind(|| r.atomic_u32(2)).is_err());
}

#[test]
fn space_and_pool_map_translate_both_ways() {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 4,
            },
            ClassConfig {
                size: 128 << 10,
                count: 2,
            },
        ],
        hugepages: false,
    })
    .unwrap();
    let space = DmaSpace::default();
    let map = space.add_pool(pool, 0x4000_0000);
    let mut buf = pool.alloc(128 << 10).unwrap();
    buf.as_mut_slice()[..4].copy_from_slice(b"abcd");
    let iova = map.iova(&buf).unwrap();
    let mut got = [0u8; 4];
    assert!(space.read(iova, &mut got));
    assert_eq!(&got, b"abcd");
    assert!(space.write(iova + 4, b"efgh"));
    assert_eq!(&buf.as_slice()[..8], b"abcdefgh");
    assert!(!space.read(0x10, &mut got), "unmapped IOVA");
    let region = Arc::new(DmaRegion::new(PAGE_SIZE, 0x9000_0000).unwrap());
    space.add_region(region.clone());
    assert!(space.write(0x9000_0000 + 10, b"xy"));
    assert_eq!(region.read_obj::<[u8; 2]>(10), *b"xy");
    assert!(
        !space.write(0x9000_0000 + PAGE_SIZE as u64 - 1, b"xy"),
        "crosses the end"
    );
}
