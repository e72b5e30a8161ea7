//! `ferrox-control`: the control plane of Ferrox — a gRPC API (package `ferrox.v1`)
//! served on a Unix socket (and, opt-in, on TCP with mutual TLS), its durable state,
//! and the `ferroxctl` client.
//!
//! # Architecture
//!
//! * **API** ([`api`]): generated at build time from `proto/ferrox/v1/*.proto` by
//!   tonic-prost-build: `NodeService`, `PoolService`, `VolumeService`,
//!   `SnapshotService`, `TargetService`.
//! * **Server** ([`server`]): tonic on its own tokio runtime thread(s), never on a
//!   reactor, listening on `<data-dir>/ferrox.sock` (mode 0600: the socket's file
//!   mode is the access control). Every data-plane action goes through one helper,
//!   `rpc_submit`, which awaits an lvol engine operation on its pool's metadata
//!   reactor (an [`LvolStore`] `*_async` call), sends a closure to the reactor that
//!   owns the resource and awaits its reply, or (what is not moved yet: pool
//!   create/import/load, volume create and resize, snapshot and clone creation,
//!   the metrics' gathering) runs a blocking [`LvolStore`] call on tokio's blocking
//!   pool. Mutating calls are idempotent: the same name with the same
//!   parameters answers the existing object, different parameters answer
//!   `AlreadyExists` naming the difference. They exclude each other through the
//!   state store, not a process-local lock, so several servers may share one store:
//!   a change takes the lease-backed lock keys of the pool (and target) it touches,
//!   and writes its records with compare-and-swap on the revision it read; a lost
//!   race is re-read and decided again, or answers `Aborted` (`server/lock.rs`).
//! * **State** ([`state`]): an async [`state::StateStore`] with etcd's model —
//!   revisions per key, compare-and-swap transactions, watches from a revision,
//!   leases; keys `/ferrox/v1/<kind>/<id>` as in etcd; its own [`state::StoreError`]
//!   — on redb in the data directory ([`state::RedbStore`]; what it promises beyond
//!   and short of etcd is in its docs). Each change is recorded before it is made and
//!   after; on start the server re-imports pools, finishes or forgets interrupted
//!   changes (each fix a compare-and-swap on the revision it read), adopts volumes
//!   the store does not know (with a warning), and re-publishes published volumes,
//!   before it answers anything but `NodeService` (`Unavailable` until then).
//! * **Remote access** ([`ControlServer::serve_tcp`], [`tls`]): opt-in; the same
//!   services and limits on TCP, with rustls requiring a client certificate signed by
//!   the configured client CA. Handshakes run concurrently with a timeout
//!   ([`tls::HANDSHAKE_TIMEOUT`]), so a stalled or garbage-sending peer holds up no
//!   one else.
//! * **Limits** (both listeners): requests over [`server::MAX_REQUEST_BYTES`] are
//!   refused (`OutOfRange`), header lists over [`server::MAX_HEADER_BYTES`] are
//!   refused by HTTP/2, prost refuses messages nested deeper than its recursion limit,
//!   and at most 64 calls run per connection.
//! * **Placement** ([`placement`]): a pure function from the cluster's nodes (labels,
//!   up/down, cordoned) and pools (free space) to the pools that hold a volume's
//!   replicas, one per failure domain; replicated creates in a cluster call it with
//!   the node registry (a cordoned node takes no new replica). Node labels and its
//!   inputs are checked in [`validate`].
//! * **The cluster's leader** (`server/leader.rs`): one node at a time, elected
//!   through a lease-backed etcd key, finishes or rolls back replicated creates and
//!   deletes a crash interrupted; every node reports the lvols of its pools that no
//!   record accounts for (orphans) and never deletes them.
//! * **Errors** ([`ControlError`]): one enum, and exactly one
//!   `From<ControlError> for tonic::Status`.
//! * **Metrics** ([`ControlServer::serve_metrics`]): opt-in Prometheus text on TCP at
//!   [`METRICS_PATH`], served from the control runtime; it reads the reactors', the
//!   target's and the pools' own counters at scrape time (series listed in
//!   `server/metrics.rs`).
//!
//! # What it doesn't implement
//!
//! * Authorisation beyond "holds a certificate the client CA signed" (no per-client
//!   roles, no certificate revocation lists).
//! * Mirroring: on one node the API accepts `replicas` 0/1 only; in a cluster
//!   replicas are placed as separate lvols, not mirrored. `topology` must be empty.
//!   No `node drain`.
//! * Shrinking a published volume (it grows online).
//! * Destroying a pool on a bdev leaves its label (a path-based pool's file is
//!   removed). Export then Import forgets volume labels.
//! * Crash-consistent snapshot groups (`group_id` is recorded only). Per-volume I/O
//!   counts start again when the volume is exported again (publish, daemon start);
//!   the metrics' per-controller series end with their controller.
//!
//! [`LvolStore`]: ferrox_bdev::lvol::LvolStore

pub mod error;
pub mod placement;
pub mod server;
pub mod state;
pub mod tls;
pub mod validate;

pub use error::{ControlError, Kind};
pub use server::{ClusterOptions, ControlContext, ControlServer, METRICS_PATH};
pub use tls::{connect_tls, ClientTls, ServerTls};

/// An error and its sources, each once: "cannot connect: transport error: refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(&format!(": {t}"));
        }
        src = s.source();
    }
    msg
}

/// The generated API: messages, `*_server` traits and `*_client` stubs.
pub mod api {
    #![allow(clippy::all, missing_docs)] // generated code
    tonic::include_proto!("ferrox.v1");
}

/// Connects a client channel to the control socket at `path`.
pub async fn connect(path: &std::path::Path) -> Result<tonic::transport::Channel, String> {
    let uri = format!("unix:{}", path.display());
    tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", path.display(), error_chain(&e)))
}

/// A client for code without a tokio runtime of its own (tests, tools): owns a
/// current-thread runtime and a channel, and runs generated-client calls to completion.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    ch: tonic::transport::Channel,
}

impl BlockingClient {
    pub fn connect(path: &std::path::Path) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let ch = rt.block_on(connect(path))?;
        Ok(Self { rt, ch })
    }

    /// Connects to the TCP listener at `addr` (`https://HOST:PORT`) with `tls`.
    pub fn connect_tls(addr: &str, tls: &ClientTls) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let ch = rt.block_on(connect_tls(addr, tls))?;
        Ok(Self { rt, ch })
    }

    /// Runs `f` on a clone of the channel, e.g.
    /// `c.call(|ch| async move { VolumeServiceClient::new(ch).list(req).await })`.
    pub fn call<T, F>(&self, f: impl FnOnce(tonic::transport::Channel) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        self.rt.block_on(f(self.ch.clone()))
    }
}
