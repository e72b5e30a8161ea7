use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrox_reactor::mailbox::oneshot;
use ferrox_reactor::task::sleep;
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, Reactor, ReactorGroup, ReactorOptions,
};

use super::*;
use crate::{IoChannel, IoOp};

mod child;
mod model;
mod rebuild;

use child::TestChild;

/// 4 MiB children of 512-byte blocks, 64 KiB regions: 64 regions.
const BLOCKS: u64 = 8192;
const REGION: u64 = 64 << 10;
const REGION_BLOCKS: u64 = REGION / 512;

fn pool() -> &'static BufferPool {
    BufferPool::new(&PoolConfig {
        classes: vec![
            ClassConfig {
                size: 4096,
                count: 512,
            },
            ClassConfig {
                size: 64 << 10,
                count: 64,
            },
        ],
        hugepages: false,
    })
    .unwrap()
}

fn group() -> ReactorGroup {
    ReactorGroup::start(&[available_cores()[0]], &ReactorOptions::default(), pool()).unwrap()
}

/// Runs `f()` as a task on the group's first reactor and returns its output.
fn on<T, F, Fut>(g: &ReactorGroup, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    on_at(g, 0, f)
}

/// Runs `f()` as a task on reactor `at` of the group and returns its output.
fn on_at<T, F, Fut>(g: &ReactorGroup, at: usize, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = oneshot();
    g.handles()[at]
        .send(move |r: &Reactor| {
            r.spawn_local(async move { tx.send(f().await) });
        })
        .unwrap();
    rx.wait_timeout(Duration::from_secs(120))
        .expect("the task finishes")
}

/// Records into a shared event list, after an optional delay; can be told to fail.
#[derive(Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    fail: AtomicBool,
    delay_ms: AtomicU64,
    records: Mutex<Vec<ChildRecord>>,
}

impl FaultRecorder for Recorder {
    fn record(&self, rec: ChildRecord) -> LocalFuture<'static, Result<(), RecordError>> {
        let events = self.events.clone();
        let fail = self.fail.load(Ordering::SeqCst);
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        self.records.lock().unwrap().push(rec.clone());
        Box::pin(async move {
            if !delay.is_zero() {
                sleep(delay).await;
            }
            if fail {
                events
                    .lock()
                    .unwrap()
                    .push(format!("record {} failed", rec.child));
                return Err(RecordError("the store is down".into()));
            }
            events
                .lock()
                .unwrap()
                .push(format!("record {} {:?}", rec.child, rec.state));
            Ok(())
        })
    }
}

struct Fixture {
    nx: Arc<Nexus>,
    kids: Vec<Arc<TestChild>>,
    rec: Arc<Recorder>,
    log: Arc<MemDirtyLog>,
}

fn fixture(n: usize, cfg: NexusConfig) -> Fixture {
    let kids: Vec<Arc<TestChild>> = (0..n)
        .map(|i| TestChild::new(&format!("c{i}"), BLOCKS))
        .collect();
    let rec = Arc::new(Recorder::default());
    let log = MemDirtyLog::new();
    let nx = Nexus::new(
        "nx",
        kids.iter()
            .map(|k| k.clone() as Arc<dyn BlockDevice>)
            .collect(),
        cfg,
        rec.clone(),
        log.clone(),
    )
    .unwrap();
    Fixture { nx, kids, rec, log }
}

