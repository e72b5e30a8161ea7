//! Receiving: the staging buffer, PDU headers, data into command buffers, and the
//! commands they start.

use ferrox_nvme_spec::{AdminOpcode, Command, FabricsCommandType, IoOpcode, Status};
use ferrox_reactor::Reactor;
use zerocopy::FromBytes;

use super::{Conn, Dir, Phase, RxState, Slot, State, Step, TxItem};
use super::{MAX_H2C_DATA, MAX_TRANSFER};
use crate::pdu::stream::{DataStep, HeaderError};
use crate::pdu::{
    le16, validate_h2c, DataHeader, Fes, HeaderBuf, IcReq, IcResp, PduType, TermError, DIGEST_LEN,
};
use crate::target::ctrl::QueueCounters;

/// HLEN of an H2CData PDU.
const H2C_HEADER: usize = 24;

impl Conn {
    // ---------------------------------------------------------------- receive

    /// Reads more bytes into the staging buffer; false when nothing came.
    pub(in crate::target) fn fill(&self, st: &mut State) -> bool {
        // With R2Ts out the next PDU is most likely an H2CData: read no further than
        // its header, so its data goes straight from the socket into the command's
        // buffer instead of through the staging buffer. (Otherwise read all there is:
        // several small PDUs in one call.)
        let hdr = H2C_HEADER + if st.digests.header { DIGEST_LEN } else { 0 };
        let upto =
            (st.cmds.r2t_out > 0 && st.rx_state == RxState::Header && st.stream.staged() < hdr)
                .then_some(hdr);
        match st.stream.fill(upto) {
            Ok(got) => got,
            Err(e) => {
                self.receive_failed(st, &e);
                false
            }
        }
    }

