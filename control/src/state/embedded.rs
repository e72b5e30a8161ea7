//! [`StateStore`] on a redb file: the embedded single-node default.
//!
//! # Format
//! Table `kv` (`&str` → `&[u8]`): each value is a 25-byte header (format byte `1`,
//! then `create_revision`, `mod_revision` and the lease id, 0 for none, each a
//! little-endian u64) followed by the value. Table `meta` holds `revision`, the
//! store-wide revision. The format before revisions kept bare values in table
//! `state`: [`RedbStore::open`] moves them into `kv` in one transaction, all at one
//! new revision, and drops `state` (a store opened once by this version is not
//! readable by an older one).
//!
//! # What it promises, and what etcd promises beyond it
//! * Revisions, compares and transactions as etcd's: each write is one redb
//!   transaction, fsync-ed before the call returns — except a write that touches
//!   only keys attached to leases (the control plane's locks): such keys are deleted
//!   at the next open anyway, so it is not synced, and a crash loses nothing a
//!   restart would have kept (the next synced write makes it durable with
//!   everything before it). A revision is never reused within a run; one taken by
//!   such an unsynced write may be taken again after a crash, when nobody who saw it
//!   is left.
//! * Watches are served in-process, replaying at most the last [`HISTORY`] events;
//!   the history starts empty at open (a watch from an earlier revision answers
//!   `Compacted`), and only writes made through this `RedbStore` are seen — one
//!   process owns the file.
//! * Leases live in memory and do not survive a restart: keys still attached to a
//!   lease are deleted at open (their lease ended with the process that held it).
//!   etcd keeps a lease for its TTL across a restart of etcd. Expiry runs on a task
//!   of the runtime that granted the first lease; it is late by at most the time the
//!   runtime takes to run it, never early.
//! * Every call runs on tokio's blocking pool (`spawn_blocking`): a commit waits for
//!   an fsync, which must not hold up a runtime worker.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::time::Instant;

use super::kv::{
    Event, EventKind, KeyValue, LeaseId, Op, Revision, StateStore, StoreError, StoreFuture, Txn,
    TxnResponse, WatchSender, Watcher,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The table of the format before revisions: bare values.
pub(super) const LEGACY: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const REVISION: &str = "revision";
const FORMAT: u8 = 1;
const HEADER: usize = 25;
/// Events kept for watches that start in the past.
pub const HISTORY: usize = 1024;
/// Events a watcher may leave undelivered before it is cancelled.
const WATCH_BUFFER: usize = 1024;
/// The longest the lease-expiry task sleeps without looking whether its store is gone.
const EXPIRY_POLL: Duration = Duration::from_secs(1);

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + kv.value.len());
    v.push(FORMAT);
    v.extend_from_slice(&kv.create_revision.to_le_bytes());
    v.extend_from_slice(&kv.mod_revision.to_le_bytes());
    v.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    v.extend_from_slice(&kv.value);
    v
}

fn decode(key: &str, b: &[u8]) -> Result<KeyValue, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: format!("key {key:?}"),
        why,
    };
    let Some((&format, rest)) = b.split_first() else {
        return Err(corrupt("an empty value".into()));
    };
    if format != FORMAT {
        return Err(corrupt(format!(
            "value format {format} (this version reads {FORMAT})"
        )));
    }
    let u64_at = |i: usize| -> Result<u64, StoreError> {
        rest.get(i..i + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| corrupt(format!("{} bytes: a header is {HEADER}", b.len())))
    };
    let lease = u64_at(16)?;
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: u64_at(0)?,
        mod_revision: u64_at(8)?,
        lease: (lease != 0).then_some(lease),
        value: b[HEADER..].to_vec(),
    })
}

