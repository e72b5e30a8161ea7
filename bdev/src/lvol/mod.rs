//! `lvol`: logical volumes carved out of one block device — thin and thick volumes,
//! snapshots, clones, resize, inflate — with crash-consistent metadata. SPDK's
//! blobstore + lvol, in the Ferrox style.
//!
//! # Architecture
//!
//! A **pool** ([`LvolStore`]) is formatted on any [`BlockDevice`]: a label, two
//! metadata slots, then the data area cut into clusters (1 MiB by default). Every pool
//! cluster belongs to at most one volume; a volume reads a cluster it does not own
//! through its parent chain (snapshots), or as zeroes.
//!
//! * **Metadata engine.** One reactor (the *metadata reactor*) owns the metadata. It
//!   runs one job at a time — a control-plane call, a batch of first-write
//!   allocations, a deallocation — as `async` code in one reactor task, woken by
//!   its base-device completions (`io.rs`), and ends every change with a commit of a
//!   new metadata generation: one journal record appended to the log (format version
//!   4: the records of the volumes it creates or changes, the ids it deletes, the
//!   clusters it allocates or frees), or a whole image when the log is full (the
//!   compaction). A pool of version 3 keeps committing as version 3 did: a whole
//!   image per change, a log record per allocation batch.
//! * **Metadata in memory.** The volumes by id (a `BTreeMap`), with indexes by name
//!   and by parent, so that a change reads and copies only the volumes it touches:
//!   a create costs the same in a pool of 10 volumes or 65,536.
//! * **Control plane.** The [`LvolStore`] methods send a job to the metadata reactor and
//!   **block the calling thread** until it answers; calling them on a reactor thread
//!   is refused with [`LvolError::OnReactor`] (it would deadlock the metadata reactor).
//!   Their `*_async` twins return an [`LvolCall`], a future of the same answer that an
//!   async caller (the gRPC server's tokio runtime, a task) awaits without a thread.
//! * **Volumes are block devices.** [`LvolStore::volume`] returns an [`LvolBdev`]; its
//!   channels translate LBAs through a per-channel copy of the volume's cluster view
//!   (an `Arc`, refreshed only when the volume's generation counter moves, so the
//!   read/write path of allocated clusters takes no lock) and forward to the base
//!   device's channel on the same reactor, zero-copy when a request maps to one run of
//!   pool clusters (bounce buffers otherwise).
//! * **First write.** A write to a cluster the volume does not own is held by the
//!   channel, which sends an allocation request to the metadata reactor. The engine
//!   batches every request waiting, takes free clusters, fills each with a copy of
//!   the parent's cluster (copy-on-write) or zeroes, flushes, commits the metadata
//!   that references them, publishes the new view and answers; the channel then
//!   writes in place and acknowledges.
//! * **Quiescing.** Snapshot, shrink, delete-merge, inflate and unmap-deallocation
//!   *freeze* the volume: the engine publishes a frozen view, then waits for the
//!   volume's in-flight counter to reach zero (channels increment it before reading
//!   the generation, both `SeqCst`, so either side sees the other; the channel that
//!   brings it to zero wakes the engine's task); channels hold new requests while
//!   frozen and retry them when the generation moves.
//!
//! # Crash consistency
//!
//! 1. The label is written once, last, at format time (after the label block was
//!    erased and generation 1 was written and flushed).
//! 2. A whole image (every volume and its cluster map, with a header checksum and a
//!    body checksum) is written to the slot *not* holding the image the log extends,
//!    then flushed. The flush completing is the commit point. Load reads both slots
//!    and takes the newest one whose checksums and contents verify; a torn newer
//!    image is skipped (and logged).
//! 3. A change is committed as one record (format version 4: what it changes, with
//!    the generation it makes and the generation of the image it extends,
//!    checksummed; version 3: an allocation batch only) appended to the log and
//!    flushed. Load applies, after the chosen image, the records that extend that
//!    image with consecutive generations, and stops at the first that does not (the
//!    end, a torn write, a stale record of an older image). A record whose checksums
//!    hold but whose contents contradict the metadata (a missing volume, a name or
//!    cluster in use, a free of a cluster the volume does not hold, more volumes than
//!    the label allows) is corruption, reported; parents are checked once the last
//!    record is applied. A whole image starts the log over; a change whose record
//!    does not fit the log's room left (or, on version 3, any change but an
//!    allocation) is committed as a whole image instead — the compaction. The image a
//!    log extends is never overwritten while its records matter, so a torn full image
//!    still leaves image and log intact. After a metadata write or flush failed,
//!    what it left is unknown: the next commit is a whole image, never a record.
//! 4. Data a commit references is written and flushed before the commit: new
//!    clusters are zeroed or copied from the parent first.
//! 5. Clusters freed by a change (delete, shrink, unmap, merge) return to the free set
//!    only after the commit that frees them; clusters taken for a change that fails
//!    to commit return at once (they were never referenced on disk).
//! 6. The free set is not stored: it is derived on load from the cluster maps, which
//!    are checked to reference every cluster at most once. So no cluster can be both
//!    free and in use, and clusters of an uncommitted allocation are free again after
//!    a crash.
//!
//! A write is acknowledged after its data write completes on the base device, which
//! happens after the metadata that maps it was committed: acknowledged data is
//! reachable after a crash (durable as far as the base device's own cache allows; a
//! volume reports the base's `volatile_cache`, so hosts flush as they would there).
//!
//! # On-disk layout (all integers little-endian)
//!
//! ```text
//! byte 0                 label (256 bytes used; region max(4096, block size))
//! slot_offset[0]         metadata slot A (slot_size bytes)
//! slot_offset[1]         metadata slot B (slot_size bytes)
//! log_offset             metadata log (log_size bytes; from format version 3)
//! data_offset            cluster 0, cluster 1, ... (`clusters` of cluster_size)
//!
//! label
//!   0   8  magic "FRXLVOL\0"
//!   8   4  format version (4, or 3: see "Format versions"); a newer one is refused
//!          before anything else is read
//!  12   4  block size of the base device at format
//!  16  16  pool UUID
//!  32   1  pool name length (1..=63)     33 63  pool name, UTF-8, zero padded
//!  96   8  cluster size in bytes (power of two, >= max(4096, block size))
//! 104   8  slot A offset                112  8  slot B offset
//! 120   8  slot size                    128  8  data offset (cluster aligned)
//! 136   8  number of data clusters      144  8  device blocks at format
//! 152   8  log offset (version 3)       160  8  log size (version 3; 1/256 of the
//!                                                device, 64 KiB to 4 MiB)
//! 168   4  volumes the pool holds (version 4: one per 32 KiB of device, 1024 to
//!          65,536; 1024 before)
//! 172  80  reserved, zero (168..172 too before version 4, 152..168 before 3)
//! 252   4  CRC32C of bytes 0..252
//!
//! metadata image (at the start of a slot; zero padded to a block multiple)
//!   0   8  magic "FRXMETA\0"
//!   8   4  format version (the label's: a pool whose label says 1, 2 or 3 keeps
//!          writing images of its version — version 1 without the trailer, 1 and 2
//!          with no log — so an older build still reads it)
//!  12   4  volume count (<= the label's limit)
//!  16  16  pool UUID (must match the label)
//!  32   8  generation
//!  40   8  image length in bytes, header included
//!  48   8  next volume id
//!  56   4  CRC32C of the body (bytes 64..length)
//!  60   4  CRC32C of header bytes 0..60
//!  64      body: per volume, a 128-byte record followed by its runs; then the
//!          trailer: 8 bytes clean_from (pool clusters from this index on have not
//!          been written since a format that zeroed the data area, so they read as
//!          zeroes; every mapped cluster is below it)
//!
//! volume record
//!   0   8  volume id (non-zero, < next volume id)
//!   8  16  volume UUID
//!  24   8  size in bytes (a multiple of the cluster size)
//!  32   8  parent volume id (0: none)
//!  40   8  backing: volume clusters below this index read through the parent
//!  48   8  creation time, seconds since the Unix epoch
//!  56   4  flags: bit 0 thin, bit 1 snapshot (read-only)
//!  60   4  run count
//!  64   1  name length (1..=63)          65 63  name, UTF-8, zero padded
//!
//! run (16 bytes): volume clusters vc..vc+len are pool clusters pc..pc+len
//!   0   8  vc          8   4  pc          12  4  len (>= 1)
//!
//! log record (at the log's start or right after the previous record; zero padded
//! to a block multiple; its version is the pool's, a record of another is the end)
//!   0   8  magic "FRXLOGR\0"             8  4  version (4, or 3)
//!  12   4  version 4: body length in bytes; version 3: entry count
//!  16  16  pool UUID
//!  32   8  generation it makes           40  8  generation of the image it extends
//!  48   8  clean_from after it           56  4  CRC32C of the body
//!  60   4  CRC32C of header bytes 0..60
//!  64      body
//!
//! version 3 body: entries (16 bytes): volume id u64, volume cluster u32, pool
//! cluster u32 — allocations
//!
//! version 4 body (a journal record), applied in this order: deletes, volume records,
//! frees, allocations
//!   0   8  next volume id after it        8  4  allocation count
//!  12   4  delete count                   16  4  volume record count
//!  20   4  free count
//!  24      allocations (entries as in version 3: the volume cluster, unmapped until
//!          now, is now the pool cluster, free until now); then frees (entries: the
//!          volume cluster, now that pool cluster, is unmapped); then deleted volume
//!          ids (8 bytes each); then volume records, each followed by its runs as in
//!          an image (a volume created, or one changed: its whole new record)
//! ```
//!
//! A slot is sized for the worst case: header, the label's number of volume records
//! and one run per data cluster (for 65,536 volumes, 8 MiB plus 16 bytes per
//! cluster). The log is 1/256 of the device, from 64 KiB to 4 MiB: a change that fits
//! one block (a create, a clone, a delete: 512 bytes) writes one block, and the log
//! is compacted into a whole image once per log-full of records (about 8,000 creates
//! with a 4 MiB log). Loading checks, besides magic, version and checksums: runs
//! inside the volume and the pool, no pool cluster mapped twice, unique ids and
//! names, parents that exist, are snapshots and form no cycle, no more volumes than
//! the label allows. Any failure is [`LvolError::Corrupt`] naming what and where.
//!
//! # Format versions
//!
//! The label's version says how the pool is written; a build refuses a pool newer
//! than it ([`LvolError::NewerFormat`]) and writes an older pool in that pool's own
//! version, so that the build that made it still reads it. Version 4 is what
//! [`LvolStore::create`] formats. Pools of version 3 and before are *not upgraded*,
//! neither on load nor on first write: their slots were sized for 1024 volume records
//! when they were formatted and the data area starts right after the log, so more
//! volumes would need the data moved; and a version-4 record in a version-3 log would
//! be the silent end of that log for the older build (its changes lost), so version-4
//! records need a version-4 label, whose one-block rewrite would be the only copy of
//! the pool's geometry. Such a pool loads, works, keeps holding at most 1024 volumes
//! (the limit the error names), and commits a whole image per change as before; to
//! get the new limit and per-change costs, move its volumes to a new pool.
//!
//! # Semantics
//!
//! Volume sizes are rounded up to whole clusters. A snapshot takes the volume's
//! clusters and becomes its parent (no data is copied); the volume keeps running and
//! copies on its next write to each shared cluster. A clone is a writable child of a
//! snapshot. Deleting a volume with no children frees its clusters; deleting a
//! snapshot with one child merges it into the child; with more it fails
//! ([`LvolError::HasClones`]). `inflate` copies every cluster a volume reads from its
//! ancestors and detaches it (clusters no ancestor has stay unallocated). Growing a
//! thick volume allocates the new clusters; shrinking below allocated clusters needs
//! `force`. Unmap and write-zeroes make the range read as zeroes; unmap also frees
//! whole clusters that no ancestor has data beneath.
//!
//! Unmaps (a DSM deallocate is one per range) cost what the volume holds in their
//! ranges, not the range's size: view chunks carry counts of mapped and owned
//! entries, so a walk skips empty chunks with one look. A channel runs at most
//! [`MAX_UNMAPS`] at once (more wait, in order); each first zeroes the clusters it
//! holds, then asks the engine to free a cluster *range*. The engine takes every
//! deallocation waiting as one batch, merges the ranges per volume, freezes the
//! volume, walks what it owns there in steps of at most [`DEALLOC_STEP_VISITS`]
//! looks with a reactor turn between them, then commits once (a journal record of
//! the clusters freed; on version 3 a whole image) and patches the view.
//! [`DeallocStats`] counts the work.
//!
//! # What it doesn't implement
//!
//! * A journal record carries the whole record of each volume a change rewrites, runs
//!   included: a snapshot, resize or inflate of a volume with many runs writes them
//!   all (a create, clone or delete writes one block). Changes other than allocations
//!   and deallocations republish whole views (also unfreeze).
//! * The compaction encodes and writes the whole image (at 65,536 volumes about
//!   8 MiB) in the job of the change that triggers it: that change waits tens of
//!   milliseconds (the encoding lets the reactor run a turn every 4,096 volumes).
//!   Old pools are not upgraded (see "Format versions").
//! * A volume is frozen while its deallocation batch is walked and committed: its own
//!   I/O waits for the batch (other volumes' I/O goes on between the steps).
//! * New thin clusters are zeroed (unless clean: never written since a format that
//!   zeroed the data area) or copied before the data write, even when the write covers
//!   the whole cluster.
//! * The in-flight counter that makes freezing possible is one shared atomic per
//!   volume, touched by every request (per-channel counters would avoid the shared
//!   cache line).
//! * A resized volume's [`LvolBdev`] keeps its size; call [`LvolStore::volume`] again
//!   for a device reporting the new size (shrinking is enforced at once by the
//!   channels).
//! * Deleting a volume with open channels is refused ([`LvolError::Busy`]); snapshot
//!   of a snapshot, inflating a snapshot, and a thick reservation after a snapshot
//!   (a thick volume's new clusters after a snapshot are allocated on write).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrox_reactor::mailbox::oneshot;
use ferrox_reactor::{MailboxFull, Reactor, ReactorHandle, Reply, ReplyError};

