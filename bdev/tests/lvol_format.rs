#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! The on-disk format: a pool loads back (from RAM and from a file), a newer format is
//! refused, and damaged labels and metadata are reported, never used.

mod lvol_util;

use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore, FORMAT_VERSION};
use ferrox_bdev::BlockDevice;
use ferrox_reactor::ReactorHandle;
use lvol_util::*;

const CS: u64 = 64 << 10;

fn patch(h: &ReactorHandle, dev: &Arc<dyn BlockDevice>, byte: u64, f: impl FnOnce(&mut [u8])) {
    let lba = byte / 512;
    let mut blk = read(h, dev.clone(), lba, 1).unwrap();
    f(&mut blk[(byte % 512) as usize..]);
    write(h, dev.clone(), lba, blk).unwrap();
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn pool_on_a_file_survives_reopen() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.img");
    let open = |size| -> Arc<dyn BlockDevice> {
        ferrox_bdev::uring::UringBdev::open("u", &path, size, 512, 16).unwrap()
    };
    let store = LvolStore::create(
        open(Some(16 << 20)),
        "filepool",
        ferrox_bdev::lvol::DEFAULT_CLUSTER_SIZE,
        h.clone(),
    )
    .unwrap();
    store.create_volume("v", 3 << 20, true).unwrap();
    let v = store.volume("v").unwrap();
    write(&h, v.clone(), 2047, pattern(5, 4096)).unwrap();
    drop(v);
    drop(store);
    let store = LvolStore::load(open(None), h.clone()).unwrap();
    assert_eq!(store.stats().unwrap().cluster_size, 1 << 20);
    let v = store.volume("v").unwrap();
    assert_eq!(read(&h, v, 2047, 8).unwrap(), pattern(5, 4096));
}

#[test]
fn a_newer_format_is_refused() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("base", 4 << 20);
    drop(LvolStore::create(base.clone(), "pool", CS, h.clone()).unwrap());
    patch(&h, &base, 8, |b| {
        b[..4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    let e = LvolStore::load(base, h).unwrap_err();
    assert!(
        matches!(e, LvolError::NewerFormat { found, .. } if found == FORMAT_VERSION + 1),
        "{e}"
    );
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn a_blank_device_is_not_a_pool() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let e = LvolStore::load(malloc("blank", 4 << 20), h).unwrap_err();
    assert!(matches!(e, LvolError::NotAPool { .. }), "{e}");
}

#[test]
fn a_damaged_label_is_reported() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("base", 4 << 20);
    drop(LvolStore::create(base.clone(), "pool", CS, h.clone()).unwrap());
    patch(&h, &base, 40, |b| b[0] ^= 0x55); // inside the pool name
    let e = LvolStore::load(base, h).unwrap_err();
    assert!(matches!(e, LvolError::Corrupt { offset: 252, .. }), "{e}");
    assert!(e.to_string().contains("label checksum"), "{e}");
}

/// A version-3 pool commits a whole image per change, into alternate slots.
#[test]
fn damaged_metadata_falls_back_or_is_reported() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("base", 4 << 20);
    let store = LvolStore::create_with_version(base.clone(), "pool", CS, h.clone(), 3).unwrap();
    store.create_volume("one", CS, true).unwrap(); // generation 2, slot A
    store.create_volume("two", CS, true).unwrap(); // generation 3, slot B
    assert_eq!(store.stats().unwrap().generation, 3);
    drop(store);
    let label = read(&h, base.clone(), 0, 1).unwrap();
    let (a, b) = (u64_at(&label, 104), u64_at(&label, 112));

    // Damage the body of the newest generation (slot B): the older one is used.
    patch(&h, &base, b + 64 + 70, |x| x[0] ^= 1);
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["one".to_string()]);
    assert_eq!(store.stats().unwrap().generation, 2);
    drop(store);

    // Damage slot A too: nothing valid is left, and the error says where and what.
    patch(&h, &base, a + 33, |x| x[0] ^= 1);
    let e = LvolStore::load(base, h).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LvolError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("body checksum") && msg.contains("header checksum"),
        "{msg}"
    );
}

#[test]
fn bad_geometry_is_refused_at_create() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let e = LvolStore::create(malloc("tiny", 64 << 10), "pool", CS, h.clone()).unwrap_err();
    assert!(matches!(e, LvolError::Invalid(_)), "{e}");
    let e = LvolStore::create(malloc("b", 4 << 20), "pool", 3000, h).unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
}

