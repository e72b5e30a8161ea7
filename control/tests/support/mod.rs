// Each test crate uses a different part of this module.
#![allow(dead_code)]
//! An in-process node for the control-plane tests: one reactor, a target on an
//! ephemeral port, and the control server on a socket in a temporary data dir.

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
                })
                .await
        })
        .unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}
