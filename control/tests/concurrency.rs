//! Control-plane churn while I/O runs: a bounded number of client threads create,
//! publish, unpublish and destroy volumes at once (racing on shared names too) while a
//! host keeps I/O in flight on another published volume. Only the expected errors
//! come back, the I/O keeps completing (each wait for progress is bounded), and the
//! final List is exactly what the successful requests left.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use support::load::{connect, Load};
use support::{create_and_publish, list_subsystems, list_volumes, Node, MIB};
use tonic::Code;

const THREADS: usize = 4;
const ROUNDS: usize = 5;
/// The longest the I/O may go without a completion before the test calls it stalled.
const STALL_BOUND: Duration = Duration::from_secs(30);

fn create(c: &BlockingClient, name: &str, size: u64) -> Result<Volume, tonic::Status> {
    let name = name.to_string();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name,
                size_bytes: size,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .map(tonic::Response::into_inner)
}

fn publish(c: &BlockingClient, name: &str) -> Result<PublishResponse, tonic::Status> {
    let volume = name.to_string();
    c.call(|ch| async move {
        TargetServiceClient::new(ch)
            .publish(PublishRequest {
                volume,
                any_host: true,
                ..Default::default()
            })
            .await
    })
    .map(tonic::Response::into_inner)
}

fn unpublish(c: &BlockingClient, name: &str) -> Result<bool, tonic::Status> {
    let volume = name.to_string();
    c.call(|ch| async move {
        TargetServiceClient::new(ch)
            .unpublish(UnpublishRequest { volume })
            .await
    })
    .map(|r| r.into_inner().existed)
}

fn destroy(c: &BlockingClient, name: &str) -> Result<bool, tonic::Status> {
    let name = name.to_string();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .destroy(DestroyVolumeRequest { name })
            .await
    })
    .map(|r| r.into_inner().existed)
}

/// What should exist at the end: name -> (size, published).
type Expected = Arc<Mutex<BTreeMap<String, (u64, bool)>>>;

/// One client's bounded run. Expected errors: `AlreadyExists` when another thread won
/// a shared name with another size, `FailedPrecondition` destroying a published volume.
fn client(sock: &std::path::Path, t: usize, want: &Expected) {
    let c = BlockingClient::connect(sock).unwrap();
    for k in 0..ROUNDS {
        let own = format!("t{t}-{k}");
        let v = create(&c, &own, 4 * MIB).unwrap_or_else(|e| panic!("create {own}: {e}"));
        assert_eq!(v.size_bytes, 4 * MIB);
        want.lock().unwrap().insert(own.clone(), (4 * MIB, false));

        let shared = format!("shared-{k}");
        let size = (t as u64 + 1) * MIB;
        match create(&c, &shared, size) {
            Ok(v) => {
                assert_eq!(v.size_bytes, size);
                let prev = want.lock().unwrap().insert(shared, (size, false));
                assert!(prev.is_none(), "two winners for one name");
            }
            Err(e) if e.code() == Code::AlreadyExists => {}
            Err(e) => panic!("create {shared}: unexpected {e}"),
        }

        publish(&c, &own).unwrap_or_else(|e| panic!("publish {own}: {e}"));
        want.lock().unwrap().insert(own.clone(), (4 * MIB, true));
        if k.is_multiple_of(2) {
            // Published: destroying it must be refused, and leave it as it was.
            let e = destroy(&c, &own).expect_err("destroying a published volume");
            assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        } else {
            assert!(unpublish(&c, &own).unwrap_or_else(|e| panic!("unpublish {own}: {e}")));
            assert!(destroy(&c, &own).unwrap_or_else(|e| panic!("destroy {own}: {e}")));
            want.lock().unwrap().remove(&own);
        }
    }
}

#[test]
fn churn_while_io_runs() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 256 * MIB);
    let (listener, nqn) = create_and_publish(&c, "io", 16 * MIB);
    let want: Expected = Arc::new(Mutex::new(BTreeMap::new()));
    want.lock().unwrap().insert("io".into(), (16 * MIB, true));

    let load = Load::start(connect(&listener, &nqn), 8);
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (sock, want, finished) = (node.socket.clone(), want.clone(), finished.clone());
            std::thread::spawn(move || {
                // Counted even when the client panics, so the I/O watch below ends.
                struct Done(Arc<AtomicUsize>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::Release);
                    }
                }
                let _done = Done(finished);
                client(&sock, t, &want);
            })
        })
        .collect();

    // While the clients run, every bounded wait must see the I/O make progress.
    let mut waits = 0u64;
    loop {
        let seen = load.stats.completed();
        assert!(
            load.stats.wait_beyond(seen, STALL_BOUND),
            "the I/O stalled: no completion for {STALL_BOUND:?} during control-plane churn"
        );
        waits += 1;
        if finished.load(Ordering::Acquire) == THREADS {
            break;
        }
    }
    for t in threads {
        t.join().expect("a client thread failed");
    }
    let stats = load.stop();
    assert_eq!(
        stats.errors.load(Ordering::Relaxed),
        0,
        "I/O errors: {:?}",
        stats.first_error.lock().unwrap()
    );
    assert!(stats.ok.load(Ordering::Relaxed) >= waits);

    // The final state is what the successful requests left.
    let listed = list_volumes(&c);
    let got: BTreeMap<String, (u64, bool)> = listed
        .iter()
        .map(|v| (v.name.clone(), (v.size_bytes, !v.published_nqn.is_empty())))
        .collect();
    let want = want.lock().unwrap().clone();
    assert_eq!(got, want);
    // One winner per shared name.
    for k in 0..ROUNDS {
        assert!(want.contains_key(&format!("shared-{k}")), "shared-{k}");
    }
    // And the target exports exactly the published volumes (and discovery).
    let subs = list_subsystems(&c);
    let mut exported: Vec<String> = subs
        .into_iter()
        .map(|s| s.nqn)
        .filter(|n| !n.ends_with(".discovery"))
        .collect();
    exported.sort();
    let mut published: Vec<String> = listed
        .iter()
        .filter(|v| !v.published_nqn.is_empty())
        .map(|v| v.published_nqn.clone())
        .collect();
    published.sort();
    assert_eq!(exported, published);
}
