#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Scale: a pool of format version 4 holds 65,536 volumes and loads them all back;
//! commits are journal records, compacted into a whole image when the log fills, and
//! a power cut at any write of that leaves the state before or after the cut step,
//! and a torn record of several blocks leaves the state before it;
//! a pool formatted by the version-3 writer kept for tests, and one written by a
//! build of format version 3 (`tests/data/`), load, keep working and keep their
//! format.

mod lvol_util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_bdev::lvol::{LvolError, LvolStore, FULL_SCALE_BYTES, MAX_VOLUMES, OLD_MAX_VOLUMES};
use ferrox_bdev::testing::SparseBdev;
use ferrox_bdev::BlockDevice;
use lvol_util::*;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The format versions of the label and of the two slots' images (0: no image).
fn versions(h: &ferrox_reactor::ReactorHandle, dev: &Arc<dyn BlockDevice>) -> (u32, [u32; 2]) {
    let label = read(h, dev.clone(), 0, 1).unwrap();
    let slot = |off: u64| {
        let b = read(h, dev.clone(), off / 512, 1).unwrap();
        if &b[..8] == b"FRXMETA\0" {
            u32_at(&b, 8)
        } else {
            0
        }
    };
    (
        u32_at(&label, 8),
        [slot(u64_at(&label, 104)), slot(u64_at(&label, 112))],
    )
}

#[test]
fn a_pool_holds_65536_volumes_and_loads_them_back() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let dev = SparseBdev::new("big", FULL_SCALE_BYTES);
    let base: Arc<dyn BlockDevice> = dev.clone();
    let cs = ferrox_bdev::lvol::DEFAULT_CLUSTER_SIZE;
    let store = LvolStore::create(base.clone(), "big", cs, meta.clone()).unwrap();
    let started = Instant::now();
    // Bounded: one create per object, and a deadline far above what it takes.
    let deadline = started + Duration::from_secs(600);
    for i in 0..MAX_VOLUMES {
        store.create_volume(&format!("v{i}"), cs, true).unwrap();
        assert!(Instant::now() < deadline, "only {i} volumes in 600 s");
    }
    let took = started.elapsed();
    // The pool is full: the next one is refused with the limit in the message.
    let e = store.create_volume("one-more", cs, true).unwrap_err();
    assert!(matches!(e, LvolError::MetadataFull(_)), "{e}");
    assert!(e.to_string().contains("at most 65536 volumes"), "{e}");
    let e = store.snapshot("v0", "snap").unwrap_err();
    assert!(matches!(e, LvolError::MetadataFull(_)), "{e}");
    // Data in the first, a middle and the last volume.
    let picks = [0, MAX_VOLUMES / 2, MAX_VOLUMES - 1];
    for &i in &picks {
        let v = store.volume(&format!("v{i}")).unwrap();
        write(&io, v, 8, pattern(i as u64, 4096)).unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.volumes, stats.max_volumes),
        (MAX_VOLUMES, MAX_VOLUMES)
    );
    let written = dev.bytes_written();
    eprintln!(
        "{MAX_VOLUMES} creates in {took:?}; {written} bytes written ({} per create), {} pages of 4 KiB held",
        written / MAX_VOLUMES as u64,
        dev.resident_bytes() / 4096
    );
    // What the journal costs: far below one whole image (8 MiB) per create.
    assert!(
        written < 256 * MAX_VOLUMES as u64 * 16,
        "{written} bytes written for {MAX_VOLUMES} creates"
    );
    drop(store);

    let base2 = base.clone();
    let store = LvolStore::load(base, meta.clone()).unwrap();
    assert_eq!(store.stats().unwrap(), stats);
    let list = store.list().unwrap();
    assert_eq!(list.len(), MAX_VOLUMES);
    for (i, v) in list.iter().enumerate() {
        assert_eq!(v.name, format!("v{i}"));
        assert_eq!(
            (v.size, v.thin, v.snapshot),
            (cs, true, false),
            "{}",
            v.name
        );
        let want = u64::from(picks.contains(&i));
        assert_eq!(v.allocated_clusters, want, "{}", v.name);
    }
    for &i in &picks {
        let v = store.volume(&format!("v{i}")).unwrap();
        assert_eq!(read(&io, v, 8, 8).unwrap(), pattern(i as u64, 4096));
    }
    // A delete makes room for one more; a full pool's volumes still change; both
    // survive a reload.
    store.delete(&format!("v{}", MAX_VOLUMES / 3)).unwrap();
    store.create_volume("one-more", cs, true).unwrap();
    store.resize("v1", 2 * cs, false).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), MAX_VOLUMES);
    drop(store);
    let store = LvolStore::load(base2, meta).unwrap();
    assert_eq!(store.list().unwrap(), list);
    assert_eq!(list[1].size, 2 * cs);
}

