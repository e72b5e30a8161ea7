//! VolumeService.Stats: a published volume's I/O since it was published (controllers
//! connected now and gone) — totals, and rates and latency percentiles over a
//! sampling window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrox_nvmeof::target::ctrl::{IoTotals, Latency, LATENCY_BUCKETS};

use super::Core;
use crate::api;
use crate::error::ControlError;
use crate::state::PublishRec;
use crate::validate;

/// The longest sampling window a call may ask for.
const MAX_WINDOW_MS: u32 = 10_000;

/// A subsystem's I/O counts (every controller it has had) at one instant.
#[derive(Debug, Default, Clone)]
struct Sample {
    controllers: u32,
    io: IoTotals,
}

impl Core {
    fn sample(&self, nqn: &str) -> Sample {
        match self.ctx.target.subsystem(nqn) {
            Some(sub) => Sample {
                controllers: sub.controllers().len() as u32,
                io: sub.io_totals(),
            },
            None => Sample::default(),
        }
    }

    pub async fn volume_stats(
        self: &Arc<Self>,
        req: api::VolumeStatsRequest,
    ) -> Result<api::VolumeStats, ControlError> {
        self.check_ready()?;
        validate::name("name", &req.name)?;
        if req.window_ms > MAX_WINDOW_MS {
            return Err(ControlError::invalid(
                "window_ms",
                format!("{} ms is longer than {MAX_WINDOW_MS} ms", req.window_ms),
            ));
        }
        let window = Duration::from_millis(u64::from(match req.window_ms {
            0 => 1000,
            w => w,
        }));
        let rec = self.volume_rec(&req.name).await?;
        if let Some(node) = self.pool_elsewhere(&rec.pool).await? {
            return self
                .forward(&node, |ch| async move {
                    crate::api::volume_service_client::VolumeServiceClient::new(ch)
                        .stats(req)
                        .await
                })
                .await;
        }
        let publication = self.records().get::<PublishRec>(&req.name).await?;
        let vol = self.volume_msg(&rec, publication.as_ref()).await?;
        let mut out = api::VolumeStats {
            name: req.name,
            allocated_bytes: vol.allocated_bytes,
            ..Default::default()
        };
        let Some(p) = publication else {
            return Ok(out);
        };
        let t0 = Instant::now();
        let a = self.sample(&p.nqn);
        tokio::time::sleep(window).await;
        let b = self.sample(&p.nqn);
        let secs = t0.elapsed().as_secs_f64();
        // Counts only grow (gone controllers stay counted); saturate all the same.
        let d = |x: u64, y: u64| y.saturating_sub(x);
        let (a, b, n) = (&a.io, &b.io, b.controllers);
        let mut lat = Latency::default();
        for i in 0..LATENCY_BUCKETS {
            lat.buckets[i] = d(a.latency.buckets[i], b.latency.buckets[i]);
        }
        lat.count = lat.buckets.iter().sum();
        lat.sum_ns = d(a.latency.sum_ns, b.latency.sum_ns);
        out.nqn = p.nqn;
        out.controllers = n;
        out.read_ops = b.read_ops;
        out.write_ops = b.write_ops;
        out.read_bytes = b.read_bytes;
        out.write_bytes = b.write_bytes;
        out.window_seconds = secs;
        out.read_iops = d(a.read_ops, b.read_ops) as f64 / secs;
        out.write_iops = d(a.write_ops, b.write_ops) as f64 / secs;
        out.read_bytes_per_second = d(a.read_bytes, b.read_bytes) as f64 / secs;
        out.write_bytes_per_second = d(a.write_bytes, b.write_bytes) as f64 / secs;
        out.window_ops = lat.count;
        if lat.count > 0 {
            out.latency_mean_us = lat.sum_ns as f64 / lat.count as f64 / 1e3;
            out.latency_p50_us = percentile_us(&lat, 0.50);
            out.latency_p90_us = percentile_us(&lat, 0.90);
            out.latency_p99_us = percentile_us(&lat, 0.99);
            out.latency_p999_us = percentile_us(&lat, 0.999);
        }
        Ok(out)
    }
}

/// The upper bound, in µs, of the bucket holding the `q` quantile (for the last,
/// unbounded bucket: its lower bound).
fn percentile_us(l: &Latency, q: f64) -> f64 {
    let want = ((l.count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in l.buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            let ub = Latency::upper_bound_secs(i);
            return if ub.is_finite() {
                ub * 1e6
            } else {
                Latency::upper_bound_secs(i - 1) * 1e6
            };
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut l = Latency::default();
        // 90 commands under 4 µs (bucket 2), 9 under 64 µs (bucket 6), 1 in the last.
        l.buckets[2] = 90;
        l.buckets[6] = 9;
        l.buckets[LATENCY_BUCKETS - 1] = 1;
        l.count = 100;
        assert_eq!(percentile_us(&l, 0.5), 4.0);
        assert_eq!(percentile_us(&l, 0.9), 4.0);
        assert_eq!(percentile_us(&l, 0.99), 64.0);
        let top = percentile_us(&l, 0.999);
        assert_eq!(top, Latency::upper_bound_secs(LATENCY_BUCKETS - 2) * 1e6);
        assert_eq!(percentile_us(&Latency::default(), 0.5), 0.0);
    }
}
