use ferrox_bdev::Ops;

use super::*;

fn info(blocks: u64, block_size: u32) -> BdevInfo {
    BdevInfo {
        name: "t".into(),
        uuid: [0; 16],
        block_size,
        num_blocks: blocks,
        optimal_io_boundary: 0,
        max_transfer: 1 << 20,
        ops: Ops::empty(),
        volatile_cache: false,
    }
}

fn workload(rw: Rw, bs: u64, align: Option<u64>, range: u64) -> Workload {
    Workload {
        rw,
        bs,
        align,
        range: Some(RangeSpec::Bytes(range)),
        verify: true,
        ..Workload::default()
    }
}

/// The blocks core `i`'s random requests may touch.
fn touched(p: &Plan, i: u64, n: u64) -> (u64, u64) {
    let (a, b) = p.own_slots(i, n, true);
    assert!(a < b, "core {i} of {n} has no slot");
    (a * p.align_blocks, (b - 1) * p.align_blocks + p.bs_blocks)
}

#[test]
fn with_verify_each_core_writes_its_own_blocks() {
    for (bs, align, range, cores) in [
        (4096, None, 1 << 20, 2),
        (4096, Some(512), 1 << 20, 3),
        (8192, Some(1536), 1 << 20, 4),
        (4096, None, 5 * 4096, 5),
        (65536, Some(4096), (1 << 20) + 3 * 512, 3),
    ] {
        let w = workload(Rw::RandWrite, bs, align, range);
        let p = plan(&w, &info(1 << 20, 512), cores).unwrap();
        let n = u64::from(p.cores);
        let mut end = 0;
        for i in 0..n {
            let (lo, hi) = touched(&p, i, n);
            assert!(
                lo >= end,
                "{bs} {align:?} {cores}: core {i} overlaps core {}",
                i - 1
            );
            assert!(hi <= p.range_blocks);
            // Every request covers whole tracker units.
            assert_eq!(lo % p.unit_blocks(), 0);
            end = hi;
        }
        // Without --verify (or on one core), every core draws from every slot.
        assert_eq!(p.own_slots(1, n, false), (0, p.slots));
        assert_eq!(p.own_slots(0, 1, true), (0, p.slots));
    }
}

#[test]
fn one_pass_slices_are_whole_tracker_units() {
    let w = workload(Rw::Write, 8192, Some(4096), 1_000_000 / 512 * 512);
    let p = plan(&w, &info(1 << 20, 512), 3).unwrap();
    assert_eq!(p.unit_blocks(), 8);
    let progress = Progress::new(3);
    let t = Arc::new(p.tracker());
    let fill = jobs(&w, &p, JobKind::Fill, &progress, Some(&t));
    let mut at = 0;
    for j in &fill {
        assert_eq!(j.part.0, at);
        assert_eq!(j.part.0 % 8, 0);
        at = j.part.1;
    }
    assert_eq!(at, p.range_blocks, "the slices cover the range");
    assert!(fill.iter().all(|j| j.verify.is_some()));
    assert!(jobs(&w, &p, JobKind::Fill, &progress, None)
        .iter()
        .all(|j| j.verify.is_none()));
}

#[test]
fn verify_refuses_what_it_cannot_track() {
    // 8 TiB of 512-byte requests: 16 bytes per unit would take 256 GiB.
    let w = workload(Rw::RandRw, 512, None, 8 << 40);
    let e = plan(&w, &info(16 << 30, 512), 1).unwrap_err();
    assert!(e.to_string().contains("--verify keeps"), "{e}");
    // Two 4 KiB requests cannot be split over three cores.
    let w = workload(Rw::RandRw, 4096, None, 8192);
    let e = plan(&w, &info(1 << 20, 512), 3).unwrap_err();
    assert!(e.to_string().contains("too small for --verify"), "{e}");
    // Without --verify both are fine.
    let w = Workload {
        verify: false,
        ..workload(Rw::RandRw, 4096, None, 8192)
    };
    assert!(plan(&w, &info(1 << 20, 512), 3).is_ok());
}
