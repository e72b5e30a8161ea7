//! Random writes, faults and rebuilds (some running while the writes go on) against
//! a reference model: every read matches it, and at the end every child holds it.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        lba: u64,
        blocks: u64,
        seed: u64,
    },
    Zero {
        lba: u64,
        blocks: u64,
    },
    Read {
        lba: u64,
        blocks: u64,
    },
    Fail(usize),
    Rebuild {
        child: usize,
        full: bool,
    },
    /// Waits for the running rebuild.
    Join,
}

const KIDS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    // Eight regions: writes often meet the region a rebuild is copying.
    let lba = 0..8 * REGION_BLOCKS - 16;
    prop_oneof![
        6 => (lba.clone(), 1..=16u64, any::<u64>())
            .prop_map(|(lba, blocks, seed)| Op::Write { lba, blocks, seed }),
        1 => (lba.clone(), 1..=16u64).prop_map(|(lba, blocks)| Op::Zero { lba, blocks }),
        2 => (lba, 1..=16u64).prop_map(|(lba, blocks)| Op::Read { lba, blocks }),
        1 => (0..KIDS).prop_map(Op::Fail),
        2 => (0..KIDS, any::<bool>()).prop_map(|(child, full)| Op::Rebuild { child, full }),
        1 => Just(Op::Join),
    ]
}

macro_rules! ensure {
    ($c:expr, $($m:tt)*) => {
        if !$c {
            return Err(format!($($m)*));
        }
    };
}

async fn run_case(ops: Vec<Op>, jitter: u64) -> Result<(), String> {
    let f = fixture(
        KIDS,
        NexusConfig {
            rebuild_rate: MAX_REBUILD_RATE,
            ..cfg()
        },
    );
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    for k in &kids {
        k.set_jitter(jitter);
    }
    let ch = open(&nx);
    let mut model = vec![0u8; (BLOCKS * 512) as usize];
    let mut failing = [false; KIDS];
    let mut rebuild: Option<ferrox_reactor::JoinHandle<Result<RebuildStatus, NexusError>>> = None;
    for op in ops {
        match op {
            Op::Write { lba, blocks, seed } => {
                let data = pattern(seed, (blocks * 512) as usize);
                let res = write(&ch, lba, &data).await;
                ensure!(res.is_ok(), "write {lba}+{blocks}: {res:?}");
                model[lba as usize * 512..][..data.len()].copy_from_slice(&data);
            }
            Op::Zero { lba, blocks } => {
                let res = ch.submit_async(IoOp::WriteZeroes { lba, blocks }).await.0;
                ensure!(res.is_ok(), "zero {lba}+{blocks}: {res:?}");
                model[lba as usize * 512..][..blocks as usize * 512].fill(0);
            }
            Op::Read { lba, blocks } => {
                let got = read(&ch, lba, blocks).await;
                let want = &model[lba as usize * 512..][..blocks as usize * 512];
                ensure!(got.as_deref() == Ok(want), "read {lba}+{blocks} differs");
            }
            Op::Fail(c) => {
                // Keep one child that serves: a healthy one not told to fail.
                let good = (0..KIDS)
                    .any(|i| i != c && !failing[i] && nx.child_state(i) == ChildState::Healthy);
                if good {
                    failing[c] = true;
                    kids[c].fail();
                }
            }
            Op::Rebuild { child, full } => {
                let busy = rebuild.as_ref().is_some_and(|h| !h.is_finished());
                if !busy && nx.child_state(child) == ChildState::Faulted {
                    failing[child] = false;
                    kids[child].come_back();
                    let mode = if full {
                        RebuildMode::Full
                    } else {
                        RebuildMode::Partial
                    };
                    let job = nx.clone().rebuild(child, mode);
                    rebuild = Some(Reactor::with(|r| r.spawn_local(job)));
                }
            }
            Op::Join => {
                if let Some(h) = rebuild.take() {
                    // May fail (its source was told to fail): it is retried below.
                    let _ = h.await;
                }
            }
        }
    }
    if let Some(h) = rebuild.take() {
        let _ = h.await;
    }
    for (i, k) in kids.iter().enumerate() {
        if failing[i] {
            k.come_back();
        }
    }
    // Children that failed a request only now, faulted, then rebuilt in turn.
    for i in 0..KIDS {
        if nx.child_state(i) == ChildState::Faulted {
            let res = nx.clone().rebuild(i, RebuildMode::Partial).await;
            ensure!(res.is_ok(), "final rebuild of {i}: {res:?}");
        }
    }
    ensure!(
        nx.child_states() == vec![ChildState::Healthy; KIDS],
        "states {:?}",
        nx.child_states()
    );
    ensure!(
        nx.dirty().count() == 0,
        "dirty left: {:?}",
        nx.dirty().dirty_regions()
    );
    for (i, k) in kids.iter().enumerate() {
        ensure!(
            content(k.mem.clone()).await == model,
            "child {i} differs from the model"
        );
    }
    Ok(())
}

#[test]
fn random_writes_faults_and_rebuilds_match_a_model() {
    let g = group();
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(proptest::collection::vec(op(), 1..60), 0..8u64),
            |(ops, jitter)| on(&g, move || run_case(ops, jitter)).map_err(TestCaseError::fail),
        )
        .unwrap();
}
