//! Opening targets: `malloc:SIZE`, a file or block device (uring bdev),
//! `nvme+tcp://` through the nvmeof host library, `pcie://` through the user-space NVMe
//! driver (VFIO); and `--spawn-target`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrox_bdev::malloc::MallocBdev;
use ferrox_bdev::uring::UringBdev;
use ferrox_bdev::BlockDevice;
use ferrox_nvme::bdev::NvmeController;
use ferrox_nvme::driver::ControllerOptions;
use ferrox_nvmeof::{SubsystemConfig, Target};
use ferrox_reactor::{PollMode, ReactorGroup, ReactorOptions};

use crate::bench::Session;
use crate::parse::{format_size, NvmfUrl, TargetSpec};
use crate::Error;

/// NQN of the subsystem `--spawn-target` serves.
pub const SPAWN_NQN: &str = "nqn.2026-11.io.ferrox:perf";

/// Settings for opening targets.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Logical block size of malloc and file targets.
    pub block_size: u32,
    /// Requests each channel (queue pair) keeps in flight.
    pub queue_depth: u32,
    pub host: HostSettings,
    /// The reactors' poll mode (a `pcie://` controller routes MSI-X only when adaptive).
    pub poll_mode: PollMode,
}

/// What an nvme+tcp connection is opened with (the host library's `HostOptions`).
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// Empty: the library's default host NQN.
    pub hostnqn: String,
    pub header_digest: bool,
    pub data_digest: bool,
    pub kato_ms: Option<u32>,
    pub io_timeout: Option<Duration>,
    /// Keep SQ flow control. By default ferrox-perf asks the target to disable it, so
    /// a read ends with one C2HData PDU (SUCCESS) instead of C2HData plus a response
    /// capsule; a target that refuses is connected to with it (the host library
    /// retries the Connect).
    pub keep_sq_flow_control: bool,
}

/// An open target and whatever must live as long as it does.
pub struct Opened {
    pub dev: Arc<dyn BlockDevice>,
    /// What the report calls it.
    pub label: String,
    /// `--spawn-target`: the in-process target serving `dev`'s far end, and its own
    /// reactors (the host's queue pairs connect from the benchmark's reactors, which
    /// must not also be the ones that have to answer).
    pub spawned: Option<(Target, ReactorGroup)>,
    /// `pcie://`: the attached controller, shut down (CC.SHN) when this is dropped,
    /// which must be after the session's reactors stopped (they own its queue pairs).
    pub pcie: Option<NvmeController>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(c) = self.pcie.take() {
            if let Err(e) = c.shutdown() {
                eprintln!("ferrox-perf: {}: shutdown: {e}", self.label);
            }
        }
    }
}

/// Opens `spec` with the session's reactors and buffer pool. `name` names the bdev
/// (malloc and file targets).
pub fn open(s: &Session, spec: &TargetSpec, name: &str, o: &OpenOptions) -> Result<Opened, Error> {
    if let TargetSpec::Pcie { bdf, nsid } = spec {
        return open_pcie(s, bdf, *nsid, o);
    }
    let label = spec.to_string();
    let fail = |why: String| Error::Target {
        target: label.clone(),
        why,
    };
    let dev: Arc<dyn BlockDevice> = match spec {
        TargetSpec::Malloc { size } => {
            let bs = u64::from(o.block_size);
            if !size.is_multiple_of(bs) {
                return Err(Error::usage(format!(
                    "malloc:{}: the size is not a multiple of the block size {bs}",
                    format_size(*size)
                )));
            }
            MallocBdev::new(name, size / bs, o.block_size).map_err(|e| fail(e.to_string()))?
        }
        TargetSpec::Path(p) => UringBdev::open(name, p, None, o.block_size, o.queue_depth as usize)
            .map_err(|e| fail(e.to_string()))?,
        TargetSpec::Nvmf(url) => connect(s, url, o)?,
        TargetSpec::Pcie { .. } => unreachable!("opened above"),
    };
    Ok(Opened {
        dev,
        label,
        spawned: None,
        pcie: None,
    })
}

/// Attaches a controller bound to vfio-pci: one I/O queue pair per reactor, the
/// session's pool mapped for DMA; the bdev is namespace `nsid` (else the first).
fn open_pcie(s: &Session, bdf: &str, nsid: Option<u32>, o: &OpenOptions) -> Result<Opened, Error> {
    let url = TargetSpec::Pcie {
        bdf: bdf.to_string(),
        nsid,
    }
    .to_string();
    let fail = |why: String| Error::Target {
        target: url.clone(),
        why,
    };
    let opts = ControllerOptions {
        io_queues: u16::try_from(s.cores()).unwrap_or(u16::MAX),
        // One entry more than the requests in flight: a full queue holds one fewer.
        queue_depth: u16::try_from(o.queue_depth.saturating_add(1).max(2)).unwrap_or(1024),
        interrupts: o.poll_mode == PollMode::Adaptive,
        ..ControllerOptions::default()
    };
    let c = ferrox_nvme::bdev::attach(bdf, s.pool(), opts).map_err(|e| fail(e.to_string()))?;
    let pick = c
        .bdevs
        .iter()
        .find(|b| nsid.is_none_or(|n| b.nsid() == n))
        .cloned();
    let Some(b) = pick else {
        let have: Vec<u32> = c.bdevs.iter().map(|b| b.nsid()).collect();
        let why = format!("no active namespace {nsid:?} (active: {have:?})");
        let _ = c.shutdown();
        return Err(fail(why));
    };
    let mn = String::from_utf8_lossy(&c.ctrl.identify().mn)
        .trim()
        .to_string();
    let label = format!("{} ({mn}, {})", url, b.info().name);
    Ok(Opened {
        dev: b,
        label,
        spawned: None,
        pcie: Some(c),
    })
}

