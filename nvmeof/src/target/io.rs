//! I/O commands: Read, Write (FUA), Flush, Write Zeroes, Dataset Management
//! (deallocate → unmap) and Compare, mapped onto the namespace's bdev channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrox_bdev::{BdevError, Completion, IoChannel, IoOp, IoSink, Ops};
use ferrox_nvme_spec::{DsmRange, IoOpcode, Status};
use ferrox_reactor::{DmaBuf, Reactor};
use zerocopy::FromBytes;

use super::conn::{Conn, State};
use super::ctrl::QueueCounters;
use super::subsystem::Namespace;

/// This queue's channels, by NSID, refreshed when the subsystem's namespaces change.
#[derive(Default)]
pub struct IoCache {
    pub channels: Vec<Option<(Arc<Namespace>, IoChannel)>>,
    /// Channels of namespaces that were removed or given a new device (a grown
    /// volume), kept until their requests have completed: closing a channel fails
    /// what it still holds.
    pub retiring: Vec<IoChannel>,
    generation: Option<u64>,
}

impl IoCache {
    /// Drops retired channels that have nothing in flight.
    fn reap(&mut self) {
        self.retiring.retain(|c| c.in_flight() > 0);
    }

    /// Closes everything (the connection is gone and nothing is in flight).
    pub fn clear(&mut self) {
        self.channels.clear();
        self.retiring.clear();
    }
}

/// Tag bit: the read half of a Compare.
const COMPARE_READ: u64 = 1 << 32;

fn status_of(e: &BdevError, op: IoOpcode) -> Status {
    match e {
        BdevError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
        BdevError::BadLength { .. } => Status::DATA_SGL_LENGTH_INVALID,
        BdevError::TooLarge { .. } => Status::INVALID_FIELD,
        BdevError::Unsupported(_) => Status::INVALID_OPCODE,
        BdevError::NoSpace => Status::CAPACITY_EXCEEDED,
        BdevError::Closed => Status::SQ_DELETED,
        BdevError::Io(_) if op == IoOpcode::READ || op == IoOpcode::COMPARE => {
            Status::UNRECOVERED_READ_ERROR
        }
        BdevError::Io(_) if op == IoOpcode::WRITE => Status::WRITE_FAULT,
        // A replicated volume with no usable replica: a path error without DNR, which
        // a multipath host (the kernel's nvme_failover_req) retries on another path.
        BdevError::NoPath => Status::INTERNAL_PATH_ERROR,
        _ => Status::INTERNAL_ERROR,
    }
}

impl Conn {
    fn refresh_channels(&self, st: &mut State, r: &Reactor) {
        let sub = st.q.as_ref().expect("connected").ctrl.subsys.clone();
        let generation = sub.ns_generation.load(Ordering::Acquire);
        if st.io.generation == Some(generation) {
            return;
        }
        // A namespace whose device is unchanged keeps its channel; the others' channels
        // retire once idle.
        let mut old = std::mem::take(&mut st.io.channels);
        for ns in sub.namespaces() {
            let idx = ns.nsid as usize;
            if st.io.channels.len() <= idx {
                st.io.channels.resize_with(idx + 1, || None);
            }
            let kept = old
                .get_mut(idx)
                .and_then(|c| c.take_if(|(o, _)| Arc::ptr_eq(&o.bdev, &ns.bdev)));
            if let Some((_, ch)) = kept {
                st.io.channels[idx] = Some((ns, ch));
                continue;
            }
            match IoChannel::open(ns.bdev.clone(), r) {
                Ok(ch) => st.io.channels[idx] = Some((ns, ch)),
                Err(e) => tracing::error!(nsid = ns.nsid, error = %e, "cannot open a bdev channel"),
            }
        }
        st.io
            .retiring
            .extend(old.into_iter().flatten().map(|(_, ch)| ch));
        st.io.reap();
        st.io.generation = Some(generation);
    }

