//! `ferrox-perf`: the benchmark harness of Ferrox. It drives a block device — a
//! remote NVMe/TCP namespace, a local file or block device, or a RAM disk — from one
//! pinned reactor per core and reports IOPS, bandwidth, latency percentiles and the
//! CPU it used, as a table, JSON or an SVG plot; `compare` runs two targets
//! alternately and reports ratios.
//!
//! # Architecture
//!
//! - [`parse`]: everything a user types (sizes, targets, workloads), with usage errors.
//! - [`target`]: turns a [`parse::TargetSpec`] into an `Arc<dyn BlockDevice>`: malloc,
//!   uring (file or block device), or nvme+tcp through the nvmeof host library; and
//!   `--spawn-target`, an in-process Ferrox target serving a malloc bdev on loopback.
//! - [`plan`]: checks a [`plan::Workload`] against a device and splits it into one
//!   [`worker::JobSpec`] per core.
//! - [`worker`]: the per-core [`ferrox_reactor::Poller`] that keeps QD requests in
//!   flight through the reactor's own [`ferrox_bdev::IoChannel`] (its queue pair).
//!   Slots, buffers (from the reactor's pool), histograms and the timeline are
//!   allocated before the first request: the I/O path neither allocates nor locks.
//!   Completions run on the reactor ([`ferrox_bdev::IoSink`]); the result goes back
//!   to the main thread through a [`ferrox_reactor::mailbox::oneshot`].
//! - [`rng`]: xorshift offsets and a rejection-inversion Zipf sampler (no table).
//! - [`verify`]: what `--verify` writes in every 512 bytes (a header and data derived
//!   from it), its check, and the tracker of each block's last acknowledged write.
//! - [`stats`]: per-core results, their merge, and the report; [`report`] prints it;
//!   [`plot`] draws it with `plotters` (SVG backend).
//! - [`bench`]: runs one benchmark (fill, workload, read-back) on a [`bench::Session`];
//!   [`compare`]: A/B rounds.
//!
//! # What it doesn't implement
//!
//! Vectored or unaligned I/O (offsets are multiples of `--align`, itself a multiple of
//! the block size), trim/flush workloads, per-request rate limits, and think time.
//! Verification cannot judge blocks whose writes overlapped in flight (either may have
//! landed last): they are checked for this run's data, not for which write it is.

pub mod bench;
pub mod compare;
pub mod parse;
pub mod plan;
pub mod plot;
pub mod report;
pub mod rng;
pub mod stats;
pub mod target;
pub mod verify;
pub mod worker;

/// Errors of the harness. [`Error::Usage`] is a mistake in what the user typed (exit
/// status 2); everything else is a failed run (exit status 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("target {target}: {why}")]
    Target { target: String, why: String },
    #[error("cannot start the reactors: {0}")]
    Reactor(#[source] ferrox_reactor::Error),
    #[error("{0}")]
    Run(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }

    /// The exit status the binary uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