/// Connects through the nvmeof host library. The URL handed over is rebuilt from the
/// parsed one, so a host name has been resolved to the address the library expects.
fn connect(s: &Session, url: &NvmfUrl, o: &OpenOptions) -> Result<Arc<dyn BlockDevice>, Error> {
    use ferrox_nvmeof::host::{HostOptions, NvmfBdev};
    let mut h = HostOptions::default();
    if !o.host.hostnqn.is_empty() {
        h.hostnqn.clone_from(&o.host.hostnqn);
    }
    h.header_digest = o.host.header_digest;
    h.data_digest = o.host.data_digest;
    h.disable_sq_flow_control = !o.host.keep_sq_flow_control;
    // One entry more than the requests we keep in flight: a full queue holds one
    // fewer command than it has entries. The library caps it (128).
    h.queue_depth = u16::try_from(o.queue_depth.saturating_add(1)).unwrap_or(u16::MAX);
    if let Some(k) = o.host.kato_ms {
        h.kato_ms = k;
    }
    if let Some(t) = o.host.io_timeout {
        h.io_timeout = t;
    }
    let canonical = match url.nsid {
        Some(n) => format!("nvme+tcp://{}/{}?nsid={n}", url.addr, url.nqn),
        None => format!("nvme+tcp://{}/{}", url.addr, url.nqn),
    };
    let dev = NvmfBdev::connect_typed(&canonical, &h).map_err(|e| Error::Target {
        target: url.url.clone(),
        why: e.to_string(),
    })?;
    // Keep-alive from now on, not from the first job: `compare` connects both
    // targets first and the second one's first job may come after its KATO.
    if let Some(r) = s.handles().first() {
        dev.keep_alive_on(r);
    }
    Ok(dev)
}

/// `--spawn-target`: serves a malloc bdev of `size` bytes from an in-process Ferrox
/// target on 127.0.0.1 (a free port) and connects to it. The target gets its own
/// adaptive-polling reactors, on the cores the benchmark does not use (on the same
/// cores when it uses them all).
pub fn spawn(s: &Session, size: u64, o: &OpenOptions) -> Result<Opened, Error> {
    let bs = u64::from(o.block_size);
    if size == 0 || !size.is_multiple_of(bs) {
        return Err(Error::usage(format!(
            "--spawn-size {}: must be a non-zero multiple of the block size {bs}",
            format_size(size)
        )));
    }
    let label = format!("spawned target (malloc:{})", format_size(size));
    let fail = |why: String| Error::Target {
        target: label.clone(),
        why,
    };
    let ram: Arc<dyn BlockDevice> =
        MallocBdev::new("perf-spawn", size / bs, o.block_size).map_err(|e| fail(e.to_string()))?;
    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let ours: Vec<usize> = s.handles().iter().map(|h| h.core()).collect();
    let mut cores: Vec<usize> = ferrox_reactor::available_cores()
        .into_iter()
        .filter(|c| !ours.contains(c))
        .collect();
    if cores.is_empty() {
        cores = ours;
    }
    let group = ReactorGroup::start(&cores, &ReactorOptions::default(), s.pool())
        .map_err(Error::Reactor)?;
    let target = Target::start(
        group.handles(),
        ferrox_bdev::random_uuid(),
        vec![SubsystemConfig {
            nqn: SPAWN_NQN.to_string(),
            serial: "FXPERF0001".to_string(),
            model: "Ferrox perf spawned target".to_string(),
            allow_any_host: true,
            hosts: Vec::new(),
            namespaces: vec![(1, ram)],
            listeners: Vec::new(),
        }],
        &[listen],
    )
    .map_err(|e| fail(e.to_string()))?;
    let addr = *target
        .listen_addrs()
        .first()
        .ok_or_else(|| fail("the target bound no listener".to_string()))?;
    let url = crate::parse::parse_nvmf_url(&format!("nvme+tcp://{addr}/{SPAWN_NQN}?nsid=1"))?;
    let dev = connect(s, &url, o)?;
    Ok(Opened {
        dev,
        label: format!("{} via {}", label, url.url),
        spawned: Some((target, group)),
        pcie: None,
    })
}
