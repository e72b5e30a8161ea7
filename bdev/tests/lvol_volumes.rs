#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Volumes end to end: thin and thick I/O, snapshots with copy-on-write, clones,
//! resize, delete with merge, inflate, from two reactors, across a reload.

mod lvol_util;

use std::sync::Arc;

use ferrox_bdev::lvol::{LvolError, LvolStore};
use ferrox_bdev::{BdevError, BlockDevice};
use lvol_util::*;

const CS: u64 = 64 << 10;

fn dev(v: Arc<ferrox_bdev::lvol::LvolBdev>) -> Arc<dyn BlockDevice> {
    v
}

#[test]
fn thin_and_thick_volumes_read_back_after_reload() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let base = malloc("base", 8 << 20);
    let store = LvolStore::create(base.clone(), "pool", CS, meta.clone()).unwrap();
    let thin = store.create_volume("thin", 300 << 10, true).unwrap();
    assert_eq!(thin.size, 320 << 10, "rounded up to whole clusters");
    assert_eq!(thin.allocated_clusters, 0);
    let thick = store.create_volume("thick", 256 << 10, false).unwrap();
    assert_eq!(thick.allocated_clusters, 4);
    let st = store.stats().unwrap();
    assert_eq!(st.allocated_clusters, 4);

    let t = dev(store.volume("thin").unwrap());
    let k = dev(store.volume("thick").unwrap());
    assert_eq!(
        read(&io, t.clone(), 0, 8).unwrap(),
        vec![0; 4096],
        "thin reads zeroes"
    );
    assert_eq!(
        read(&io, k.clone(), 100, 8).unwrap(),
        vec![0; 4096],
        "thick reads zeroes"
    );
    // A write crossing a cluster boundary, on each.
    let lba = CS / 512 - 4;
    write(&io, t.clone(), lba, pattern(1, 8192)).unwrap();
    write(&meta, k.clone(), lba, pattern(2, 8192)).unwrap();
    assert_eq!(store.volume("thin").unwrap().info().num_blocks, 640);
    assert_eq!(
        store
            .list()
            .unwrap()
            .iter()
            .find(|v| v.name == "thin")
            .unwrap()
            .allocated_clusters,
        2
    );
    assert_eq!(read(&io, t.clone(), lba, 16).unwrap(), pattern(1, 8192));
    assert_eq!(read(&io, k.clone(), lba, 16).unwrap(), pattern(2, 8192));
    drop(store);

    let store = LvolStore::load(base.clone(), meta.clone()).unwrap();
    assert_eq!(store.name(), "pool");
    let t = dev(store.volume("thin").unwrap());
    let k = dev(store.volume("thick").unwrap());
    assert_eq!(read(&io, t, lba, 16).unwrap(), pattern(1, 8192));
    assert_eq!(read(&io, k, lba, 16).unwrap(), pattern(2, 8192));
    assert_eq!(store.stats().unwrap().allocated_clusters, 6);
    check_accounting(&store).unwrap();
}

