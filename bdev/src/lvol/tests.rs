use super::format::*;
use super::LvolError;
use crate::{BdevInfo, Ops};

fn dev(blocks: u64) -> BdevInfo {
    BdevInfo {
        name: "d".into(),
        uuid: [0; 16],
        block_size: 512,
        num_blocks: blocks,
        optimal_io_boundary: 0,
        max_transfer: 1 << 20,
        ops: Ops::FLUSH,
        volatile_cache: false,
    }
}

fn label() -> Label {
    Label::plan(&dev(8192), "pool", [7; 16], 4096).unwrap()
}

/// A pool as builds before format version 4 laid it out.
fn label3() -> Label {
    Label::plan_version(&dev(8192), "pool", [7; 16], 4096, 3).unwrap()
}

fn vol(id: u64, name: &str, map: Vec<u32>) -> VolMeta {
    VolMeta {
        id,
        uuid: [id as u8; 16],
        name: name.into(),
        size: map.len() as u64 * 4096,
        parent: None,
        backing: 0,
        created: 1_700_000_000,
        thin: true,
        read_only: false,
        map,
    }
}

#[test]
fn label_round_trips_and_fits_the_device() {
    let l = label();
    assert_eq!(l.slot_offset[0], LABEL_REGION);
    assert!(l.data_offset + l.clusters * l.cluster_size <= 8192 * 512);
    assert_eq!(Label::decode(&l.encode(), &dev(8192)).unwrap(), l);
    // A smaller device than the label describes is corrupt, not silently used.
    let e = Label::decode(&l.encode(), &dev(4096)).unwrap_err();
    assert!(matches!(e, LvolError::Corrupt { offset: 96, .. }), "{e}");
}

#[test]
fn every_single_bit_flip_in_the_label_is_caught() {
    let l = label();
    let good = l.encode();
    for bit in 0..LABEL_LEN * 8 {
        let mut b = good;
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(Label::decode(&b, &dev(8192)).is_err(), "bit {bit}");
    }
}

#[test]
fn metadata_round_trips_with_runs() {
    let l = label();
    let mut snap = vol(1, "snap", vec![0, 1, 2, NONE, 9, 10]);
    snap.read_only = true;
    let mut child = vol(2, "child", vec![NONE, 3, NONE, NONE, NONE, NONE]);
    child.parent = Some(1);
    child.backing = 6;
    let m = Meta {
        generation: 5,
        next_id: 3,
        vols: Meta::vols_of(vec![snap, child]),
        clean_from: 11,
    };
    let img = encode_meta(&m, &l).unwrap();
    // Two runs for the snapshot, one for the child.
    assert_eq!(
        img.len() as u64,
        (64 + 2 * 128 + 3 * 16 + 8u64).div_ceil(512) * 512
    );
    assert_eq!(decode_meta(&img, &l).unwrap(), m);
}

#[test]
fn every_single_bit_flip_in_an_image_is_caught() {
    let l = label();
    let m = Meta {
        generation: 2,
        next_id: 2,
        vols: Meta::vols_of(vec![vol(1, "v", vec![4, NONE, 5])]),
        clean_from: 6,
    };
    let img = encode_meta(&m, &l).unwrap();
    let len = 64 + 128 + 2 * 16 + 8;
    for bit in 0..len * 8 {
        let mut b = img.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(decode_meta(&b, &l).is_err(), "bit {bit}");
    }
}

