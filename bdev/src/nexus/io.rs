//! The nexus's per-reactor channel: one task per request, fanned out to the
//! children's channels on the same reactor.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ferrox_reactor::{DmaBuf, Reactor};

use super::watchdog::Watchdog;
use super::{ChildState, Nexus};
use crate::{BdevError, ChannelImpl, Completion, IoChannel, IoOp, IoResult, Submitted};

pub(super) struct NexusChannel {
    nx: Arc<Nexus>,
    /// Each child's channel on this reactor (`None`: it could not be opened, and
    /// requests to it fail, which faults it).
    chans: Vec<Option<IoChannel>>,
    next_read: Cell<usize>,
    in_flight: Cell<usize>,
    dog: Rc<Watchdog>,
}

struct Handle(Rc<NexusChannel>);

impl NexusChannel {
    pub(super) fn open(nx: Arc<Nexus>, r: &Reactor) -> Rc<dyn ChannelImpl> {
        let chans = nx
            .children
            .iter()
            .map(|c| match IoChannel::open(c.dev.clone(), r) {
                Ok(ch) => Some(ch),
                Err(e) => {
                    tracing::warn!(nexus = %nx.info.name, child = %c.dev.info().name, "cannot open a channel: {e}");
                    None
                }
            })
            .collect();
        let dog = Watchdog::start(r, nx.watchdog_tick());
        Rc::new(Handle(Rc::new(Self {
            nx,
            dog,
            chans,
            next_read: Cell::new(0),
            in_flight: Cell::new(0),
        })))
    }

    /// Submits `op` to child `i`.
    fn submit(&self, i: usize, op: IoOp) -> Pending {
        match &self.chans[i] {
            Some(ch) => Pending::Sent(ch.submit_async(op)),
            None => Pending::Failed(Some((Err(BdevError::Closed), op.into_buf()))),
        }
    }

    /// Waits for a child's request until `deadline`; a timeout is an error.
    async fn finish(&self, p: Pending, deadline: Instant) -> IoResult {
        match p {
            Pending::Failed(r) => r.expect("a failed submission is finished once"),
            Pending::Sent(s) => match self.dog.run(deadline, s).await {
                Ok(r) => r,
                Err(_) => (Err(BdevError::Io(libc::ETIMEDOUT)), None),
            },
        }
    }