#[test]
fn a_pool_formatted_over_old_data_reads_zeroes_and_keeps_its_file_sparse() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.img");
    std::fs::write(&path, vec![0xab; 8 << 20]).unwrap();
    let base: Arc<dyn BlockDevice> =
        ferrox_bdev::uring::UringBdev::open("u", &path, None, 512, 16).unwrap();
    let store = LvolStore::create(base, "dirty", CS, h.clone()).unwrap();
    let free = store.stats().unwrap().free_clusters;
    assert!(free > 64, "{free} clusters");
    store.create_volume("v", free * CS, true).unwrap();
    let v: Arc<dyn BlockDevice> = store.volume("v").unwrap();
    // One 512-byte write per cluster allocates every cluster of the pool.
    let per = CS / 512;
    let writes: Vec<Req> = (0..free)
        .map(|c| Req::Write(c * per + 3, vec![0x5a; 512]))
        .collect();
    for batch in writes.chunks(64) {
        for o in run(&h, v.clone(), batch.to_vec()) {
            o.unwrap();
        }
    }
    let got = read_all(&h, v).unwrap();
    for (i, blk) in got.chunks(512).enumerate() {
        let want = if i as u64 % per == 3 { 0x5a } else { 0 };
        assert!(blk.iter().all(|&b| b == want), "block {i} holds old data");
    }
    // The data area was punched at format, not filled with zeroes.
    use std::os::unix::fs::MetadataExt;
    let used = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(used < 4 << 20, "the 8 MiB pool file uses {used} bytes");
}

/// A version-4 pool commits a change as a journal record after the image: a damaged
/// record ends the log there (as a torn one does), a damaged image is reported.
#[test]
fn a_damaged_journal_record_ends_the_log_and_a_damaged_image_is_reported() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("base", 4 << 20);
    let store = LvolStore::create(base.clone(), "pool", CS, h.clone()).unwrap();
    store.create_volume("one", CS, true).unwrap(); // generation 2, the log's first record
    store.create_volume("two", CS, true).unwrap(); // generation 3, its second
    assert_eq!(store.stats().unwrap().generation, 3);
    drop(store);
    let label = read(&h, base.clone(), 0, 1).unwrap();
    let (b, log) = (u64_at(&label, 112), u64_at(&label, 152));
    let names =
        |s: &LvolStore| -> Vec<String> { s.list().unwrap().into_iter().map(|v| v.name).collect() };

    // The second record's body: the log ends before it.
    patch(&h, &base, log + 512 + 64 + 100, |x| x[0] ^= 1);
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    assert_eq!(names(&store), vec!["one".to_string()]);
    assert_eq!(store.stats().unwrap().generation, 2);
    drop(store);
    // The first record's header: only the image is left.
    patch(&h, &base, log + 33, |x| x[0] ^= 1);
    let store = LvolStore::load(base.clone(), h.clone()).unwrap();
    assert!(names(&store).is_empty());
    assert_eq!(store.stats().unwrap().generation, 1);
    drop(store);
    // The image (slot B; slot A never held one): nothing valid is left.
    patch(&h, &base, b + 33, |x| x[0] ^= 1);
    let e = LvolStore::load(base, h).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LvolError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("no metadata magic") && msg.contains("header checksum"),
        "{msg}"
    );
}

/// A journal record whose checksums hold but whose contents do not (a writer's bug,
/// or damage that kept the checksums) is reported with where it is, never used.
#[test]
fn a_checksummed_but_invalid_journal_record_is_reported() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let base = malloc("base", 4 << 20);
    let store = LvolStore::create(base.clone(), "pool", CS, h.clone()).unwrap();
    store.create_volume("one", CS, true).unwrap();
    drop(store);
    let label = read(&h, base.clone(), 0, 1).unwrap();
    let log = u64_at(&label, 152);
    // The record: header, 24 bytes of counts, then the volume record, whose size is
    // at byte 24; a size that is no cluster multiple, checksums recomputed.
    let mut rec = read(&h, base.clone(), log / 512, 1).unwrap();
    let size_at = 64 + 24 + 24;
    assert_eq!(u64_at(&rec, size_at), CS);
    rec[size_at..size_at + 8].copy_from_slice(&(CS + 1).to_le_bytes());
    let body = u32::from_le_bytes(rec[12..16].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&rec[64..64 + body]);
    rec[56..60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&rec[..60]);
    rec[60..64].copy_from_slice(&hcrc.to_le_bytes());
    write(&h, base.clone(), log / 512, rec).unwrap();
    let e = LvolStore::load(base, h).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, LvolError::Corrupt { offset, .. } if offset == log),
        "{msg}"
    );
    assert!(
        msg.contains("metadata log") && msg.contains("not a valid cluster multiple"),
        "{msg}"
    );
}