fn unavailable<E: Into<redb::Error>>(during: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::Corrupted(why) => StoreError::Corrupt {
            what: "the state database".into(),
            why,
        },
        e => StoreError::Unavailable {
            during,
            source: Box::new(e),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watch side: held across every write transaction and the delivery of its
/// events, so watchers see revisions in order and a new watch misses nothing.
struct Hub {
    /// The revision of the last commit.
    revision: Revision,
    /// The oldest revision whose events are all in `history`.
    oldest: Revision,
    history: VecDeque<Event>,
    subs: Vec<Sub>,
}

struct Sub {
    prefix: String,
    from: Revision,
    tx: WatchSender,
}

impl Hub {
    fn publish(&mut self, events: Vec<Event>) {
        for e in events {
            self.revision = e.kv.mod_revision;
            self.subs.retain(|s| {
                !e.kv.key.starts_with(&s.prefix)
                    || e.kv.mod_revision < s.from
                    || s.tx.send(e.clone())
            });
            self.history.push_back(e);
        }
        while self.history.len() > HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.oldest = e.kv.mod_revision + 1;
            }
        }
    }
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

#[derive(Default)]
struct Leases {
    next: LeaseId,
    live: HashMap<LeaseId, Lease>,
    /// Whether the expiry task runs.
    reaper: bool,
}

struct Inner {
    db: redb::Database,
    hub: Mutex<Hub>,
    leases: Mutex<Leases>,
    /// Wakes the expiry task when a deadline moves.
    lease_wake: Arc<tokio::sync::Notify>,
}

/// [`StateStore`] on a redb database file.
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, upgrading the format without
    /// revisions and deleting keys a lease held when the store was last open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Database::create(path).map_err(unavailable("open"))?;
        let tx = db.begin_write().map_err(unavailable("open"))?;
        let revision = {
            let legacy = tx
                .list_tables()
                .map_err(unavailable("open"))?
                .any(|t| t.name() == LEGACY.name());
            let mut kv = tx.open_table(KV).map_err(unavailable("open"))?;
            let mut meta = tx.open_table(META).map_err(unavailable("open"))?;
            let mut rev = meta
                .get(REVISION)
                .map_err(unavailable("open"))?
                .map_or(0, |v| v.value());
            if legacy {
                let old = tx.open_table(LEGACY).map_err(unavailable("open"))?;
                let mut n = 0usize;
                for item in old.iter().map_err(unavailable("open"))? {
                    let (k, v) = item.map_err(unavailable("open"))?;
                    let kv_new = KeyValue {
                        key: k.value().to_string(),
                        value: v.value().to_vec(),
                        create_revision: rev + 1,
                        mod_revision: rev + 1,
                        lease: None,
                    };
                    kv.insert(k.value(), encode(&kv_new).as_slice())
                        .map_err(unavailable("open"))?;
                    n += 1;
                }
                drop(old);
                tx.delete_table(LEGACY).map_err(unavailable("open"))?;
                if n > 0 {
                    rev += 1;
                    tracing::info!(
                        path = %path.display(),
                        keys = n,
                        revision = rev,
                        "state store upgraded to the format with revisions"
                    );
                }
            }
            let mut leased = Vec::new();
            for item in kv.iter().map_err(unavailable("open"))? {
                let (k, v) = item.map_err(unavailable("open"))?;
                if decode(k.value(), v.value())?.lease.is_some() {
                    leased.push(k.value().to_string());
                }
            }
            if !leased.is_empty() {
                rev += 1;
                for k in &leased {
                    kv.remove(k.as_str()).map_err(unavailable("open"))?;
                }
                tracing::info!(
                    keys = leased.len(),
                    "deleted keys whose lease ended with the last run"
                );
            }
            meta.insert(REVISION, rev).map_err(unavailable("open"))?;
            rev
        };
        tx.commit().map_err(unavailable("open"))?;
        // Lease ids start from the clock so that ids of an earlier run are unlikely
        // to name a lease of this one.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                hub: Mutex::new(Hub {
                    revision,
                    oldest: revision + 1,
                    history: VecDeque::new(),
                    subs: Vec::new(),
                }),
                leases: Mutex::new(Leases {
                    next: seed,
                    ..Leases::default()
                }),
                lease_wake: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    /// [`StateStore::get`] on the calling thread (for tools and tests with no runtime).
    pub fn blocking_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key)
    }

    /// [`StateStore::range`] on the calling thread.
    pub fn blocking_range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner.range(prefix)
    }

    /// [`StateStore::txn`] on the calling thread.
    pub fn blocking_txn(&self, txn: &Txn) -> Result<TxnResponse, StoreError> {
        self.inner.txn(txn, None)
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable {
            during: "a state-store task",
            source: Box::new(e),
        })?
}