fn cfg() -> NexusConfig {
    NexusConfig {
        region_size: REGION,
        io_timeout: Duration::from_secs(5),
        ..NexusConfig::default()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
        .collect()
}

async fn write(ch: &IoChannel, lba: u64, data: &[u8]) -> Result<(), BdevError> {
    let mut buf = Reactor::with(|r| r.pool().alloc(data.len())).expect("a buffer");
    buf.as_mut_slice().copy_from_slice(data);
    let op = IoOp::Write {
        lba,
        blocks: data.len() as u64 / 512,
        buf,
        fua: false,
    };
    ch.submit_async(op).await.0
}

async fn read(ch: &IoChannel, lba: u64, blocks: u64) -> Result<Vec<u8>, BdevError> {
    let buf = Reactor::with(|r| r.pool().alloc(blocks as usize * 512)).expect("a buffer");
    let (res, buf) = ch.submit_async(IoOp::Read { lba, blocks, buf }).await;
    res.map(|()| buf.expect("read data").as_slice().to_vec())
}

/// A device's whole content, read through a channel of its own.
async fn content(dev: Arc<dyn BlockDevice>) -> Vec<u8> {
    let ch = Reactor::with(|r| IoChannel::open(dev, r)).unwrap();
    let blocks = ch.info().num_blocks;
    let mut out = Vec::new();
    let mut lba = 0;
    while lba < blocks {
        let n = 128.min(blocks - lba);
        out.extend(read(&ch, lba, n).await.unwrap());
        lba += n;
    }
    out
}

fn open(nx: &Arc<Nexus>) -> IoChannel {
    Reactor::with(|r| IoChannel::open(nx.clone(), r)).unwrap()
}

#[test]
fn writes_land_on_every_healthy_child() {
    let g = group();
    let f = fixture(3, cfg());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (outs, contents) = on(&g, move || async move {
        let ch = open(&nx);
        let outs = vec![
            write(&ch, 10, &pattern(1, 8192)).await,
            ch.submit_async(IoOp::WriteZeroes { lba: 12, blocks: 2 })
                .await
                .0,
            ch.submit_async(IoOp::Unmap {
                lba: 100,
                blocks: 4,
            })
            .await
            .0,
            ch.submit_async(IoOp::Flush).await.0,
        ];
        let mut contents = Vec::new();
        for k in &kids {
            contents.push(content(k.mem.clone()).await);
        }
        (outs, contents)
    });
    assert!(outs.iter().all(Result::is_ok), "{outs:?}");
    let mut want = vec![0u8; (BLOCKS * 512) as usize];
    want[10 * 512..10 * 512 + 8192].copy_from_slice(&pattern(1, 8192));
    want[12 * 512..14 * 512].fill(0);
    for (i, c) in contents.iter().enumerate() {
        assert!(c == &want, "child {i} differs");
    }
    assert_eq!(f.nx.child_states(), vec![ChildState::Healthy; 3]);
    assert!(
        f.rec.events.lock().unwrap().is_empty(),
        "no fault, no record"
    );
    assert_eq!(f.log.stores(), 0, "no fault, no dirty log store");
}

#[test]
fn a_failing_child_is_faulted_and_recorded_before_the_ack() {
    let g = group();
    let f = fixture(3, cfg());
    // A slow record: an ack that does not wait for it comes first.
    f.rec.delay_ms.store(50, Ordering::SeqCst);
    f.kids[1].fail();
    let (nx, kids, events) = (f.nx.clone(), f.kids.clone(), f.rec.events.clone());
    let (res, c0, c1, c2) = on(&g, move || async move {
        let ch = open(&nx);
        let res = write(&ch, 0, &pattern(7, 4096)).await;
        events.lock().unwrap().push("ack".into());
        let c0 = read(
            &IoChannel::open(kids[0].mem.clone(), &Reactor::try_current().unwrap()).unwrap(),
            0,
            8,
        )
        .await
        .unwrap();
        let c1 = content(kids[1].mem.clone()).await;
        let c2 = content(kids[2].mem.clone()).await;
        (res, c0, c1, c2)
    });
    assert_eq!(res, Ok(()));
    assert_eq!(
        *f.rec.events.lock().unwrap(),
        vec!["record 1 Faulted".to_string(), "ack".into()],
        "the fault is recorded before the write completes"
    );
    assert_eq!(c0, pattern(7, 4096));
    assert_eq!(&c2[..4096], &pattern(7, 4096)[..]);
    assert!(c1.iter().all(|&b| b == 0), "the failing child has nothing");
    assert_eq!(
        f.nx.child_states(),
        vec![
            ChildState::Healthy,
            ChildState::Faulted,
            ChildState::Healthy
        ]
    );
    let recs = f.rec.records.lock().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].child, recs[0].generation), (1, 1));
    assert_eq!(recs[0].child_name, "c1");
    // The write's region is dirty, and was stored.
    assert_eq!(f.nx.dirty().dirty_regions(), vec![0]);
    assert_eq!(f.log.stored().unwrap()[0], 1);
}

