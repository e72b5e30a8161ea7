#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Crash consistency: the same workload is cut short at every write the pool issues
//! (the device stops persisting after its N-th write, for every N), then the pool is
//! loaded from what reached the device and must hold either the state before or the
//! state after the step that was cut, block by block, with consistent accounting —
//! also when the interrupted write is torn (its first block lands).

mod lvol_util;

use ferrox_bdev::lvol::{LvolError, LvolStore, FORMAT_VERSION};
use lvol_util::*;

const CS: u64 = 4096;

/// One round of the workload; rounds use their own names and build on what earlier
/// rounds left (round `r` writes `seed + 100 r`).
fn round(r: u64) -> Vec<Step> {
    let s = |x: &str| format!("{x}{r}");
    let w = |vol: &str, lba: u64, blocks: u64, seed: u64| Step::Write {
        vol: s(vol),
        lba,
        blocks,
        seed: seed + 100 * r,
    };
    vec![
        Step::Create {
            name: s("a"),
            size: 8 * CS,
            thin: true,
        },
        Step::Create {
            name: s("b"),
            size: 4 * CS,
            thin: false,
        },
        w("a", 0, 8, 1),
        w("a", 6, 8, 2), // crosses into a new cluster
        w("b", 3, 20, 3),
        w("a", 0, 8, 4), // in place
        Step::Snapshot {
            vol: s("a"),
            snap: s("s1"),
        },
        w("a", 2, 3, 5), // copy-on-write of a partial cluster
        w("a", 40, 16, 6),
        Step::Clone {
            snap: s("s1"),
            name: s("c1"),
        },
        w("c1", 1, 2, 7),
        Step::Unmap {
            vol: s("a"),
            lba: 0,
            blocks: 24,
        },
        w("a", 48, 8, 11),
        // Overlapping ranges at once, over the whole volume: clusters with the
        // snapshot's data beneath stay (zeroed), the others are freed.
        Step::Dsm {
            vol: s("a"),
            ranges: vec![(0, 64), (8, 16), (0, 64), (40, 20), (3, 2), (47, 9)],
        },
        Step::Resize {
            vol: s("b"),
            size: 6 * CS,
        },
        w("b", 40, 8, 8),
        Step::Resize {
            vol: s("b"),
            size: 2 * CS,
        },
        Step::Snapshot {
            vol: s("c1"),
            snap: s("s2"),
        },
        w("c1", 0, 16, 9),
        Step::Delete { vol: s("s2") }, // merges into c1
        Step::Inflate { vol: s("c1") },
        Step::Delete { vol: s("a") },
        Step::Delete { vol: s("s1") }, // no children left
        Step::Zero {
            vol: s("c1"),
            lba: 4,
            blocks: 4,
        },
        Step::Create {
            name: s("d"),
            size: 3 * CS,
            thin: true,
        },
        w("d", 0, 24, 10),
    ]
}

/// Whether the loaded pool is `before` or `after`, per 512-byte block for data and
/// as a whole for the set of volumes.
fn check_crash(
    store: &LvolStore,
    h: &ferrox_reactor::ReactorHandle,
    before: &Model,
    after: &Model,
) -> Result<(), String> {
    let list = store.list().map_err(|e| e.to_string())?;
    let mut names: Vec<String> = list.iter().map(|v| v.name.clone()).collect();
    names.sort();
    let b: Vec<String> = before.vols.keys().cloned().collect();
    let a: Vec<String> = after.vols.keys().cloned().collect();
    if names != b && names != a {
        return Err(format!("volumes {names:?}; before {b:?}, after {a:?}"));
    }
    for v in &list {
        let dev = store.volume(&v.name).map_err(|e| e.to_string())?;
        let got = read_all(h, dev).map_err(|e| e.to_string())?;
        let cands: Vec<&Vec<u8>> = [before, after]
            .iter()
            .filter_map(|m| m.vols.get(&v.name))
            .map(|x| &x.data)
            .collect();
        if !cands.iter().any(|c| c.len() == got.len()) {
            return Err(format!("volume {} has {} bytes", v.name, got.len()));
        }
        for (i, blk) in got.chunks(512).enumerate() {
            let ok = cands
                .iter()
                .any(|c| c.get(i * 512..(i + 1) * 512) == Some(blk));
            if !ok {
                return Err(format!(
                    "volume {} block {i} is neither the old nor the new data",
                    v.name
                ));
            }
        }
    }
    check_accounting(store)
}