impl Inner {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let tx = self.db.begin_read().map_err(unavailable("get"))?;
        let t = tx.open_table(KV).map_err(unavailable("get"))?;
        let v = t.get(key).map_err(unavailable("get"))?;
        v.map(|v| decode(key, v.value())).transpose()
    }

    fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let tx = self.db.begin_read().map_err(unavailable("range"))?;
        let rev = tx
            .open_table(META)
            .map_err(unavailable("range"))?
            .get(REVISION)
            .map_err(unavailable("range"))?
            .map_or(0, |v| v.value());
        let t = tx.open_table(KV).map_err(unavailable("range"))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(unavailable("range"))? {
            let (k, v) = item.map_err(unavailable("range"))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(decode(k.value(), v.value())?);
        }
        Ok((out, rev))
    }

    /// Commits `txn`. With `lease`, a delete applies only to a key still attached to
    /// that lease (expiry and revocation).
    fn txn(&self, txn: &Txn, lease: Option<LeaseId>) -> Result<TxnResponse, StoreError> {
        let mut hub = lock(&self.hub);
        {
            let leases = lock(&self.leases);
            for op in &txn.ops {
                if let Op::Put {
                    lease: Some(id), ..
                } = op
                {
                    if !leases.live.contains_key(id) {
                        return Err(StoreError::LeaseNotFound(*id));
                    }
                }
            }
        }
        let mut tx = self
            .db
            .begin_write()
            .map_err(unavailable("begin a write"))?;
        let mut events = Vec::new();
        // Whether every key written is (or, deleted, was) attached to a lease.
        let mut ephemeral = true;
        let mut prev = Vec::with_capacity(txn.ops.len());
        let (current, revision) = {
            let mut kv = tx.open_table(KV).map_err(unavailable("write"))?;
            let mut meta = tx.open_table(META).map_err(unavailable("write"))?;
            let current = meta
                .get(REVISION)
                .map_err(unavailable("write"))?
                .map_or(0, |v| v.value());
            for c in &txn.compares {
                let actual = match kv.get(c.key.as_str()).map_err(unavailable("write"))? {
                    Some(v) => decode(&c.key, v.value())?.mod_revision,
                    None => 0,
                };
                if actual != c.mod_revision {
                    return Err(StoreError::Conflict {
                        key: c.key.clone(),
                        expected: c.mod_revision,
                        actual,
                    });
                }
            }
            let revision = current + 1;
            for op in &txn.ops {
                let key = op.key();
                let old = kv
                    .get(key)
                    .map_err(unavailable("write"))?
                    .map(|v| decode(key, v.value()))
                    .transpose()?;
                ephemeral &= match op {
                    Op::Put { lease, .. } => lease.is_some(),
                    Op::Delete { .. } => old.as_ref().is_none_or(|o| o.lease.is_some()),
                };
                match op {
                    Op::Put {
                        value, lease: l, ..
                    } => {
                        let new = KeyValue {
                            key: key.to_string(),
                            value: value.clone(),
                            create_revision: old.as_ref().map_or(revision, |o| o.create_revision),
                            mod_revision: revision,
                            lease: *l,
                        };
                        kv.insert(key, encode(&new).as_slice())
                            .map_err(unavailable("write"))?;
                        events.push(Event {
                            kind: EventKind::Put,
                            kv: new,
                        });
                    }
                    Op::Delete { .. } => {
                        let attached = old
                            .as_ref()
                            .is_some_and(|o| lease.is_none_or(|l| o.lease == Some(l)));
                        if attached {
                            kv.remove(key).map_err(unavailable("write"))?;
                            events.push(Event {
                                kind: EventKind::Delete,
                                kv: KeyValue {
                                    key: key.to_string(),
                                    value: Vec::new(),
                                    create_revision: 0,
                                    mod_revision: revision,
                                    lease: None,
                                },
                            });
                        }
                    }
                }
                prev.push(old);
            }
            if !events.is_empty() {
                meta.insert(REVISION, revision)
                    .map_err(unavailable("write"))?;
            }
            (current, revision)
        };
        if events.is_empty() {
            tx.abort().map_err(unavailable("write"))?;
            return Ok(TxnResponse {
                revision: current,
                prev,
            });
        }
        if ephemeral {
            // Leased keys (locks) do not outlive the process — they are deleted at
            // open — so a crash that loses them loses nothing: no fsync for them.
            tx.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Unavailable {
                    during: "write",
                    source: Box::new(e),
                })?;
        }
        tx.commit().map_err(unavailable("commit"))?;
        {
            let mut leases = lock(&self.leases);
            for (op, old) in txn.ops.iter().zip(&prev) {
                if let Some(id) = old.as_ref().and_then(|o| o.lease) {
                    if let Some(l) = leases.live.get_mut(&id) {
                        l.keys.remove(op.key());
                    }
                }
                if let Op::Put {
                    lease: Some(id),
                    key,
                    ..
                } = op
                {
                    if let Some(l) = leases.live.get_mut(id) {
                        l.keys.insert(key.clone());
                    }
                }
            }
        }
        hub.publish(events);
        Ok(TxnResponse { revision, prev })
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let mut hub = lock(&self.hub);
        let from = if from == 0 { hub.revision + 1 } else { from };
        if from < hub.oldest {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: hub.oldest,
            });
        }
        let (tx, w) = Watcher::channel(HISTORY + WATCH_BUFFER, from);
        for e in &hub.history {
            if e.kv.mod_revision >= from && e.kv.key.starts_with(prefix) {
                tx.send(e.clone());
            }
        }
        hub.subs.push(Sub {
            prefix: prefix.to_string(),
            from,
            tx,
        });
        Ok(w)
    }

    /// Takes the leases whose deadline is past `now` out of the live set.
    fn take_expired(&self, now: Instant) -> Vec<(LeaseId, BTreeSet<String>)> {
        let mut leases = lock(&self.leases);
        let ids: Vec<LeaseId> = leases
            .live
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| leases.live.remove(&id).map(|l| (id, l.keys)))
            .collect()
    }

    /// Deletes the keys still attached to ended lease `id`.
    fn end_lease(&self, id: LeaseId, keys: BTreeSet<String>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = Txn {
            compares: Vec::new(),
            ops: keys.into_iter().map(|key| Op::Delete { key }).collect(),
        };
        self.txn(&txn, Some(id)).map(drop)
    }

    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.leases).live.values().map(|l| l.deadline).min()
    }
}

