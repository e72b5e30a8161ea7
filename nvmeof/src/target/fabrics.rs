//! Fabrics commands: Connect (admin and I/O queues) and Property Get/Set.

use std::sync::Arc;
use std::time::Duration;

use ferrox_nvme_spec::{
    connect_invalid_parameter_dw0, connect_response_dw0, validate_nqn, AuthReq, ConnectCommand,
    ConnectData, ConnectInvalidParameter, FabricsCommandType, PropertyCommand, PropertySize,
    Status, CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use ferrox_reactor::Reactor;
use zerocopy::FromBytes;

use super::conn::{Conn, QueueState, State};
use super::ctrl::{Controller, QueueRef, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES};

fn invalid_cmd(off: u16) -> (Status, u64) {
    (
        Status::CONNECT_INVALID_PARAMETERS,
        u64::from(connect_invalid_parameter_dw0(
            ConnectInvalidParameter::Command(off),
        )),
    )
}

fn invalid_data(off: u16) -> (Status, u64) {
    (
        Status::CONNECT_INVALID_PARAMETERS,
        u64::from(connect_invalid_parameter_dw0(
            ConnectInvalidParameter::Data(off),
        )),
    )
}

impl Conn {
    pub(super) fn fabrics(&self, st: &mut State, slot: u16) -> (Status, u64) {
        let cmd = st.cmds.slots[slot as usize].cmd;
        match cmd.fctype() {
            FabricsCommandType::CONNECT => self.connect(st, slot),
            t @ (FabricsCommandType::PROPERTY_GET | FabricsCommandType::PROPERTY_SET) => {
                let Some(q) = &st.q else {
                    return (Status::COMMAND_SEQUENCE_ERROR, 0);
                };
                if q.qid != 0 {
                    return (Status::INVALID_OPCODE, 0);
                }
                let pc = PropertyCommand::from_command(&cmd);
                let size8 = match PropertySize::from_attrib(pc.attrib) {
                    Some(PropertySize::Eight) => true,
                    Some(PropertySize::Four) => false,
                    None => return (Status::INVALID_FIELD, 0),
                };
                let r = if t == FabricsCommandType::PROPERTY_GET {
                    q.ctrl.get_property(pc.ofst, size8)
                } else {
                    q.ctrl.set_property(pc.ofst, size8, pc.value).map(|()| 0)
                };
                match r {
                    Ok(v) => (Status::SUCCESS, v),
                    Err(s) => (s, 0),
                }
            }
            _ => (Status::INVALID_OPCODE, 0),
        }
    }

    fn connect(&self, st: &mut State, slot: u16) -> (Status, u64) {
        // Not while another Connect waits for its data either: its R2T is counted
        // against the target only, not against the controller this one would join.
        if st.q.is_some() || st.cmds.r2t_out > 0 || !st.cmds.wait_buf.is_empty() {
            return (Status::COMMAND_SEQUENCE_ERROR, 0);
        }
        let s = &st.cmds.slots[slot as usize];
        let cc = ConnectCommand::from_command(&s.cmd);
        if cc.recfmt != 0 {
            return (Status::CONNECT_INCOMPATIBLE_FORMAT, 0);
        }
        let Some(buf) = s.buf.as_ref().filter(|b| b.len() == CONNECT_DATA_LEN) else {
            return (Status::DATA_SGL_LENGTH_INVALID, 0);
        };
        let Ok(data) = ConnectData::read_from_bytes(buf.as_slice()) else {
            return (Status::DATA_SGL_LENGTH_INVALID, 0);
        };
        let Ok(subnqn) = data.subnqn_str() else {
            return invalid_data(256);
        };
        let hostnqn = match data.hostnqn_str() {
            Ok(h) if validate_nqn(h).is_ok() => h.to_string(),
            _ => return invalid_data(512),
        };
        let Some(subsys) = self
            .target
            .subsystem(subnqn)
            .filter(|s| self.target.reaches(s, self.listener))
        else {
            tracing::info!(conn = self.id, subnqn, listener = %self.listener, "connect to a subsystem unknown on this listener");
            return invalid_data(256);
        };
        if !subsys.host_allowed(&hostnqn) {
            tracing::info!(conn = self.id, subnqn, host = %hostnqn, "host not allowed");
            return (Status::CONNECT_INVALID_HOST, 0);
        }
        let entries = u32::from(cc.sqsize) + 1;
        if cc.sqsize == 0 || entries > MAX_QUEUE_ENTRIES {
            return invalid_cmd(44);
        }
        let sqflow_disabled = cc.sq_flow_control_disabled();
        let r_id = Reactor::with(|r| r.id());
        let ctrl = if cc.qid == 0 {
            if data.cntlid != CNTLID_DYNAMIC {
                return invalid_data(16);
            }
            let admin = self.queue_handle(&self.target.reactors[r_id]);
            // Every host may reach discovery: its controllers are capped per peer
            // address, and none lives without a keep-alive.
            let mut kato = cc.kato;
            if subsys.discovery {
                let Some(permit) = self.target.discovery_limits.admit(self.peer.ip()) else {
                    tracing::info!(conn = self.id, peer = %self.peer, cap = self.target.discovery_limits.cap(), "discovery controllers of this peer address at their cap");
                    return (Status::CONNECT_CONTROLLER_BUSY, 0);
                };
                st.discovery_permit = Some(permit);
                if kato == 0 {
                    kato =
                        u32::try_from(self.target.discovery_kato().as_millis()).unwrap_or(u32::MAX);
                }
            }
            let created = subsys.register_controller(|cntlid| {
                Arc::new(Controller::new(
                    cntlid,
                    subsys.clone(),
                    &hostnqn,
                    data.hostid,
                    kato,
                    admin.clone(),
                ))
            });
            let Some(ctrl) = created else {
                st.discovery_permit = None;
                return (Status::CONNECT_CONTROLLER_BUSY, 0);
            };
            {
                // Checked on every period, against the KATO in force then (Set
                // Features may change it, or turn it on after a Connect without one).
                let period = Duration::from_millis(u64::from(kato / 4).clamp(100, 1000));
                let weak = Arc::downgrade(&ctrl);
                let t = Reactor::with(|r| {
                    r.add_periodic(period, move |r| {
                        if let Some(c) = weak.upgrade() {
                            if c.keepalive_expired(r.now()) {
                                c.teardown("keep-alive timeout");
                            }
                        }
                    })
                });
                self.set_kato_timer(st, t);
            }
            tracing::info!(conn = self.id, cntlid = ctrl.cntlid, subsystem = %subsys.nqn, host = %hostnqn, kato_ms = kato, "controller created");
            ctrl
        } else {
            if subsys.discovery {
                return invalid_cmd(42); // a discovery controller has no I/O queues
            }
            let Some(ctrl) = subsys.controller(data.cntlid) else {
                return invalid_data(16);
            };
            if ctrl.hostnqn != hostnqn {
                return invalid_data(512);
            }
            if ctrl.hostid != data.hostid {
                return invalid_data(0);
            }
            if !ctrl.is_ready() {
                return (Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            let granted = ctrl
                .features
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .queues
                .map_or(MAX_IO_QUEUES, |(nsq, ncq)| nsq.min(ncq) + 1);
            if cc.qid > granted {
                return invalid_cmd(42);
            }
            let qr = QueueRef {
                qid: cc.qid,
                queue: self.queue_handle(&self.target.reactors[r_id]),
            };
            if let Err(s) = ctrl.add_io_queue(qr) {
                return (
                    s,
                    u64::from(connect_invalid_parameter_dw0(
                        ConnectInvalidParameter::Command(42),
                    )),
                );
            }
            ctrl.counters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(st.counters.clone());
            tracing::debug!(
                conn = self.id,
                cntlid = ctrl.cntlid,
                qid = cc.qid,
                depth = entries,
                "I/O queue connected"
            );
            ctrl
        };
        let cntlid = ctrl.cntlid;
        st.cmds.quota.ctrl = Some((ctrl.r2t_held.clone(), self.target.r2t_caps().0));
        if let Some(t) = st.timers.connect.take() {
            Reactor::with(|r| r.cancel_timer(t));
        }
        st.q = Some(QueueState {
            qid: cc.qid,
            ctrl,
            sqflow_disabled,
        });
        st.set_sq_size(entries as u16);
        (
            Status::SUCCESS,
            u64::from(connect_response_dw0(cntlid, AuthReq::empty())),
        )
    }
}
