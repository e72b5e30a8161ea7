//! `malloc`: a RAM-backed block device, for tests and network-free ceilings.
//!
//! The memory is an array of `AtomicU64` accessed with relaxed loads and stores, so
//! reactors may read and write it concurrently without locks or unsafe code; like a
//! real disk, overlapping concurrent writes leave either one's data per 8-byte word.
//! Data is copied into and out of the request's buffer (a RAM disk has no DMA engine).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrox_reactor::Reactor;

use crate::{
    defer_completion, validate_block_size, BdevError, BdevInfo, BlockDevice, ChannelImpl,
    Completion, IoOp, Ops, RegistryError,
};

/// A RAM disk.
pub struct MallocBdev {
    info: BdevInfo,
    words: Box<[AtomicU64]>,
}

impl MallocBdev {
    pub fn new(name: &str, num_blocks: u64, block_size: u32) -> Result<Arc<Self>, RegistryError> {
        validate_block_size(name, block_size)?;
        let bytes = num_blocks
            .checked_mul(u64::from(block_size))
            .filter(|&b| b > 0)
            .ok_or_else(|| RegistryError::Invalid {
                name: name.to_string(),
                why: format!("size of {num_blocks} blocks is zero or too large"),
            })?;
        let words = usize::try_from(bytes / 8).map_err(|_| RegistryError::Invalid {
            name: name.to_string(),
            why: "too large for this machine".to_string(),
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(words)
            .map_err(|_| RegistryError::Invalid {
                name: name.to_string(),
                why: format!("cannot allocate {bytes} bytes of RAM"),
            })?;
        // Huge pages before the first touch: random 4 KiB requests over a large RAM
        // disk otherwise miss the TLB on nearly every request.
        ferrox_reactor::advise_huge_pages(v.spare_capacity_mut());
        v.resize_with(words, || AtomicU64::new(0));
        Ok(Arc::new(Self {
            info: BdevInfo {
                name: name.to_string(),
                uuid: crate::random_uuid(),
                block_size,
                num_blocks,
                optimal_io_boundary: 0,
                max_transfer: 1 << 20,
                ops: Ops::FLUSH | Ops::FUA | Ops::WRITE_ZEROES | Ops::UNMAP | Ops::CHEAP_ZEROES,
                volatile_cache: false,
            },
            words: v.into_boxed_slice(),
        }))
    }

    fn word_range(&self, lba: u64, blocks: u64) -> std::ops::Range<usize> {
        let bs = u64::from(self.info.block_size);
        let start = (lba * bs / 8) as usize;
        let end = ((lba + blocks) * bs / 8) as usize;
        start..end
    }

    fn read_into(&self, lba: u64, blocks: u64, out: &mut [u8]) {
        let words = &self.words[self.word_range(lba, blocks)];
        for (w, chunk) in words.iter().zip(out.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
    }

    fn write_from(&self, lba: u64, blocks: u64, data: &[u8]) {
        let words = &self.words[self.word_range(lba, blocks)];
        for (w, chunk) in words.iter().zip(data.chunks_exact(8)) {
            let v = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
            w.store(v, Ordering::Relaxed);
        }
    }

    fn zero(&self, lba: u64, blocks: u64) {
        for w in &self.words[self.word_range(lba, blocks)] {
            w.store(0, Ordering::Relaxed);
        }
    }
}

impl BlockDevice for MallocBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, _r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(MallocChannel { dev: self }))
    }
}

struct MallocChannel {
    dev: Arc<MallocBdev>,
}

impl ChannelImpl for MallocChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        let d = &self.dev;
        let buf = match op {
            IoOp::Read {
                lba,
                blocks,
                mut buf,
            } => {
                d.read_into(lba, blocks, buf.as_mut_slice());
                Some(buf)
            }
            IoOp::Write {
                lba, blocks, buf, ..
            } => {
                d.write_from(lba, blocks, buf.as_slice());
                Some(buf)
            }
            IoOp::Flush => None,
            IoOp::WriteZeroes { lba, blocks } | IoOp::Unmap { lba, blocks } => {
                d.zero(lba, blocks);
                None
            }
        };
        // The work is done; the completion runs on the next loop turn.
        Reactor::with(|r| defer_completion(r, done, Ok(()), buf));
    }

    fn in_flight(&self) -> usize {
        // Requests finish inside `submit`; only their completion waits a turn.
        0
    }
}