    fn receive_failed(&self, st: &mut State, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.close_locked(st, "the host closed the connection");
        } else {
            self.close_locked(st, &format!("receive failed: {e}"));
        }
    }

    /// Processes received bytes; returns whether anything happened.
    pub(in crate::target) fn receive(&self, st: &mut State) -> bool {
        let mut progress = false;
        for _ in 0..256 {
            if !matches!(st.phase, Phase::AwaitIc | Phase::Active) {
                break;
            }
            match self.step(st) {
                Step::Progress => progress = true,
                Step::NeedBytes => {
                    if !self.fill(st) {
                        break;
                    }
                    progress = true;
                }
                Step::Blocked => break,
            }
        }
        progress
    }

    pub(in crate::target) fn step(&self, st: &mut State) -> Step {
        match st.rx_state {
            RxState::Header => self.step_header(st),
            RxState::Data { slot, h2c } => self.step_data(st, slot, h2c),
            RxState::WaitBuf { slot } => {
                let len = st.cmds.slots[slot as usize].xfer;
                match Reactor::with(|r| r.pool().alloc(len)) {
                    Some(buf) => {
                        st.cmds.slots[slot as usize].buf = Some(buf);
                        self.begin_data(st, Some(slot), false);
                        Step::Progress
                    }
                    None => Step::Blocked,
                }
            }
        }
    }

    pub(in crate::target) fn step_header(&self, st: &mut State) -> Step {
        let Some(ch) = st.stream.peek_common() else {
            return Step::NeedBytes;
        };
        if ch.pdu_type == PduType::H2C_TERM_REQ {
            // The host ends the connection: nothing is answered, even when its
            // termination request is itself malformed.
            let b = st.stream.staged_bytes();
            let fes = (b.len() >= 10).then(|| le16(b, 8));
            self.close_locked(st, &format!("the host sent H2CTermReq (FES {fes:#x?})"));
            return Step::Progress;
        }
        let digests = (st.phase == Phase::Active).then_some(st.digests);
        let limits = Self::limits(st);
        match st
            .stream
            .recv_header(|ch| validate_h2c(ch, digests, &limits))
        {
            Ok(Some(_)) => {}
            Ok(None) => return Step::NeedBytes,
            Err(HeaderError::Invalid(e)) => {
                self.fatal(st, e);
                return Step::Progress;
            }
            Err(HeaderError::Digest(want)) => {
                // For a header digest error the FEI carries the digest received.
                self.fatal(
                    st,
                    TermError::new(Fes::HEADER_DIGEST_ERROR, want, "header digest mismatch"),
                );
                return Step::Progress;
            }
        }
        match ch.pdu_type {
            PduType::IC_REQ => self.on_icreq(st),
            PduType::CAPSULE_CMD => self.on_capsule(st),
            PduType::H2C_DATA => self.on_h2c_data(st),
            _ => unreachable!("validate_h2c admits only host PDU types"),
        }
        Step::Progress
    }

    pub(in crate::target) fn on_icreq(&self, st: &mut State) {
        let h = st.stream.header();
        let req = IcReq::parse(h);
        if let Err(e) = req.check(h[11]) {
            self.fatal(st, e);
            return;
        }
        st.digests = req.digests;
        st.c2h_align = (usize::from(req.hpda) + 1) * 4;
        let resp = IcResp {
            pfv: 0,
            cpda: 0,
            digests: req.digests,
            maxh2cdata: MAX_H2C_DATA as u32,
        };
        let mut h = HeaderBuf::capsule_resp(&[0; 16], false);
        h.bytes[..128].copy_from_slice(&resp.encode());
        h.len = 128;
        st.stream.push(TxItem::Hdr(h));
        st.phase = Phase::Active;
    }

    /// Sets up receiving the current PDU's data into `slot` (or discarding it).
    pub(in crate::target) fn begin_data(&self, st: &mut State, slot: Option<u16>, h2c: bool) {
        let off = match (slot, h2c) {
            (Some(s), true) => st.cmds.slots[s as usize].got,
            _ => 0,
        };
        // Small in-capsule data is cheaper staged with the PDUs behind it; H2CData,
        // which follows an R2T alone, always goes straight to its buffer.
        st.stream.begin_data(off, h2c);
        st.rx_state = RxState::Data { slot, h2c };
    }

    pub(in crate::target) fn step_data(
        &self,
        st: &mut State,
        slot: Option<u16>,
        h2c: bool,
    ) -> Step {
        let dst = slot.and_then(|s| st.cmds.slots[usize::from(s)].buf.as_mut());
        let r = st.stream.recv_data(dst.map(|b| b.as_mut_slice()));
        if r.copied > 0 {
            QueueCounters::add(&st.counters.copied_bytes, r.copied as u64);
        }
        if r.direct > 0 {
            QueueCounters::add(&st.counters.direct_bytes, r.direct as u64);
        }
        let (digest_ok, end) = match r.step {
            DataStep::Progress => return Step::Progress,
            DataStep::NeedBytes => return Step::NeedBytes,
            DataStep::Blocked => return Step::Blocked,
            DataStep::Failed(e) => {
                self.receive_failed(st, &e);
                return Step::Blocked;
            }
            DataStep::Done { digest_ok, end } => (digest_ok, end),
        };
        st.rx_state = RxState::Header;
        if let Some(s) = slot {
            let sl = &mut st.cmds.slots[s as usize];
            if !digest_ok {
                // Non-fatal: the command fails with a transient transport error.
                sl.data_digest_error = true;
            }
            if h2c {
                sl.got = end;
                if sl.got < sl.xfer {
                    return Step::Progress;
                }
                st.cmds.r2t_done(s);
            }
            self.data_complete(st, s);
        }
        Step::Progress
    }

    pub(in crate::target) fn data_complete(&self, st: &mut State, slot: u16) {
        if st.cmds.slots[slot as usize].data_digest_error {
            tracing::warn!(conn = self.id, "data digest mismatch");
            self.complete(st, slot, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            return;
        }
        self.execute(st, slot);
    }

    pub(in crate::target) fn on_capsule(&self, st: &mut State) {
        let cmd = match Command::read_from_bytes(&st.stream.header()[8..72]) {
            Ok(c) => c,
            Err(_) => unreachable!("64 bytes"),
        };
        st.sq_head = (st.sq_head + 1) % st.sq_size.max(1);
        let l = st.stream.layout();
        let Some(slot) = st.cmds.take() else {
            // The host exceeded the queue size it connected with.
            self.respond_now(st, &cmd, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            self.begin_data(st, None, false);
            return;
        };
        let (dir, xfer, status) = Self::plan(&cmd, l.data_len, st.q.is_some());
        let s = &mut st.cmds.slots[slot as usize];
        *s = Slot {
            cmd,
            in_use: true,
            dir,
            xfer,
            ..Slot::empty()
        };
        if let Err(status) = status {
            self.complete(st, slot, status.with_dnr(), 0);
            if l.data_len > 0 {
                self.begin_data(st, None, false);
            }
            return;
        }
        let in_capsule = dir == Dir::H2C && l.data_len > 0;
        if dir == Dir::H2C && !in_capsule && xfer > 0 {
            // Checked before any buffer is taken or R2T sent: a command this queue
            // would refuse anyway must not hold a pool buffer while the host sits
            // on its data.
            if let Err(status) = Self::admit_transfer(st, &cmd, xfer) {
                self.complete(st, slot, status.with_dnr(), 0);
                return;
            }
            // Its buffer is taken when its R2T can go out (see `retry_waiting`).
            st.cmds.wait_buf.push_back(slot);
            if l.data_len > 0 {
                self.begin_data(st, None, false);
            }
            return;
        }
        if xfer > 0 {
            if let Some(buf) = Reactor::with(|r| r.pool().alloc(xfer)) {
                st.cmds.slots[slot as usize].buf = Some(buf);
            } else if in_capsule {
                st.rx_state = RxState::WaitBuf { slot };
                return;
            } else {
                st.cmds.wait_buf.push_back(slot);
                return;
            }
        }
        if in_capsule {
            self.begin_data(st, Some(slot), false);
        } else if l.data_len > 0 {
            // Data the command does not take: read and drop it.
            self.begin_data(st, None, false);
            self.proceed(st, slot);
        } else {
            self.proceed(st, slot);
        }
    }

    /// Works out a command's data transfer from its direction and SGL: (direction,
    /// bytes, verdict). Public for the fuzzers.
    pub fn plan(
        cmd: &Command,
        capsule_data: usize,
        connected: bool,
    ) -> (Dir, usize, Result<(), Status>) {
        let fabrics = cmd.is_fabrics();
        let is_connect = fabrics && cmd.fctype() == FabricsCommandType::CONNECT;
        if !connected && !is_connect {
            return (Dir::None, 0, Err(Status::COMMAND_SEQUENCE_ERROR));
        }
        let bits = if fabrics {
            cmd.fctype().0
        } else {
            cmd.opcode()
        } & 3;
        let dir = match bits {
            0 => Dir::None,
            1 => Dir::H2C,
            2 => Dir::C2H,
            // Bidirectional transfers: no command this target implements has them.
            _ => return (Dir::None, 0, Err(Status::INVALID_OPCODE)),
        };
        // Identify reports FUSES 0: fused operations are not supported, so a fused
        // half (say a Compare and Write pair) must not run alone.
        if cmd.fuse() != 0 {
            return (Dir::None, 0, Err(Status::INVALID_FIELD));
        }
        if dir == Dir::None {
            return (dir, 0, Ok(()));
        }
        if cmd.psdt() != 0b01 && !fabrics {
            return (Dir::None, 0, Err(Status::INVALID_FIELD));
        }
        let sgl = cmd.sgl1();
        let len = sgl.length as usize;
        if len > MAX_TRANSFER {
            // Beyond MDTS: the base specification's status for that.
            return (Dir::None, 0, Err(Status::INVALID_FIELD));
        }
        if sgl.is_in_capsule() {
            if sgl.address != 0 {
                return (Dir::None, 0, Err(Status::SGL_OFFSET_INVALID));
            }
            if dir != Dir::H2C || len != capsule_data {
                return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
            }
        } else if sgl.is_transport() {
            if capsule_data > 0 {
                return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
            }
        } else if len > 0 {
            return (Dir::None, 0, Err(Status::SGL_DESCRIPTOR_TYPE_INVALID));
        } else if dir == Dir::H2C && capsule_data > 0 {
            // In-capsule data that no SGL describes: the command takes none of it.
            return (Dir::None, 0, Err(Status::DATA_SGL_LENGTH_INVALID));
        }
        (dir, len, Ok(()))
    }

    /// Whether a host-to-controller transfer of `xfer` bytes that needs an R2T is
    /// one this queue's controller would use: the opcode is valid for the queue (and
    /// the controller is enabled, for the admin queue), and the length within what
    /// that opcode takes. Checked before a buffer is taken or an R2T sent.
    fn admit_transfer(st: &State, cmd: &Command, xfer: usize) -> Result<(), Status> {
        /// The largest data a Set Features or a Dataset Management takes.
        const SMALL: usize = 4096;
        let Some(q) = &st.q else {
            // Only a Connect passes `plan` before the queue is connected, and one at
            // a time is all a host needs.
            return if xfer != ferrox_nvme_spec::CONNECT_DATA_LEN {
                Err(Status::DATA_SGL_LENGTH_INVALID)
            } else if st.cmds.r2t_out > 0 || !st.cmds.wait_buf.is_empty() {
                Err(Status::COMMAND_SEQUENCE_ERROR)
            } else {
                Ok(())
            };
        };
        if cmd.is_fabrics() {
            return Err(if cmd.fctype() == FabricsCommandType::CONNECT {
                Status::COMMAND_SEQUENCE_ERROR
            } else {
                Status::INVALID_OPCODE
            });
        }
        let max = if q.qid == 0 {
            if !q.ctrl.is_ready() {
                return Err(Status::COMMAND_SEQUENCE_ERROR);
            }
            match cmd.admin_opcode() {
                // No feature a discovery controller has takes data: every host may
                // reach one, so none gets a buffer to hold.
                AdminOpcode::SET_FEATURES if q.ctrl.subsys.discovery => {
                    return Err(Status::INVALID_FIELD)
                }
                AdminOpcode::SET_FEATURES => SMALL,
                _ => return Err(Status::INVALID_OPCODE),
            }
        } else {
            if q.ctrl.subsys.discovery {
                return Err(Status::INVALID_OPCODE);
            }
            match cmd.io_opcode() {
                IoOpcode::WRITE | IoOpcode::COMPARE => MAX_TRANSFER,
                IoOpcode::DATASET_MANAGEMENT => SMALL,
                _ => return Err(Status::INVALID_OPCODE),
            }
        };
        if xfer > max {
            return Err(Status::DATA_SGL_LENGTH_INVALID);
        }
        Ok(())
    }

    /// The slot has its buffer: ask the host for data (R2T) or execute.
    pub(in crate::target) fn proceed(&self, st: &mut State, slot: u16) {
        let s = &mut st.cmds.slots[slot as usize];
        if s.dir == Dir::H2C && s.xfer > 0 && s.got < s.xfer {
            s.awaiting_h2c = true;
            s.r2t_at = std::time::Instant::now();
            st.cmds.r2t_out += 1;
            let dh = DataHeader {
                cccid: s.cmd.cid(),
                ttag: slot,
                offset: 0,
                length: s.xfer as u32,
            };
            let h = HeaderBuf::r2t(dh, st.digests.header);
            st.stream.push(TxItem::Hdr(h));
            if st.timers.r2t.is_none() {
                self.watch_r2t(st, self.target.r2t_timeout());
            }
            return;
        }
        self.execute(st, slot);
    }

    pub(in crate::target) fn on_h2c_data(&self, st: &mut State) {
        let dh = DataHeader::parse(st.stream.header());
        let l = st.stream.layout();
        let ok_slot = st
            .cmds
            .slots
            .get(usize::from(dh.ttag))
            .is_some_and(|s| s.in_use && s.awaiting_h2c);
        if !ok_slot {
            self.fatal(
                st,
                TermError::field(10, "H2CData for an unknown transfer tag"),
            );
            return;
        }
        let s = &st.cmds.slots[usize::from(dh.ttag)];
        if s.cmd.cid() != dh.cccid {
            self.fatal(
                st,
                TermError::field(8, "H2CData CCCID does not match the R2T"),
            );
            return;
        }
        if dh.length as usize != l.data_len {
            self.fatal(
                st,
                TermError::field(16, "DATAL differs from the PDU's data"),
            );
            return;
        }
        if dh.offset as usize != s.got || s.got + l.data_len > s.xfer {
            self.fatal(
                st,
                TermError::new(Fes::DATA_OUT_OF_RANGE, 0, "H2CData outside the R2T range"),
            );
            return;
        }
        self.begin_data(st, Some(dh.ttag), true);
    }

    /// Runs a command whose data (if any) is in its buffer.
    pub(in crate::target) fn execute(&self, st: &mut State, slot: u16) {
        let cmd = st.cmds.slots[slot as usize].cmd;
        if cmd.is_fabrics() {
            let (status, dw0) = self.fabrics(st, slot);
            self.complete(st, slot, status, dw0);
            return;
        }
        match &st.q {
            Some(q) if q.qid == 0 => self.admin(st, slot),
            Some(_) => self.io(st, slot),
            None => self.complete(st, slot, Status::COMMAND_SEQUENCE_ERROR, 0),
        }
    }
}
