//! The Prometheus endpoint: `GET /metrics` on an opt-in TCP address, served on the
//! control plane's runtime by a minimal HTTP/1.0 responder (one request per
//! connection, `Connection: close`).
//!
//! Every scrape reads the data plane's own counters — reactor statistics, the
//! target's per-queue counters summed per controller, pool statistics — into a
//! fresh `prometheus-client` registry and encodes it in the OpenMetrics text format.
//! Nothing is counted on the I/O path for this endpoint.
//!
//! Series (all prefixed `ferrox_`):
//!
//! * `reactor_{busy,idle,parked}_seconds_total`, `reactor_loops_total`,
//!   `reactor_busy_loops_total`, `reactor_parks_total`, `reactor_messages_total`,
//!   `reactor_completions_total`, `reactor_stalls_total`,
//!   `reactor_mailbox_full_total` — labels `reactor`, `core`.
//! * `subsystem_controllers`, `subsystem_connections` (admin plus I/O queues),
//!   `subsystem_namespaces` — label `subsystem`, and `volume` when the subsystem is
//!   a published volume.
//! * `controller_{read,write}_{ops,bytes}_total` — labels `subsystem`, `cntlid`,
//!   `volume`. A published volume is one subsystem with one namespace, so these are
//!   the volume's I/O per controller; `sum by (volume)` gives the volume's figure
//!   (a controller's series ends when it disconnects).
//! * `pool_capacity_bytes`, `pool_allocated_bytes`, `pool_volumes`, `pool_up` —
//!   label `pool`.
//! * `control_ready`, `control_uptime_seconds`.
//! * A node of a cluster: `cluster_node_up` and `cluster_leader` (1 or 0) — label
//!   `node`, every node of the registry; `placement_failures_total` — label
//!   `reason` (`domains`, `space`): placements refused through this node;
//!   `orphan_lvols` — label `pool`: lvols of this node's pools that no record
//!   accounts for; `missing_replicas` — label `pool`: replicas of ready volumes
//!   the records place there that the pool lacks (`server/leader.rs`). The
//!   registry is read with the node's membership refresh (every third of its
//!   lease's TTL); the pools are compared every 10 s.
//!
//! * `controller_io_latency_seconds` — histogram, same labels: I/O command latency
//!   at the target (capsule received to response queued), power-of-two µs buckets.
//!
//! `VolumeService.Stats` reports the same counters per volume, with rates and
//! percentiles over a window.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Core;
use crate::error::ControlError;
use crate::state::PublishRec;
use ferrox_nvmeof::target::ctrl::Latency;

/// The path the endpoint answers on.
pub const METRICS_PATH: &str = "/metrics";
/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to send its request head.
const HEAD_PATIENCE: Duration = Duration::from_secs(5);

