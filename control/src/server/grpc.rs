//! The tonic services: thin adapters from requests to [`Core`] methods, and `serve`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Core, MAX_HEADER_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use crate::api::node_service_server::{NodeService, NodeServiceServer};
use crate::api::pool_service_server::{PoolService, PoolServiceServer};
use crate::api::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use crate::api::target_service_server::{TargetService, TargetServiceServer};
use crate::api::volume_service_server::{VolumeService, VolumeServiceServer};
use crate::api::*;

/// Every service, on one shared core.
pub(crate) struct Svc(pub Arc<Core>);

type Res<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, crate::ControlError>) -> Res<T> {
    r.map(Response::new).map_err(Status::from)
}

/// Features this build offers (NodeService.GetInfo).
const FEATURES: &[&str] = &[
    "lvol",
    "thin",
    "thick",
    "snapshot",
    "clone",
    "resize",
    "online-grow",
    "volume-stats",
    "nvmf-tcp",
    "unix-socket-api",
    "tcp-mtls-api",
];

#[tonic::async_trait]
impl NodeService for Svc {
    async fn get_info(&self, _r: Request<GetNodeInfoRequest>) -> Res<NodeInfo> {
        let c = &self.0;
        let reactors = c
            .ctx
            .reactors
            .iter()
            .map(|h| {
                let s = h.stats();
                ReactorInfo {
                    id: s.id as u32,
                    core: s.core as u32,
                    busy_turns: s.busy_turns,
                    idle_turns: s.idle_turns,
                    parks: s.parks,
                    busy_ns: s.busy_ns,
                    idle_ns: s.idle_ns,
                    parked_ns: s.parked_ns,
                    messages: s.messages,
                    stalls: s.stalls,
                }
            })
            .collect();
        let bdevs = c
            .ctx
            .registry
            .names()
            .iter()
            .filter_map(|n| c.ctx.registry.get(n).ok())
            .map(|d| {
                let i = d.info();
                BdevInfo {
                    name: i.name.clone(),
                    size_bytes: i.num_blocks * u64::from(i.block_size),
                    block_size: i.block_size,
                }
            })
            .collect();
        Ok(Response::new(NodeInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            features: FEATURES.iter().map(|s| s.to_string()).collect(),
            reactors,
            bdevs,
            uptime_seconds: c.started.elapsed().as_secs(),
            node_id: super::pools::hex(&c.ctx.node_id),
            node_name: c.ctx.node_name.clone(),
            listeners: c
                .ctx
                .target
                .listeners()
                .iter()
                .map(ToString::to_string)
                .collect(),
            ready: c.ready.load(std::sync::atomic::Ordering::Acquire),
        }))
    }

    async fn list(&self, _r: Request<ListNodesRequest>) -> Res<ListNodesResponse> {
        ok(self
            .0
            .node_list()
            .await
            .map(|nodes| ListNodesResponse { nodes }))
    }

    async fn get(&self, r: Request<GetNodeRequest>) -> Res<ClusterNode> {
        ok(self.0.node_get(&r.into_inner().name).await)
    }

    async fn cordon(&self, r: Request<CordonNodeRequest>) -> Res<ClusterNode> {
        ok(self.0.node_cordon(&r.into_inner().name, true).await)
    }

    async fn uncordon(&self, r: Request<CordonNodeRequest>) -> Res<ClusterNode> {
        ok(self.0.node_cordon(&r.into_inner().name, false).await)
    }
}

#[tonic::async_trait]
impl PoolService for Svc {
    // A node's pools are in its cluster record (placement reads them there): the
    // record is written again before a pool change is answered.
    async fn create(&self, r: Request<CreatePoolRequest>) -> Res<Pool> {
        let res = self.0.pool_create(r.into_inner()).await;
        self.0.refresh_record().await;
        ok(res)
    }

    async fn import(&self, r: Request<ImportPoolRequest>) -> Res<Pool> {
        let res = self.0.pool_import(r.into_inner()).await;
        self.0.refresh_record().await;
        ok(res)
    }

    async fn destroy(&self, r: Request<DestroyPoolRequest>) -> Res<DeleteResponse> {
        let existed = self.0.pool_remove(r.into_inner().name, true).await;
        self.0.refresh_record().await;
        ok(existed.map(|existed| DeleteResponse { existed }))
    }

    async fn export(&self, r: Request<ExportPoolRequest>) -> Res<DeleteResponse> {
        let existed = self.0.pool_remove(r.into_inner().name, false).await;
        self.0.refresh_record().await;
        ok(existed.map(|existed| DeleteResponse { existed }))
    }

