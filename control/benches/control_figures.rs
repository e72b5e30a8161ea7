//! Figures for the control-plane note (not a test: it prints numbers, asserts none).
//!
//! 1. RPC latency (p50/p99) of volume Create and of Publish, on an idle node and while
//!    a host keeps I/O in flight on another published volume.
//! 2. The IOPS of that I/O while a control loop (create, publish, unpublish, destroy)
//!    runs, as a ratio to the same I/O without it.
//!
//! `cargo bench -p ferrox-control --bench control_figures -- [--n N] [--secs S]`
//! (N operations per latency figure, default 200; S seconds per IOPS window,
//! default 3; three alternating pairs of windows, medians compared). The node is in-process: one reactor on the first core, the host's
//! reactor on the last, the control runtime's threads unpinned.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_control::api::target_service_client::TargetServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use support::load::{connect, Load};
use support::{create_and_publish, Node, MIB};

/// Queue depth of the I/O load (4 KiB, half writes, half reads).
const QD: usize = 16;
/// Alternating (alone, with control) IOPS window pairs.
const ROUNDS: usize = 3;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One create/publish/unpublish/destroy cycle; returns the Create and Publish times.
fn cycle(c: &BlockingClient, name: &str) -> (Duration, Duration) {
    let n = name.to_string();
    let t0 = Instant::now();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: n,
                size_bytes: 4 * MIB,
                thin: true,
                ..Default::default()
            })
            .await
    })
    .expect("create");
    let create = t0.elapsed();
    let n = name.to_string();
    let t1 = Instant::now();
    c.call(|ch| async move {
        TargetServiceClient::new(ch)
            .publish(PublishRequest {
                volume: n,
                any_host: true,
                ..Default::default()
            })
            .await
    })
    .expect("publish");
    let publish = t1.elapsed();
    let n = name.to_string();
    c.call(|ch| async move {
        TargetServiceClient::new(ch)
            .unpublish(UnpublishRequest { volume: n })
            .await
    })
    .expect("unpublish");
    let n = name.to_string();
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .destroy(DestroyVolumeRequest { name: n })
            .await
    })
    .expect("destroy");
    (create, publish)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e6
}

fn latencies(c: &BlockingClient, tag: &str, n: u64) {
    let (mut cr, mut pb) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (a, b) = cycle(c, &format!("{tag}-{i}"));
        cr.push(a);
        pb.push(b);
    }
    println!(
        "{tag:>5}: create p50 {:7.0} us p99 {:7.0} us | publish p50 {:7.0} us p99 {:7.0} us  (n={n})",
        pct(&mut cr, 0.50),
        pct(&mut cr, 0.99),
        pct(&mut pb, 0.50),
        pct(&mut pb, 0.99),
    );
}

/// Completed I/Os per second over `secs` seconds.
fn iops(load: &Load, secs: u64) -> f64 {
    let (c0, t0) = (load.stats.completed(), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    (load.stats.completed() - c0) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let n = arg("--n", 200);
    let secs = arg("--secs", 3);
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let c = node.client();
    node.pool(&c, "p0", 512 * MIB);
    let (listener, nqn) = create_and_publish(&c, "io", 64 * MIB);

    // Warm-up, then idle figures.
    for i in 0..10 {
        cycle(&c, &format!("warm-{i}"));
    }
    println!("RPC latency, one client, create/publish/unpublish/destroy cycles:");
    latencies(&c, "idle", n);

    let load = Load::start(connect(&listener, &nqn), QD);
    // Let the load reach steady state (and allocate the thin volume's clusters).
    std::thread::sleep(Duration::from_secs(1));
    latencies(&c, "io", n);

    println!("I/O on \"io\" (4 KiB, 50% writes, QD {QD}), alternating {secs} s windows:");
    let (mut alone, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(iops(&load, secs));
        let stop = Arc::new(AtomicBool::new(false));
        let (sock, stop2) = (node.socket.clone(), stop.clone());
        let churn = std::thread::spawn(move || {
            let c = BlockingClient::connect(&sock).unwrap();
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                cycle(&c, &format!("churn-{i}"));
                i += 1;
            }
            i
        });
        let w = iops(&load, secs);
        stop.store(true, Ordering::Relaxed);
        let cycles = churn.join().unwrap();
        with.push(w);
        println!(
            "  alone {:9.0} IOPS | with control {w:9.0} IOPS ({cycles} cycles, {:.0} RPC/s)",
            alone[alone.len() - 1],
            cycles as f64 * 4.0 / secs as f64
        );
    }
    let stats = load.stop();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, w) = (median(&mut alone), median(&mut with));
    println!(
        "  median alone {a:.0} IOPS, with control {w:.0} IOPS: ratio {:.3}",
        w / a
    );
    println!(
        "  I/O errors: {}",
        stats.errors.load(std::sync::atomic::Ordering::Relaxed)
    );
}