use crate::{BdevError, BlockDevice, IoChannel};

mod channel;
mod engine;
mod format;
mod io;
mod setup;
mod view;

pub use channel::{LvolBdev, MAX_UNMAPS};
pub use engine::{DeallocStats, STEP_VISITS as DEALLOC_STEP_VISITS};
pub use format::{FORMAT_VERSION, FULL_SCALE_BYTES, MAX_NAME, MAX_VOLUMES, OLD_MAX_VOLUMES};

use engine::{with_engine, Engine};
use format::Label;
use io::BaseIo;
pub(crate) use view::{Scan, ViewMap};

/// The default cluster size: 1 MiB.
pub const DEFAULT_CLUSTER_SIZE: u64 = 1 << 20;

/// Errors of pools and volumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LvolError {
    #[error("a volume named {0:?} already exists")]
    Exists(String),
    #[error("no volume named {0:?}")]
    NotFound(String),
    #[error("the pool is out of space: {needed} clusters needed, {free} free")]
    NoSpace { needed: u64, free: u64 },
    #[error("volume {0:?} has {1} clones; delete or inflate all but one first")]
    HasClones(String, usize),
    #[error(
        "the pool's format version {found} is newer than this build's {supported}; upgrade Ferrox"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("corrupt lvol metadata on {device:?} at byte {offset}: {what}")]
    Corrupt {
        device: String,
        what: String,
        offset: u64,
    },
    #[error("{device:?} holds no lvol pool (no label at byte 0)")]
    NotAPool { device: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("volume {0:?} is busy: {1}")]
    Busy(String, String),
    #[error("volume {0:?} is a snapshot and cannot be changed")]
    ReadOnly(String),
    #[error("volume {0:?} is not a snapshot; clone a snapshot")]
    NotSnapshot(String),
    #[error(
        "shrinking {name:?} to {size} bytes would drop {clusters} allocated clusters; pass force"
    )]
    WouldDropData {
        name: String,
        size: u64,
        clusters: u64,
    },
    #[error("metadata is full: {0}")]
    MetadataFull(String),
    #[error("base device I/O failed while {during}")]
    Io {
        during: &'static str,
        #[source]
        source: BdevError,
    },
    #[error("the metadata reactor did not answer")]
    Reactor(#[source] ReplyError),
    #[error("lvol metadata calls block; call them from a non-reactor thread")]
    OnReactor,
    #[error("the pool was closed")]
    Closed,
}