/// Creates `n` thin volumes `v0..` on a 4 MiB pool whose 64 KiB log holds 128
/// one-block records, so the log is compacted into a whole image twice.
const N: usize = 300;
const CS: u64 = 4096;

fn create_all(store: &LvolStore, dev: &CrashBdev) -> usize {
    for i in 0..N {
        store.create_volume(&format!("v{i}"), CS, true).unwrap();
        if dev.is_cut() {
            return i;
        }
    }
    N
}

fn cuts_through_compaction(torn: bool) {
    let g = group(1);
    let h = g.handles()[0].clone();
    let dev = CrashBdev::new(malloc("m", 4 << 20), u64::MAX);
    let store = LvolStore::create(dev.clone(), "pool", CS, h.clone()).unwrap();
    let after_format = dev.writes();
    assert_eq!(create_all(&store, &dev), N);
    let total = dev.writes();
    // One write per create: a record, or a whole image when the log is full.
    assert_eq!(total - after_format, N as u64);
    drop(store);
    // Slot A held no image after the format: the log was compacted into it.
    let base: Arc<dyn BlockDevice> = dev;
    assert_eq!(versions(&h, &base), (4, [4, 4]));
    for n in after_format..=total {
        let mem = malloc("m", 4 << 20);
        let dev = if torn {
            CrashBdev::torn(mem.clone(), n)
        } else {
            CrashBdev::new(mem.clone(), n)
        };
        let store = LvolStore::create(dev.clone(), "pool", CS, h.clone()).unwrap();
        let done = create_all(&store, &dev);
        drop(store);
        let store = LvolStore::load(mem.clone(), h.clone())
            .unwrap_or_else(|e| panic!("cut at write {n}: the pool does not load: {e}"));
        let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        let want = |k: usize| (0..k).map(|i| format!("v{i}")).collect::<Vec<_>>();
        assert!(
            names == want(done) || names == want(done + 1),
            "cut at write {n} in create {done}: {} volumes loaded",
            names.len()
        );
        assert_eq!(
            store.stats().unwrap().generation,
            names.len() as u64 + 1,
            "cut at write {n}"
        );
        // The loaded pool appends where its log really ends: a change after the cut
        // is there after another load.
        store.create_volume("after", CS, true).unwrap();
        drop(store);
        let store = LvolStore::load(mem, h.clone()).unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), names.len() + 1, "cut at write {n}");
        assert_eq!(list.last().unwrap().name, "after", "cut at write {n}");
    }
}

#[test]
fn a_power_cut_at_every_write_of_a_filling_journal_keeps_a_prefix() {
    cuts_through_compaction(false);
}

#[test]
fn a_torn_write_at_every_write_of_a_filling_journal_keeps_a_prefix() {
    cuts_through_compaction(true);
}