#[test]
fn many_first_writes_at_once_from_two_reactors() {
    let g = group(2);
    let base = malloc("base", 16 << 20);
    let store = LvolStore::create(base, "pool", CS, g.handles()[0].clone()).unwrap();
    store.create_volume("a", 4 << 20, true).unwrap();
    store.create_volume("b", 4 << 20, true).unwrap();
    let threads: Vec<_> = ["a", "b"]
        .iter()
        .zip(g.handles())
        .map(|(name, h)| {
            let (d, h) = (dev(store.volume(name).unwrap()), h.clone());
            std::thread::spawn(move || {
                // 64 writes of 4 KiB, two per cluster, all submitted together.
                let reqs: Vec<Req> = (0..64u64)
                    .map(|i| Req::Write(i * 64, pattern(i + 100 * h.id() as u64, 4096)))
                    .collect();
                for o in run(&h, d.clone(), reqs) {
                    o.unwrap();
                }
                let reqs: Vec<Req> = (0..64u64).map(|i| Req::Read(i * 64, 8)).collect();
                for (i, o) in run(&h, d, reqs).into_iter().enumerate() {
                    assert_eq!(
                        o.unwrap().unwrap(),
                        pattern(i as u64 + 100 * h.id() as u64, 4096)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = store.stats().unwrap();
    assert_eq!(st.allocated_clusters, 64, "32 clusters per volume");
    check_accounting(&store).unwrap();
}

#[test]
fn snapshot_clone_resize_delete_inflate() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let base = malloc("base", 8 << 20);
    let store = LvolStore::create(base.clone(), "pool", CS, meta.clone()).unwrap();
    store.create_volume("vol", 4 * CS, false).unwrap();
    let v = dev(store.volume("vol").unwrap());
    write_big(&io, v.clone(), 0, &pattern(1, 4 * CS as usize)).unwrap();

    let snap = store.snapshot("vol", "snap1").unwrap();
    assert!(snap.snapshot);
    assert_eq!(snap.allocated_clusters, 4);
    // A partial write to a shared cluster copies the rest of it first.
    write(&io, v.clone(), 8, pattern(2, 1024)).unwrap();
    let mut want = pattern(1, 4 * CS as usize);
    want[4096..5120].copy_from_slice(&pattern(2, 1024));
    assert_eq!(read_all(&io, v.clone()).unwrap(), want);
    let s = dev(store.volume("snap1").unwrap());
    assert_eq!(
        read_all(&io, s.clone()).unwrap(),
        pattern(1, 4 * CS as usize)
    );
    assert_eq!(
        write(&io, s.clone(), 0, vec![0; 512]),
        Err(BdevError::Unsupported("writes to a snapshot"))
    );

    // Clones of the snapshot.
    store.clone_volume("snap1", "c1").unwrap();
    store.clone_volume("snap1", "c2").unwrap();
    assert!(matches!(
        store.clone_volume("vol", "c3"),
        Err(LvolError::NotSnapshot(_))
    ));
    let c1 = dev(store.volume("c1").unwrap());
    write(&io, c1.clone(), CS / 512, pattern(3, 512)).unwrap();
    assert!(matches!(
        store.delete("snap1"),
        Err(LvolError::HasClones(_, 3))
    ));

    // Resize: grow reads zeroes, shrink below data needs force.
    store.resize("c2", 6 * CS, false).unwrap();
    let c2 = dev(store.volume("c2").unwrap());
    assert_eq!(
        read(&io, c2.clone(), 5 * CS / 512, 8).unwrap(),
        vec![0; 4096]
    );
    write(&io, c2.clone(), 5 * CS / 512, pattern(4, 512)).unwrap();
    assert!(matches!(
        store.resize("c2", 2 * CS, false),
        Err(LvolError::WouldDropData { clusters: 1, .. })
    ));
    store.resize("c2", 2 * CS, true).unwrap();
    store.resize("c2", 6 * CS, true).unwrap();
    let c2 = dev(store.volume("c2").unwrap());
    assert_eq!(
        read(&io, c2.clone(), 5 * CS / 512, 8).unwrap(),
        vec![0; 4096],
        "dropped data stays dropped"
    );
    assert_eq!(
        read(&io, c2.clone(), 3 * CS / 512, 8).unwrap(),
        vec![0; 4096],
        "the parent is not visible past a shrink"
    );
    assert_eq!(read(&io, c2.clone(), 0, 8).unwrap(), pattern(1, 4096));

    // Inflate c2: independent, same data.
    let before = read_all(&io, c2.clone()).unwrap();
    let inf = store.inflate("c2").unwrap();
    assert_eq!(inf.parent, None);
    assert_eq!(read_all(&io, c2.clone()).unwrap(), before);
    // Delete c1; then the snapshot has one child (vol) and merges into it.
    store.delete("c1").unwrap();
    let info = store
        .list()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "snap1")
        .unwrap();
    assert_eq!(info.clones, vec!["vol".to_string()]);
    assert_eq!(info.freed_on_delete, 1, "vol rewrote one cluster");
    let free_before = store.stats().unwrap().free_clusters;
    store.delete("snap1").unwrap();
    assert_eq!(store.stats().unwrap().free_clusters, free_before + 1);
    let vi = store
        .list()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "vol")
        .unwrap();
    assert_eq!(vi.parent, None);
    assert_eq!(vi.allocated_clusters, 4);
    assert_eq!(read_all(&io, v.clone()).unwrap(), want);
    check_accounting(&store).unwrap();
    drop(store);
    let store = LvolStore::load(base, meta).unwrap();
    let v = dev(store.volume("vol").unwrap());
    assert_eq!(read_all(&io, v).unwrap(), want);
    let c2 = dev(store.volume("c2").unwrap());
    assert_eq!(read_all(&io, c2).unwrap(), before);
    check_accounting(&store).unwrap();
}

#[test]
fn unmap_frees_whole_clusters_and_reads_zeroes() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let store = LvolStore::create(malloc("base", 8 << 20), "pool", CS, h.clone()).unwrap();
    store.create_volume("v", 4 * CS, true).unwrap();
    let v = dev(store.volume("v").unwrap());
    write_big(&h, v.clone(), 0, &pattern(1, 4 * CS as usize)).unwrap();
    assert_eq!(store.stats().unwrap().allocated_clusters, 4);
    // Unmap from the middle of cluster 0 to the middle of cluster 3.
    let (a, b) = (CS / 1024, 3 * CS / 512 + CS / 1024);
    run(&h, v.clone(), vec![Req::Unmap(a, b - a)])
        .remove(0)
        .unwrap();
    assert_eq!(
        store.stats().unwrap().allocated_clusters,
        2,
        "clusters 1 and 2 freed"
    );
    let mut want = pattern(1, 4 * CS as usize);
    want[(a * 512) as usize..(b * 512) as usize].fill(0);
    assert_eq!(read_all(&h, v.clone()).unwrap(), want);
    // Write zeroes over data from a snapshot keeps the zeroes (cluster stays owned).
    store.snapshot("v", "s").unwrap();
    run(&h, v.clone(), vec![Req::Zero(0, 8)]).remove(0).unwrap();
    want[..4096].fill(0);
    assert_eq!(read_all(&h, v).unwrap(), want);
    check_accounting(&store).unwrap();
}

#[test]
fn open_volumes_cannot_be_deleted_and_names_are_checked() {
    let g = group(1);
    let h = g.handles()[0].clone();
    let store = LvolStore::create(malloc("base", 4 << 20), "pool", CS, h.clone()).unwrap();
    store.create_volume("v", CS, true).unwrap();
    assert!(matches!(
        store.create_volume("v", CS, true),
        Err(LvolError::Exists(_))
    ));
    assert!(matches!(
        store.create_volume("a/b", CS, true),
        Err(LvolError::Invalid(_))
    ));
    assert!(matches!(store.delete("nope"), Err(LvolError::NotFound(_))));
    let v = dev(store.volume("v").unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let d = v.clone();
    h.send(move |r| {
        let chan = ferrox_bdev::IoChannel::open(d, r).unwrap();
        tx.send(()).unwrap();
        // Keep the channel open for a while on this reactor.
        std::mem::forget(chan);
    })
    .unwrap();
    rx.recv().unwrap();
    assert!(matches!(store.delete("v"), Err(LvolError::Busy(..))));
    // Calling from a reactor thread is refused instead of deadlocking.
    let s2 = store.clone();
    let on_reactor = h
        .call(move |_| s2.stats().map(|_| ()))
        .unwrap()
        .wait()
        .unwrap();
    assert!(matches!(on_reactor, Err(LvolError::OnReactor)));
}

#[test]
fn snapshots_while_writes_are_in_flight() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let store = LvolStore::create(malloc("base", 16 << 20), "pool", CS, meta).unwrap();
    store.create_volume("v", 16 * CS, true).unwrap();
    let v = dev(store.volume("v").unwrap());
    const ROUNDS: u64 = 20;
    // Round r writes block b with a pattern of (r, b); 64 blocks spread over all clusters.
    let block = |r: u64, b: u64| pattern(r * 1000 + b, 512);
    let writer = {
        let (v, io) = (v.clone(), io.clone());
        std::thread::spawn(move || {
            for r in 1..=ROUNDS {
                let reqs = (0..64u64)
                    .map(|b| Req::Write(b * 32, block(r, b)))
                    .collect();
                for o in run(&io, v.clone(), reqs) {
                    o.unwrap();
                }
            }
        })
    };
    for i in 0..5 {
        store.snapshot("v", &format!("s{i}")).unwrap();
    }
    writer.join().unwrap();
    for b in 0..64u64 {
        assert_eq!(read(&io, v.clone(), b * 32, 1).unwrap(), block(ROUNDS, b));
    }
    // Each snapshot holds, per block, some round's data (or zeroes before the first).
    for i in 0..5 {
        let s = dev(store.volume(&format!("s{i}")).unwrap());
        for b in 0..64u64 {
            let got = read(&io, s.clone(), b * 32, 1).unwrap();
            let ok = got == vec![0; 512] || (1..=ROUNDS).any(|r| got == block(r, b));
            assert!(ok, "snapshot s{i} block {b}");
        }
    }
    check_accounting(&store).unwrap();
}

#[test]
fn copy_on_write_of_large_clusters_keeps_every_piece() {
    // 1 MiB clusters are copied in several pieces, several clusters at once.
    const BIG: u64 = 1 << 20;
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let store = LvolStore::create(malloc("base", 24 << 20), "pool", BIG, meta).unwrap();
    store.create_volume("v", 6 * BIG, true).unwrap();
    let v = dev(store.volume("v").unwrap());
    let old = pattern(11, (6 * BIG) as usize);
    for (i, piece) in old.chunks(64 << 10).enumerate() {
        write(&io, v.clone(), i as u64 * 128, piece.to_vec()).unwrap();
    }
    store.snapshot("v", "s").unwrap();
    let v = dev(store.volume("v").unwrap());
    // One 4 KiB write in the middle of each cluster, all at once: several copies in
    // one allocation batch.
    let mut want = old.clone();
    let mut reqs = Vec::new();
    for c in 0..6u64 {
        let at = c * BIG + 300 * 1024;
        let new = pattern(100 + c, 4096);
        want[at as usize..at as usize + 4096].copy_from_slice(&new);
        reqs.push(Req::Write(at / 512, new));
    }
    for out in run(&io, v.clone(), reqs) {
        out.unwrap();
    }
    // 64 KiB at a time: more at once would drain the test pool's large buffers.
    let read_64k = |d: &Arc<dyn BlockDevice>| -> Vec<u8> {
        (0..6 * BIG / (64 << 10))
            .flat_map(|i| read(&io, d.clone(), i * 128, 128).unwrap())
            .collect()
    };
    assert!(read_64k(&v) == want, "the volume after copy-on-write");
    let s = dev(store.volume("s").unwrap());
    assert!(read_64k(&s) == old, "the snapshot is unchanged");
}