impl LvolError {
    /// The block-layer status a channel reports for this error.
    pub fn to_bdev(&self) -> BdevError {
        match self {
            Self::NoSpace { .. } => BdevError::NoSpace,
            Self::Io { source, .. } => source.clone(),
            Self::Closed => BdevError::Closed,
            _ => BdevError::Io(libc::EIO),
        }
    }
}

/// A volume, as [`LvolStore::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub uuid: [u8; 16],
    /// Bytes (a multiple of the cluster size).
    pub size: u64,
    pub thin: bool,
    /// A read-only snapshot.
    pub snapshot: bool,
    pub parent: Option<String>,
    /// Volumes whose parent this is.
    pub clones: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Clusters this volume owns.
    pub allocated_clusters: u64,
    /// Clusters deleting it would free now (0 when it cannot be deleted).
    pub freed_on_delete: u64,
}

/// Space and identity of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub name: String,
    pub uuid: [u8; 16],
    pub cluster_size: u64,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub free_clusters: u64,
    pub volumes: usize,
    /// Most volumes (snapshots and clones included) the pool holds: set at format
    /// time by its size and format version (see [`MAX_VOLUMES`]).
    pub max_volumes: usize,
    /// The committed metadata generation.
    pub generation: u64,
}

/// A pool-wide, `Send + Sync` part: what channels and the control plane share.
pub(crate) struct Shared {
    /// Key of the engine in the metadata reactor's registry.
    pub id: u64,
    pub base: Arc<dyn BlockDevice>,
    pub meta: ReactorHandle,
    pub label: Label,
}