    /// A healthy child for the next read: the preferred one, else round robin.
    fn reader(&self) -> Option<usize> {
        let nx = &self.nx;
        if let Some(p) = nx.preferred {
            if nx.child_state(p) == ChildState::Healthy {
                return Some(p);
            }
        }
        let n = nx.children.len();
        let start = self.next_read.get();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let ok = nx.child_state(i) == ChildState::Healthy;
            if ok {
                self.next_read.set(i + 1);
            }
            ok
        })
    }

    async fn run(&self, op: IoOp) -> IoResult {
        match op {
            IoOp::Read { lba, blocks, buf } => self.read(lba, blocks, buf).await,
            op => self.modify(op).await,
        }
    }

    /// Reads from a healthy child; a child that fails is faulted and the read tried
    /// on the next one.
    async fn read(&self, lba: u64, blocks: u64, buf: DmaBuf) -> IoResult {
        let nx = &self.nx;
        let mut buf = Some(buf);
        let mut faulted = false;
        for _ in 0..nx.children.len() {
            let Some(i) = self.reader() else { break };
            let b = match buf.take() {
                Some(b) => b,
                None => {
                    let len = blocks as usize * nx.info.block_size as usize;
                    match Reactor::with(|r| r.pool().alloc(len)) {
                        Some(b) => b,
                        None => return (Err(BdevError::Io(libc::ENOMEM)), None),
                    }
                }
            };
            let deadline = Instant::now() + nx.io_timeout;
            let p = self.submit(
                i,
                IoOp::Read {
                    lba,
                    blocks,
                    buf: b,
                },
            );
            let (res, b) = self.finish(p, deadline).await;
            buf = b;
            match res {
                Ok(()) => {
                    if faulted && nx.ensure_recorded().await.is_err() {
                        return (Err(BdevError::NoPath), buf);
                    }
                    return (Ok(()), buf);
                }
                Err(e) => faulted |= nx.fault(i, &e),
            }
        }
        if faulted {
            let _ = nx.ensure_recorded().await;
        }
        (Err(BdevError::NoPath), buf)
    }

    /// Write, write zeroes, unmap and flush: to every healthy and rebuilding child.
    async fn modify(&self, op: IoOp) -> IoResult {
        let nx = &self.nx;
        let range = match &op {
            IoOp::Write { lba, blocks, .. }
            | IoOp::WriteZeroes { lba, blocks }
            | IoOp::Unmap { lba, blocks }
            | IoOp::Read { lba, blocks, .. } => Some(nx.regions_of(*lba, *blocks)),
            IoOp::Flush => None,
        };
        // Count in the regions first, then read the states (see `lock`).
        let _guard = match range {
            Some((first, last)) => Some(nx.locks.write(first, last).await),
            None => None,
        };
        let states = nx.child_states();
        let targets: Vec<usize> = (0..states.len())
            .filter(|&i| states[i] != ChildState::Faulted)
            .collect();
        if !states.contains(&ChildState::Healthy) {
            return (Err(BdevError::NoPath), op.into_buf());
        }
        // Rule 2: a faulted child misses this write; its regions are durably dirty
        // before any child has it.
        if let (Some((first, last)), true) = (range, targets.len() < states.len()) {
            if let Err(e) = nx.dirty.mark(first, last).await {
                tracing::error!(nexus = %nx.info.name, "dirty log: {e}");
                return (Err(BdevError::NoPath), op.into_buf());
            }
        }
        let mut copies = Vec::with_capacity(targets.len());
        for _ in 1..targets.len() {
            match clone_op(&op) {
                Some(c) => copies.push(c),
                None => return (Err(BdevError::Io(libc::ENOMEM)), op.into_buf()),
            }
        }
        copies.push(op);
        let deadline = Instant::now() + nx.io_timeout;
        let sent: Vec<(usize, Pending)> = targets
            .iter()
            .zip(copies)
            .map(|(&i, op)| (i, self.submit(i, op)))
            .collect();
        let mut healthy_ok = false;
        let mut failed = false;
        let mut back = None;
        for (i, p) in sent {
            let (res, buf) = self.finish(p, deadline).await;
            back = buf;
            match res {
                Ok(()) => healthy_ok |= states[i] == ChildState::Healthy,
                Err(e) => {
                    nx.fault(i, &e);
                    failed = true;
                }
            }
        }
        if let (Some((first, last)), true) = (range, failed) {
            if let Err(e) = nx.dirty.mark(first, last).await {
                tracing::error!(nexus = %nx.info.name, "dirty log: {e}");
                return (Err(BdevError::NoPath), back);
            }
        }
        // Rule 1: every fault (this request's or an earlier one) recorded first.
        if let Err(e) = nx.ensure_recorded().await {
            tracing::error!(nexus = %nx.info.name, "{e}");
            return (Err(BdevError::NoPath), back);
        }
        if !healthy_ok {
            return (Err(BdevError::NoPath), back);
        }
        (Ok(()), back)
    }
}

enum Pending {
    Sent(Submitted),
    Failed(Option<IoResult>),
}

/// A copy of a modifying request for another child (`None`: no buffer for it).
fn clone_op(op: &IoOp) -> Option<IoOp> {
    Some(match op {
        IoOp::Write {
            lba,
            blocks,
            buf,
            fua,
        } => {
            let mut b = Reactor::with(|r| r.pool().alloc(buf.len()))?;
            b.as_mut_slice().copy_from_slice(buf.as_slice());
            IoOp::Write {
                lba: *lba,
                blocks: *blocks,
                buf: b,
                fua: *fua,
            }
        }
        IoOp::WriteZeroes { lba, blocks } => IoOp::WriteZeroes {
            lba: *lba,
            blocks: *blocks,
        },
        IoOp::Unmap { lba, blocks } => IoOp::Unmap {
            lba: *lba,
            blocks: *blocks,
        },
        IoOp::Flush => IoOp::Flush,
        IoOp::Read { .. } => return None,
    })
}

impl ChannelImpl for Handle {
    fn submit(&self, op: IoOp, done: Completion) {
        let st = self.0.clone();
        st.in_flight.set(st.in_flight.get() + 1);
        // The task first runs on a later turn: never a completion inside `submit`.
        Reactor::with(|r| {
            r.spawn_local(async move {
                let (res, buf) = st.run(op).await;
                st.in_flight.set(st.in_flight.get() - 1);
                done.complete(res, buf);
            })
        });
    }

    fn in_flight(&self) -> usize {
        self.0.in_flight.get()
    }
}