/// Every free cluster reads as zeroes once a thin volume takes it, whether it is
/// zeroed on allocation or taken as clean (not written since the format): a crash
/// must not leave data in a cluster the pool believes clean.
fn probe_free_clusters(store: &LvolStore, h: &ferrox_reactor::ReactorHandle) -> Result<(), String> {
    let free = store.stats().map_err(|e| e.to_string())?.free_clusters;
    if free == 0 {
        return Ok(());
    }
    store
        .create_volume("probe", free * CS, true)
        .map_err(|e| e.to_string())?;
    let d: std::sync::Arc<dyn ferrox_bdev::BlockDevice> =
        store.volume("probe").map_err(|e| e.to_string())?;
    let per = CS / 512;
    // One 512-byte write at block 1 of every cluster allocates them all.
    let writes: Vec<Req> = (0..free)
        .map(|c| Req::Write(c * per + 1, vec![0xa5; 512]))
        .collect();
    for batch in writes.chunks(128) {
        for o in run(h, d.clone(), batch.to_vec()) {
            o.map_err(|e| format!("probe write: {e}"))?;
        }
    }
    let got = read_all(h, d).map_err(|e| e.to_string())?;
    for (i, blk) in got.chunks(512).enumerate() {
        let want = if i as u64 % per == 1 { 0xa5 } else { 0 };
        if blk.iter().any(|&b| b != want) {
            return Err(format!(
                "probe block {i} (free cluster {} of {free}) holds old data",
                i as u64 / per
            ));
        }
    }
    store.delete("probe").map_err(|e| e.to_string())
}

#[test]
fn a_power_cut_at_every_write_leaves_a_consistent_pool() {
    power_cuts(false, FORMAT_VERSION);
}

/// The same with the interrupted write torn: its first block lands. A metadata image
/// torn this way fails its checksum, so the image it was written over must not be
/// the one the allocation log extends.
#[test]
fn a_torn_write_at_every_write_leaves_a_consistent_pool() {
    power_cuts(true, FORMAT_VERSION);
}

/// The same on a pool of format version 3 (a whole image per change, allocation
/// records in the log), which this build keeps writing in its own format.
#[test]
fn a_power_cut_at_every_write_leaves_a_consistent_version_3_pool() {
    power_cuts(false, 3);
}

#[test]
fn a_torn_write_at_every_write_leaves_a_consistent_version_3_pool() {
    power_cuts(true, 3);
}

fn create(
    dev: std::sync::Arc<CrashBdev>,
    meta: &ferrox_reactor::ReactorHandle,
    version: u32,
) -> std::sync::Arc<LvolStore> {
    LvolStore::create_with_version(dev, "pool", CS, meta.clone(), version).unwrap()
}

fn power_cuts(torn: bool, version: u32) {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let steps: Vec<Step> = (0..3).flat_map(round).collect();

    // The whole workload without a cut: it must pass, and tells how many writes it does.
    let mem = malloc("m", 2 << 20);
    let dev = CrashBdev::new(mem, u64::MAX);
    let store = create(dev.clone(), &meta, version);
    let mut m = Model::new(CS);
    for s in &steps {
        apply(&store, &io, &mut m, s).unwrap();
    }
    check_against(&store, &m, &io).unwrap();
    let total = dev.writes();
    assert!(total > 100, "the workload writes {total} times");
    eprintln!("cutting the workload at each of its {total} writes");
    drop(store);

    let mut cut_in_step = vec![0u32; steps.len() + 1];
    for n in 0..=total {
        let mem = malloc("m", 2 << 20);
        // Old data everywhere: the format must make the data area read as zeroes.
        dirty(&io, mem.clone());
        let dev = if torn {
            CrashBdev::torn(mem.clone(), n)
        } else {
            CrashBdev::new(mem.clone(), n)
        };
        let store = create(dev.clone(), &meta, version);
        if dev.is_cut() {
            // Cut while formatting: no pool, or an empty one.
            drop(store);
            match LvolStore::load(mem, meta.clone()) {
                Err(LvolError::NotAPool { .. }) => {}
                Ok(s) => assert_eq!(s.list().unwrap().len(), 0),
                Err(e) => panic!("cut at write {n} during format: {e}"),
            }
            cut_in_step[0] += 1;
            continue;
        }
        let mut after = Model::new(CS);
        let mut before = after.clone();
        for (i, s) in steps.iter().enumerate() {
            before = after.clone();
            apply(&store, &io, &mut after, s).unwrap_or_else(|e| panic!("cut at write {n}: {e}"));
            if dev.is_cut() {
                cut_in_step[i + 1] += 1;
                break;
            }
        }
        drop(store);
        let store = LvolStore::load(mem, meta.clone())
            .unwrap_or_else(|e| panic!("cut at write {n}: the pool does not load: {e}"));
        check_crash(&store, &io, &before, &after)
            .unwrap_or_else(|e| panic!("cut at write {n}: {e}"));
        // First, before anything overwrites them: the free clusters hold nothing old.
        probe_free_clusters(&store, &io).unwrap_or_else(|e| panic!("cut at write {n}: {e}"));
        // The loaded pool keeps working: a new volume takes a write.
        store.create_volume("after-crash", CS, true).unwrap();
        let d = store.volume("after-crash").unwrap();
        write(&io, d.clone(), 0, pattern(99, 4096)).unwrap();
        assert_eq!(read(&io, d, 0, 8).unwrap(), pattern(99, 4096));
    }
    // Every step was cut somewhere.
    assert!(
        cut_in_step.iter().all(|&c| c > 0),
        "cuts per step: {cut_in_step:?}"
    );
}
