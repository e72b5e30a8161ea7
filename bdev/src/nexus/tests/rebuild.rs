use std::rc::Rc;

use ferrox_reactor::task::yield_now;

use super::*;

/// Polls `cond` once per reactor turn until it holds; panics after 5 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        yield_now().await;
    }
}

fn fast() -> NexusConfig {
    NexusConfig {
        rebuild_rate: MAX_REBUILD_RATE,
        ..cfg()
    }
}

async fn all_equal(kids: &[Arc<TestChild>]) -> Vec<u8> {
    let first = content(kids[0].mem.clone()).await;
    for (i, k) in kids.iter().enumerate().skip(1) {
        assert!(content(k.mem.clone()).await == first, "child {i} differs");
    }
    first
}

#[test]
fn a_partial_rebuild_copies_only_the_dirty_regions() {
    let g = group();
    let f = fixture(3, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (copied, status, data) = on(&g, move || async move {
        let ch = open(&nx);
        write(&ch, 0, &pattern(1, 65536)).await.unwrap();
        kids[2].fail();
        write(&ch, 2 * REGION_BLOCKS, &pattern(2, 4096))
            .await
            .unwrap();
        // Regions 7 and 8.
        write(&ch, 8 * REGION_BLOCKS - 4, &pattern(3, 4096))
            .await
            .unwrap();
        ch.submit_async(IoOp::WriteZeroes {
            lba: 30 * REGION_BLOCKS,
            blocks: 3,
        })
        .await
        .0
        .unwrap();
        assert_eq!(nx.dirty().dirty_regions(), vec![2, 7, 8, 30]);
        kids[2].come_back();
        let before = kids[2].written.load(Ordering::SeqCst);
        let status = nx.clone().rebuild(2, RebuildMode::Partial).await.unwrap();
        let copied = kids[2].written.load(Ordering::SeqCst) - before;
        (copied, status, all_equal(&kids).await)
    });
    assert_eq!(copied, 4 * REGION, "only the four dirty regions are copied");
    assert_eq!(status.phase, RebuildPhase::Done);
    assert_eq!((status.copied, status.total), (4 * REGION, 4 * REGION));
    assert_eq!(status.mode, RebuildMode::Partial);
    assert_eq!((status.child, status.source), (2, 0));
    assert_eq!(f.nx.child_states(), vec![ChildState::Healthy; 3]);
    assert_eq!(f.nx.dirty().count(), 0, "the copied regions are clean");
    assert!(f.log.stored().unwrap().iter().all(|&w| w == 0));
    assert_eq!(
        *f.rec.events.lock().unwrap(),
        vec!["record 2 Faulted", "record 2 Healthy"]
    );
    assert_eq!(&data[..65536], &pattern(1, 65536)[..]);
    let at = (8 * REGION_BLOCKS - 4) as usize * 512;
    assert_eq!(&data[at..at + 4096], &pattern(3, 4096)[..]);
}

#[test]
fn a_full_rebuild_copies_everything() {
    let g = group();
    let f = fixture(2, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (copied, status) = on(&g, move || async move {
        let ch = open(&nx);
        kids[1].fail();
        write(&ch, 100, &pattern(4, 1024)).await.unwrap();
        kids[1].come_back();
        let before = kids[1].written.load(Ordering::SeqCst);
        let status = nx.clone().rebuild(1, RebuildMode::Full).await.unwrap();
        let copied = kids[1].written.load(Ordering::SeqCst) - before;
        all_equal(&kids).await;
        (copied, status)
    });
    assert_eq!(copied, BLOCKS * 512);
    assert_eq!(status.total, BLOCKS * 512);
    assert_eq!(status.copied, BLOCKS * 512);
    assert_eq!(f.nx.child_state(1), ChildState::Healthy);
    assert_eq!(f.nx.dirty().count(), 0);
}

/// The copy of a region reads the source, then writes the child. A host write into
/// that region between the two must not be overwritten by the older bytes: here the
/// source's read is done but its completion held until the host write was issued.
#[test]
fn a_host_write_into_the_region_being_copied_ends_identical() {
    let g = group();
    // No preferred child: reads go round robin over the healthy ones.
    let f = fixture(
        2,
        NexusConfig {
            preferred: None,
            ..fast()
        },
    );
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (blocked, other_done, data) = on(&g, move || async move {
        let ch = Rc::new(open(&nx));
        kids[1].fail();
        write(&ch, 4 * REGION_BLOCKS, &pattern(1, 65536))
            .await
            .unwrap();
        kids[1].come_back();
        kids[0].hold_read_at(4 * REGION_BLOCKS);
        let rb = Reactor::with(|r| r.spawn_local(nx.clone().rebuild(1, RebuildMode::Partial)));
        until("the rebuild's read of region 4", || kids[0].held() == 1).await;
        assert_eq!(nx.child_state(1), ChildState::Rebuilding);
        // Into the region being copied: waits for the copy.
        let c2 = ch.clone();
        let host = Reactor::with(|r| {
            r.spawn_local(async move { write(&c2, 4 * REGION_BLOCKS + 8, &pattern(2, 4096)).await })
        });
        // Outside it: not held up, and reaches the rebuilding child as well.
        let c3 = ch.clone();
        let other = Reactor::with(|r| {
            r.spawn_local(async move { write(&c3, 9 * REGION_BLOCKS, &pattern(3, 4096)).await })
        });
        // Reads while the child is Rebuilding never go to it.
        let reads_before = kids[1].reads.load(Ordering::SeqCst);
        for i in 0..6 {
            read(&ch, i * REGION_BLOCKS * 10, 8).await.unwrap();
        }
        assert_eq!(kids[1].reads.load(Ordering::SeqCst), reads_before);
        for _ in 0..200 {
            yield_now().await;
        }
        let blocked = !host.is_finished();
        let other_done = other.is_finished();
        kids[0].release();
        rb.await.unwrap().unwrap();
        host.await.unwrap().unwrap();
        other.await.unwrap().unwrap();
        (blocked, other_done, all_equal(&kids).await)
    });
    assert!(
        blocked,
        "a write into the region being copied waits for the copy"
    );
    assert!(other_done, "a write elsewhere does not wait");
    let at = (4 * REGION_BLOCKS as usize + 8) * 512;
    assert_eq!(&data[at..at + 4096], &pattern(2, 4096)[..]);
    let at = 9 * REGION_BLOCKS as usize * 512;
    assert_eq!(&data[at..at + 4096], &pattern(3, 4096)[..]);
    assert_eq!(f.nx.child_states(), vec![ChildState::Healthy; 2]);
}

#[test]
fn a_rebuild_is_rate_limited_and_reports_progress() {
    let g = group();
    let f = fixture(3, cfg());
    f.nx.set_rebuild_rate(MIN_REBUILD_RATE).unwrap();
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (took, running, second, status) = on(&g, move || async move {
        let ch = open(&nx);
        kids[1].fail();
        kids[2].fail();
        for r in [1, 5, 9, 13] {
            write(&ch, r * REGION_BLOCKS, &pattern(r, 512))
                .await
                .unwrap();
        }
        kids[1].come_back();
        kids[2].come_back();
        let t = Instant::now();
        let rb = Reactor::with(|r| r.spawn_local(nx.clone().rebuild(1, RebuildMode::Partial)));
        let n2 = nx.clone();
        until("the first region copied", || {
            n2.rebuild_status().is_some_and(|s| s.copied > 0)
        })
        .await;
        let running = nx.rebuild_status().unwrap();
        let second = nx.clone().rebuild(2, RebuildMode::Partial).await;
        let status = rb.await.unwrap().unwrap();
        (t.elapsed(), running, second, status)
    });
    // 256 KiB at 1 MiB/s: a quarter of a second at least.
    assert!(took >= Duration::from_millis(240), "{took:?}");
    assert_eq!(running.phase, RebuildPhase::Running);
    assert!(running.copied < running.total, "{running:?}");
    assert!(running
        .eta()
        .is_some_and(|e| e > Duration::ZERO && e < Duration::from_secs(5)));
    assert_eq!(running.rate, MIN_REBUILD_RATE);
    assert!(
        matches!(second, Err(NexusError::RebuildRunning(_))),
        "{second:?}"
    );
    assert_eq!(status.copied, 4 * REGION);
    assert_eq!(status.eta(), None);
    // Child 2 is still faulted: the bits stay for its rebuild.
    assert_eq!(f.nx.dirty().dirty_regions(), vec![1, 5, 9, 13]);
    assert_eq!(f.nx.child_states()[2], ChildState::Faulted);
}

#[test]
fn rebuild_refuses_what_it_cannot_do() {
    let g = group();
    let f = fixture(2, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (healthy, missing, no_source) = on(&g, move || async move {
        let healthy = nx.clone().rebuild(0, RebuildMode::Full).await;
        let missing = nx.clone().rebuild(7, RebuildMode::Full).await;
        let ch = open(&nx);
        kids[0].fail();
        kids[1].fail();
        let _ = write(&ch, 0, &pattern(0, 512)).await;
        let no_source = nx.clone().rebuild(1, RebuildMode::Full).await;
        (healthy, missing, no_source)
    });
    assert!(
        matches!(healthy, Err(NexusError::NotFaulted { child: 0, .. })),
        "{healthy:?}"
    );
    assert!(
        matches!(missing, Err(NexusError::NoSuchChild { child: 7, .. })),
        "{missing:?}"
    );
    assert!(
        matches!(no_source, Err(NexusError::NoSource(_))),
        "{no_source:?}"
    );
}

#[test]
fn a_child_failing_during_its_rebuild_is_faulted_again() {
    let g = group();
    let f = fixture(2, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let res = on(&g, move || async move {
        let ch = open(&nx);
        kids[1].fail();
        write(&ch, 0, &pattern(0, 512)).await.unwrap();
        write(&ch, 10 * REGION_BLOCKS, &pattern(0, 512))
            .await
            .unwrap();
        // Still failing: the rebuild's first write fails.
        nx.clone().rebuild(1, RebuildMode::Partial).await
    });
    assert!(
        matches!(res, Err(NexusError::RebuildFailed { child: 1, .. })),
        "{res:?}"
    );
    assert_eq!(f.nx.child_state(1), ChildState::Faulted);
    assert_eq!(
        f.nx.dirty().dirty_regions(),
        vec![0, 10],
        "nothing copied, nothing cleared"
    );
    assert!(matches!(
        f.nx.rebuild_status().unwrap().phase,
        RebuildPhase::Failed(_)
    ));
}

/// The rebuild runs on one reactor while another writes: the range lock and the
/// wake-ups cross threads.
#[test]
fn writes_from_another_reactor_during_a_rebuild_end_identical() {
    let cores: Vec<usize> = available_cores().into_iter().cycle().take(2).collect();
    let g = ReactorGroup::start(&cores, &ReactorOptions::default(), pool()).unwrap();
    let f = fixture(2, cfg());
    // 4 MiB at 16 MiB/s: a quarter of a second of writes during the copy.
    f.nx.set_rebuild_rate(16 << 20).unwrap();
    for k in &f.kids {
        k.set_jitter(16);
    }
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let model = on(&g, move || async move {
        let ch = open(&nx);
        kids[1].fail();
        let mut model = vec![0u8; (BLOCKS * 512) as usize];
        for r in 0..BLOCKS / REGION_BLOCKS {
            let data = pattern(r, 4096);
            write(&ch, r * REGION_BLOCKS, &data).await.unwrap();
            model[(r * REGION) as usize..][..4096].copy_from_slice(&data);
        }
        kids[1].come_back();
        model
    });
    assert_eq!(f.nx.dirty().count(), BLOCKS / REGION_BLOCKS);
    let (tx, rb) = oneshot();
    let nx = f.nx.clone();
    g.handles()[0]
        .send(move |r: &Reactor| {
            r.spawn_local(async move { tx.send(nx.rebuild(1, RebuildMode::Partial).await) });
        })
        .unwrap();
    let nx = f.nx.clone();
    let (model, writes) = on_at(&g, 1, move || async move {
        let ch = open(&nx);
        until("the rebuild to start", || nx.rebuild_status().is_some()).await;
        let mut model = model;
        let mut writes = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while nx
            .rebuild_status()
            .is_some_and(|s| s.phase == RebuildPhase::Running)
            && Instant::now() < deadline
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Into the region being copied (the rebuild goes in order), mostly.
            let at = nx.rebuild_status().map_or(0, |s| s.copied / REGION);
            let lba = if x.is_multiple_of(4) {
                x % (BLOCKS - 16)
            } else {
                (at * REGION_BLOCKS + (x >> 8) % REGION_BLOCKS).min(BLOCKS - 16)
            };
            let blocks = 1 + (x >> 32) % 16;
            let data = pattern(x, (blocks * 512) as usize);
            write(&ch, lba, &data).await.unwrap();
            model[lba as usize * 512..][..data.len()].copy_from_slice(&data);
            writes += 1;
        }
        (model, writes)
    });
    let status = rb.wait_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(status.copied, BLOCKS * 512);
    assert!(writes > 10, "writes overlapped the rebuild: {writes}");
    let kids = f.kids.clone();
    on(&g, move || async move {
        assert!(
            all_equal(&kids).await == model,
            "the children hold the model"
        );
    });
    assert_eq!(f.nx.child_states(), vec![ChildState::Healthy; 2]);
}

/// A nexus restarted over the same children and dirty log: the faults come back
/// from the control plane's records, the dirty map from the log, and a partial
/// rebuild copies what was written while the child was down.
#[test]
fn after_a_restart_the_stored_dirty_map_drives_a_partial_rebuild() {
    let g = group();
    let meta = crate::malloc::MallocBdev::new("meta", 64, 512).unwrap();
    let regions = BLOCKS / REGION_BLOCKS;
    let kids: Vec<Arc<TestChild>> = (0..2)
        .map(|i| TestChild::new(&format!("c{i}"), BLOCKS))
        .collect();
    let rec = Arc::new(Recorder::default());
    let make = |kids: &[Arc<TestChild>], log: Arc<dyn DirtyLog>| {
        Nexus::new(
            "nx",
            kids.iter()
                .map(|k| k.clone() as Arc<dyn BlockDevice>)
                .collect(),
            fast(),
            rec.clone(),
            log,
        )
        .unwrap()
    };
    let log = || BdevDirtyLog::new(meta.clone(), 0, 4, regions).unwrap() as Arc<dyn DirtyLog>;
    let first = make(&kids, log());
    let (k2, f2) = (kids.clone(), first.clone());
    on(&g, move || async move {
        let ch = open(&f2);
        k2[1].fail();
        write(&ch, 3 * REGION_BLOCKS, &pattern(1, 4096))
            .await
            .unwrap();
        write(&ch, 9 * REGION_BLOCKS, &pattern(2, 4096))
            .await
            .unwrap();
    });
    let first_gen = first.generation();
    assert_eq!(first_gen, 1);
    // The restart: a new nexus, the same children and log device.
    let second = make(&kids, log());
    second.restore_faulted(1, false).unwrap();
    second.restore_generation(first_gen);
    second.restore_generation(0);
    assert_eq!(second.generation(), first_gen, "generations never go back");
    assert_eq!(second.rebuild_mode(1), Ok(RebuildMode::Full));
    let (nx, k2) = (second.clone(), kids.clone());
    let (early, found, copied) = on(&g, move || async move {
        let early = nx.clone().rebuild(1, RebuildMode::Partial).await;
        // A write before the load: its store keeps the stored bits.
        let ch = open(&nx);
        write(&ch, 20 * REGION_BLOCKS, &pattern(3, 512))
            .await
            .unwrap();
        let found = nx.load_dirty().await.unwrap();
        k2[1].come_back();
        let before = k2[1].written.load(Ordering::SeqCst);
        nx.clone().rebuild(1, RebuildMode::Partial).await.unwrap();
        let copied = k2[1].written.load(Ordering::SeqCst) - before;
        all_equal(&k2).await;
        (early, found, copied)
    });
    assert!(
        matches!(early, Err(NexusError::FullRebuildNeeded { .. })),
        "{early:?}"
    );
    assert!(found);
    assert_eq!(copied, 3 * REGION, "regions 3, 9 and 20");
    assert_eq!(second.child_states(), vec![ChildState::Healthy; 2]);
    let recs = rec.records.lock().unwrap().clone();
    let gens: Vec<(usize, ChildState, u64)> = recs
        .iter()
        .map(|r| (r.child, r.state, r.generation))
        .collect();
    assert_eq!(
        gens[..2],
        [(1, ChildState::Faulted, 1), (1, ChildState::Healthy, 2)],
        "the restarted nexus numbers on from the first one's records"
    );

    // A lost log: only a full rebuild, which makes the map whole again.
    let blank = crate::malloc::MallocBdev::new("blank", 64, 512).unwrap();
    let third = make(
        &kids,
        BdevDirtyLog::new(blank, 0, 4, regions).unwrap() as Arc<dyn DirtyLog>,
    );
    third.restore_faulted(0, false).unwrap();
    let (nx, k3) = (third.clone(), kids.clone());
    let (found, partial, full) = on(&g, move || async move {
        let found = nx.load_dirty().await.unwrap();
        let partial = nx.clone().rebuild(0, RebuildMode::Partial).await;
        let full = nx.clone().rebuild(0, RebuildMode::Full).await;
        all_equal(&k3).await;
        (found, partial, full.map(|s| s.copied))
    });
    assert!(!found);
    assert!(
        matches!(partial, Err(NexusError::FullRebuildNeeded { .. })),
        "{partial:?}"
    );
    assert_eq!(full, Ok(BLOCKS * 512));
    assert_eq!(third.rebuild_mode(0), Ok(RebuildMode::Partial));
}

#[test]
fn a_rebuild_goes_on_from_another_source_when_its_source_fails() {
    let g = group();
    let f = fixture(3, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (status, c1, c2) = on(&g, move || async move {
        let ch = open(&nx);
        kids[2].fail();
        write(&ch, 2 * REGION_BLOCKS, &pattern(1, 4096))
            .await
            .unwrap();
        write(&ch, 5 * REGION_BLOCKS, &pattern(2, 4096))
            .await
            .unwrap();
        kids[2].come_back();
        // The copy of region 2 has read child 0; then child 0 fails.
        kids[0].hold_read_at(2 * REGION_BLOCKS);
        let rb = Reactor::with(|r| r.spawn_local(nx.clone().rebuild(2, RebuildMode::Partial)));
        until("the rebuild's read of region 2", || kids[0].held() == 1).await;
        kids[0].fail();
        kids[0].release();
        let status = rb.await.unwrap().unwrap();
        let c1 = content(kids[1].mem.clone()).await;
        let c2 = content(kids[2].mem.clone()).await;
        (status, c1, c2)
    });
    assert_eq!(status.source, 1, "region 5 came from child 1");
    assert_eq!(status.copied, 2 * REGION);
    assert!(c1 == c2, "the rebuilt child holds the new source's data");
    let at = (5 * REGION) as usize;
    assert_eq!(&c2[at..at + 4096], &pattern(2, 4096)[..]);
    assert_eq!(
        f.nx.child_states(),
        vec![
            ChildState::Faulted,
            ChildState::Healthy,
            ChildState::Healthy
        ]
    );
    // Region 2 was copied (and cleared) before child 0 was faulted; region 5 after,
    // so its bit stays for child 0's rebuild.
    assert_eq!(f.nx.dirty().dirty_regions(), vec![5]);
}

/// A child with a volatile write cache may lose acknowledged writes when it fails:
/// only a full rebuild brings it back, and its fault record says so.
#[test]
fn a_faulted_child_with_a_volatile_cache_needs_a_full_rebuild() {
    let g = group();
    let kids = vec![
        TestChild::new("c0", BLOCKS),
        TestChild::new_volatile("c1", BLOCKS),
    ];
    let rec = Arc::new(Recorder::default());
    let nx = Nexus::new(
        "nx",
        kids.iter()
            .map(|k| k.clone() as Arc<dyn BlockDevice>)
            .collect(),
        fast(),
        rec.clone(),
        MemDirtyLog::new(),
    )
    .unwrap();
    assert!(nx.info().volatile_cache);
    let (n2, k2) = (nx.clone(), kids.clone());
    let (mode, partial, full) = on(&g, move || async move {
        let ch = open(&n2);
        k2[1].fail();
        write(&ch, 0, &pattern(1, 512)).await.unwrap();
        k2[1].come_back();
        let mode = n2.rebuild_mode(1);
        let partial = n2.clone().rebuild(1, RebuildMode::Partial).await;
        let full = n2.clone().rebuild(1, RebuildMode::Full).await;
        all_equal(&k2).await;
        (mode, partial, full.map(|s| s.copied))
    });
    assert_eq!(mode, Ok(RebuildMode::Full));
    assert!(
        matches!(partial, Err(NexusError::FullRebuildNeeded { child: 1, .. })),
        "{partial:?}"
    );
    assert_eq!(full, Ok(BLOCKS * 512));
    assert_eq!(
        nx.rebuild_mode(1),
        Ok(RebuildMode::Partial),
        "until it faults again"
    );
    let recs = rec.records.lock().unwrap();
    assert!(recs[0].needs_full && recs[0].state == ChildState::Faulted);
    assert!(!recs[1].needs_full && recs[1].state == ChildState::Healthy);
    assert!(nx.rebuild_mode(7).is_err());
}

/// A rebuilding child is not a copy of the data: a write that only it took fails.
#[test]
fn a_write_only_a_rebuilding_child_took_fails() {
    let g = group();
    let f = fixture(2, fast());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (res, rebuilt) = on(&g, move || async move {
        let ch = open(&nx);
        kids[1].fail();
        write(&ch, 4 * REGION_BLOCKS, &pattern(1, 512))
            .await
            .unwrap();
        kids[1].come_back();
        kids[0].hold_read_at(4 * REGION_BLOCKS);
        let rb = Reactor::with(|r| r.spawn_local(nx.clone().rebuild(1, RebuildMode::Partial)));
        until("the rebuild's read of region 4", || kids[0].held() == 1).await;
        kids[0].fail();
        let res = write(&ch, 20 * REGION_BLOCKS, &pattern(2, 512)).await;
        kids[0].release();
        (res, rb.await.unwrap())
    });
    assert_eq!(res, Err(BdevError::NoPath));
    assert!(
        matches!(rebuilt, Err(NexusError::RebuildFailed { child: 1, .. })),
        "{rebuilt:?}"
    );
    assert_eq!(f.nx.child_states(), vec![ChildState::Faulted; 2]);
}