/// A cluster view entry owned by the volume itself (else an ancestor's, or `NONE`).
pub(crate) const OWNED: u32 = 1 << 31;

/// What a channel needs to route I/O of one volume.
#[derive(Debug)]
pub(crate) struct VolView {
    /// New requests wait: the engine is changing the volume.
    pub frozen: bool,
    pub deleted: bool,
    pub read_only: bool,
    pub num_blocks: u64,
    /// Per volume cluster: pool cluster | [`OWNED`], an ancestor's pool cluster, or
    /// `NONE` (reads zeroes).
    pub entries: ViewMap,
}

impl VolView {
    pub fn deleted() -> Self {
        Self {
            frozen: false,
            deleted: true,
            read_only: true,
            num_blocks: 0,
            entries: ViewMap::from_vec(Vec::new()),
        }
    }
}

/// One volume's state shared between the engine and the channels on every reactor.
pub(crate) struct VolShared {
    pub id: u64,
    /// Moves (SeqCst) after every new view; channels compare it with theirs.
    pub gen: AtomicU64,
    /// Locked only to publish and to refresh after `gen` moved.
    pub view: Mutex<Arc<VolView>>,
    /// Requests holding a view (incremented before `gen` is read, SeqCst).
    pub active: AtomicU64,
    pub channels: AtomicUsize,
    /// A freeze waits for `active` to reach 0: the channel that brings it there wakes
    /// `drained` (set before `draining`, both SeqCst against the decrement).
    pub draining: AtomicBool,
    pub drained: Mutex<Option<std::task::Waker>>,
}

