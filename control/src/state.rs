//! Durable control-plane state: a key-value [`StateStore`] with etcd's model
//! (revisions, compare-and-swap transactions, watches, leases; [`kv`]) whose keys are
//! laid out as they are in etcd (`/ferrox/v1/<kind>/<id>`), implemented on redb in
//! the data directory ([`RedbStore`]), and the records kept in it (JSON values).
//!
//! Every change is recorded *before* it is made (a record in an intent state such as
//! `Creating`) and again *after* (`Ready`), each with its own committed transaction,
//! so start-up reconciliation ([`crate::server`]) can tell an interrupted change from
//! a finished one.

mod embedded;
pub mod etcd;
pub mod kv;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use self::embedded::{RedbStore, HISTORY};
pub use self::etcd::EtcdStore;
pub use self::kv::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, Revision, StateStore, StoreError, Txn,
    TxnResponse, Watcher,
};
use crate::error::ControlError;

/// The root of every key.
pub const PREFIX: &str = "/ferrox/v1/";

/// `/ferrox/v1/<kind>/<id>`.
pub fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}/{id}")
}

/// `/ferrox/v1/<kind>/`: the prefix listing every record of a kind.
pub fn kind_prefix(kind: &str) -> String {
    format!("{PREFIX}{kind}/")
}

/// Where an intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before acting; the object may or may not exist.
    Creating,
    /// Done.
    Ready,
    /// Recorded before removing; the object may or may not still exist.
    Deleting,
}

/// Where a pool lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolBaseRec {
    Bdev(String),
    Path { path: String, size: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRec {
    pub name: String,
    pub base: PoolBaseRec,
    pub cluster_size: u64,
    pub phase: Phase,
    /// The cap on what its volumes promise, as a multiple of its capacity; 0 (records
    /// written before the cap existed, imported pools) is the default.
    #[serde(default)]
    pub max_overcommit: u32,
    /// In a cluster, the id (32 hex digits) of the node whose data plane holds the
    /// pool: only that node restores it. Empty (and not written) on one node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRec {
    pub name: String,
    pub pool: String,
    /// As requested.
    pub size: u64,
    pub thin: bool,
    pub labels: BTreeMap<String, String>,
    /// The snapshot a clone was made of.
    #[serde(default)]
    pub clone_of: Option<String>,
    pub phase: Phase,
    /// A volume placed over a cluster (`replicas` > 1): where each replica lvol
    /// (named as the volume) lives; the first is in [`VolumeRec::pool`]. Empty for
    /// a volume of one local copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaRec>,
}

/// One replica of a volume: the node (its id) and the pool that hold its lvol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRec {
    pub node: String,
    pub pool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRec {
    pub name: String,
    pub pool: String,
    pub volume: String,
    pub group_id: String,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRec {
    pub volume: String,
    pub nqn: String,
    pub hosts: Vec<String>,
    pub any_host: bool,
    pub phase: Phase,
    /// The listener filter asked for (empty / 0: any): the subsystem is reachable
    /// through the running listeners that match. Records written before it existed
    /// read as "any".
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u32,
}

/// The kinds of record, and their key segment.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn phase(&self) -> Phase;
    /// The same record in another phase.
    fn in_phase(&self, phase: Phase) -> Self;
}

/// `Record` for a struct with a `phase` field, keyed by its field `$id`.
macro_rules! record {
    ($ty:ty, $kind:literal, $id:ident) => {
        impl Record for $ty {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.$id
            }
            fn phase(&self) -> Phase {
                self.phase
            }
            fn in_phase(&self, phase: Phase) -> Self {
                Self {
                    phase,
                    ..self.clone()
                }
            }
        }
    };
}

record!(PoolRec, "pool", name);
record!(VolumeRec, "volume", name);
record!(SnapshotRec, "snapshot", name);
record!(PublishRec, "publish", volume);

/// Typed access to a [`StateStore`]: asynchronous over `dyn StateStore` (the
/// server), synchronous over a [`RedbStore`] (tools and tests editing the store of a
/// stopped node).
pub struct Records<'a, S: ?Sized = dyn StateStore>(pub &'a S);

