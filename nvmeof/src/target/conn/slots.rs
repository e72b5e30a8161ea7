//! A connection's commands: the pre-sized slot table (a slot's index is the R2T
//! transfer tag), its free list, and the commands waiting for a pool buffer.

use std::collections::VecDeque;

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
}

impl Commands {
    /// `depth` slots, all free (allocated now, never on the I/O path).
    pub fn new(depth: usize) -> Self {
        Self {
            slots: (0..depth).map(|_| Slot::empty()).collect(),
            free: (0..depth as u16).rev().collect(),
            wait_buf: VecDeque::with_capacity(depth),
            r2t_out: 0,
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