/// Re-checksums an image built by hand, as a buggy writer would have.
fn reseal(img: &mut [u8]) {
    let len = u64::from_le_bytes(img[40..48].try_into().unwrap()) as usize;
    let body = crc32c::crc32c(&img[64..len]);
    img[56..60].copy_from_slice(&body.to_le_bytes());
    let h = crc32c::crc32c(&img[..60]);
    img[60..64].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn checksummed_but_inconsistent_metadata_is_refused() {
    let l = label();
    let cases: Vec<(Meta, &str)> = vec![
        (
            Meta {
                generation: 2,
                next_id: 3,
                clean_from: l.clusters,
                vols: Meta::vols_of(vec![vol(1, "a", vec![4]), vol(2, "b", vec![4])]),
            },
            "mapped twice",
        ),
        (
            Meta {
                generation: 2,
                next_id: 3,
                clean_from: l.clusters,
                vols: Meta::vols_of(vec![vol(1, "a", vec![4]), vol(2, "a", vec![5])]),
            },
            "appears twice",
        ),
        (
            Meta {
                generation: 2,
                next_id: 3,
                clean_from: l.clusters,
                vols: Meta::vols_of(vec![{
                    let mut v = vol(1, "a", vec![4]);
                    v.parent = Some(2);
                    v
                }]),
            },
            "missing parent",
        ),
        (
            Meta {
                generation: 2,
                next_id: 3,
                clean_from: l.clusters,
                vols: Meta::vols_of(vec![
                    {
                        let mut v = vol(1, "a", vec![NONE]);
                        v.parent = Some(2);
                        v.read_only = true;
                        v
                    },
                    {
                        let mut v = vol(2, "b", vec![NONE]);
                        v.parent = Some(1);
                        v.read_only = true;
                        v
                    },
                ]),
            },
            "ancestor",
        ),
        (
            Meta {
                generation: 2,
                next_id: 2,
                clean_from: l.clusters,
                vols: Meta::vols_of(vec![vol(1, "a", vec![l.clusters as u32])]),
            },
            "out of range",
        ),
        (
            Meta {
                generation: 2,
                next_id: 2,
                clean_from: 4,
                vols: Meta::vols_of(vec![vol(1, "a", vec![3, 4])]),
            },
            "at or above clean_from",
        ),
        (
            Meta {
                generation: 2,
                next_id: 1,
                clean_from: l.clusters + 1,
                vols: Meta::vols_of(vec![]),
            },
            "beyond",
        ),
    ];
    for (m, why) in cases {
        let mut img = encode_meta(&m, &l).unwrap();
        reseal(&mut img);
        let e = decode_meta(&img, &l).unwrap_err();
        assert!(e.0.contains(why), "{why}: {e:?}");
    }
}

#[test]
fn newer_metadata_version_and_other_pools_are_refused() {
    let l = label();
    let m = Meta {
        generation: 2,
        next_id: 1,
        vols: Meta::vols_of(vec![]),
        clean_from: 0,
    };
    let mut img = encode_meta(&m, &l).unwrap();
    let mut other = l.clone();
    other.uuid = [9; 16];
    assert!(decode_header(&img, &other)
        .unwrap_err()
        .contains("another pool"));
    img[8] = (FORMAT_VERSION + 1) as u8;
    reseal(&mut img);
    assert!(decode_header(&img, &l).unwrap_err().contains("newer"));
}

#[test]
fn a_version_1_image_loads_with_no_clean_clusters() {
    let l = label();
    let m = Meta {
        generation: 3,
        next_id: 2,
        vols: Meta::vols_of(vec![vol(1, "v", vec![4, NONE, 5])]),
        clean_from: 6,
    };
    let mut img = encode_meta(&m, &l).unwrap();
    // What format version 1 wrote: no trailer.
    let len = u64::from_le_bytes(img[40..48].try_into().unwrap()) - 8;
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    img[40..48].copy_from_slice(&len.to_le_bytes());
    img[len as usize..len as usize + 8].fill(0);
    reseal(&mut img);
    let got = decode_meta(&img, &l).unwrap();
    assert_eq!(got.clean_from, l.clusters);
    assert_eq!(got.vols, m.vols);
}

#[test]
fn a_version_1_pool_keeps_writing_version_1_images() {
    let mut l = label();
    l.version = 1;
    let m = Meta {
        generation: 4,
        next_id: 2,
        vols: Meta::vols_of(vec![vol(1, "v", vec![4, NONE, 5])]),
        clean_from: l.clusters,
    };
    let img = encode_meta(&m, &l).unwrap();
    assert_eq!(u32::from_le_bytes(img[8..12].try_into().unwrap()), 1);
    let len = u64::from_le_bytes(img[40..48].try_into().unwrap());
    assert_eq!(len, 64 + 128 + 2 * 16, "no trailer");
    assert_eq!(decode_meta(&img, &l).unwrap(), m);
}

fn log_base() -> Meta {
    let mut snap = vol(1, "snap", vec![0, NONE]);
    snap.read_only = true;
    Meta {
        generation: 7,
        next_id: 3,
        vols: Meta::vols_of(vec![snap, vol(2, "v", vec![1, NONE, NONE, NONE])]),
        clean_from: 2,
    }
}

const LOG_ENTRIES: [LogEntry; 2] = [
    LogEntry {
        vol: 2,
        vc: 2,
        pc: 5,
    },
    LogEntry {
        vol: 2,
        vc: 3,
        pc: 2,
    },
];

#[test]
fn a_log_record_round_trips_onto_its_image() {
    let l = label3();
    assert!(l.log_size >= 64 << 10 && l.log_offset >= l.slot_offset[1] + l.slot_size);
    assert!(l.data_offset >= l.log_offset + l.log_size);
    assert_eq!(Label::decode(&l.encode(), &dev(8192)).unwrap(), l);
    let rec = encode_record(8, 7, 6, &LOG_ENTRIES, &l);
    assert_eq!(rec.len(), 512);
    let h = decode_record_header(&rec, &l, l.log_size).unwrap();
    assert_eq!((h.generation, h.base, h.clean_from, h.body), (8, 7, 6, 32));
    let mut r = Replay::new(log_base(), &l);
    assert!(r.apply(&h, &rec, &l).unwrap());
    let mut want = log_base();
    want.generation = 8;
    want.clean_from = 6;
    want.vols.get_mut(&2).unwrap().map = vec![1, NONE, 5, 2];
    assert_eq!(r.meta, want);
    // A record that would run past the end of the log ends it.
    assert!(decode_record_header(&rec, &l, 256).is_err());
}

#[test]
fn every_single_bit_flip_in_a_log_record_is_caught() {
    let l = label3();
    let rec = encode_record(8, 7, 6, &LOG_ENTRIES, &l);
    for bit in 0..(64 + 2 * 16) * 8 {
        let mut b = rec.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let Ok(h) = decode_record_header(&b, &l, l.log_size) else {
            continue;
        };
        let mut r = Replay::new(log_base(), &l);
        // A header that still checks out means the flip is in the entries: the body
        // checksum fails, which ends the log (a torn write looks the same).
        assert_eq!(r.apply(&h, &b, &l), Ok(false), "bit {bit}");
        assert_eq!(r.meta, log_base(), "bit {bit}");
    }
}

#[test]
fn a_checksummed_record_that_contradicts_its_image_is_refused() {
    let l = label3();
    let cases: [(LogEntry, &str); 5] = [
        (
            LogEntry {
                vol: 9,
                vc: 0,
                pc: 5,
            },
            "no volume 9",
        ),
        (
            LogEntry {
                vol: 1,
                vc: 1,
                pc: 5,
            },
            "snapshot",
        ),
        (
            LogEntry {
                vol: 2,
                vc: 0,
                pc: 5,
            },
            "not an unmapped one",
        ),
        (
            LogEntry {
                vol: 2,
                vc: 9,
                pc: 5,
            },
            "not an unmapped one",
        ),
        (
            LogEntry {
                vol: 2,
                vc: 1,
                pc: 0,
            },
            "not a free one",
        ),
    ];
    for (e, why) in cases {
        let rec = encode_record(8, 7, 6, &[e], &l);
        let h = decode_record_header(&rec, &l, l.log_size).unwrap();
        let mut r = Replay::new(log_base(), &l);
        let err = r.apply(&h, &rec, &l).unwrap_err();
        assert!(err.contains(why), "{e:?}: {err}");
        assert_eq!(r.meta, log_base(), "nothing applied");
    }
    // The same pool cluster twice in one record, and clean_from below a new cluster.
    let twice = [
        LOG_ENTRIES[0],
        LogEntry {
            vol: 2,
            vc: 3,
            pc: 5,
        },
    ];
    let rec = encode_record(8, 7, 6, &twice, &l);
    let h = decode_record_header(&rec, &l, l.log_size).unwrap();
    assert!(Replay::new(log_base(), &l).apply(&h, &rec, &l).is_err());
    let rec = encode_record(8, 7, 5, &LOG_ENTRIES, &l);
    let h = decode_record_header(&rec, &l, l.log_size).unwrap();
    let err = Replay::new(log_base(), &l).apply(&h, &rec, &l).unwrap_err();
    assert!(err.contains("clean_from"), "{err}");
    // Another pool's record is not this log's.
    let mut other = l.clone();
    other.uuid = [1; 16];
    let rec = encode_record(8, 7, 6, &LOG_ENTRIES, &other);
    assert!(decode_record_header(&rec, &l, l.log_size)
        .unwrap_err()
        .contains("another pool"));
}

#[test]
fn pools_before_version_3_have_no_log() {
    let mut l = label();
    l.version = 2;
    let b = l.encode();
    assert_eq!(&b[152..168], &[0; 16], "reserved bytes stay zero");
    let d = Label::decode(&b, &dev(8192)).unwrap();
    assert_eq!((d.log_offset, d.log_size), (0, 0));
}

#[test]
fn a_patched_view_changes_only_its_entries() {
    use super::ViewMap;
    let n = 3 * 4096 + 5;
    let base = ViewMap::from_vec((0..n as u32).collect());
    let p = base.patched(&[(1, 100), (2 * 4096 + 7, 200), (2 * 4096 + 8, 300)]);
    for i in 0..n {
        let want = match i {
            1 => 100,
            8199 => 200,
            8200 => 300,
            _ => i as u32,
        };
        assert_eq!(p.get(i), want, "entry {i}");
        assert_eq!(base.get(i), i as u32, "the old view is untouched at {i}");
    }
}

#[test]
fn a_version_4_label_says_how_many_volumes_the_pool_holds() {
    let gib = 2 << 20; // 512-byte blocks in 1 GiB
    for (blocks, want) in [
        (8192, OLD_MAX_VOLUMES),
        (2 * gib, MAX_VOLUMES),
        (1024 * gib, MAX_VOLUMES),
        (gib, MAX_VOLUMES / 2),
    ] {
        let l = Label::plan(&dev(blocks), "pool", [7; 16], 1 << 20).unwrap();
        assert_eq!(l.max_volumes(), want, "{blocks} blocks");
        assert!(l.slot_size >= (l.max_volumes() * VOL_RECORD_LEN) as u64);
        assert_eq!(Label::decode(&l.encode(), &dev(blocks)).unwrap(), l);
    }
    assert_eq!(FULL_SCALE_BYTES, 2 * gib * 512);
    // Version 3 holds 1024 and leaves the field zero; a bad limit is refused.
    let l3 = label3();
    assert_eq!(l3.max_volumes(), OLD_MAX_VOLUMES);
    assert_eq!(&l3.encode()[168..172], &[0; 4]);
    for bad in [0, MAX_VOLUMES as u32 + 1, 100_000] {
        let mut l = label();
        l.max_volumes = bad;
        let e = Label::decode(&l.encode(), &dev(8192)).unwrap_err();
        assert!(
            matches!(e, LvolError::Corrupt { offset: 168, .. }),
            "{bad}: {e}"
        );
    }
    assert!(Label::plan_version(&dev(8192), "pool", [7; 16], 4096, 2).is_err());
}

/// The image a journal record extends in these tests: a snapshot (id 1) holding
/// cluster 0, a volume (id 2) holding cluster 1.
fn journal_base() -> Meta {
    let mut m = log_base();
    m.generation = 7;
    m
}

fn replay(l: &Label, rec: &[u8]) -> (Replay, Result<bool, String>) {
    let h = decode_record_header(rec, l, l.log_size).unwrap();
    let mut r = Replay::new(journal_base(), l);
    let res = r.apply(&h, rec, l);
    (r, res)
}

fn entry(vol: u64, vc: u32, pc: u32) -> LogEntry {
    LogEntry { vol, vc, pc }
}

#[test]
fn journal_records_round_trip_onto_their_image() {
    let l = label();
    let mut clone = vol(3, "clone", vec![NONE, 4]);
    clone.parent = Some(1);
    clone.backing = 2;
    let c = Change {
        next_id: 4,
        clean_from: 6,
        deletes: vec![],
        upserts: vec![clone.clone()],
        frees: vec![entry(2, 0, 1)],
        entries: vec![entry(2, 2, 5)],
    };
    let rec = encode_change(8, 7, &c, &l);
    assert_eq!(rec.len(), 512, "one block");
    let h = decode_record_header(&rec, &l, l.log_size).unwrap();
    assert_eq!(
        (h.version, h.generation, h.base, h.clean_from),
        (4, 8, 7, 6)
    );
    let mut r = Replay::new(journal_base(), &l);
    assert_eq!(r.apply(&h, &rec, &l), Ok(true));
    let mut want = journal_base();
    want.generation = 8;
    want.next_id = 4;
    want.clean_from = 6;
    want.vols.get_mut(&2).unwrap().map = vec![NONE, NONE, 5, NONE];
    want.vols.insert(3, clone);
    assert_eq!(r.meta, want);
    assert_eq!(check_references(&r.meta), Ok(()));
    // The next record deletes the clone: its cluster 4 is free again, and cluster 1
    // (freed above) too.
    let c = Change {
        next_id: 4,
        clean_from: 6,
        deletes: vec![3],
        entries: vec![entry(2, 3, 4), entry(2, 0, 1)],
        ..Change::default()
    };
    let rec = encode_change(9, 7, &c, &l);
    let h = decode_record_header(&rec, &l, l.log_size).unwrap();
    assert_eq!(r.apply(&h, &rec, &l), Ok(true));
    want.generation = 9;
    want.vols.remove(&3);
    want.vols.get_mut(&2).unwrap().map = vec![1, NONE, 5, 4];
    assert_eq!(r.meta, want);
    // A version-3 pool does not read version-4 records, nor the reverse.
    assert!(decode_record_header(&rec, &label3(), l.log_size)
        .unwrap_err()
        .contains("version"));
    let v3 = encode_record(8, 7, 6, &LOG_ENTRIES, &label3());
    assert!(decode_record_header(&v3, &l, l.log_size).is_err());
}

#[test]
fn every_single_bit_flip_in_a_journal_record_is_caught() {
    let l = label();
    let c = Change {
        next_id: 4,
        clean_from: 6,
        deletes: vec![],
        upserts: vec![vol(3, "new", vec![4, NONE])],
        frees: vec![entry(2, 0, 1)],
        entries: vec![entry(2, 2, 5)],
    };
    let rec = encode_change(8, 7, &c, &l);
    let len = 64 + 24 + 2 * 16 + 128 + 16;
    for bit in 0..len * 8 {
        let mut b = rec.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let Ok(h) = decode_record_header(&b, &l, l.log_size) else {
            continue;
        };
        let mut r = Replay::new(journal_base(), &l);
        assert_eq!(r.apply(&h, &b, &l), Ok(false), "bit {bit}");
        assert_eq!(r.meta, journal_base(), "bit {bit}");
    }
}

/// Re-checksums a journal record edited by hand, as a buggy writer would have.
fn reseal_record(rec: &mut [u8]) {
    let body = u32::from_le_bytes(rec[12..16].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&rec[64..64 + body]);
    rec[56..60].copy_from_slice(&crc.to_le_bytes());
    let h = crc32c::crc32c(&rec[..60]);
    rec[60..64].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn a_checksummed_journal_record_that_contradicts_its_image_is_refused() {
    let l = label();
    let base = Change {
        next_id: 3,
        clean_from: 6,
        ..Change::default()
    };
    let with = |f: &dyn Fn(&mut Change)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(Change, &str)> = vec![
        (with(&|c| c.deletes = vec![9]), "missing volume 9"),
        (
            with(&|c| {
                c.next_id = 4;
                c.upserts = vec![vol(3, "snap", vec![NONE])];
            }),
            "appears twice",
        ),
        (
            with(&|c| {
                c.next_id = 4;
                c.upserts = vec![vol(3, "x", vec![0])];
            }),
            "in use",
        ),
        (
            with(&|c| c.upserts = vec![vol(3, "x", vec![NONE])]),
            "outside 1..next id",
        ),
        (with(&|c| c.next_id = 2), "below"),
        (
            with(&|c| c.frees = vec![entry(2, 0, 3)]),
            "not pool cluster 3",
        ),
        (with(&|c| c.frees = vec![entry(7, 0, 1)]), "no volume 7"),
        (
            with(&|c| {
                c.next_id = 4;
                c.upserts = vec![vol(3, "x", vec![l.clusters as u32])];
            }),
            "out of range",
        ),
        (
            with(&|c| {
                c.next_id = 4;
                c.upserts = vec![vol(3, "x", vec![7])];
            }),
            "clean_from",
        ),
    ];
    for (c, why) in cases {
        let rec = encode_change(8, 7, &c, &l);
        let (_, res) = replay(&l, &rec);
        let err = res.unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
    // Counts that do not fit the body.
    let mut rec = encode_change(8, 7, &with(&|c| c.deletes = vec![2]), &l);
    rec[64 + 12..64 + 16].copy_from_slice(&1000u32.to_le_bytes());
    reseal_record(&mut rec);
    let err = replay(&l, &rec).1.unwrap_err();
    assert!(err.contains("do not fit"), "{err}");
    // More volumes than the label allows.
    let mut small = l.clone();
    small.max_volumes = 2;
    let c = with(&|c| {
        c.next_id = 4;
        c.upserts = vec![vol(3, "x", vec![NONE])];
    });
    let rec = encode_change(8, 7, &c, &small);
    let err = replay(&small, &rec).1.unwrap_err();
    assert!(err.contains("more than the 2"), "{err}");
    // A full pool's record that rewrites a volume adds none.
    let mut grown = vol(2, "v", vec![1, NONE, NONE, NONE, NONE]);
    grown.size = 5 * 4096;
    let rec = encode_change(8, 7, &with(&|c| c.upserts = vec![grown.clone()]), &small);
    assert_eq!(replay(&small, &rec).1, Ok(true));
    // Parents are checked once the log is replayed: a record may name a missing one.
    let mut orphan = vol(3, "x", vec![NONE]);
    orphan.parent = Some(9);
    let c = with(&|c| {
        c.next_id = 4;
        c.upserts = vec![orphan.clone()];
    });
    let (r, res) = replay(&l, &encode_change(8, 7, &c, &l));
    assert_eq!(res, Ok(true));
    assert!(check_references(&r.meta)
        .unwrap_err()
        .contains("missing parent"));
}

#[test]
fn a_deep_snapshot_chain_checks_and_a_long_cycle_is_refused() {
    const N: u64 = 10_000;
    let mut vols: Vec<VolMeta> = (1..=N)
        .map(|id| {
            let mut v = vol(id, &format!("s{id}"), vec![NONE]);
            v.parent = (id > 1).then(|| id - 1);
            v.read_only = id < N;
            v
        })
        .collect();
    let mut m = Meta {
        generation: 2,
        next_id: N + 1,
        vols: Meta::vols_of(vols.clone()),
        clean_from: 0,
    };
    assert_eq!(check_references(&m), Ok(()));
    vols[0].parent = Some(N - 1);
    m.vols = Meta::vols_of(vols);
    let e = check_references(&m).unwrap_err();
    assert!(e.contains("its own ancestor"), "{e}");
}