    async fn list(&self, _r: Request<ListPoolsRequest>) -> Res<ListPoolsResponse> {
        ok(self
            .0
            .pool_list()
            .await
            .map(|pools| ListPoolsResponse { pools }))
    }

    async fn get(&self, r: Request<GetPoolRequest>) -> Res<Pool> {
        ok(self.0.pool_get(r.into_inner().name).await)
    }
}

#[tonic::async_trait]
impl VolumeService for Svc {
    async fn create(&self, r: Request<CreateVolumeRequest>) -> Res<Volume> {
        ok(self.0.volume_create(r.into_inner()).await)
    }

    async fn resize(&self, r: Request<ResizeVolumeRequest>) -> Res<Volume> {
        ok(self.0.volume_resize(r.into_inner()).await)
    }

    async fn stats(&self, r: Request<VolumeStatsRequest>) -> Res<VolumeStats> {
        ok(self.0.volume_stats(r.into_inner()).await)
    }

    async fn destroy(&self, r: Request<DestroyVolumeRequest>) -> Res<DestroyVolumeResponse> {
        let existed = self.0.volume_destroy(r.into_inner().name).await;
        ok(existed.map(|existed| DestroyVolumeResponse { existed }))
    }

    async fn list(&self, r: Request<ListVolumesRequest>) -> Res<ListVolumesResponse> {
        let v = self.0.volume_list(r.into_inner().pool).await;
        ok(v.map(|volumes| ListVolumesResponse { volumes }))
    }

    async fn get(&self, r: Request<GetVolumeRequest>) -> Res<Volume> {
        ok(self.0.volume_get(r.into_inner().name).await)
    }

    async fn create_replica(&self, r: Request<ReplicaRequest>) -> Res<Replica> {
        ok(self.0.replica_create(r.into_inner()).await)
    }

    async fn destroy_replica(&self, r: Request<ReplicaRequest>) -> Res<DestroyVolumeResponse> {
        let existed = self.0.replica_destroy(r.into_inner()).await;
        ok(existed.map(|existed| DestroyVolumeResponse { existed }))
    }
}

#[tonic::async_trait]
impl SnapshotService for Svc {
    async fn create(&self, r: Request<CreateSnapshotRequest>) -> Res<Snapshot> {
        ok(self.0.snapshot_create(r.into_inner()).await)
    }

    async fn destroy(&self, r: Request<DestroySnapshotRequest>) -> Res<DestroySnapshotResponse> {
        let existed = self.0.snapshot_destroy(r.into_inner().name).await;
        ok(existed.map(|existed| DestroySnapshotResponse { existed }))
    }

    async fn list(&self, r: Request<ListSnapshotsRequest>) -> Res<ListSnapshotsResponse> {
        let s = self.0.snapshot_list(r.into_inner().volume).await;
        ok(s.map(|snapshots| ListSnapshotsResponse { snapshots }))
    }

    async fn clone_snapshot(&self, r: Request<CloneSnapshotRequest>) -> Res<Volume> {
        ok(self.0.snapshot_clone(r.into_inner()).await)
    }
}

#[tonic::async_trait]
impl TargetService for Svc {
    async fn publish(&self, r: Request<PublishRequest>) -> Res<PublishResponse> {
        ok(self.0.publish(r.into_inner()).await)
    }

    async fn unpublish(&self, r: Request<UnpublishRequest>) -> Res<UnpublishResponse> {
        let existed = self.0.unpublish(r.into_inner().volume).await;
        ok(existed.map(|existed| UnpublishResponse { existed }))
    }

    async fn list_subsystems(
        &self,
        _r: Request<ListSubsystemsRequest>,
    ) -> Res<ListSubsystemsResponse> {
        ok(self
            .0
            .subsystems()
            .await
            .map(|subsystems| ListSubsystemsResponse { subsystems }))
    }
}

macro_rules! limited {
    ($server:ident, $core:expr) => {
        $server::new(Svc($core.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    };
}

/// Serves every service on `incoming` until `stop` fires: the Unix socket (`tls`
/// `None`) and the opt-in TCP listener (mutual TLS) alike, with the same message-size
/// limits and per-connection concurrency limit.
pub(crate) async fn serve<I, IO, IE>(
    core: Arc<Core>,
    incoming: I,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .concurrency_limit_per_connection(64)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .add_service(limited!(NodeServiceServer, core))
        .add_service(limited!(PoolServiceServer, core))
        .add_service(limited!(VolumeServiceServer, core))
        .add_service(limited!(SnapshotServiceServer, core))
        .add_service(limited!(TargetServiceServer, core))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}
