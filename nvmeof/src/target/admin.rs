//! Admin commands: Identify, Get Log Page, Get/Set Features, Asynchronous Event
//! Request, Keep Alive, Abort — for NVM and discovery controllers.

use std::sync::atomic::Ordering;

use ferrox_bdev::Ops;
use ferrox_nvme_spec::{
    active_ns_list, treq, AddressFamily, AdminOpcode, Cns, CommandsSupportedEffects,
    DiscoveryLogEntry, DiscoveryLogHeader, FeatureId, FeatureSelect, FirmwareSlotLog, GetFeatures,
    GetLogPage, Identify, IdentifyController, IdentifyNamespace, IoOpcode, LbaFormat, Lid,
    NsIdDescriptors, SetFeatures, SmartLog, Status, SubsystemType, DISCOVERY_RECORD_LEN,
};
use zerocopy::IntoBytes;

use super::conn::{Conn, State, IN_CAPSULE_IO, MAX_AERS, MDTS};
use super::ctrl::{Controller, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES, VERSION};
use super::subsystem::MAX_NSID;
use super::TargetShared;

/// Firmware revision reported in Identify and the firmware slot log.
pub const FIRMWARE_REVISION: &str = env!("CARGO_PKG_VERSION");

impl Conn {
    pub(super) fn admin(&self, st: &mut State, slot: u16) {
        let ctrl =
            st.q.as_ref()
                .expect("admin queue is connected")
                .ctrl
                .clone();
        // Any admin command shows the host is alive (the Linux host sends Keep Alive
        // every KATO/2 as well).
        ctrl.keep_alive();
        let cmd = st.cmds.slots[slot as usize].cmd;
        let op = cmd.admin_opcode();
        if !ctrl.is_ready() {
            self.complete(st, slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        if ctrl.subsys.discovery
            && !matches!(
                op,
                AdminOpcode::IDENTIFY
                    | AdminOpcode::GET_LOG_PAGE
                    | AdminOpcode::KEEP_ALIVE
                    | AdminOpcode::GET_FEATURES
                    | AdminOpcode::SET_FEATURES
                    | AdminOpcode::ASYNC_EVENT_REQUEST
            )
        {
            self.complete(st, slot, Status::INVALID_OPCODE, 0);
            return;
        }
        if op == AdminOpcode::ASYNC_EVENT_REQUEST {
            if st.aers.len() >= MAX_AERS {
                self.complete(st, slot, Status::ASYNC_EVENT_LIMIT_EXCEEDED, 0);
            } else {
                st.aers.push(slot);
                self.deliver_events(st);
            }
            return;
        }
        let local = if op == AdminOpcode::GET_LOG_PAGE {
            Self::local_addr(st)
        } else {
            None
        };
        let mut scratch = [0u8; 4096];
        let s = &mut st.cmds.slots[slot as usize];
        let out: &mut [u8] = match s.buf.as_mut() {
            Some(b) => {
                b.as_mut_slice().fill(0);
                b.as_mut_slice()
            }
            None => &mut scratch[..0],
        };
        let (status, dw0) = match op {
            // Every Identify data structure is 4 KiB.
            AdminOpcode::IDENTIFY if out.len() < 4096 => (Status::DATA_SGL_LENGTH_INVALID, 0),
            AdminOpcode::IDENTIFY => (
                identify(&self.target, &ctrl, &Identify::parse(&cmd), out),
                0,
            ),
            AdminOpcode::GET_LOG_PAGE => (
                get_log_page(&self.target, &ctrl, &GetLogPage::parse(&cmd), out, local),
                0,
            ),
            AdminOpcode::GET_FEATURES => get_features(&ctrl, &GetFeatures::parse(&cmd)),
            AdminOpcode::SET_FEATURES => set_features(&ctrl, &SetFeatures::parse(&cmd)),
            AdminOpcode::KEEP_ALIVE => (Status::SUCCESS, 0),
            // Commands complete too fast to abort: "command not aborted" (bit 0 set).
            AdminOpcode::ABORT => (Status::SUCCESS, 1),
            _ => (Status::INVALID_OPCODE, 0),
        };
        self.complete(st, slot, status, u64::from(dw0));
    }
}

/// Whether every namespace's device does Write Zeroes (ONCS and the Commands
/// Supported and Effects log say the same).
fn write_zeroes_everywhere(sub: &super::subsystem::Subsystem) -> bool {
    sub.namespaces()
        .iter()
        .all(|ns| ns.bdev.info().ops.contains(Ops::WRITE_ZEROES))
}

fn put(out: &mut [u8], src: &[u8]) {
    let n = out.len().min(src.len());
    out[..n].copy_from_slice(&src[..n]);
}

fn identify(t: &TargetShared, ctrl: &Controller, id: &Identify, out: &mut [u8]) -> Status {
    let sub = &ctrl.subsys;
    if sub.discovery && id.cns != Cns::CONTROLLER {
        return Status::INVALID_FIELD;
    }
    match id.cns {
        Cns::CONTROLLER => {
            let mut c = IdentifyController::zeroed();
            c.vid = 0;
            c.ssvid = 0;
            c.set_sn(&sub.serial);
            c.set_mn(&sub.model);
            c.set_fr(FIRMWARE_REVISION);
            c.rab = 6;
            c.ieee = [0x00, 0x00, 0x00];
            c.cmic = 0b010; // several controllers may attach to this subsystem
            c.mdts = MDTS;
            c.cntlid = ctrl.cntlid;
            c.ver = VERSION;
            c.oaes = if sub.discovery { 0 } else { 1 << 8 }; // namespace attribute notices
            c.ctratt = 1; // 128-bit host identifier
            c.cntrltype = if sub.discovery { 2 } else { 1 };
            c.acl = 3;
            c.aerl = (MAX_AERS - 1) as u8;
            c.frmw = 0b11; // one slot, slot 1 read-only
            c.lpa = 0b110; // commands supported & effects log, extended Get Log Page data
            c.elpe = 0;
            c.npss = 0;
            c.wctemp = 0x0157;
            c.cctemp = 0x0175;
            c.kas = 10; // 100 ms units
            c.sqes = 0x66;
            c.cqes = 0x44;
            c.maxcmd = MAX_QUEUE_ENTRIES as u16;
            c.nn = if sub.discovery { 0 } else { MAX_NSID };
            // Compare and DSM always (deallocation is a hint); Write Zeroes when every
            // namespace's device does it.
            c.oncs = match (sub.discovery, write_zeroes_everywhere(sub)) {
                (true, _) => 0,
                (false, true) => 0b1101,
                (false, false) => 0b0101,
            };
            c.vwc = u8::from(!sub.discovery);
            c.sgls = 1 | (1 << 20); // SGLs without alignment; offsets in in-capsule data
            let _ = c.set_subnqn(&sub.nqn);
            c.ioccsz = ((64 + IN_CAPSULE_IO) / 16) as u32;
            c.iorcsz = 1;
            c.icdoff = 0;
            c.fcatt = 0; // dynamic controller model
            c.msdbd = 1;
            c.psd[0].mp = 2500; // 25 W in 0.01 W units, informative only
            put(out, c.as_bytes());
            Status::SUCCESS
        }
        Cns::NAMESPACE => {
            let Some(ns) = sub.namespace(id.nsid) else {
                // An inactive (allocated-or-not) NSID within range: all zeroes.
                return if id.nsid == 0 || id.nsid > MAX_NSID {
                    Status::INVALID_NAMESPACE
                } else {
                    Status::SUCCESS
                };
            };
            let info = ns.bdev.info();
            let mut n = IdentifyNamespace::zeroed();
            n.nsze = info.num_blocks;
            n.ncap = info.num_blocks;
            n.nuse = info.num_blocks;
            n.nsfeat = if info.optimal_io_boundary > 0 {
                1 << 4
            } else {
                0
            };
            n.nlbaf = 0;
            n.flbas = 0;
            n.nmic = 1; // may be shared by several controllers
            n.noiob = info.optimal_io_boundary.min(u32::from(u16::MAX)) as u16;
            n.set_nvmcap(u128::from(info.num_blocks) * u128::from(info.block_size));
            n.nguid = ns.nguid;
            n.lbaf[0] = LbaFormat::new(info.block_size.trailing_zeros() as u8, 0);
            put(out, n.as_bytes());
            Status::SUCCESS
        }
        Cns::ACTIVE_NS_LIST => {
            if id.nsid >= 0xFFFF_FFFE {
                return Status::INVALID_NAMESPACE;
            }
            let nsids: Vec<u32> = sub.namespaces().iter().map(|n| n.nsid).collect();
            let list = active_ns_list(&nsids, id.nsid);
            put(out, list.as_bytes());
            Status::SUCCESS
        }
        Cns::NS_ID_DESCRIPTORS => {
            let Some(ns) = sub.namespace(id.nsid) else {
                return Status::INVALID_NAMESPACE;
            };
            let mut b = [0u8; 4096];
            NsIdDescriptors {
                eui64: None,
                nguid: Some(ns.nguid),
                uuid: Some(ns.uuid),
                csi: None,
            }
            .write_to(&mut b);
            put(out, &b);
            Status::SUCCESS
        }
        _ => {
            let _ = t;
            Status::INVALID_FIELD
        }
    }
}

fn u128le(v: u64) -> u128 {
    u128::from(v)
}

fn get_log_page(
    t: &TargetShared,
    ctrl: &Controller,
    g: &GetLogPage,
    out: &mut [u8],
    local: Option<std::net::SocketAddr>,
) -> Status {
    let len = g.num_bytes() as usize;
    if len > out.len() {
        return Status::DATA_SGL_LENGTH_INVALID;
    }
    if !g.lpo.is_multiple_of(4) {
        return Status::INVALID_FIELD;
    }
    let out = &mut out[..len];
    let sub = &ctrl.subsys;
    let page: Vec<u8> = match g.lid {
        Lid::DISCOVERY if sub.discovery => discovery_log(t, &ctrl.hostnqn, local),
        _ if sub.discovery => return Status::INVALID_LOG_PAGE,
        Lid::ERROR => vec![0u8; 64],
        Lid::SMART => {
            if g.nsid != 0 && g.nsid != 0xFFFF_FFFF && sub.namespace(g.nsid).is_none() {
                return Status::INVALID_NAMESPACE;
            }
            let (rc, wc, rb, wb) = ctrl.totals();
            let mut s = SmartLog::zeroed();
            s.set_composite_temperature(300);
            s.available_spare = 100;
            s.available_spare_threshold = 10;
            // Data units are thousands of 512-byte units, rounded up.
            s.set_data_units_read(u128le(rb.div_ceil(512_000)));
            s.set_data_units_written(u128le(wb.div_ceil(512_000)));
            s.set_host_read_commands(u128le(rc));
            s.set_host_write_commands(u128le(wc));
            s.set_power_on_hours(u128le(ctrl.created.elapsed().as_secs() / 3600));
            s.as_bytes().to_vec()
        }
        Lid::FIRMWARE_SLOT => {
            let mut f = FirmwareSlotLog {
                afi: 1,
                reserved1: [0; 7],
                frs: [[0; 8]; 7],
                reserved64: [0; 448],
            };
            let fr = FIRMWARE_REVISION.as_bytes();
            f.frs[0] = [b' '; 8];
            f.frs[0][..fr.len().min(8)].copy_from_slice(&fr[..fr.len().min(8)]);
            f.as_bytes().to_vec()
        }
        Lid::CHANGED_NS => {
            let list = ctrl.changed_ns_log();
            let mut b = vec![0u8; 4096];
            for (i, n) in list.iter().take(1024).enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
            }
            b
        }
        Lid::CMD_EFFECTS => {
            let mut e = CommandsSupportedEffects::zeroed();
            const CSUPP: u32 = 1;
            const LBCC: u32 = 1 << 1;
            for op in [
                AdminOpcode::GET_LOG_PAGE,
                AdminOpcode::IDENTIFY,
                AdminOpcode::ABORT,
                AdminOpcode::SET_FEATURES,
                AdminOpcode::GET_FEATURES,
                AdminOpcode::ASYNC_EVENT_REQUEST,
                AdminOpcode::KEEP_ALIVE,
            ] {
                e.acs[usize::from(op.0)] = CSUPP;
            }
            for (op, fx) in [
                (IoOpcode::FLUSH, CSUPP | LBCC),
                (IoOpcode::WRITE, CSUPP | LBCC),
                (IoOpcode::READ, CSUPP),
                (IoOpcode::COMPARE, CSUPP),
                (IoOpcode::DATASET_MANAGEMENT, CSUPP | LBCC),
            ] {
                e.iocs[usize::from(op.0)] = fx;
            }
            if write_zeroes_everywhere(&ctrl.subsys) {
                e.iocs[usize::from(IoOpcode::WRITE_ZEROES.0)] = CSUPP | LBCC;
            }
            e.as_bytes().to_vec()
        }
        _ => return Status::INVALID_LOG_PAGE,
    };
    let lpo = g.lpo as usize;
    if lpo > page.len() {
        return Status::INVALID_FIELD;
    }
    put(out, &page[lpo..]);
    if g.lid == Lid::CHANGED_NS && !g.rae {
        ctrl.clear_changed_ns_log();
    }
    Status::SUCCESS
}

/// The discovery log page for `hostnqn`: the discovery subsystem itself, then every
/// subsystem the host may connect to, once per listener it is reachable through.
/// A listener on a wildcard address is reported with the address the host reached
/// (`local`), as a host cannot connect to 0.0.0.0.
pub(super) fn discovery_log(
    t: &TargetShared,
    hostnqn: &str,
    local: Option<std::net::SocketAddr>,
) -> Vec<u8> {
    let mut entries = Vec::new();
    let listeners = t.listeners();
    for (portid, bound) in listeners.iter().enumerate() {
        let addr = match local {
            Some(l) if bound.ip().is_unspecified() => {
                std::net::SocketAddr::new(l.ip(), bound.port())
            }
            _ => *bound,
        };
        let fam = if addr.is_ipv4() {
            AddressFamily::IPV4
        } else {
            AddressFamily::IPV6
        };
        let ip = addr.ip().to_string();
        let port = addr.port().to_string();
        for sub in t.subsystems() {
            if sub.discovery {
                if let Ok(mut e) = DiscoveryLogEntry::tcp(
                    SubsystemType::CURRENT_DISCOVERY,
                    fam,
                    portid as u16,
                    &ip,
                    &port,
                    &sub.nqn,
                ) {
                    // Every queue may disable SQ flow control (Connect CATTR bit 2).
                    e.treq |= treq::DISABLE_SQ_FLOW_CONTROL;
                    entries.push(e);
                }
            }
        }
        for sub in t.subsystems() {
            if sub.discovery || !sub.host_allowed(hostnqn) || !t.reaches(&sub, *bound) {
                continue;
            }
            if let Ok(mut e) =
                DiscoveryLogEntry::tcp(SubsystemType::NVM, fam, portid as u16, &ip, &port, &sub.nqn)
            {
                e.cntlid = 0xFFFF;
                e.asqsz = MAX_QUEUE_ENTRIES as u16;
                e.treq |= treq::DISABLE_SQ_FLOW_CONTROL;
                entries.push(e);
            }
        }
    }
    let genctr = t.discovery_genctr.load(Ordering::Acquire);
    let mut page = Vec::with_capacity(DISCOVERY_RECORD_LEN * (entries.len() + 1));
    page.extend_from_slice(DiscoveryLogHeader::new(genctr, entries.len() as u64).as_bytes());
    for e in &entries {
        page.extend_from_slice(e.as_bytes());
    }
    page
}

fn get_features(ctrl: &Controller, g: &GetFeatures) -> (Status, u32) {
    let f = ctrl
        .features
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let default = ferrox_feature_defaults();
    let cur = if g.sel == FeatureSelect::DEFAULT || g.sel == FeatureSelect::SAVED {
        &default
    } else {
        &f
    };
    if g.sel == FeatureSelect::SUPPORTED_CAPABILITIES {
        // Changeable (bit 2), not saveable, not namespace-specific.
        return match known(g.fid) {
            true => (Status::SUCCESS, 1 << 2),
            false => (Status::INVALID_FIELD, 0),
        };
    }
    if ctrl.subsys.discovery
        && !matches!(
            g.fid,
            FeatureId::KEEP_ALIVE_TIMER | FeatureId::ASYNC_EVENT_CONFIG
        )
    {
        return (Status::INVALID_FIELD, 0);
    }
    let v = match g.fid {
        FeatureId::ARBITRATION => cur.arbitration,
        FeatureId::POWER_MGMT => cur.power_mgmt,
        FeatureId::TEMP_THRESHOLD => cur.temp_threshold,
        FeatureId::ERROR_RECOVERY => cur.error_recovery,
        FeatureId::VOLATILE_WRITE_CACHE => u32::from(cur.volatile_write_cache),
        FeatureId::NUMBER_OF_QUEUES => {
            let (nsq, ncq) = cur.queues.unwrap_or((MAX_IO_QUEUES - 1, MAX_IO_QUEUES - 1));
            u32::from(nsq) | (u32::from(ncq) << 16)
        }
        FeatureId::INTERRUPT_COALESCING => cur.irq_coalescing,
        FeatureId::INTERRUPT_VECTOR_CONFIG => g.cdw11 & 0xffff,
        FeatureId::WRITE_ATOMICITY => cur.write_atomicity,
        FeatureId::ASYNC_EVENT_CONFIG => cur.async_event_config,
        FeatureId::KEEP_ALIVE_TIMER => {
            if std::ptr::eq(cur, &default) {
                0
            } else {
                ctrl.kato_ms.load(Ordering::Relaxed)
            }
        }
        _ => return (Status::INVALID_FIELD, 0),
    };
    (Status::SUCCESS, v)
}

fn ferrox_feature_defaults() -> super::ctrl::Features {
    super::ctrl::Features::default()
}

fn known(fid: FeatureId) -> bool {
    matches!(
        fid,
        FeatureId::ARBITRATION
            | FeatureId::POWER_MGMT
            | FeatureId::TEMP_THRESHOLD
            | FeatureId::ERROR_RECOVERY
            | FeatureId::VOLATILE_WRITE_CACHE
            | FeatureId::NUMBER_OF_QUEUES
            | FeatureId::INTERRUPT_COALESCING
            | FeatureId::INTERRUPT_VECTOR_CONFIG
            | FeatureId::WRITE_ATOMICITY
            | FeatureId::ASYNC_EVENT_CONFIG
            | FeatureId::KEEP_ALIVE_TIMER
    )
}

fn set_features(ctrl: &Controller, s: &SetFeatures) -> (Status, u32) {
    if s.sv {
        return (Status::FEATURE_NOT_SAVEABLE, 0);
    }
    if ctrl.subsys.discovery
        && !matches!(
            s.fid,
            FeatureId::KEEP_ALIVE_TIMER | FeatureId::ASYNC_EVENT_CONFIG
        )
    {
        return (Status::INVALID_FIELD, 0);
    }
    let mut f = ctrl.features.lock().unwrap_or_else(|e| e.into_inner());
    let v = s.cdw11;
    match s.fid {
        FeatureId::ARBITRATION => f.arbitration = v,
        FeatureId::POWER_MGMT => {
            if v & 0x1f != 0 {
                return (Status::INVALID_FIELD, 0); // only power state 0 exists
            }
            f.power_mgmt = v;
        }
        FeatureId::TEMP_THRESHOLD => f.temp_threshold = v,
        FeatureId::ERROR_RECOVERY => f.error_recovery = v,
        FeatureId::VOLATILE_WRITE_CACHE => {
            f.volatile_write_cache = v & 1 != 0;
            ctrl.write_cache.store(v & 1 != 0, Ordering::Relaxed);
        }
        FeatureId::NUMBER_OF_QUEUES => {
            let (nsqr, ncqr) = ((v & 0xffff) as u16, (v >> 16) as u16);
            if nsqr == 0xffff || ncqr == 0xffff {
                return (Status::INVALID_FIELD, 0);
            }
            if ctrl.io_queue_count() > 0 {
                return (Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            let granted = (nsqr.min(MAX_IO_QUEUES - 1), ncqr.min(MAX_IO_QUEUES - 1));
            f.queues = Some(granted);
            return (
                Status::SUCCESS,
                u32::from(granted.0) | (u32::from(granted.1) << 16),
            );
        }
        FeatureId::INTERRUPT_COALESCING => f.irq_coalescing = v,
        FeatureId::INTERRUPT_VECTOR_CONFIG => {}
        FeatureId::WRITE_ATOMICITY => f.write_atomicity = v,
        FeatureId::ASYNC_EVENT_CONFIG => {
            // Only the notices this controller can raise are kept.
            f.async_event_config = v & (1 << 8);
        }
        // A discovery controller always has a keep-alive (see
        // `TargetShared::discovery_kato`): it cannot be turned off.
        FeatureId::KEEP_ALIVE_TIMER if v == 0 && ctrl.subsys.discovery => {
            return (Status::INVALID_FIELD, 0)
        }
        FeatureId::KEEP_ALIVE_TIMER => ctrl.kato_ms.store(v, Ordering::Relaxed),
        _ => return (Status::INVALID_FIELD, 0),
    }
    (Status::SUCCESS, 0)
}