impl VolShared {
    /// A request let go of its view (a channel's half of the freeze handshake).
    pub fn active_done(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 && self.draining.load(Ordering::SeqCst) {
            let w = self
                .drained
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    pub fn view(&self) -> Arc<VolView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How long a control-plane call retries a full metadata mailbox.
const MAILBOX_PATIENCE: Duration = Duration::from_secs(5);

fn send_patiently(
    h: &ReactorHandle,
    mut msg: ferrox_reactor::mailbox::Message,
) -> Result<(), LvolError> {
    let deadline = Instant::now() + MAILBOX_PATIENCE;
    loop {
        match h.send_boxed(msg) {
            Ok(()) => return Ok(()),
            Err(MailboxFull(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::yield_now();
            }
            Err(_) => return Err(LvolError::Reactor(ReplyError::MailboxFull)),
        }
    }
}

fn not_on_reactor() -> Result<(), LvolError> {
    if Reactor::try_current().is_some() {
        return Err(LvolError::OnReactor);
    }
    Ok(())
}

fn next_store_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

type JobFuture<T> = Pin<Box<dyn Future<Output = Result<T, LvolError>>>>;

/// A pool of logical volumes on one base device. Every method except
/// [`LvolStore::name`] and the `*_async` ones (an [`LvolCall`] to await) blocks the
/// calling thread until the metadata reactor answers.
pub struct LvolStore {
    sh: Arc<Shared>,
}

impl std::fmt::Debug for LvolStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvolStore")
            .field("name", &self.sh.label.name)
            .field("base", &self.sh.base.info().name)
            .finish()
    }
}

impl LvolStore {
    /// Formats a new pool on `base` (destroying what it held) and opens it.
    pub fn create(
        base: Arc<dyn BlockDevice>,
        name: &str,
        cluster_size: u64,
        meta_reactor: ReactorHandle,
    ) -> Result<Arc<Self>, LvolError> {
        Self::create_in(base, name, cluster_size, meta_reactor, FORMAT_VERSION)
    }

    /// Formats a pool of format `version` (3: what builds before version 4 wrote, a
    /// pool that keeps its version; or 4) as [`LvolStore::create`] does: for tests of
    /// the loading and writing of old pools.
    #[cfg(feature = "testing")]
    pub fn create_with_version(
        base: Arc<dyn BlockDevice>,
        name: &str,
        cluster_size: u64,
        meta_reactor: ReactorHandle,
        version: u32,
    ) -> Result<Arc<Self>, LvolError> {
        Self::create_in(base, name, cluster_size, meta_reactor, version)
    }

    fn create_in(
        base: Arc<dyn BlockDevice>,
        name: &str,
        cluster_size: u64,
        meta_reactor: ReactorHandle,
        version: u32,
    ) -> Result<Arc<Self>, LvolError> {
        not_on_reactor()?;
        let label = Label::plan_version(
            base.info(),
            name,
            crate::random_uuid(),
            cluster_size,
            version,
        )?;
        let sh = Arc::new(Shared {
            id: next_store_id(),
            base,
            meta: meta_reactor,
            label,
        });
        let (tx, rx) = oneshot();
        let sh2 = sh.clone();
        send_patiently(
            &sh.meta,
            Box::new(move |r: &Reactor| {
                let io = match IoChannel::open(sh2.base.clone(), r) {
                    Ok(c) => BaseIo::new(c, r),
                    Err(source) => {
                        return tx.send(Err(LvolError::Io {
                            during: "opening the base device",
                            source,
                        }))
                    }
                };
                r.spawn_local(async move {
                    let res = setup::format(&io, &sh2.label).await;
                    tx.send(res.map(|(meta, log)| {
                        Reactor::with(|r| Engine::start(r, sh2, io, meta, log));
                    }));
                });
            }),
        )?;
        rx.wait().map_err(LvolError::Reactor)??;
        Ok(Arc::new(Self { sh }))
    }

    /// Opens the pool on `base`, checking the label and picking the newest valid
    /// metadata generation.
    pub fn load(
        base: Arc<dyn BlockDevice>,
        meta_reactor: ReactorHandle,
    ) -> Result<Arc<Self>, LvolError> {
        not_on_reactor()?;
        let (tx, rx) = oneshot();
        let h = meta_reactor.clone();
        send_patiently(
            &meta_reactor,
            Box::new(move |r: &Reactor| {
                let io = match IoChannel::open(base.clone(), r) {
                    Ok(c) => BaseIo::new(c, r),
                    Err(source) => {
                        return tx.send(Err(LvolError::Io {
                            during: "opening the base device",
                            source,
                        }))
                    }
                };
                r.spawn_local(async move {
                    let res = setup::load_meta(&io, base.info()).await;
                    tx.send(res.map(|(label, meta, log)| {
                        let sh = Arc::new(Shared {
                            id: next_store_id(),
                            base,
                            meta: h,
                            label,
                        });
                        Reactor::with(|r| Engine::start(r, sh.clone(), io, meta, log));
                        sh
                    }));
                });
            }),
        )?;
        let sh = rx.wait().map_err(LvolError::Reactor)??;
        Ok(Arc::new(Self { sh }))
    }

    /// Sends a job to the metadata reactor; its answer comes as an [`LvolCall`].
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(Rc<Engine>) -> JobFuture<T> + Send + 'static,
    ) -> LvolCall<T> {
        let (tx, rx) = oneshot();
        let id = self.sh.id;
        let msg: ferrox_reactor::mailbox::Message = Box::new(move |_r| {
            with_engine(id, |e| match e {
                Some(e) => {
                    let fut = f(e.clone());
                    e.push_job(Box::pin(async move { tx.send(fut.await) }));
                }
                None => tx.send(Err(LvolError::Closed)),
            });
        });
        LvolCall {
            msg: Some(msg),
            meta: self.sh.meta.clone(),
            deadline: None,
            rx,
        }
    }

    pub fn name(&self) -> &str {
        &self.sh.label.name
    }

    /// Creates a volume of `size` bytes (rounded up to whole clusters); a thick one
    /// gets (and zeroes) all its clusters now.
    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        thin: bool,
    ) -> Result<VolumeInfo, LvolError> {
        not_on_reactor()?;
        self.create_volume_async(name, size, thin).wait()
    }