#[test]
fn a_failed_record_fails_the_write_and_is_retried() {
    let g = group();
    let f = fixture(2, cfg());
    f.rec.fail.store(true, Ordering::SeqCst);
    f.kids[1].fail();
    let (nx, rec) = (f.nx.clone(), f.rec.clone());
    let (first, second, third) = on(&g, move || async move {
        let ch = open(&nx);
        let first = write(&ch, 0, &pattern(1, 512)).await;
        // Still unrecorded: the next write, which child 1 misses, tries again.
        let second = write(&ch, 8, &pattern(2, 512)).await;
        rec.fail.store(false, Ordering::SeqCst);
        let third = write(&ch, 16, &pattern(3, 512)).await;
        (first, second, third)
    });
    assert_eq!(first, Err(BdevError::NoPath));
    assert_eq!(second, Err(BdevError::NoPath));
    assert_eq!(third, Ok(()));
    assert_eq!(
        *f.rec.events.lock().unwrap(),
        vec![
            "record 1 failed".to_string(),
            "record 1 failed".into(),
            "record 1 Faulted".into()
        ]
    );
    assert_eq!(f.nx.child_state(1), ChildState::Faulted);
}

#[test]
fn no_healthy_child_is_a_path_error() {
    let g = group();
    let f = fixture(2, cfg());
    f.kids[0].fail();
    f.kids[1].fail();
    let nx = f.nx.clone();
    let (w, r, w2, r2, flush) = on(&g, move || async move {
        let ch = open(&nx);
        let w = write(&ch, 0, &pattern(1, 512)).await;
        let r = read(&ch, 0, 1).await;
        let w2 = write(&ch, 0, &pattern(1, 512)).await;
        let r2 = read(&ch, 0, 1).await;
        let flush = ch.submit_async(IoOp::Flush).await.0;
        (w, r, w2, r2, flush)
    });
    assert_eq!(w, Err(BdevError::NoPath));
    assert_eq!(r.unwrap_err(), BdevError::NoPath);
    assert_eq!(w2, Err(BdevError::NoPath));
    assert_eq!(r2.unwrap_err(), BdevError::NoPath);
    assert_eq!(flush, Err(BdevError::NoPath));
    assert_eq!(f.nx.child_states(), vec![ChildState::Faulted; 2]);
}

#[test]
fn reads_avoid_faulted_children() {
    let g = group();
    let f = fixture(3, cfg());
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (before, data, after) = on(&g, move || async move {
        let ch = open(&nx);
        write(&ch, 0, &pattern(5, 4096)).await.unwrap();
        // Reads go to the preferred child 0 while it is healthy.
        for _ in 0..4 {
            read(&ch, 0, 8).await.unwrap();
        }
        let before: Vec<u64> = kids
            .iter()
            .map(|k| k.reads.load(Ordering::SeqCst))
            .collect();
        kids[0].fail();
        let data = read(&ch, 0, 8).await.unwrap();
        kids[0].come_back();
        for _ in 0..6 {
            read(&ch, 0, 8).await.unwrap();
        }
        let after: Vec<u64> = kids
            .iter()
            .map(|k| k.reads.load(Ordering::SeqCst))
            .collect();
        (before, data, after)
    });
    assert_eq!(before, vec![4, 0, 0]);
    assert_eq!(
        data,
        pattern(5, 4096),
        "the read is served by another child"
    );
    assert_eq!(f.nx.child_state(0), ChildState::Faulted);
    assert_eq!(after[0], 4, "a faulted child that came back serves no read");
    assert_eq!(
        after[1] + after[2],
        7,
        "round robin over the healthy children"
    );
    assert!(after[1] >= 3 && after[2] >= 3, "{after:?}");
    assert_eq!(*f.rec.events.lock().unwrap(), vec!["record 0 Faulted"]);
}