fn to_json<R: Record>(r: &R) -> Result<(String, Vec<u8>), ControlError> {
    let k = key(R::KIND, r.id());
    let v = serde_json::to_vec(r).map_err(|source| ControlError::Record {
        key: k.clone(),
        source,
    })?;
    Ok((k, v))
}

fn from_json<R: Record>(kv: KeyValue) -> Result<(R, Revision), ControlError> {
    let rec = serde_json::from_slice(&kv.value).map_err(|source| ControlError::Record {
        key: kv.key,
        source,
    })?;
    Ok((rec, kv.mod_revision))
}

/// `txn` with a put of `r` added.
pub fn put_record<R: Record>(txn: Txn, r: &R) -> Result<Txn, ControlError> {
    let (k, v) = to_json(r)?;
    Ok(txn.put(k, v))
}

/// The key of record `id` of kind `R`.
pub fn record_key<R: Record>(id: &str) -> String {
    key(R::KIND, id)
}

impl Records<'_, dyn StateStore> {
    /// Commits `txn`; answers its revision.
    pub async fn txn(&self, txn: Txn) -> Result<Revision, ControlError> {
        Ok(self.0.txn(txn).await?.revision)
    }

    pub async fn get<R: Record>(&self, id: &str) -> Result<Option<R>, ControlError> {
        Ok(self.get_rev(id).await?.map(|(r, _)| r))
    }

    /// The record and its revision (for a later [`Records::put_if`]).
    pub async fn get_rev<R: Record>(
        &self,
        id: &str,
    ) -> Result<Option<(R, Revision)>, ControlError> {
        self.0
            .get(&key(R::KIND, id))
            .await?
            .map(from_json)
            .transpose()
    }

    pub async fn put<R: Record>(&self, r: &R) -> Result<Revision, ControlError> {
        let (k, v) = to_json(r)?;
        Ok(self.0.put(&k, v).await?)
    }

    /// Writes `r` if its key is at `expected` (0: absent); else
    /// [`StoreError::Conflict`].
    pub async fn put_if<R: Record>(
        &self,
        r: &R,
        expected: Revision,
    ) -> Result<Revision, ControlError> {
        let (k, v) = to_json(r)?;
        Ok(self.0.put_if(&k, v, expected).await?)
    }

    pub async fn delete<R: Record>(&self, id: &str) -> Result<bool, ControlError> {
        Ok(self.0.delete(&key(R::KIND, id)).await?)
    }

    /// Deletes the record if its key is at `expected`.
    pub async fn delete_if<R: Record>(
        &self,
        id: &str,
        expected: Revision,
    ) -> Result<Revision, ControlError> {
        Ok(self.0.delete_if(&key(R::KIND, id), expected).await?)
    }

    pub async fn list<R: Record>(&self) -> Result<Vec<R>, ControlError> {
        Ok(self.list_rev().await?.into_iter().map(|(r, _)| r).collect())
    }

    /// Every record of a kind with its revision.
    pub async fn list_rev<R: Record>(&self) -> Result<Vec<(R, Revision)>, ControlError> {
        let (kvs, _) = self.0.range(&kind_prefix(R::KIND)).await?;
        kvs.into_iter().map(from_json).collect()
    }
}

impl Records<'_, RedbStore> {
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, ControlError> {
        self.0
            .blocking_get(&key(R::KIND, id))?
            .map(|kv| from_json(kv).map(|(r, _)| r))
            .transpose()
    }

    pub fn put<R: Record>(&self, r: &R) -> Result<Revision, ControlError> {
        let (k, v) = to_json(r)?;
        Ok(self.0.blocking_txn(&Txn::new().put(k, v))?.revision)
    }

    pub fn delete<R: Record>(&self, id: &str) -> Result<bool, ControlError> {
        let r = self.0.blocking_txn(&Txn::new().delete(key(R::KIND, id)))?;
        Ok(r.prev.first().is_some_and(Option::is_some))
    }

    pub fn list<R: Record>(&self) -> Result<Vec<R>, ControlError> {
        let (kvs, _) = self.0.blocking_range(&kind_prefix(R::KIND))?;
        kvs.into_iter()
            .map(|kv| from_json(kv).map(|(r, _)| r))
            .collect()
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