/// Ends expired leases until the store is dropped.
async fn reaper(store: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(inner) = store.upgrade() else { return };
            for (id, keys) in inner.take_expired(Instant::now()) {
                let i = inner.clone();
                if let Err(e) = blocking(move || i.end_lease(id, keys)).await {
                    tracing::warn!(lease = id, error = %e, "cannot delete the keys of an expired lease");
                }
            }
            inner.next_deadline()
        };
        let poll = Instant::now() + EXPIRY_POLL;
        let until = next.map_or(poll, |d| d.min(poll));
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

impl StateStore for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        let (inner, key) = (self.inner.clone(), key.to_string());
        Box::pin(blocking(move || inner.get(&key)))
    }

    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<KeyValue>, Revision)> {
        let (inner, prefix) = (self.inner.clone(), prefix.to_string());
        Box::pin(blocking(move || inner.range(&prefix)))
    }

    fn txn(&self, txn: Txn) -> StoreFuture<'_, TxnResponse> {
        let inner = self.inner.clone();
        Box::pin(blocking(move || inner.txn(&txn, None)))
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> StoreFuture<'a, Watcher> {
        let (inner, prefix) = (self.inner.clone(), prefix.to_string());
        Box::pin(blocking(move || inner.watch(&prefix, from)))
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, LeaseId> {
        Box::pin(async move {
            let id = {
                let mut l = lock(&self.inner.leases);
                let id = l.next;
                l.next = l.next.wrapping_add(2);
                l.live.insert(
                    id,
                    Lease {
                        ttl,
                        deadline: Instant::now() + ttl,
                        keys: BTreeSet::new(),
                    },
                );
                if !std::mem::replace(&mut l.reaper, true) {
                    tokio::spawn(reaper(
                        Arc::downgrade(&self.inner),
                        self.inner.lease_wake.clone(),
                    ));
                }
                id
            };
            self.inner.lease_wake.notify_one();
            Ok(id)
        })
    }

    fn lease_keep_alive(&self, id: LeaseId) -> StoreFuture<'_, Duration> {
        Box::pin(async move {
            let mut leases = lock(&self.inner.leases);
            let now = Instant::now();
            match leases.live.get_mut(&id) {
                // Past its deadline it is expired, whether or not the reaper ran.
                Some(l) if l.deadline > now => {
                    l.deadline = now + l.ttl;
                    Ok(l.ttl)
                }
                _ => Err(StoreError::LeaseNotFound(id)),
            }
        })
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let keys = lock(&self.inner.leases)
                .live
                .remove(&id)
                .ok_or(StoreError::LeaseNotFound(id))?
                .keys;
            let inner = self.inner.clone();
            blocking(move || inner.end_lease(id, keys)).await
        })
    }
}

#[cfg(test)]
mod tests;