#[test]
fn a_stalled_child_times_out_and_is_faulted() {
    let g = group();
    let f = fixture(
        2,
        NexusConfig {
            io_timeout: Duration::from_millis(100),
            ..cfg()
        },
    );
    f.kids[1].stall();
    let (nx, kids) = (f.nx.clone(), f.kids.clone());
    let (res, took) = on(&g, move || async move {
        let ch = open(&nx);
        let t = Instant::now();
        let res = write(&ch, 0, &pattern(1, 512)).await;
        let took = t.elapsed();
        kids[1].come_back();
        (res, took)
    });
    assert_eq!(res, Ok(()));
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(f.nx.child_state(1), ChildState::Faulted);
}

#[test]
fn dirty_regions_are_tracked_exactly() {
    let g = group();
    let f = fixture(2, cfg());
    let (nx, kids, log) = (f.nx.clone(), f.kids.clone(), f.log.clone());
    let stores = on(&g, move || async move {
        let ch = open(&nx);
        // Healthy: nothing is dirty.
        write(&ch, 0, &pattern(0, 512)).await.unwrap();
        assert_eq!(nx.dirty().count(), 0);
        kids[1].fail();
        // Faults child 1; region 3 dirty.
        write(&ch, 3 * REGION_BLOCKS, &pattern(1, 512))
            .await
            .unwrap();
        let mut stores = vec![log.stores()];
        // Across the 5|6 boundary.
        write(&ch, 6 * REGION_BLOCKS - 1, &pattern(2, 1024))
            .await
            .unwrap();
        stores.push(log.stores());
        // Region 3 again: already durably dirty, no store.
        write(&ch, 3 * REGION_BLOCKS + 9, &pattern(3, 512))
            .await
            .unwrap();
        stores.push(log.stores());
        ch.submit_async(IoOp::WriteZeroes {
            lba: 20 * REGION_BLOCKS,
            blocks: 1,
        })
        .await
        .0
        .unwrap();
        ch.submit_async(IoOp::Unmap {
            lba: 40 * REGION_BLOCKS + 5,
            blocks: 2 * REGION_BLOCKS,
        })
        .await
        .0
        .unwrap();
        // Reads and flushes dirty nothing.
        read(&ch, 50 * REGION_BLOCKS, 8).await.unwrap();
        ch.submit_async(IoOp::Flush).await.0.unwrap();
        stores.push(log.stores());
        stores
    });
    let want = vec![3, 5, 6, 20, 40, 41, 42];
    assert_eq!(f.nx.dirty().dirty_regions(), want);
    assert_eq!(stores, vec![1, 2, 2, 4]);
    let stored = f.log.stored().unwrap();
    let bits: Vec<u64> = (0..64).filter(|r| stored[0] & (1 << r) != 0).collect();
    assert_eq!(bits, want, "the stored bitmap holds every dirty region");
}

#[test]
fn a_failed_dirty_log_store_fails_the_write() {
    let g = group();
    let f = fixture(2, cfg());
    f.kids[1].fail();
    f.log.set_failing(true);
    let (nx, kids, log) = (f.nx.clone(), f.kids.clone(), f.log.clone());
    let (first, second, third, c0) = on(&g, move || async move {
        let ch = open(&nx);
        // Child 1 fails this write: its region cannot be stored dirty.
        let first = write(&ch, 0, &pattern(1, 512)).await;
        // Child 1 is faulted now: the store comes before the children get the data.
        let second = write(&ch, 5 * REGION_BLOCKS, &pattern(2, 512)).await;
        log.set_failing(false);
        let third = write(&ch, 5 * REGION_BLOCKS, &pattern(3, 512)).await;
        let c0 = content(kids[0].mem.clone()).await;
        (first, second, third, c0)
    });
    assert_eq!(first, Err(BdevError::NoPath));
    assert_eq!(second, Err(BdevError::NoPath));
    assert_eq!(third, Ok(()));
    let at = (5 * REGION_BLOCKS * 512) as usize;
    assert_eq!(&c0[at..at + 512], &pattern(3, 512)[..]);
    assert_eq!(f.nx.dirty().dirty_regions(), vec![0, 5]);
}

