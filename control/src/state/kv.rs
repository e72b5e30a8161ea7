//! The store's model, etcd's: a sorted key space with a store-wide revision (one per
//! committed write), per-key create and modification revisions, transactions of
//! compares and writes, watches from a revision, and leases.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The store-wide revision: incremented once per committed write transaction, never
/// reused. 0 is "before the first write" (and, as an expected revision, "must not
/// exist").
pub type Revision = u64;

/// A lease: keys attached to it are deleted when it expires or is revoked.
pub type LeaseId = u64;

/// What every store call returns: a boxed future, so the control plane can hold a
/// `dyn StateStore` and pick redb or etcd at start.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created the key (since its last delete).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// A condition of a [`Txn`]: `key`'s modification revision is `mod_revision` (0: the
/// key does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Revision,
}

/// A write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        /// Attaches the key to a live lease (replacing any earlier attachment).
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// All of `ops` if every compare holds, else nothing ([`StoreError::Conflict`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to be at `mod_revision` (0: absent).
    pub fn when(mut self, key: impl Into<String>, mod_revision: Revision) -> Self {
        self.compares.push(Compare {
            key: key.into(),
            mod_revision,
        });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }

    pub fn put_leased(mut self, key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: Some(lease),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// What a committed [`Txn`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// The transaction's revision; the current one when it changed nothing (a delete
    /// of an absent key).
    pub revision: Revision,
    /// For each op, the key as it was before (etcd's `prev_kv`).
    pub prev: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv` holds the key and, as
/// `mod_revision`, the revision of the delete (value empty, no lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// The receiving end of a watch: events in revision order (within a revision, in the
/// transaction's op order). Dropping it cancels the watch.
pub struct Watcher {
    rx: tokio::sync::mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    /// The revision to watch again from when it lags (that of the last event
    /// delivered: a revision may hold several events).
    next: Revision,
}

/// The store's end of a [`Watcher`].
pub(crate) struct WatchSender {
    tx: tokio::sync::mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

impl WatchSender {
    /// False when the watch is over: its watcher is gone, or it fell `capacity`
    /// events behind (it is then cancelled and reports [`StoreError::Compacted`]).
    pub fn send(&self, e: Event) -> bool {
        match self.tx.try_send(e) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the watch as lagged: its watcher gets [`StoreError::Compacted`] once it
    /// has read what was sent (the store dropped history it had not delivered).
    pub fn set_lagged(&self) {
        self.lagged.store(true, Ordering::Release);
    }

    /// Resolves when the watcher is dropped.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl Watcher {
    /// A watch buffering at most `capacity` undelivered events, starting at `from`
    /// (for a store implementation).
    pub(crate) fn channel(capacity: usize, from: Revision) -> (WatchSender, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        (
            WatchSender {
                tx,
                lagged: lagged.clone(),
            },
            Self {
                rx,
                lagged,
                next: from,
            },
        )
    }

    /// The next event; `Ok(None)` when the store closed the watch. A watcher that
    /// fell too far behind gets [`StoreError::Compacted`]: watch again from the
    /// revision it names after re-reading.
    pub async fn recv(&mut self) -> Result<Option<Event>, StoreError> {
        match self.rx.recv().await {
            Some(e) => {
                self.next = e.kv.mod_revision;
                Ok(Some(e))
            }
            None if self.lagged.load(Ordering::Acquire) => Err(StoreError::Compacted {
                requested: self.next,
                oldest: 0,
            }),
            None => Ok(None),
        }
    }
}

/// Everything a state store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A compare of a transaction did not hold: someone else changed the key.
    #[error("{key:?} changed concurrently (expected revision {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The store cannot be reached or cannot do I/O now; retrying may succeed.
    #[error("unavailable: {during}")]
    Unavailable {
        during: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// What is stored cannot be read.
    #[error("corrupt: {what}: {why}")]
    Corrupt { what: String, why: String },
    /// A watch asked for history the store no longer keeps.
    #[error("revision {requested} is compacted (the oldest a watch can start from is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("lease {0:#x} does not exist (expired or revoked)")]
    LeaseNotFound(LeaseId),
}

/// Etcd's model of a key-value store, as the control plane uses it: implemented on
/// redb ([`super::RedbStore`]) for one node, and for etcd by a cluster.
///
/// Every method returns a boxed future ([`StoreFuture`]) rather than being an
/// `async fn`, so the trait is object safe: the server holds `Arc<dyn StateStore>`.
pub trait StateStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, and the revision of the read
    /// (a watch from the next revision misses nothing).
    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<KeyValue>, Revision)>;

    /// Commits every op if every compare holds (durable when it returns), else
    /// changes nothing and answers [`StoreError::Conflict`] naming a failed compare.
    fn txn(&self, txn: Txn) -> StoreFuture<'_, TxnResponse>;

    /// The changes of keys under `prefix` from revision `from` on (0: from the next
    /// write). A `from` older than the history kept answers [`StoreError::Compacted`].
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> StoreFuture<'a, Watcher>;

    /// A lease that expires `ttl` after its grant or its last keep-alive.
    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, LeaseId>;

    /// Renews a live lease; answers its TTL.
    fn lease_keep_alive(&self, id: LeaseId) -> StoreFuture<'_, Duration>;

    /// Ends a lease now, deleting the keys attached to it.
    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()>;

    /// Writes unconditionally; answers the write's revision.
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision> {
        let f = self.txn(Txn::new().put(key, value));
        Box::pin(async move { Ok(f.await?.revision) })
    }

    /// Writes if `key` is at `expected` (0: absent).
    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: Revision,
    ) -> StoreFuture<'a, Revision> {
        let f = self.txn(Txn::new().when(key, expected).put(key, value));
        Box::pin(async move { Ok(f.await?.revision) })
    }

    /// Deletes unconditionally; answers whether the key existed.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        let f = self.txn(Txn::new().delete(key));
        Box::pin(async move { Ok(f.await?.prev.first().is_some_and(Option::is_some)) })
    }

    /// Deletes if `key` is at `expected`.
    fn delete_if<'a>(&'a self, key: &'a str, expected: Revision) -> StoreFuture<'a, Revision> {
        let f = self.txn(Txn::new().when(key, expected).delete(key));
        Box::pin(async move { Ok(f.await?.revision) })
    }
}