#[test]
fn a_version_3_pool_loads_keeps_working_and_keeps_its_format() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("old", 4 << 20);
    let store = LvolStore::create_with_version(base.clone(), "old", CS, h.clone(), 3).unwrap();
    store.create_volume("thin", 8 * CS, true).unwrap();
    store.create_volume("thick", 2 * CS, false).unwrap();
    let thin = store.volume("thin").unwrap();
    write(&h, thin.clone(), 0, pattern(1, 8192)).unwrap(); // an allocation record
    store.snapshot("thin", "snap").unwrap();
    write(&h, thin.clone(), 4, pattern(2, 512)).unwrap(); // copy-on-write
    store.clone_volume("snap", "clone").unwrap();
    let thick = store.volume("thick").unwrap();
    write(&h, thick.clone(), 9, pattern(3, 1024)).unwrap();
    drop((thin, thick));
    let before = store.list().unwrap();
    drop(store);
    assert_eq!(versions(&h, &base).0, 3);

    // This build loads it, data intact.
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    assert_eq!(store.list().unwrap(), before);
    let mut want_thin = pattern(1, 8192);
    want_thin[4 * 512..5 * 512].copy_from_slice(&pattern(2, 512));
    let rd = |name: &str, lba, blocks| read(&h, store.volume(name).unwrap(), lba, blocks).unwrap();
    assert_eq!(rd("thin", 0, 16), want_thin);
    assert_eq!(rd("snap", 0, 16), pattern(1, 8192));
    assert_eq!(rd("clone", 0, 16), pattern(1, 8192));
    assert_eq!(rd("thick", 9, 2), pattern(3, 1024));

    // Changes keep the version-3 format (images and allocation records an older
    // build reads): the label and every image still say 3.
    store.delete("clone").unwrap();
    store.create_volume("new", CS, true).unwrap();
    write(&h, store.volume("new").unwrap(), 0, pattern(4, 512)).unwrap();
    let after = store.list().unwrap();
    drop(store);
    let (label, slots) = versions(&h, &base);
    assert_eq!(label, 3);
    assert!(slots.iter().all(|&v| v == 3), "image versions {slots:?}");
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    assert_eq!(store.list().unwrap(), after);
    assert_eq!(
        read(&h, store.volume("new").unwrap(), 0, 1).unwrap(),
        pattern(4, 512)
    );
    // Its slots were sized for 1024 records: it holds no more.
    let have = store.list().unwrap().len();
    for i in have..OLD_MAX_VOLUMES {
        store.create_volume(&format!("f{i}"), CS, true).unwrap();
    }
    let e = store.create_volume("too-many", CS, true).unwrap_err();
    assert!(e.to_string().contains("at most 1024 volumes"), "{e}");
    drop(store);
    let store = LvolStore::load(base, h).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.volumes, stats.max_volumes),
        (OLD_MAX_VOLUMES, OLD_MAX_VOLUMES)
    );
}

#[test]
fn a_new_pool_commits_changes_as_journal_records() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let dev = SparseBdev::new("s", 64 << 20);
    let base: Arc<dyn BlockDevice> = dev.clone();
    let store = LvolStore::create(base.clone(), "pool", 64 << 10, h.clone()).unwrap();
    let (label, slots) = versions(&h, &base);
    assert_eq!((label, slots), (4, [0, 4]));
    // 100 volumes: each create writes one 512-byte record, not an image.
    let before = dev.bytes_written();
    for i in 0..100 {
        store
            .create_volume(&format!("v{i}"), 1 << 20, true)
            .unwrap();
    }
    assert_eq!(dev.bytes_written() - before, 100 * 512);
    // Snapshot, clone, resize, delete: one record each, whatever the pool holds.
    let before = dev.bytes_written();
    store.snapshot("v1", "s1").unwrap();
    store.clone_volume("s1", "c1").unwrap();
    store.resize("v2", 2 << 20, false).unwrap();
    store.delete("v3").unwrap();
    assert_eq!(dev.bytes_written() - before, 4 * 512);
    let list = store.list().unwrap();
    drop(store);
    let store = LvolStore::load(base, h).unwrap();
    assert_eq!(store.list().unwrap(), list);
}

/// Clusters of each volume in [`fragmented`] (few enough for one log: no compaction).
const FRAG: u64 = 40;

/// Two thin volumes of `FRAG` clusters written in turns, so that each holds `FRAG`
/// runs of one cluster: a snapshot of one is a journal record of two blocks.
fn fragmented(h: &ferrox_reactor::ReactorHandle, dev: Arc<CrashBdev>) -> Arc<LvolStore> {
    let store = LvolStore::create(dev, "pool", CS, h.clone()).unwrap();
    store.create_volume("a", FRAG * CS, true).unwrap();
    store.create_volume("b", FRAG * CS, true).unwrap();
    let (a, b) = (store.volume("a").unwrap(), store.volume("b").unwrap());
    for c in 0..FRAG {
        write(h, a.clone(), c * 8, pattern(c, 512)).unwrap();
        write(h, b.clone(), c * 8, pattern(c + 100, 512)).unwrap();
    }
    store
}

