//! Mutual exclusion between control-plane instances, through the state store.
//!
//! A change takes the locks of the scopes it touches (a pool, the pool list, the
//! target) by creating their keys `/ferrox/v1/lock/<scope>` in one transaction that
//! requires each to be absent, attached to the instance's session lease. Another
//! instance — or another call of this one — that finds a key taken waits on a watch
//! of it until it is deleted (released, or its lease ended), at most
//! [`LOCK_PATIENCE`], then answers `Aborted`. A crashed holder's locks go with its
//! lease: after the lease TTL on etcd, at the next open on redb.
//!
//! Locks keep long data-plane changes (formatting a pool, creating a volume) from
//! interleaving; the records themselves are still written with compare-and-swap on
//! the revision read, so a change across scopes (two pools, one volume name) has
//! exactly one winner.

use std::sync::Arc;
use std::time::Duration;

use super::Core;
use crate::error::ControlError;
use crate::state::{self, EventKind, LeaseId, Record, Revision, StateStore, StoreError, Txn};

/// The longest a call waits for a lock another change holds.
pub(crate) const LOCK_PATIENCE: Duration = Duration::from_secs(30);
/// The TTL of an instance's session lease; it is renewed every third of it.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(15);

/// How many lost races a change re-reads and tries again before it answers `Aborted`.
pub(crate) const MAX_RACES: usize = 8;

/// The lock scope of pool `name`: its volumes, snapshots and publications.
pub(crate) fn pool(name: &str) -> String {
    format!("pool/{name}")
}

/// The lock scope of a volume of several replicas: held by its create or delete for
/// as long as it runs, and by the leader while it finishes an interrupted one.
pub(crate) fn volume(name: &str) -> String {
    format!("volume/{name}")
}

/// The lock scope of the pool list (bases, names, imports).
pub(crate) const POOLS: &str = "pools";
/// The lock scope of the target's subsystems and listeners.
pub(crate) const TARGET: &str = "target";

fn lock_key(scope: &str) -> String {
    state::key("lock", scope)
}

/// Held locks; released (deleted, each if still this holder's) when dropped.
pub(crate) struct Locks {
    store: Arc<dyn StateStore>,
    keys: Vec<String>,
    revision: Revision,
}

impl Drop for Locks {
    fn drop(&mut self) {
        let (store, keys, rev) = (
            self.store.clone(),
            std::mem::take(&mut self.keys),
            self.revision,
        );
        let release = async move {
            for k in keys {
                match store.delete_if(&k, rev).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => {
                        tracing::warn!(key = %k, error = %e, "cannot release a lock; its lease will")
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn(release)),
            Err(_) => tracing::warn!(
                "a lock dropped outside the control runtime; its lease will release it"
            ),
        }
    }
}

impl Core {
    /// This instance's session lease, granting it first. One grant at a time, so
    /// that every lock hangs on the lease that is kept alive.
    async fn session(&self) -> Result<LeaseId, ControlError> {
        let mut s = self.session.lock().await;
        if *s == 0 {
            *s = self.store.lease_grant(SESSION_TTL).await?;
        }
        Ok(*s)
    }

    /// Forgets session lease `lapsed` (the store no longer has it), so the next
    /// [`Core::session`] grants another.
    async fn forget_session(&self, lapsed: LeaseId) {
        let mut s = self.session.lock().await;
        if *s == lapsed {
            *s = 0;
        }
    }

    /// Keeps the session lease alive until the core is dropped; runs on the
    /// control runtime.
    pub(crate) async fn keep_session(self: Arc<Self>) {
        let core = Arc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(SESSION_TTL / 3).await;
            let Some(c) = core.upgrade() else { return };
            let id = *c.session.lock().await;
            if id == 0 {
                continue;
            }
            if let Err(e) = c.store.lease_keep_alive(id).await {
                tracing::warn!(error = %e, "the control session lease lapsed; locks held under it are lost, taking a new one");
                c.forget_session(id).await;
            }
        }
    }