#[test]
fn bad_configurations_are_refused() {
    let kid = || TestChild::new("k", 64) as Arc<dyn BlockDevice>;
    let mk = |children: Vec<Arc<dyn BlockDevice>>, cfg: NexusConfig| {
        Nexus::new(
            "bad",
            children,
            cfg,
            Arc::new(Recorder::default()),
            MemDirtyLog::new(),
        )
        .err()
        .map(|e| e.to_string())
    };
    let odd = crate::malloc::MallocBdev::new("big", 16, 4096).unwrap();
    let cases = [
        (mk(vec![], cfg()), "no children"),
        (mk(vec![kid(), odd], cfg()), "4096-byte blocks"),
        (
            mk(
                vec![kid()],
                NexusConfig {
                    region_size: 3000,
                    ..cfg()
                },
            ),
            "power of two",
        ),
        (
            mk(
                vec![kid()],
                NexusConfig {
                    rebuild_rate: 0,
                    ..cfg()
                },
            ),
            "more than zero",
        ),
        (
            mk(
                vec![kid()],
                NexusConfig {
                    rebuild_rate: u64::MAX,
                    ..cfg()
                },
            ),
            "maximum",
        ),
        (
            mk(
                vec![kid()],
                NexusConfig {
                    io_timeout: Duration::ZERO,
                    ..cfg()
                },
            ),
            "timeout",
        ),
        (
            mk(
                vec![kid()],
                NexusConfig {
                    preferred: Some(2),
                    ..cfg()
                },
            ),
            "no child 2",
        ),
    ];
    for (got, want) in cases {
        let got = got.expect("refused");
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    let f = fixture(2, cfg());
    assert!(f.nx.set_rebuild_rate(0).is_err());
    assert!(f.nx.set_rebuild_rate(100 << 40).is_err());
    assert!(f.nx.set_rebuild_rate(1000).is_err(), "below the minimum");
    assert_eq!(f.nx.rebuild_rate(), DEFAULT_REBUILD_RATE);
    f.nx.set_rebuild_rate(200 << 20).unwrap();
    assert_eq!(f.nx.rebuild_rate(), 200 << 20);
}

#[test]
fn the_device_dirty_log_survives_a_torn_store() {
    let g = group();
    let dev = crate::malloc::MallocBdev::new("log", 64, 512).unwrap();
    let regions = 1000;
    let log = BdevDirtyLog::new(dev.clone(), 4, 2, regions).unwrap();
    assert!(matches!(
        BdevDirtyLog::new(dev.clone(), 4, 2, 100_000),
        Err(DirtyLogError::TooSmall { .. })
    ));
    assert!(matches!(
        BdevDirtyLog::new(dev.clone(), 62, 2, regions),
        Err(DirtyLogError::OutOfRange { .. })
    ));
    let (l2, d2) = (log.clone(), dev.clone());
    let (empty, loaded, after_tear, after_both) = on(&g, move || async move {
        let empty = l2.load(regions).await.unwrap();
        let mut a = vec![0u64; 16];
        a[0] = 0b1011;
        a[15] = 1 << 39;
        l2.store(&a, regions).await.unwrap(); // generation 1, slot 1
        let mut b = a.clone();
        b[3] = u64::MAX;
        l2.store(&b, regions).await.unwrap(); // generation 2, slot 0
        let fresh = BdevDirtyLog::new(d2.clone(), 4, 2, regions).unwrap();
        let loaded = fresh.load(regions).await.unwrap();
        assert_eq!(fresh.generation(), 2);
        // Generation 2's slot (0) torn: one bit of it flipped. Generation 1 is left.
        let ch = IoChannel::open(d2.clone(), &Reactor::try_current().unwrap()).unwrap();
        let mut blk = read(&ch, 4, 1).await.unwrap();
        blk[40] ^= 1;
        write(&ch, 4, &blk).await.unwrap();
        let after_tear = BdevDirtyLog::new(d2.clone(), 4, 2, regions)
            .unwrap()
            .load(regions)
            .await
            .unwrap();
        // Slot 1 overwritten with garbage too: nothing valid is left.
        write(&ch, 4 + 2, &pattern(9, 512)).await.unwrap();
        let after_both = BdevDirtyLog::new(d2, 4, 2, regions)
            .unwrap()
            .load(regions)
            .await
            .unwrap();
        (empty, loaded, after_tear, after_both)
    });
    assert_eq!(empty, None);
    let mut b = [0u64; 16];
    b[0] = 0b1011;
    b[15] = 1 << 39;
    b[3] = u64::MAX;
    assert_eq!(loaded.as_deref(), Some(&b[..]));
    b[3] = 0;
    assert_eq!(
        after_tear.as_deref(),
        Some(&b[..]),
        "a torn newest copy leaves the previous one"
    );
    assert_eq!(after_both, None);
}

/// A dirty log whose stores take a while and are counted.
struct SlowLog {
    inner: Arc<MemDirtyLog>,
    delay: Duration,
}

impl DirtyLog for SlowLog {
    fn store<'a>(
        &'a self,
        bits: &'a [u64],
        regions: u64,
    ) -> LocalFuture<'a, Result<(), DirtyLogError>> {
        Box::pin(async move {
            sleep(self.delay).await;
            self.inner.store(bits, regions).await
        })
    }

    fn load(&self, regions: u64) -> LocalFuture<'_, Result<Option<Vec<u64>>, DirtyLogError>> {
        self.inner.load(regions)
    }
}