#[test]
fn a_torn_multi_block_journal_record_leaves_the_state_before_it() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let dev = CrashBdev::new(malloc("m", 4 << 20), u64::MAX);
    let store = fragmented(&h, dev.clone());
    let before = dev.writes();
    store.snapshot("a", "snap").unwrap();
    assert_eq!(dev.writes(), before + 1, "the snapshot is one record");
    drop(store);
    // The log's last record (the snapshot) takes more than one block.
    let label = read(&h, dev.clone(), 0, 1).unwrap();
    let (log, size) = (u64_at(&label, 152), u64_at(&label, 160));
    let bytes = read(&h, dev.clone(), log / 512, size / 512).unwrap();
    let (mut at, mut last) = (0, 0);
    while at + 64 <= bytes.len() && &bytes[at..at + 8] == b"FRXLOGR\0" {
        let body = u64::from(u32_at(&bytes, at + 12));
        last = (64 + body).div_ceil(512) * 512;
        at += last as usize;
    }
    assert_eq!(last, 2 * 512, "the snapshot's record");
    for torn in [false, true] {
        let mem = malloc("m", 4 << 20);
        let dev = if torn {
            CrashBdev::torn(mem.clone(), before)
        } else {
            CrashBdev::new(mem.clone(), before)
        };
        let store = fragmented(&h, dev.clone());
        assert!(!dev.is_cut());
        store.snapshot("a", "snap").unwrap();
        assert!(dev.is_cut());
        drop(store);
        let store = LvolStore::load(mem.clone(), h.clone()).unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["a", "b"], "torn {torn}");
        let a = store.volume("a").unwrap();
        for c in 0..FRAG {
            assert_eq!(read(&h, a.clone(), c * 8, 1).unwrap(), pattern(c, 512));
        }
        assert_eq!(store.list().unwrap()[0].allocated_clusters, FRAG);
        // The next change goes where the torn record was, and loads.
        drop(a);
        store.snapshot("a", "snap2").unwrap();
        drop(store);
        let store = LvolStore::load(mem, h.clone()).unwrap();
        let info = store.list().unwrap();
        assert_eq!(info.len(), 3, "torn {torn}");
        assert_eq!(
            (info[2].name.as_str(), info[2].allocated_clusters),
            ("snap2", FRAG)
        );
    }
}

/// A pool written by a build of format version 3 (`tests/data/README.md` says how):
/// it loads with every volume and byte, takes changes in its own format, and loads
/// again.
#[test]
fn a_pool_written_by_a_version_3_build_loads_with_its_data() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("old", 2 << 20);
    let dump = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/lvol_v3_pool.bin"
    ))
    .unwrap();
    assert_eq!(dump.len() % 520, 0);
    for e in dump.chunks(520) {
        write(&h, base.clone(), u64_at(e, 0), e[8..].to_vec()).unwrap();
    }
    assert_eq!(versions(&h, &base), (3, [3, 3]));
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    let list = store.list().unwrap();
    let brief: Vec<(&str, u64, Option<&str>, bool)> = list
        .iter()
        .map(|v| (v.name.as_str(), v.size, v.parent.as_deref(), v.snapshot))
        .collect();
    assert_eq!(
        brief,
        [
            ("thin", 8 * CS, Some("snap"), false),
            ("thick", 2 * CS, None, false),
            ("snap", 8 * CS, None, true),
            ("clone", 8 * CS, Some("snap"), false),
        ]
    );
    let rd = |s: &LvolStore, name: &str| read_all(&h, s.volume(name).unwrap()).unwrap();
    let mut snap = pattern(1, 8192);
    snap.resize(8 * CS as usize, 0);
    let mut thin = snap.clone();
    thin[4 * 512..5 * 512].copy_from_slice(&pattern(2, 512));
    let mut clone = snap.clone();
    clone[20 * 512..22 * 512].copy_from_slice(&pattern(5, 1024));
    let mut thick = vec![0u8; 2 * CS as usize];
    thick[9 * 512..11 * 512].copy_from_slice(&pattern(3, 1024));
    let want = [
        ("thin", &thin),
        ("thick", &thick),
        ("snap", &snap),
        ("clone", &clone),
    ];
    for (name, data) in want {
        assert!(rd(&store, name) == *data, "volume {name}");
    }
    // A change, in version 3, and every volume again after a reload.
    store.create_volume("new", CS, true).unwrap();
    write(&h, store.volume("new").unwrap(), 1, pattern(6, 512)).unwrap();
    drop(store);
    let (label, slots) = versions(&h, &base);
    assert_eq!((label, slots), (3, [3, 3]));
    let store = LvolStore::load(base, h.clone()).unwrap();
    assert_eq!(store.list().unwrap().len(), 5);
    for (name, data) in want {
        assert!(rd(&store, name) == *data, "volume {name} after a change");
    }
    assert_eq!(
        read(&h, store.volume("new").unwrap(), 1, 1).unwrap(),
        pattern(6, 512)
    );
}
