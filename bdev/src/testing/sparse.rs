//! A sparse RAM block device: it holds only the pages written, so a test can format a
//! pool on gigabytes and pay for the metadata it writes, not the device's size. It
//! counts what it is asked to do, for tests and measurements of write costs.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrox_reactor::Reactor;

use crate::{
    defer_completion, BdevError, BdevInfo, BlockDevice, ChannelImpl, Completion, IoOp, Ops,
};

/// Bytes per stored page.
const PAGE: usize = 4096;

/// A RAM device of any size that stores the 4 KiB pages written and reads the rest
/// as zeroes; Write Zeroes and Unmap drop whole pages (and zero partial ones).
pub struct SparseBdev {
    info: BdevInfo,
    pages: Mutex<HashMap<u64, Box<[u8]>>>,
    bytes_written: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
}

impl SparseBdev {
    /// A device of `bytes` (a multiple of 512) in 512-byte blocks.
    pub fn new(name: &str, bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            info: BdevInfo {
                name: name.to_string(),
                uuid: crate::random_uuid(),
                block_size: 512,
                num_blocks: bytes / 512,
                optimal_io_boundary: 0,
                max_transfer: 1 << 20,
                ops: Ops::FLUSH | Ops::WRITE_ZEROES | Ops::UNMAP | Ops::CHEAP_ZEROES,
                volatile_cache: false,
            },
            pages: Mutex::new(HashMap::new()),
            bytes_written: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        })
    }

    /// Bytes written by write requests so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Write requests so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Flush requests so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Bytes of pages held.
    pub fn resident_bytes(&self) -> u64 {
        self.lock().len() as u64 * PAGE as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Box<[u8]>>> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f(page, range in the page, range in the request)` for each page that
    /// `len` bytes at byte `off` touch.
    fn each_page(
        off: u64,
        len: u64,
        mut f: impl FnMut(u64, std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let mut at = off;
        while at < off + len {
            let (p, o) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let n = (PAGE - o).min((off + len - at) as usize);
            let r = (at - off) as usize;
            f(p, o..o + n, r..r + n);
            at += n as u64;
        }
    }
}

impl BlockDevice for SparseBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, _r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(SparseChannel { dev: self }))
    }
}

struct SparseChannel {
    dev: Arc<SparseBdev>,
}

impl ChannelImpl for SparseChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        let d = &self.dev;
        let bs = u64::from(d.info.block_size);
        let buf = match op {
            IoOp::Read {
                lba,
                blocks,
                mut buf,
            } => {
                let pages = d.lock();
                let out = buf.as_mut_slice();
                SparseBdev::each_page(lba * bs, blocks * bs, |p, inside, req| {
                    match pages.get(&p) {
                        Some(pg) => out[req].copy_from_slice(&pg[inside]),
                        None => out[req].fill(0),
                    }
                });
                Some(buf)
            }
            IoOp::Write {
                lba, blocks, buf, ..
            } => {
                let mut pages = d.lock();
                let data = buf.as_slice();
                SparseBdev::each_page(lba * bs, blocks * bs, |p, inside, req| {
                    pages
                        .entry(p)
                        .or_insert_with(|| vec![0u8; PAGE].into_boxed_slice())[inside]
                        .copy_from_slice(&data[req]);
                });
                d.writes.fetch_add(1, Ordering::Relaxed);
                d.bytes_written.fetch_add(blocks * bs, Ordering::Relaxed);
                Some(buf)
            }
            IoOp::Flush => {
                d.flushes.fetch_add(1, Ordering::Relaxed);
                None
            }
            IoOp::WriteZeroes { lba, blocks } | IoOp::Unmap { lba, blocks } => {
                let mut pages = d.lock();
                SparseBdev::each_page(lba * bs, blocks * bs, |p, inside, _| {
                    if inside.len() == PAGE {
                        pages.remove(&p);
                    } else if let Some(pg) = pages.get_mut(&p) {
                        pg[inside].fill(0);
                    }
                });
                None
            }
        };
        // The work is done; the completion runs on the next loop turn.
        Reactor::with(|r| defer_completion(r, done, Ok(()), buf));
    }

    fn in_flight(&self) -> usize {
        0
    }
}