    /// Takes the locks of `scopes` for the change described by `what`, waiting for
    /// other holders at most [`LOCK_PATIENCE`].
    pub(crate) async fn lock(&self, scopes: &[&str], what: &str) -> Result<Locks, ControlError> {
        let keys: Vec<String> = scopes.iter().map(|s| lock_key(s)).collect();
        let holder = format!(
            "{} (pid {}): {what}",
            self.ctx.node_name,
            std::process::id()
        );
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::Aborted(format!(
                    "{what}: could not take {keys:?} within {LOCK_PATIENCE:?}; retry"
                )));
            }
            let lease = self.session().await?;
            let mut txn = Txn::new();
            for k in &keys {
                txn = txn.when(k.clone(), 0).put_leased(
                    k.clone(),
                    holder.clone().into_bytes(),
                    lease,
                );
            }
            let (key, held_at) = match self.store.txn(txn).await {
                Ok(r) => {
                    return Ok(Locks {
                        store: self.store.clone(),
                        keys,
                        revision: r.revision,
                    })
                }
                Err(StoreError::Conflict { key, actual, .. }) => (key, actual),
                Err(StoreError::LeaseNotFound(id)) => {
                    self.forget_session(id).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let released =
                tokio::time::timeout_at(deadline, self.wait_deleted(&key, held_at)).await;
            match released {
                Ok(r) => r?,
                Err(_) => {
                    let by = self
                        .store
                        .get(&key)
                        .await?
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                        .unwrap_or_else(|| "another change".into());
                    return Err(ControlError::Aborted(format!(
                        "{what}: waited {LOCK_PATIENCE:?} for {by}; retry"
                    )));
                }
            }
        }
    }

    /// Takes the locks of `scopes` if none is held; `None` (at once) when one is.
    pub(crate) async fn try_lock(
        &self,
        scopes: &[&str],
        what: &str,
    ) -> Result<Option<Locks>, ControlError> {
        let keys: Vec<String> = scopes.iter().map(|s| lock_key(s)).collect();
        let holder = format!(
            "{} (pid {}): {what}",
            self.ctx.node_name,
            std::process::id()
        );
        for _ in 0..MAX_RACES {
            let lease = self.session().await?;
            let mut txn = Txn::new();
            for k in &keys {
                txn = txn.when(k.clone(), 0).put_leased(
                    k.clone(),
                    holder.clone().into_bytes(),
                    lease,
                );
            }
            match self.store.txn(txn).await {
                Ok(r) => {
                    return Ok(Some(Locks {
                        store: self.store.clone(),
                        keys,
                        revision: r.revision,
                    }))
                }
                Err(StoreError::Conflict { .. }) => return Ok(None),
                Err(StoreError::LeaseNotFound(id)) => self.forget_session(id).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(raced("lock", &keys.join(", ")))
    }

    /// Records `rec` if `claim`'s compares hold; `None` when they do not (another
    /// change got there first: re-read and decide again).
    pub(crate) async fn claim<R: Record>(
        &self,
        claim: Txn,
        rec: &R,
    ) -> Result<Option<Revision>, ControlError> {
        match self.records().txn(state::put_record(claim, rec)?).await {
            Ok(rev) => Ok(Some(rev)),
            Err(ControlError::Store(StoreError::Conflict { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until record `id`, read at `rev` in the middle of another change
    /// (Creating or Deleting), changes; at most [`LOCK_PATIENCE`].
    pub(crate) async fn settled<R: Record>(
        &self,
        id: &str,
        rev: Revision,
    ) -> Result<(), ControlError> {
        let key = state::key(R::KIND, id);
        match tokio::time::timeout(LOCK_PATIENCE, self.wait_for(&key, rev, false)).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::Aborted(format!(
                "{} {id:?} is in the middle of another change (for {LOCK_PATIENCE:?}); retry",
                R::KIND
            ))),
        }
    }

    async fn wait_deleted(&self, key: &str, rev: Revision) -> Result<(), ControlError> {
        self.wait_for(key, rev, true).await
    }

    async fn wait_for(&self, key: &str, rev: Revision, delete: bool) -> Result<(), ControlError> {
        let mut w = match self.store.watch(key, rev + 1).await {
            Ok(w) => w,
            // The history moved on: whatever happened, re-read.
            Err(StoreError::Compacted { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        loop {
            match w.recv().await {
                Ok(Some(e)) if e.kv.key == key && (!delete || e.kind == EventKind::Delete) => {
                    return Ok(())
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(StoreError::Compacted { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The answer after [`MAX_RACES`] lost races.
pub(crate) fn raced(kind: &str, id: &str) -> ControlError {
    ControlError::Aborted(format!(
        "{kind} {id:?} changed concurrently {MAX_RACES} times; retry"
    ))
}