#[test]
fn concurrent_writes_share_dirty_log_stores() {
    let g = group();
    let kids: Vec<Arc<TestChild>> = (0..2)
        .map(|i| TestChild::new(&format!("c{i}"), BLOCKS))
        .collect();
    let mem = MemDirtyLog::new();
    let nx = Nexus::new(
        "nx",
        kids.iter()
            .map(|k| k.clone() as Arc<dyn BlockDevice>)
            .collect(),
        cfg(),
        Arc::new(Recorder::default()),
        Arc::new(SlowLog {
            inner: mem.clone(),
            delay: Duration::from_millis(20),
        }),
    )
    .unwrap();
    let (n2, k2) = (nx.clone(), kids.clone());
    let results = on(&g, move || async move {
        let ch = Rc::new(open(&n2));
        k2[1].fail();
        write(&ch, 0, &pattern(0, 512)).await.unwrap();
        // 20 writes to 20 new regions at once.
        let tasks: Vec<_> = (1..=20u64)
            .map(|r| {
                let ch = ch.clone();
                Reactor::with(|re| {
                    re.spawn_local(
                        async move { write(&ch, r * REGION_BLOCKS, &pattern(r, 512)).await },
                    )
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(nx.dirty().count(), 21);
    // The first write's store, then one store for the first of the 20 (it started
    // alone) and one for all the others that waited meanwhile.
    assert!(mem.stores() <= 3, "{} stores for 21 regions", mem.stores());
    let stored = mem.stored().unwrap();
    assert_eq!(
        stored[0].count_ones(),
        21,
        "the last store holds every region"
    );
}

#[test]
fn the_watchdog_times_out_late_requests_and_reuses_its_slots() {
    let g = group();
    let (slots, late, took, on_time) = on(&g, || async {
        let dog = Reactor::with(|r| watchdog::Watchdog::start(r, Duration::from_millis(5)));
        let far = Instant::now() + Duration::from_secs(60);
        for i in 0..1000u32 {
            assert_eq!(dog.run(far, async move { i }).await, Ok(i));
        }
        let slots = dog.slots();
        let t = Instant::now();
        let late = dog
            .run(t + Duration::from_millis(30), std::future::pending::<()>())
            .await;
        let took = t.elapsed();
        let on_time = dog
            .run(
                Instant::now() + Duration::from_secs(5),
                sleep(Duration::from_millis(10)),
            )
            .await;
        (slots, late, took, on_time)
    });
    assert_eq!(slots, 1, "a finished request frees its slot");
    assert_eq!(late, Err(watchdog::Elapsed));
    assert!(took >= Duration::from_millis(30), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(on_time, Ok(()));
}
