//! Two control-plane instances over one state store (what a cluster's nodes are over
//! etcd), each serving its own pools:
//! * both race to create the same volume names with different parameters: every race
//!   has exactly one winner, the loser answers AlreadyExists (naming the difference)
//!   or Aborted, the loser's pool never holds the volume, and both instances list the
//!   same volumes, the winners';
//! * both race to create one pool name on two files: one pool is made, the other
//!   call waits for the winner's lock and then answers Aborted, its file unformatted.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Barrier};

use ferrox_bdev::Registry;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::state::{RedbStore, StateStore};
use ferrox_control::{BlockingClient, ControlContext, ControlServer};
use ferrox_nvmeof::Target;
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, ReactorGroup, ReactorOptions,
};
use support::MIB;
use tonic::Code;

const NAMES: usize = 12;

fn create(c: &BlockingClient, name: &str, pool: &str, size: u64) -> Result<Volume, tonic::Status> {
    let (name, pool) = (name.to_string(), pool.to_string());
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name,
                pool,
                size_bytes: size,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .map(tonic::Response::into_inner)
}

fn volumes_in(c: &BlockingClient, pool: &str) -> u32 {
    let name = pool.to_string();
    c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .get(GetPoolRequest { name })
            .await
    })
    .unwrap()
    .into_inner()
    .volumes
}

fn list(c: &BlockingClient) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = c
        .call(|ch| async move {
            VolumeServiceClient::new(ch)
                .list(ListVolumesRequest::default())
                .await
        })
        .unwrap()
        .into_inner()
        .volumes
        .into_iter()
        .map(|v| (v.name, v.pool, v.size_bytes))
        .collect();
    v.sort();
    v
}

/// Two servers over one store, sharing a reactor and a target.
struct Pair {
    d: tempfile::TempDir,
    group: Option<ReactorGroup>,
    target: Option<Target>,
    servers: Vec<ControlServer>,
    clients: Vec<BlockingClient>,
}

impl Pair {
    fn start() -> Self {
        let d = tempfile::tempdir().unwrap();
        let pool = BufferPool::new(&PoolConfig {
            classes: vec![ClassConfig {
                size: 4096,
                count: 64,
            }],
            hugepages: false,
        })
        .unwrap();
        let group =
            ReactorGroup::start(&[available_cores()[0]], &ReactorOptions::default(), pool).unwrap();
        let node_id = [9u8; 16];
        let target = Target::start(
            group.handles(),
            node_id,
            Vec::new(),
            &["127.0.0.1:0".parse().unwrap()],
        )
        .unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(RedbStore::open(&d.path().join("control.redb")).unwrap());
        let servers: Vec<ControlServer> = ["a", "b"]
            .iter()
            .map(|name| {
                let dir = d.path().join(name);
                std::fs::create_dir_all(&dir).unwrap();
                ControlServer::start_with_store(
                    ControlContext {
                        target: target.shared().clone(),
                        registry: Arc::new(Registry::new()),
                        reactors: group.handles().to_vec(),
                        node_id,
                        node_name: format!("node-{name}"),
                        data_dir: dir.clone(),
                    },
                    &dir.join("ferrox.sock"),
                    store.clone(),
                )
                .unwrap()
            })
            .collect();
        let clients = servers
            .iter()
            .map(|s| BlockingClient::connect(s.socket()).unwrap())
            .collect();
        Self {
            d,
            group: Some(group),
            target: Some(target),
            servers,
            clients,
        }
    }

    fn create_pool(&self, c: usize, name: &str, file: &str) -> Result<Pool, tonic::Status> {
        let path = self.d.path().join(file).display().to_string();
        let name = name.to_string();
        self.clients[c]
            .call(|ch| async move {
                PoolServiceClient::new(ch)
                    .create(CreatePoolRequest {
                        name,
                        base: Some(PoolBase {
                            base: Some(pool_base::Base::Path(path)),
                            size_bytes: 256 * MIB,
                        }),
                        cluster_size: 0,
                        max_overcommit: 0,
                    })
                    .await
            })
            .map(tonic::Response::into_inner)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.clients.clear();
        for s in self.servers.drain(..) {
            s.stop();
        }
        drop(self.target.take());
        if let Some(g) = self.group.take() {
            g.shutdown();
        }
    }
}

/// Runs `a` and `b` at once; returns both answers.
fn race<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| {
            go.wait();
            a()
        });
        let tb = s.spawn(|| {
            go.wait();
            b()
        });
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

#[test]
fn two_instances_over_one_store_never_interleave_a_create() {
    let p = Pair::start();
    p.create_pool(0, "pa", "pa.img").unwrap();
    p.create_pool(1, "pb", "pb.img").unwrap();
    let (ca, cb) = (&p.clients[0], &p.clients[1]);

    let mut wins = [0u32; 2];
    let mut winners = Vec::new();
    for i in 0..NAMES {
        let name = format!("v{i}");
        let (ra, rb) = race(
            || create(ca, &name, "pa", 4 * MIB),
            || create(cb, &name, "pb", 8 * MIB),
        );
        let (winner, loser) = match (&ra, &rb) {
            (Ok(v), Err(e)) => {
                wins[0] += 1;
                (v, e)
            }
            (Err(e), Ok(v)) => {
                wins[1] += 1;
                (v, e)
            }
            _ => panic!("{name}: exactly one create must win: {ra:?} / {rb:?}"),
        };
        assert!(
            matches!(loser.code(), Code::AlreadyExists | Code::Aborted),
            "{name}: {loser:?}"
        );
        if loser.code() == Code::AlreadyExists {
            assert!(loser.message().contains("size_bytes"), "{loser:?}");
        }
        winners.push((name, winner.pool.clone(), winner.size_bytes));
    }

    winners.sort();
    // The store holds the winners, as both instances see it, and each pool holds
    // exactly the volumes its instance won.
    assert_eq!(list(ca), winners);
    assert_eq!(list(cb), winners);
    assert_eq!(volumes_in(ca, "pa"), wins[0], "{winners:?}");
    assert_eq!(volumes_in(cb, "pb"), wins[1], "{winners:?}");
}

#[test]
fn two_instances_racing_for_one_pool_name_format_one_base() {
    let p = Pair::start();
    let (ra, rb) = race(
        || p.create_pool(0, "shared", "a.img"),
        || p.create_pool(1, "shared", "b.img"),
    );
    let (won, lost_file, lost) = match (&ra, &rb) {
        (Ok(_), Err(e)) => (0, "b.img", e),
        (Err(e), Ok(_)) => (1, "a.img", e),
        _ => panic!("exactly one pool create must win: {ra:?} / {rb:?}"),
    };
    assert_eq!(lost.code(), Code::Aborted, "{lost:?}");
    // The loser never formatted its file: nothing was written to it (it is sparse,
    // if it was created at all).
    let written = std::fs::metadata(p.d.path().join(lost_file)).map_or(0, |m| m.blocks());
    assert_eq!(written, 0, "{lost_file} was written");
    // The winner's pool serves volumes.
    create(&p.clients[won], "v", "shared", 4 * MIB).unwrap();
}
