#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test module
//! Property test: random sequences of volume operations against the real pool and a
//! plain in-memory model, comparing every read, with reloads in between.

mod lvol_util;

use ferrox_bdev::lvol::LvolStore;
use lvol_util::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CS: u64 = 4096;
/// Blocks per cluster.
const CB: u64 = CS / 512;

#[derive(Clone, Debug)]
enum Spec {
    Create(u64, bool),
    Write(usize, u64, u64, u64),
    Read(usize, u64, u64),
    Zero(usize, u64, u64),
    Unmap(usize, u64, u64),
    /// Several (possibly overlapping) unmaps at once, as one DSM deallocate.
    Dsm(usize, Vec<(u64, u64)>),
    Snapshot(usize),
    Clone(usize),
    Resize(usize, u64),
    Delete(usize),
    Inflate(usize),
    Reload,
}

fn spec() -> impl Strategy<Value = Spec> {
    let vi = any::<usize>();
    let off = 0..16 * CB;
    let len = 1..3 * CB;
    prop_oneof![
        2 => (1..8u64, any::<bool>()).prop_map(|(c, t)| Spec::Create(c * CS - 100, t)),
        8 => (vi, off.clone(), len.clone(), any::<u64>()).prop_map(|(v, o, l, s)| Spec::Write(v, o, l, s)),
        4 => (vi, off.clone(), len.clone()).prop_map(|(v, o, l)| Spec::Read(v, o, l)),
        1 => (vi, off.clone(), len.clone()).prop_map(|(v, o, l)| Spec::Zero(v, o, l)),
        2 => (vi, off.clone(), len.clone()).prop_map(|(v, o, l)| Spec::Unmap(v, o, l)),
        1 => (vi, proptest::collection::vec((off.clone(), 1..12 * CB), 1..12))
            .prop_map(|(v, r)| Spec::Dsm(v, r)),
        2 => vi.prop_map(Spec::Snapshot),
        2 => vi.prop_map(Spec::Clone),
        1 => (vi, 1..10u64).prop_map(|(v, c)| Spec::Resize(v, c * CS)),
        2 => vi.prop_map(Spec::Delete),
        1 => vi.prop_map(Spec::Inflate),
        1 => Just(Spec::Reload),
    ]
}

/// Turns a spec into a step on the current model: volume indices pick among the
/// existing volumes, ranges are clipped to the volume.
fn resolve(s: &Spec, m: &Model, counter: &mut u32) -> Option<Step> {
    let names: Vec<String> = m.vols.keys().cloned().collect();
    let pick = |i: usize| (!names.is_empty()).then(|| names[i % names.len()].clone());
    let mut fresh = || {
        *counter += 1;
        format!("v{counter}")
    };
    let clip = |vol: &str, o: u64, l: u64| {
        let nb = m.vols[vol].data.len() as u64 / 512;
        let o = o % nb;
        (o, l.min(nb - o))
    };
    Some(match s.clone() {
        Spec::Create(size, thin) => Step::Create {
            name: fresh(),
            size,
            thin,
        },
        Spec::Write(v, o, l, seed) => {
            let vol = pick(v)?;
            let (lba, blocks) = clip(&vol, o, l);
            Step::Write {
                vol,
                lba,
                blocks,
                seed,
            }
        }
        Spec::Read(v, o, l) => {
            let vol = pick(v)?;
            let (lba, blocks) = clip(&vol, o, l);
            Step::Read { vol, lba, blocks }
        }
        Spec::Zero(v, o, l) => {
            let vol = pick(v)?;
            let (lba, blocks) = clip(&vol, o, l);
            Step::Zero { vol, lba, blocks }
        }
        Spec::Dsm(v, ranges) => {
            let vol = pick(v)?;
            let ranges = ranges.iter().map(|&(o, l)| clip(&vol, o, l)).collect();
            Step::Dsm { vol, ranges }
        }
        Spec::Unmap(v, o, l) => {
            let vol = pick(v)?;
            let (lba, blocks) = clip(&vol, o, l);
            Step::Unmap { vol, lba, blocks }
        }
        Spec::Snapshot(v) => Step::Snapshot {
            vol: pick(v)?,
            snap: fresh(),
        },
        Spec::Clone(v) => Step::Clone {
            snap: pick(v)?,
            name: fresh(),
        },
        Spec::Resize(v, size) => Step::Resize {
            vol: pick(v)?,
            size,
        },
        Spec::Delete(v) => Step::Delete { vol: pick(v)? },
        Spec::Inflate(v) => Step::Inflate { vol: pick(v)? },
        Spec::Reload => return None,
    })
}

#[test]
fn random_operations_match_the_model() {
    let g = group(2);
    let (meta, io) = (g.handles()[0].clone(), g.handles()[1].clone());
    let cases: u32 = std::env::var("LVOL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(spec(), 1..48);
    runner
        .run(&strategy, |specs| {
            // A small pool (about 60 clusters) so running out of space happens too.
            let base = malloc("base", 512 << 10);
            let mut store = LvolStore::create(base.clone(), "pool", CS, meta.clone()).unwrap();
            let mut m = Model::new(CS);
            let mut counter = 0;
            for (i, s) in specs.iter().enumerate() {
                let h = if i % 2 == 0 { &io } else { &meta };
                match resolve(s, &m, &mut counter) {
                    Some(step) => apply(&store, h, &mut m, &step).map_err(TestCaseError::fail)?,
                    None if matches!(s, Spec::Reload) => {
                        drop(store);
                        store = LvolStore::load(base.clone(), meta.clone()).unwrap();
                    }
                    None => {}
                }
            }
            check_against(&store, &m, &io).map_err(TestCaseError::fail)?;
            drop(store);
            let store = LvolStore::load(base, meta.clone()).unwrap();
            check_against(&store, &m, &io).map_err(TestCaseError::fail)?;
            Ok(())
        })
        .unwrap();
}
