//! Durable control-plane state: a small key-value [`StateStore`] whose keys are laid
//! out as they would be in etcd (`/ferrox/v1/<kind>/<id>`), implemented on redb in the
//! data directory, and the records kept in it (JSON values).
//!
//! Every change is recorded *before* it is made (a record in an intent state such as
//! `Creating`) and again *after* (`Ready`), each with its own committed transaction,
//! so start-up reconciliation ([`crate::server`]) can tell an interrupted change from
//! a finished one.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// A key-value store with sorted keys: what the control plane needs of etcd.
pub trait StateStore: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ControlError>;
    /// Writes durably (committed and synced when it returns).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), ControlError>;
    /// Returns whether the key existed.
    fn delete(&self, key: &str) -> Result<bool, ControlError>;
    /// Every key starting with `prefix`, in key order.
    fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ControlError>;
}

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// [`StateStore`] on a redb database file (fsync on every commit).
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, ControlError> {
        let db = redb::Database::create(path).map_err(|e| ControlError::store("open", e))?;
        // Make sure the table exists, so reads of a fresh store find it.
        let tx = db
            .begin_write()
            .map_err(|e| ControlError::store("open", e))?;
        tx.open_table(TABLE)
            .map_err(|e| ControlError::store("open", e))?;
        tx.commit().map_err(|e| ControlError::store("open", e))?;
        Ok(Self { db })
    }
}

impl StateStore for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| ControlError::store("get", e))?;
        let t = tx
            .open_table(TABLE)
            .map_err(|e| ControlError::store("get", e))?;
        let v = t.get(key).map_err(|e| ControlError::store("get", e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), ControlError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| ControlError::store("put", e))?;
        {
            let mut t = tx
                .open_table(TABLE)
                .map_err(|e| ControlError::store("put", e))?;
            t.insert(key, value)
                .map_err(|e| ControlError::store("put", e))?;
        }
        tx.commit().map_err(|e| ControlError::store("put", e))
    }

    fn delete(&self, key: &str) -> Result<bool, ControlError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| ControlError::store("delete", e))?;
        let existed = {
            let mut t = tx
                .open_table(TABLE)
                .map_err(|e| ControlError::store("delete", e))?;
            let old = t
                .remove(key)
                .map_err(|e| ControlError::store("delete", e))?;
            old.is_some()
        };
        tx.commit().map_err(|e| ControlError::store("delete", e))?;
        Ok(existed)
    }

    fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ControlError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| ControlError::store("list", e))?;
        let t = tx
            .open_table(TABLE)
            .map_err(|e| ControlError::store("list", e))?;
        let mut out = Vec::new();
        for item in t
            .range(prefix..)
            .map_err(|e| ControlError::store("list", e))?
        {
            let (k, v) = item.map_err(|e| ControlError::store("list", e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
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
pub trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    fn id(&self) -> &str;
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

/// Typed access to a [`StateStore`].
pub struct Records<'a>(pub &'a dyn StateStore);

impl Records<'_> {
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, ControlError> {
        let k = key(R::KIND, id);
        self.0
            .get(&k)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|source| ControlError::Record { key: k, source })
            })
            .transpose()
    }

    pub fn put<R: Record>(&self, r: &R) -> Result<(), ControlError> {
        let k = key(R::KIND, r.id());
        let v = serde_json::to_vec(r).map_err(|source| ControlError::Record {
            key: k.clone(),
            source,
        })?;
        self.0.put(&k, &v)
    }

    pub fn delete<R: Record>(&self, id: &str) -> Result<bool, ControlError> {
        self.0.delete(&key(R::KIND, id))
    }

    pub fn list<R: Record>(&self) -> Result<Vec<R>, ControlError> {
        self.0
            .list_prefix(&kind_prefix(R::KIND))?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|source| ControlError::Record { key: k, source })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