    /// [`LvolStore::create_volume`] as a future.
    pub fn create_volume_async(&self, name: &str, size: u64, thin: bool) -> LvolCall<VolumeInfo> {
        let name = name.to_string();
        self.call(move |e| Box::pin(async move { e.create_volume(name, size, thin).await }))
    }

    /// Takes a read-only snapshot of `vol` named `snap`; `vol` keeps running on top of it.
    pub fn snapshot(&self, vol: &str, snap: &str) -> Result<VolumeInfo, LvolError> {
        not_on_reactor()?;
        self.snapshot_async(vol, snap).wait()
    }

    /// [`LvolStore::snapshot`] as a future.
    pub fn snapshot_async(&self, vol: &str, snap: &str) -> LvolCall<VolumeInfo> {
        let (v, s) = (vol.to_string(), snap.to_string());
        self.call(move |e| Box::pin(async move { e.snapshot(v, s).await }))
    }

    /// Creates a writable clone of snapshot `snap`. (Not `clone`: `Arc::clone` would
    /// shadow it on an `Arc<LvolStore>`.)
    pub fn clone_volume(&self, snap: &str, name: &str) -> Result<VolumeInfo, LvolError> {
        not_on_reactor()?;
        self.clone_volume_async(snap, name).wait()
    }

    /// [`LvolStore::clone_volume`] as a future.
    pub fn clone_volume_async(&self, snap: &str, name: &str) -> LvolCall<VolumeInfo> {
        let (s, n) = (snap.to_string(), name.to_string());
        self.call(move |e| Box::pin(async move { e.clone_volume(s, n).await }))
    }

