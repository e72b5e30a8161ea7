//! A connection's commands: the pre-sized slot table (a slot's index is the R2T
//! transfer tag), its free list, and the commands waiting for a pool buffer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrox_nvme_spec::{Command, Status};
use ferrox_reactor::DmaBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    None,
    H2C,
    C2H,
}

pub(in crate::target) struct Slot {
    pub cmd: Command,
    pub buf: Option<DmaBuf>,
    pub dir: Dir,
    pub xfer: usize,
    pub got: usize,
    pub in_use: bool,
    pub ops_left: u32,
    pub status: Status,
    /// The host is sending data for this slot after an R2T.
    pub awaiting_h2c: bool,
    pub data_digest_error: bool,
    /// When the capsule arrived (for the latency histogram).
    pub started: std::time::Instant,
    /// When its R2T went out (meaningful while `awaiting_h2c`).
    pub r2t_at: std::time::Instant,
}

impl Slot {
    pub fn empty() -> Self {
        let now = std::time::Instant::now();
        Self {
            cmd: Command::new(0, 0),
            buf: None,
            dir: Dir::None,
            xfer: 0,
            got: 0,
            in_use: false,
            ops_left: 0,
            status: Status::SUCCESS,
            awaiting_h2c: false,
            data_digest_error: false,
            // A fresh slot is taken when its capsule arrives: now is its start.
            started: now,
            r2t_at: now,
        }
    }
}

/// The slot table and what waits on it.
pub(in crate::target) struct Commands {
    pub slots: Vec<Slot>,
    free: Vec<u16>,
    /// Commands waiting for a buffer, in arrival order (see `Conn::retry_waiting`).
    pub wait_buf: VecDeque<u16>,
    /// Slots with an R2T out (holding a buffer until the host's data arrives).
    pub r2t_out: usize,
    /// What the buffers of those R2Ts are counted against.
    pub quota: R2tQuota,
}

/// Bytes of pool buffers that wait for a host's data (R2Ts out), counted per
/// controller and for the whole target, each under its cap, so that no host holds
/// the pool: one controller can take at most its share, and all of them together
/// leave a reserve for reads, in-capsule writes and Connects. Two atomic adds per
/// R2T and two subtractions when its data is in.
pub(in crate::target) struct R2tQuota {
    /// The whole target's count and cap.
    pub total: (Arc<AtomicUsize>, usize),
    /// The controller's count and cap, once the queue is connected.
    pub ctrl: Option<(Arc<AtomicUsize>, usize)>,
}

impl R2tQuota {
    fn take(c: &AtomicUsize, cap: usize, len: usize) -> bool {
        let before = c.fetch_add(len, Ordering::Relaxed);
        if before + len > cap {
            c.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Counts `len` more bytes, or nothing if a cap would be passed.
    pub fn charge(&self, len: usize) -> bool {
        if !Self::take(&self.total.0, self.total.1, len) {
            return false;
        }
        if let Some((c, cap)) = &self.ctrl {
            if !Self::take(c, *cap, len) {
                self.total.0.fetch_sub(len, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// Gives back what [`Self::charge`] counted.
    pub fn uncharge(&self, len: usize) {
        self.total.0.fetch_sub(len, Ordering::Relaxed);
        if let Some((c, _)) = &self.ctrl {
            c.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

impl Commands {
    /// `depth` slots, all free (allocated now, never on the I/O path).
    pub fn new(depth: usize, quota: R2tQuota) -> Self {
        Self {
            slots: (0..depth).map(|_| Slot::empty()).collect(),
            free: (0..depth as u16).rev().collect(),
            wait_buf: VecDeque::with_capacity(depth),
            r2t_out: 0,
            quota,
        }
    }

    /// The host's data for `slot`'s R2T is all in: its buffer stops counting.
    pub fn r2t_done(&mut self, slot: u16) {
        let s = &mut self.slots[slot as usize];
        if s.awaiting_h2c {
            s.awaiting_h2c = false;
            self.r2t_out -= 1;
            self.quota.uncharge(s.xfer);
        }
    }

    /// A free slot, if any.
    pub fn take(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Gives `slot` back (its buffer to the pool); a no-op for a free slot.
    pub fn release(&mut self, slot: u16) {
        let s = &mut self.slots[slot as usize];
        if !s.in_use {
            return;
        }
        s.in_use = false;
        s.buf = None;
        if s.awaiting_h2c {
            self.r2t_out -= 1;
            self.quota.uncharge(s.xfer);
        }
        s.awaiting_h2c = false;
        s.ops_left = 0;
        self.free.push(slot);
    }

    /// Drops every command that waits for nothing but the host (no backend I/O in
    /// flight), and the waiting list.
    pub fn drop_idle(&mut self) {
        self.wait_buf.clear();
        for i in 0..self.slots.len() {
            if self.slots[i].in_use && self.slots[i].ops_left == 0 {
                self.release(i as u16);
            }
        }
    }

    /// When the oldest R2T still waiting for the host's data went out.
    pub fn oldest_r2t(&self) -> Option<std::time::Instant> {
        if self.r2t_out == 0 {
            return None;
        }
        self.slots
            .iter()
            .filter(|s| s.in_use && s.awaiting_h2c)
            .map(|s| s.r2t_at)
            .min()
    }

    /// Whether some command still has backend I/O in flight.
    pub fn in_flight_ops(&self) -> bool {
        self.slots.iter().any(|s| s.in_use && s.ops_left > 0)
    }
}

impl Drop for Commands {
    /// R2Ts still out give their bytes back to the quotas (a connection dropped
    /// without closing; closing releases them already).
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.release(i as u16);
        }
    }
}
