//! `ferrox-control`: the control plane of Ferrox — a gRPC API (package `ferrox.v1`)
//! served on a Unix socket, its durable state, and the `ferroxctl` client.
//!
//! # Architecture
//!
//! * **API** ([`api`]): generated at build time from `proto/ferrox/v1/*.proto` by
//!   tonic-prost-build: `NodeService`, `PoolService`, `VolumeService`,
//!   `SnapshotService`, `TargetService`.
//! * **Server** ([`server`]): tonic on its own tokio runtime thread(s), never on a
//!   reactor, listening on `<data-dir>/ferrox.sock` (mode 0600: the socket's file
//!   mode is the access control). Every data-plane action goes through one helper,
//!   `rpc_submit`, which either runs a blocking [`LvolStore`] call on tokio's
//!   blocking pool or sends a closure to the reactor that owns the resource and
//!   awaits its reply. Mutating calls are serialised by one async lock and are
//!   idempotent: the same name with the same parameters answers the existing object,
//!   different parameters answer `AlreadyExists` naming the difference.
//! * **State** ([`state`]): a [`state::StateStore`] (get/put/delete/list-prefix, keys
//!   `/ferrox/v1/<kind>/<id>` as in etcd) on redb in the data directory. Each change
//!   is recorded before it is made and after; on start the server re-imports pools,
//!   finishes or forgets interrupted changes, adopts volumes the store does not know
//!   (with a warning), and re-publishes published volumes, before it answers
//!   anything but `NodeService` (`Unavailable` until then).
//! * **Errors** ([`ControlError`]): one enum, and exactly one
//!   `From<ControlError> for tonic::Status`.
//! * **Metrics** ([`ControlServer::serve_metrics`]): opt-in Prometheus text on TCP at
//!   [`METRICS_PATH`], served from the control runtime; it reads the reactors', the
//!   target's and the pools' own counters at scrape time (series listed in
//!   `server/metrics.rs`).
//!
//! # What it doesn't implement
//!
//! * TCP (and TLS) for the API: only the Unix socket. Replicas, topology and
//!   cluster state (etcd) — the API accepts `replicas` 0/1 and an empty `topology`
//!   only.
//! * Per-subsystem listeners (listeners are target-wide; `Publish` uses the running
//!   ones and says so). Resizing a published volume (unpublish first).
//! * Destroying a pool on a bdev leaves its label (a path-based pool's file is
//!   removed). Export then Import forgets volume labels.
//! * Crash-consistent snapshot groups (`group_id` is recorded only). Per-volume
//!   latency metrics (the target does not time commands).
//!
//! [`LvolStore`]: ferrox_bdev::lvol::LvolStore

pub mod error;
pub mod server;
pub mod state;
pub mod validate;

pub use error::{ControlError, Kind};
pub use server::{ControlContext, ControlServer, METRICS_PATH};

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
        .map_err(|e| {
            let mut msg = format!("cannot connect to {}: {e}", path.display());
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(&format!(": {t}"));
                }
                src = s.source();
            }
            msg
        })
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

    /// Runs `f` on a clone of the channel, e.g.
    /// `c.call(|ch| async move { VolumeServiceClient::new(ch).list(req).await })`.
    pub fn call<T, F>(&self, f: impl FnOnce(tonic::transport::Channel) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        self.rt.block_on(f(self.ch.clone()))
    }
}