    /// Grows or shrinks `vol` to `size` bytes (rounded up to whole clusters).
    /// Shrinking below allocated clusters needs `force` and frees them.
    pub fn resize(&self, vol: &str, size: u64, force: bool) -> Result<VolumeInfo, LvolError> {
        not_on_reactor()?;
        self.resize_async(vol, size, force).wait()
    }

    /// [`LvolStore::resize`] as a future.
    pub fn resize_async(&self, vol: &str, size: u64, force: bool) -> LvolCall<VolumeInfo> {
        let v = vol.to_string();
        self.call(move |e| Box::pin(async move { e.resize(v, size, force).await }))
    }

    /// Deletes a volume; a snapshot with one clone is merged into it.
    pub fn delete(&self, name: &str) -> Result<(), LvolError> {
        not_on_reactor()?;
        self.delete_async(name).wait()
    }

    /// [`LvolStore::delete`] as a future.
    pub fn delete_async(&self, name: &str) -> LvolCall<()> {
        let n = name.to_string();
        self.call(move |e| Box::pin(async move { e.delete(n).await }))
    }

    /// Copies everything `vol` reads from its ancestors into its own clusters and
    /// detaches it from its parent.
    pub fn inflate(&self, vol: &str) -> Result<VolumeInfo, LvolError> {
        not_on_reactor()?;
        self.inflate_async(vol).wait()
    }