type Labels = Vec<(String, String)>;
type CounterF = Counter<f64, std::sync::atomic::AtomicU64>;
type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// Registers families lazily and sets their values for one scrape.
struct Scrape {
    reg: Registry,
    counters: Vec<(&'static str, Family<Labels, Counter>)>,
    counters_f: Vec<(&'static str, Family<Labels, CounterF>)>,
    gauges: Vec<(&'static str, Family<Labels, Gauge>)>,
    gauges_f: Vec<(&'static str, Family<Labels, GaugeF>)>,
    histograms: Vec<(&'static str, Family<Labels, HistogramSnapshot>)>,
}

impl Scrape {
    fn new() -> Self {
        Self {
            reg: Registry::with_prefix("ferrox"),
            counters: Vec::new(),
            counters_f: Vec::new(),
            gauges: Vec::new(),
            gauges_f: Vec::new(),
            histograms: Vec::new(),
        }
    }

    fn counter(&mut self, name: &'static str, help: &str, l: &Labels, v: u64) {
        family(&mut self.reg, &mut self.counters, name, help)
            .get_or_create(l)
            .inc_by(v);
    }

    fn counter_f(&mut self, name: &'static str, help: &str, l: &Labels, v: f64) {
        family(&mut self.reg, &mut self.counters_f, name, help)
            .get_or_create(l)
            .inc_by(v);
    }

    fn gauge(&mut self, name: &'static str, help: &str, l: &Labels, v: i64) {
        family(&mut self.reg, &mut self.gauges, name, help)
            .get_or_create(l)
            .set(v);
    }

    fn gauge_f(&mut self, name: &'static str, help: &str, l: &Labels, v: f64) {
        family(&mut self.reg, &mut self.gauges_f, name, help)
            .get_or_create(l)
            .set(v);
    }

    /// A histogram whose buckets the data plane already counted: (upper bound in
    /// seconds, count in that bucket alone), plus the sum in seconds.
    fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        l: &Labels,
        sum: f64,
        buckets: Vec<(f64, u64)>,
    ) {
        let count = buckets.iter().map(|b| b.1).sum();
        *family(&mut self.reg, &mut self.histograms, name, help)
            .get_or_create(l)
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (sum, count, buckets);
    }
}

/// The family registered under `name`, registering it on first use.
fn family<M>(
    reg: &mut Registry,
    list: &mut Vec<(&'static str, Family<Labels, M>)>,
    name: &'static str,
    help: &str,
) -> Family<Labels, M>
where
    M: EncodeMetric + TypedMetric + Default + std::fmt::Debug + Send + Sync + 'static,
{
    if let Some((_, f)) = list.iter().find(|(n, _)| *n == name) {
        return f.clone();
    }
    let f = Family::<Labels, M>::default();
    reg.register(name, help, f.clone());
    list.push((name, f.clone()));
    f
}

/// A histogram snapshot taken from counters the data plane keeps (its buckets are
/// counted on the I/O path; a scrape only reports them).
#[derive(Debug, Default)]
struct HistogramSnapshot(std::sync::Mutex<HistogramData>);

/// (sum, count, per-bucket (upper bound, count)).
type HistogramData = (f64, u64, Vec<(f64, u64)>);

impl TypedMetric for HistogramSnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut e: MetricEncoder) -> Result<(), std::fmt::Error> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        e.encode_histogram::<NoLabelSet>(g.0, g.1, &g.2, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads every figure (blocking: pool statistics run on their metadata reactors) and
/// encodes them, with `published`, the publication records from the state store.
fn gather(core: &Core, published: &[PublishRec]) -> Result<String, ControlError> {
    let mut s = Scrape::new();
    s.gauge(
        "node_info",
        "This node: its name, id and version (always 1)",
        &labels(&[
            ("node", core.ctx.node_name.clone()),
            ("node_id", super::pools::hex(&core.ctx.node_id)),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ]),
        1,
    );
    let limits = &core.ctx.target.limits;
    let (max_total, max_per_host) = limits.caps();
    let none = labels(&[]);
    s.gauge(
        "nvmf_connections",
        "NVMe/TCP connections open",
        &none,
        i(limits.open() as u64),
    );
    s.gauge(
        "nvmf_connections_max",
        "Cap on NVMe/TCP connections, whole target (--max-connections)",
        &none,
        i(max_total as u64),
    );
    s.gauge(
        "nvmf_connections_per_host_max",
        "Cap on NVMe/TCP connections from one peer address (--max-connections-per-host)",
        &none,
        i(max_per_host as u64),
    );
    s.counter(
        "nvmf_connections_refused",
        "NVMe/TCP connections closed on accept: over a cap, or no file descriptor left",
        &none,
        limits.refused(),
    );
    for h in &core.ctx.reactors {
        let st = h.stats();
        let l = labels(&[
            ("reactor", st.id.to_string()),
            ("core", st.core.to_string()),
        ]);
        s.counter_f(
            "reactor_busy_seconds",
            "Time spent in loop turns that did work",
            &l,
            secs(st.busy_ns),
        );
        s.counter_f(
            "reactor_idle_seconds",
            "Time spent in loop turns that found nothing to do",
            &l,
            secs(st.idle_ns),
        );
        s.counter_f(
            "reactor_parked_seconds",
            "Time spent asleep (adaptive poll mode)",
            &l,
            secs(st.parked_ns),
        );
        s.counter("reactor_loops", "Loop turns", &l, st.turns);
        s.counter(
            "reactor_busy_loops",
            "Loop turns that did work",
            &l,
            st.busy_turns,
        );
        s.counter(
            "reactor_parks",
            "Times the reactor went to sleep",
            &l,
            st.parks,
        );
        s.counter(
            "reactor_messages",
            "Messages run from the mailbox",
            &l,
            st.messages,
        );
        s.counter(
            "reactor_completions",
            "io_uring completions reaped",
            &l,
            st.completions,
        );
        s.counter(
            "reactor_stalls",
            "Turns slower than the stall bound",
            &l,
            st.stalls,
        );
        s.counter(
            "reactor_mailbox_full",
            "Sends refused because the mailbox was full",
            &l,
            st.mailbox_full,
        );
    }

    let volume_of = |nqn: &str| {
        published
            .iter()
            .find(|p| p.nqn == nqn)
            .map(|p| p.volume.clone())
    };
    for sub in core.ctx.target.subsystems() {
        let mut l = labels(&[("subsystem", sub.nqn.clone())]);
        let vol = volume_of(&sub.nqn);
        if let Some(v) = &vol {
            l.push(("volume".into(), v.clone()));
        }
        let ctrls = sub.controllers();
        let conns: usize = ctrls
            .iter()
            .map(|c| 1 + c.counters.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        s.gauge(
            "subsystem_controllers",
            "Controllers of the subsystem",
            &l,
            ctrls.len() as i64,
        );
        s.gauge(
            "subsystem_connections",
            "Connections to the subsystem (admin and I/O queues)",
            &l,
            conns as i64,
        );
        s.gauge(
            "subsystem_namespaces",
            "Namespaces of the subsystem",
            &l,
            sub.namespaces().len() as i64,
        );
        for c in &ctrls {
            let (rc, wc, rb, wb) = c.totals();
            let mut cl = labels(&[
                ("subsystem", sub.nqn.clone()),
                ("cntlid", c.cntlid.to_string()),
            ]);
            if let Some(v) = &vol {
                cl.push(("volume".into(), v.clone()));
            }
            s.counter("controller_read_ops", "Read commands", &cl, rc);
            s.counter("controller_write_ops", "Write commands", &cl, wc);
            s.counter("controller_read_bytes", "Bytes read", &cl, rb);
            s.counter("controller_write_bytes", "Bytes written", &cl, wb);
            let lat = c.latency();
            let buckets = lat
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| (Latency::upper_bound_secs(i), n))
                .collect();
            s.histogram(
                "controller_io_latency_seconds",
                "I/O command latency at the target: capsule received to response queued",
                &cl,
                secs(lat.sum_ns),
                buckets,
            );
        }
    }

    let pools: Vec<_> = core
        .pools()
        .iter()
        .map(|(name, p)| (name.clone(), p.lvs.clone()))
        .collect();
    for (name, lvs) in pools {
        let l = labels(&[("pool", name)]);
        let stats = lvs.and_then(|lvs| lvs.stats().ok());
        s.gauge(
            "pool_up",
            "Whether the pool is open (1) or unavailable (0)",
            &l,
            i64::from(stats.is_some()),
        );
        if let Some(st) = stats {
            s.gauge(
                "pool_capacity_bytes",
                "Size of the pool's data area",
                &l,
                i(st.total_clusters.saturating_mul(st.cluster_size)),
            );
            s.gauge(
                "pool_allocated_bytes",
                "Bytes of allocated clusters",
                &l,
                i(st.allocated_clusters.saturating_mul(st.cluster_size)),
            );
            s.gauge(
                "pool_volumes",
                "Volumes and snapshots in the pool",
                &l,
                st.volumes as i64,
            );
        }
    }

    if let Some(view) = core.cluster_view() {
        for (name, up, leader) in &view.nodes {
            let l = labels(&[("node", name.clone())]);
            s.gauge(
                "cluster_node_up",
                "Every node in the cluster's registry: up (1) while its lease lives, else 0",
                &l,
                i64::from(*up),
            );
            s.gauge(
                "cluster_leader",
                "Whether the node leads the cluster's reconciliation (1), else 0",
                &l,
                i64::from(*leader),
            );
        }
        for reason in ["domains", "space"] {
            let n = view.placement_failures.get(reason).copied().unwrap_or(0);
            s.counter(
                "placement_failures",
                "Placements refused (FailedPrecondition) through this node, by what was missing",
                &labels(&[("reason", reason.to_owned())]),
                n,
            );
        }
        for (pool, n) in &view.orphans {
            s.gauge(
                "orphan_lvols",
                "Lvols in this node's pool that no record of the cluster accounts for",
                &labels(&[("pool", pool.clone())]),
                i(*n),
            );
        }
        for (pool, n) in &view.missing {
            s.gauge(
                "missing_replicas",
                "Replicas the cluster's records place in this node's pool that it lacks",
                &labels(&[("pool", pool.clone())]),
                i(*n),
            );
        }
    }

    s.gauge(
        "control_ready",
        "Whether start-up reconciliation is done",
        &Vec::new(),
        i64::from(core.ready.load(Ordering::Acquire)),
    );
    s.gauge_f(
        "control_uptime_seconds",
        "Time since the control plane started",
        &Vec::new(),
        core.started.elapsed().as_secs_f64(),
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &s.reg)
        .map_err(|e| ControlError::Internal(format!("encoding metrics: {e}")))?;
    Ok(out)
}

/// Binds `addr` (now, so a bad address fails the caller) and returns the listener and
/// its bound address.
pub(crate) fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), ControlError> {
    let io = |during: String| move |source| ControlError::Io { during, source };
    let l = std::net::TcpListener::bind(addr).map_err(io(format!("binding metrics on {addr}")))?;
    l.set_nonblocking(true)
        .map_err(io("set_nonblocking on the metrics socket".into()))?;
    let local = l
        .local_addr()
        .map_err(io("reading the metrics address".into()))?;
    Ok((l, local))
}

/// Serves until `stop` fires (or the runtime shuts down).
pub(crate) async fn serve(
    core: Arc<Core>,
    listener: std::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the metrics socket");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            acc = listener.accept() => match acc {
                Ok((sock, _)) => {
                    tokio::spawn(answer(core.clone(), sock));
                }
                Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
            },
        }
    }
}

/// Reads one request head and answers it.
async fn answer(core: Arc<Core>, mut sock: tokio::net::TcpStream) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(HEAD_PATIENCE, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", METRICS_PATH) => {
            let text = match core.records().list::<PublishRec>().await {
                Ok(published) => core.blocking(move |c| gather(c, &published)).await,
                Err(e) => Err(e),
            };
            match text {
                Ok(text) => ("200 OK", CONTENT_TYPE, text),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            }
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            format!("not found; metrics are at {METRICS_PATH}\n"),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    let _ = sock.write_all(&resp).await;
    let _ = sock.shutdown().await;
}