    pub(super) fn io(&self, st: &mut State, slot: u16) {
        Reactor::with(|r| self.refresh_channels(st, r));
        if !st.io.retiring.is_empty() {
            st.io.reap();
        }
        let cmd = st.cmds.slots[slot as usize].cmd;
        let op = cmd.io_opcode();
        let nsid = cmd.nsid() as usize;
        let Some((ns, _)) = st.io.channels.get(nsid).and_then(|c| c.as_ref()) else {
            self.complete(st, slot, Status::INVALID_NAMESPACE.with_dnr(), 0);
            return;
        };
        let info = ns.bdev.info();
        let bs = u64::from(info.block_size);
        let lba = cmd.slba();
        let blocks = u64::from(cmd.block_count());
        let vwc = (st.q.as_ref().expect("connected").ctrl.write_cache).load(Ordering::Relaxed);
        let s = &mut st.cmds.slots[slot as usize];
        let data_ok = s.xfer as u64 == blocks * bs;
        let ops: Plan = match op {
            IoOpcode::READ | IoOpcode::WRITE | IoOpcode::COMPARE if !data_ok => {
                self.complete(st, slot, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
                return;
            }
            IoOpcode::READ => {
                let buf = s.buf.take().expect("a read has its buffer");
                QueueCounters::add(&st.counters.read_cmds, 1);
                QueueCounters::add(&st.counters.read_bytes, blocks * bs);
                Plan::One(Some(IoOp::Read { lba, blocks, buf }))
            }
            IoOpcode::WRITE => {
                let buf = s.buf.take().expect("a write has its buffer");
                QueueCounters::add(&st.counters.write_cmds, 1);
                QueueCounters::add(&st.counters.write_bytes, blocks * bs);
                // With the volatile write cache disabled, every write is durable.
                Plan::One(Some(IoOp::Write {
                    lba,
                    blocks,
                    buf,
                    fua: cmd.fua() || !vwc,
                }))
            }
            IoOpcode::COMPARE => {
                let Some(buf) = Reactor::with(|r| r.pool().alloc(s.xfer)) else {
                    self.complete(st, slot, Status::COMMAND_INTERRUPTED, 0);
                    return;
                };
                Plan::One(Some(IoOp::Read { lba, blocks, buf }))
            }
            IoOpcode::FLUSH => Plan::One(Some(IoOp::Flush)),
            IoOpcode::WRITE_ZEROES => Plan::One(Some(IoOp::WriteZeroes { lba, blocks })),
            IoOpcode::DATASET_MANAGEMENT => {
                let nr = cmd.dsm_range_count();
                let deallocate = cmd.cdw11() & (1 << 2) != 0;
                let need = nr * 16;
                let Some(buf) = s.buf.as_ref().filter(|b| b.len() >= need) else {
                    self.complete(st, slot, Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
                    return;
                };
                // Deallocation is advisory (DLFEAT 0: what a deallocated block
                // reads is not promised), so a device that cannot unmap ignores it.
                if !deallocate || !info.ops.contains(Ops::UNMAP) {
                    self.complete(st, slot, Status::SUCCESS, 0);
                    return;
                }
                let mut v = Vec::with_capacity(nr);
                for chunk in buf.as_slice()[..need].chunks_exact(16) {
                    let r = DsmRange::read_from_bytes(chunk).expect("16 bytes");
                    if r.nlb == 0 {
                        continue;
                    }
                    let end = r.slba.checked_add(u64::from(r.nlb));
                    if end.is_none_or(|e| e > info.num_blocks) {
                        self.complete(st, slot, Status::LBA_OUT_OF_RANGE.with_dnr(), 0);
                        return;
                    }
                    v.push(IoOp::Unmap {
                        lba: r.slba,
                        blocks: u64::from(r.nlb),
                    });
                }
                if v.is_empty() {
                    self.complete(st, slot, Status::SUCCESS, 0);
                    return;
                }
                Plan::Many(v.into_iter())
            }
            _ => {
                self.complete(st, slot, Status::INVALID_OPCODE.with_dnr(), 0);
                return;
            }
        };
        let tag = u64::from(slot)
            | if op == IoOpcode::COMPARE {
                COMPARE_READ
            } else {
                0
            };
        let sink: std::rc::Rc<dyn IoSink> = self.sink();
        st.cmds.slots[slot as usize].ops_left = ops.len() as u32;
        let chan = &st.io.channels[nsid].as_ref().expect("looked up above").1;
        let mut failed = None;
        let mut submitted = 0;
        for io in ops {
            let done = Completion {
                sink: sink.clone(),
                tag,
            };
            if let Err((e, io)) = chan.submit(io, done) {
                failed = Some(status_of(&e, op));
                // A rejected read or write hands its buffer back; nothing to keep.
                drop(io);
                break;
            }
            submitted += 1;
        }
        let s = &mut st.cmds.slots[slot as usize];
        s.ops_left = submitted;
        if let Some(status) = failed {
            s.status = status.with_dnr();
            if submitted == 0 {
                self.complete(st, slot, status.with_dnr(), 0);
            }
        }
    }
}

/// The backend requests of one command: one, or several for Dataset Management
/// (only those allocate).
enum Plan {
    One(Option<IoOp>),
    Many(std::vec::IntoIter<IoOp>),
}

impl Plan {
    fn len(&self) -> usize {
        match self {
            Self::One(o) => usize::from(o.is_some()),
            Self::Many(v) => v.len(),
        }
    }
}

impl Iterator for Plan {
    type Item = IoOp;
    fn next(&mut self) -> Option<IoOp> {
        match self {
            Self::One(o) => o.take(),
            Self::Many(v) => v.next(),
        }
    }
}

impl IoSink for Conn {
    fn io_done(&self, tag: u64, result: Result<(), BdevError>, buf: Option<DmaBuf>) {
        let mut st = self.st.borrow_mut();
        let slot = (tag & 0xffff) as u16;
        let s = &mut st.cmds.slots[slot as usize];
        if !s.in_use || s.ops_left == 0 {
            tracing::error!(conn = self.id, slot, "completion for an idle command slot");
            return;
        }
        let op = s.cmd.io_opcode();
        s.ops_left -= 1;
        match result {
            Err(e) => {
                if s.status.is_success() {
                    s.status = status_of(&e, op);
                }
            }
            Ok(()) => {
                if tag & COMPARE_READ != 0 {
                    let same = match (&s.buf, &buf) {
                        (Some(host), Some(media)) => host.as_slice() == media.as_slice(),
                        _ => false,
                    };
                    if !same && s.status.is_success() {
                        s.status = Status::COMPARE_FAILURE;
                    }
                } else if op == IoOpcode::READ {
                    s.buf = buf;
                }
            }
        }
        if s.ops_left > 0 {
            return;
        }
        let status = s.status;
        if Conn::is_closed(&st) {
            st.cmds.release(slot);
            return;
        }
        self.complete(&mut st, slot, status, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrox_nvme_spec::StatusCodeType;

    #[test]
    fn no_path_is_a_retryable_path_error() {
        for op in [IoOpcode::READ, IoOpcode::WRITE, IoOpcode::FLUSH] {
            let s = status_of(&BdevError::NoPath, op);
            assert_eq!(s.sct(), StatusCodeType::PATH_RELATED, "{op:?}: {s:?}");
            assert!(!s.dnr(), "{op:?}: {s:?}");
        }
    }
}
