//! Each documented error code, and bad arguments naming their field.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::snapshot_service_client::SnapshotServiceClient;
use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use support::{Node, MIB};
use tonic::{Code, Status};

fn create(c: &ferrox_control::BlockingClient, r: CreateVolumeRequest) -> Result<Volume, Status> {
    c.call(|ch| async move { VolumeServiceClient::new(ch).create(r).await })
        .map(tonic::Response::into_inner)
}

fn expect(r: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(needle),
        "{needle:?} not in {:?}",
        e.message()
    );
}

#[test]
fn errors_have_their_codes_and_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    let info = c
        .call(|ch| async move {
            NodeServiceClient::new(ch)
                .get_info(GetNodeInfoRequest {})
                .await
        })
        .unwrap()
        .into_inner();
    assert!(info.ready);
    assert_eq!(info.reactors.len(), 1);
    assert_eq!(info.node_id, "07".repeat(16));
    assert_eq!(info.node_name, "test-node");
    assert_eq!(info.listeners.len(), 1);

    // No pool yet.
    let v = |name: &str, size: u64| CreateVolumeRequest {
        name: name.into(),
        size_bytes: size,
        thin: true,
        ..Default::default()
    };
    expect(create(&c, v("v", MIB)), Code::FailedPrecondition, "no pool");
    node.pool(&c, "p0", 64 * MIB);

    // Bad arguments.
    expect(create(&c, v("v", 0)), Code::InvalidArgument, "size_bytes");
    expect(
        create(&c, v("v", MIB + 512)),
        Code::InvalidArgument,
        "size_bytes",
    );
    expect(
        create(&c, v("bad name", MIB)),
        Code::InvalidArgument,
        "name",
    );
    expect(create(&c, v("", MIB)), Code::InvalidArgument, "name");
    expect(
        create(&c, v(&"x".repeat(64), MIB)),
        Code::InvalidArgument,
        "name",
    );
    let mut r = v("v", MIB);
    r.pool = "nope".into();
    expect(create(&c, r), Code::NotFound, "nope");
    let mut r = v("v", MIB);
    r.replicas = 3;
    expect(create(&c, r), Code::FailedPrecondition, "replicas");
    let mut r = v("v", MIB);
    r.replicas = 6;
    expect(create(&c, r), Code::InvalidArgument, "replicas");
    let mut r = v("v", MIB);
    r.topology = "zone=a".into();
    expect(create(&c, r), Code::FailedPrecondition, "topology");
    let bad_pool = c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name: "p1".into(),
                base: Some(PoolBase {
                    base: Some(pool_base::Base::Path("/tmp/x.img".into())),
                    size_bytes: 64 * MIB,
                }),
                cluster_size: 3000,
                max_overcommit: 0,
            })
            .await
    });
    expect(bad_pool, Code::InvalidArgument, "cluster_size");
    let no_bdev = c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .create(CreatePoolRequest {
                name: "p1".into(),
                base: Some(PoolBase {
                    base: Some(pool_base::Base::Bdev("ghost".into())),
                    size_bytes: 0,
                }),
                cluster_size: 0,
                max_overcommit: 0,
            })
            .await
    });
    expect(no_bdev, Code::NotFound, "ghost");

    // A thick volume larger than the pool: ResourceExhausted.
    let mut r = v("big", 128 * MIB);
    r.thin = false;
    expect(create(&c, r), Code::ResourceExhausted, "out of space");

    // NotFound for unknown names.
    let g = c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .get(GetVolumeRequest {
                name: "ghost".into(),
            })
            .await
    });
    expect(g, Code::NotFound, "ghost");
    let g = c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .get(GetPoolRequest {
                name: "ghost".into(),
            })
            .await
    });
    expect(g, Code::NotFound, "ghost");
    let s = c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .create(CreateSnapshotRequest {
                volume: "ghost".into(),
                name: "s".into(),
                group_id: String::new(),
            })
            .await
    });
    expect(s, Code::NotFound, "ghost");
    let cl = c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .clone_snapshot(CloneSnapshotRequest {
                snapshot: "ghost".into(),
                name: "c".into(),
                labels: Default::default(),
            })
            .await
    });
    expect(cl, Code::NotFound, "ghost");

    // Publishing: invalid NQNs, no hosts, unknown volume, a listener that is not running.
    create(&c, v("v1", 4 * MIB)).unwrap();
    let publish = |r: PublishRequest| {
        c.call(|ch| async move { TargetServiceClient::new(ch).publish(r).await })
    };
    let p = |nqn: &str, hosts: Vec<String>, any: bool| PublishRequest {
        volume: "v1".into(),
        nqn: nqn.into(),
        hosts,
        any_host: any,
        ..Default::default()
    };
    expect(
        publish(p("not-an-nqn", vec![], true)),
        Code::InvalidArgument,
        "nqn",
    );
    expect(
        publish(p("", vec!["bogus".into()], false)),
        Code::InvalidArgument,
        "hosts",
    );
    expect(
        publish(p("", vec![], false)),
        Code::InvalidArgument,
        "hosts",
    );
    let mut r = p("", vec![], true);
    r.volume = "ghost".into();
    expect(publish(r), Code::NotFound, "ghost");
    // A listener that cannot be opened: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut r = p("", vec![], true);
    r.address = "127.0.0.1".into();
    r.port = u32::from(taken.local_addr().unwrap().port());
    expect(publish(r), Code::FailedPrecondition, "cannot listen");
    // An address alone names no listener to open.
    let mut r = p("", vec![], true);
    r.address = "127.0.0.9".into();
    expect(publish(r), Code::FailedPrecondition, "no running listener");

    // Snapshot with a clone: FailedPrecondition; so is deleting a published volume,
    // resizing it, and destroying a pool that holds volumes.
    let s = c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .create(CreateSnapshotRequest {
                volume: "v1".into(),
                name: "s1".into(),
                group_id: String::new(),
            })
            .await
    });
    s.unwrap();
    let cl = c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .clone_snapshot(CloneSnapshotRequest {
                snapshot: "s1".into(),
                name: "c1".into(),
                labels: Default::default(),
            })
            .await
    });
    cl.unwrap();
    let del = c.call(|ch| async move {
        SnapshotServiceClient::new(ch)
            .destroy(DestroySnapshotRequest { name: "s1".into() })
            .await
    });
    expect(del, Code::FailedPrecondition, "clones");
    // A snapshot name is not a volume name.
    expect(create(&c, v("s1", MIB)), Code::AlreadyExists, "snapshot");
    publish(p("", vec![], true)).unwrap();
    let del = c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .destroy(DestroyVolumeRequest { name: "v1".into() })
            .await
    });
    expect(del, Code::FailedPrecondition, "unpublish");
    let rs = c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .resize(ResizeVolumeRequest {
                name: "v1".into(),
                size_bytes: 2 * MIB,
                force: true,
            })
            .await
    });
    expect(rs, Code::FailedPrecondition, "not shrink");
    let d = c.call(|ch| async move {
        PoolServiceClient::new(ch)
            .destroy(DestroyPoolRequest { name: "p0".into() })
            .await
    });
    expect(d, Code::FailedPrecondition, "published");
}
