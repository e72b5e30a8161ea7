//! `malloc`: a RAM-backed block device, for tests and network-free ceilings.
//!
//! The memory is cut into 64 KiB chunks, each behind its own reader-writer lock, so
//! reactors may read and write it concurrently without unsafe code and a request
//! copies with plain `memcpy` (a request takes the locks of the chunks it touches, in
//! ascending order, one at a time). Like a real disk, overlapping concurrent writes
//! leave either one's data per chunk. Data is copied into and out of the request's
//! buffer (a RAM disk has no DMA engine).

use std::rc::Rc;
use std::sync::{Arc, RwLock};

use ferrox_reactor::Reactor;

use crate::{
    defer_completion, validate_block_size, BdevError, BdevInfo, BlockDevice, ChannelImpl,
    Completion, IoOp, Ops, RegistryError,
};

/// Bytes behind one lock.
const CHUNK: usize = 64 << 10;

type Chunk = RwLock<[u8; CHUNK]>;

/// A RAM disk.
pub struct MallocBdev {
    info: BdevInfo,
    chunks: Box<[Chunk]>,
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
        let chunks =
            usize::try_from(bytes.div_ceil(CHUNK as u64)).map_err(|_| RegistryError::Invalid {
                name: name.to_string(),
                why: "too large for this machine".to_string(),
            })?;
        let mut v: Vec<Chunk> = Vec::new();
        v.try_reserve_exact(chunks)
            .map_err(|_| RegistryError::Invalid {
                name: name.to_string(),
                why: format!("cannot allocate {bytes} bytes of RAM"),
            })?;
        // Huge pages before the first touch: random 4 KiB requests over a large RAM
        // disk otherwise miss the TLB on nearly every request.
        ferrox_reactor::advise_huge_pages(v.spare_capacity_mut());
        v.resize_with(chunks, || RwLock::new([0; CHUNK]));
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
            chunks: v.into_boxed_slice(),
        }))
    }

    /// Calls `f(chunk, range in the chunk, range in the request)` for each chunk that
    /// `blocks` blocks from `lba` touch, in ascending order.
    fn each_chunk(
        &self,
        lba: u64,
        blocks: u64,
        mut f: impl FnMut(&Chunk, std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let bs = u64::from(self.info.block_size);
        let (start, end) = ((lba * bs) as usize, ((lba + blocks) * bs) as usize);
        let mut at = start;
        while at < end {
            let (c, off) = (at / CHUNK, at % CHUNK);
            let n = (CHUNK - off).min(end - at);
            f(&self.chunks[c], off..off + n, at - start..at - start + n);
            at += n;
        }
    }

    fn read_into(&self, lba: u64, blocks: u64, out: &mut [u8]) {
        self.each_chunk(lba, blocks, |c, inside, req| {
            let c = c.read().unwrap_or_else(|e| e.into_inner());
            out[req].copy_from_slice(&c[inside]);
        });
    }

    fn write_from(&self, lba: u64, blocks: u64, data: &[u8]) {
        self.each_chunk(lba, blocks, |c, inside, req| {
            let mut c = c.write().unwrap_or_else(|e| e.into_inner());
            c[inside].copy_from_slice(&data[req]);
        });
    }

    fn zero(&self, lba: u64, blocks: u64) {
        self.each_chunk(lba, blocks, |c, inside, _| {
            c.write().unwrap_or_else(|e| e.into_inner())[inside].fill(0);
        });
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