    /// [`LvolStore::inflate`] as a future.
    pub fn inflate_async(&self, vol: &str) -> LvolCall<VolumeInfo> {
        let v = vol.to_string();
        self.call(move |e| Box::pin(async move { e.inflate(v).await }))
    }

    /// The volume as a block device (its size as of now).
    pub fn volume(&self, name: &str) -> Result<Arc<LvolBdev>, LvolError> {
        let n = name.to_string();
        not_on_reactor()?;
        let (vs, info) = self
            .call(move |e| Box::pin(async move { e.lookup(&n) }))
            .wait()?;
        Ok(LvolBdev::new(self.sh.clone(), vs, &info))
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>, LvolError> {
        not_on_reactor()?;
        self.list_async().wait()
    }

    /// [`LvolStore::list`] as a future.
    pub fn list_async(&self) -> LvolCall<Vec<VolumeInfo>> {
        self.call(|e| Box::pin(async move { Ok(e.list()) }))
    }

    pub fn stats(&self) -> Result<PoolStats, LvolError> {
        not_on_reactor()?;
        self.stats_async().wait()
    }

    /// [`LvolStore::stats`] as a future.
    pub fn stats_async(&self) -> LvolCall<PoolStats> {
        self.call(|e| Box::pin(async move { Ok(e.stats()) }))
    }

    /// What unmaps' deallocations have cost so far in this pool (since it was opened).
    pub fn dealloc_stats(&self) -> Result<DeallocStats, LvolError> {
        not_on_reactor()?;
        self.call(|e| Box::pin(async move { Ok(e.dealloc_stats()) }))
            .wait()
    }

    /// [`LvolStore::dealloc_stats`] without blocking, on the metadata reactor's
    /// thread (`None` on any other thread).
    pub fn dealloc_stats_here(&self) -> Option<DeallocStats> {
        with_engine(self.sh.id, |e| e.map(|e| e.dealloc_stats()))
    }
}

/// An operation of a pool's metadata engine under way: `.await` it (from any thread
/// or runtime, e.g. a gRPC handler; nothing blocks) or [`LvolCall::wait`] for it
/// (a plain thread). The job reaches the metadata reactor when first polled (or
/// waited for); a full mailbox is retried for up to `MAILBOX_PATIENCE`.
#[must_use = "the job is sent when the call is awaited or waited for"]
pub struct LvolCall<T> {
    msg: Option<ferrox_reactor::mailbox::Message>,
    meta: ReactorHandle,
    deadline: Option<Instant>,
    rx: Reply<Result<T, LvolError>>,
}

impl<T> LvolCall<T> {
    /// Blocks the calling thread until the answer comes.
    pub fn wait(mut self) -> Result<T, LvolError> {
        if let Some(m) = self.msg.take() {
            send_patiently(&self.meta, m)?;
        }
        self.rx.wait().map_err(LvolError::Reactor)?
    }
}

impl<T> Future for LvolCall<T> {
    type Output = Result<T, LvolError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        if let Some(m) = self.msg.take() {
            if let Err(MailboxFull(m)) = self.meta.send_boxed(m) {
                let deadline = *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + MAILBOX_PATIENCE);
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(LvolError::Reactor(ReplyError::MailboxFull)));
                }
                // Try again on the next turn of the caller's executor.
                self.msg = Some(m);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(LvolError::Reactor)?)
    }
}

impl Drop for LvolStore {
    fn drop(&mut self) {
        let id = self.sh.id;
        // A stopped reactor has dropped its engines already.
        let _ = self.sh.meta.send(move |_| Engine::stop(id));
    }
}

#[cfg(test)]
mod tests;
