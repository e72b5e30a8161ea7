// Each test crate uses a different part of this module.
#![allow(dead_code)]
//! An in-process node for the control-plane tests: one reactor, a target on an
//! ephemeral port, and the control server on a socket in a temporary data dir.

pub mod load;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrox_bdev::Registry;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::{pool_base, CreatePoolRequest, PoolBase};
use ferrox_control::{BlockingClient, ControlContext, ControlServer};
use ferrox_nvmeof::Target;
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, ReactorGroup, ReactorOptions,
};

pub const MIB: u64 = 1 << 20;

pub struct Node {
    pub dir: PathBuf,
    pub socket: PathBuf,
    server: Option<ControlServer>,
    target: Option<Target>,
    group: Option<ReactorGroup>,
}

impl Node {
    /// Starts a node on `dir` (state there survives a [`Node::restart`]).
    pub fn start(dir: &Path) -> Self {
        let pool = BufferPool::new(&PoolConfig {
            classes: vec![
                ClassConfig {
                    size: 4096,
                    count: 256,
                },
                ClassConfig {
                    size: 128 << 10,
                    count: 16,
                },
            ],
            hugepages: false,
        })
        .unwrap();
        let core = available_cores()[0];
        let group = ReactorGroup::start(&[core], &ReactorOptions::default(), pool).unwrap();
        let node_id = [7u8; 16];
        let target = Target::start(
            group.handles(),
            node_id,
            Vec::new(),
            &["127.0.0.1:0".parse().unwrap()],
        )
        .unwrap();
        let socket = dir.join("ferrox.sock");
        let server = ControlServer::start(
            ControlContext {
                target: target.shared().clone(),
                registry: Arc::new(Registry::new()),
                reactors: group.handles().to_vec(),
                node_id,
                node_name: "test-node".into(),
                data_dir: dir.to_path_buf(),
            },
            &socket,
        )
        .unwrap();
        Self {
            dir: dir.to_path_buf(),
            socket,
            server: Some(server),
            target: Some(target),
            group: Some(group),
        }
    }

    /// Serves metrics on an ephemeral loopback port; returns its address.
    pub fn serve_metrics(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .expect("running")
            .serve_metrics("127.0.0.1:0".parse().unwrap())
            .unwrap()
    }

    /// Serves the API on an ephemeral loopback TCP port with mutual TLS; returns its
    /// address.
    pub fn serve_tcp(&self, tls: ferrox_control::ServerTls) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .expect("running")
            .serve_tcp("127.0.0.1:0".parse().unwrap(), tls)
            .unwrap()
    }

    pub fn client(&self) -> BlockingClient {
        BlockingClient::connect(&self.socket).unwrap()
    }

    /// Stops in the daemon's order: control plane, target, reactors.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        drop(self.target.take());
        if let Some(g) = self.group.take() {
            g.shutdown();
        }
    }

    pub fn restart(mut self) -> Self {
        self.stop();
        Self::start(&self.dir.clone())
    }

    /// Creates a file-backed pool `name` of `size` bytes in the data dir.
    pub fn pool(&self, c: &BlockingClient, name: &str, size: u64) {
        let path = self.dir.join(format!("{name}.img")).display().to_string();
        let name = name.to_string();
        c.call(|ch| async move {
            PoolServiceClient::new(ch)
                .create(CreatePoolRequest {
                    name,
                    base: Some(PoolBase {
                        base: Some(pool_base::Base::Path(path)),
                        size_bytes: size,
                    }),
                    cluster_size: 0,
                    max_overcommit: 0,
                })
                .await
        })
        .unwrap();
    }
}

/// Creates volume `name` in the only pool and publishes it to any host; returns the
/// first listener ("ip:port") and the NQN.
pub fn create_and_publish(c: &BlockingClient, name: &str, size: u64) -> (String, String) {
    use ferrox_control::api::target_service_client::TargetServiceClient;
    use ferrox_control::api::volume_service_client::VolumeServiceClient;
    use ferrox_control::api::{CreateVolumeRequest, PublishRequest};
    let n = name.to_string();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: n,
                size_bytes: size,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .unwrap();
    let n = name.to_string();
    let p = c
        .call(|ch| async move {
            TargetServiceClient::new(ch)
                .publish(PublishRequest {
                    volume: n,
                    any_host: true,
                    ..Default::default()
                })
                .await
        })
        .unwrap()
        .into_inner();
    (p.listeners[0].clone(), p.nqn)
}

/// `GET /metrics` over HTTP/1.0; returns the status line and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// Scrapes `addr` and parses the exposition with `prometheus-parse`.
pub fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(addr, ferrox_control::METRICS_PATH);
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    assert_eq!(
        body.lines().last(),
        Some("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the one sample named `metric` whose labels include `want`.
pub fn value(s: &prometheus_parse::Scrape, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && want.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    let one = found.next()?;
    assert!(
        found.next().is_none(),
        "more than one {metric} with {want:?}"
    );
    match one.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => panic!("{metric} is not a scalar"),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every volume the node lists (`VolumeService.List` without a filter).
pub fn list_volumes(c: &BlockingClient) -> Vec<ferrox_control::api::Volume> {
    c.call(|ch| async move {
        ferrox_control::api::volume_service_client::VolumeServiceClient::new(ch)
            .list(ferrox_control::api::ListVolumesRequest::default())
            .await
    })
    .unwrap()
    .into_inner()
    .volumes
}

/// Every subsystem of the target, through TargetService.ListSubsystems.
pub fn list_subsystems(c: &BlockingClient) -> Vec<ferrox_control::api::Subsystem> {
    c.call(|ch| async move {
        ferrox_control::api::target_service_client::TargetServiceClient::new(ch)
            .list_subsystems(ferrox_control::api::ListSubsystemsRequest {})
            .await
    })
    .unwrap()
    .into_inner()
    .subsystems
}

/// NodeService.GetInfo.
pub fn node_info(c: &BlockingClient) -> ferrox_control::api::NodeInfo {
    c.call(|ch| async move {
        ferrox_control::api::node_service_client::NodeServiceClient::new(ch)
            .get_info(ferrox_control::api::GetNodeInfoRequest {})
            .await
    })
    .unwrap()
    .into_inner()
}
