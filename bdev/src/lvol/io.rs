//! Asynchronous base-device I/O for the metadata reactor.
//!
//! Metadata jobs are ordinary `async` code (read the label, write an image, flush)
//! run as tasks of the metadata reactor ([`Reactor::spawn_local`]); each base request
//! is a [`Submitted`] future woken by its completion, so a job waiting for a write or
//! an `fdatasync` leaves the reactor idle (free to park).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use ferrox_reactor::task::yield_now;
use ferrox_reactor::{DmaBuf, Reactor};

use crate::{BdevError, IoChannel, IoOp, Ops, Submitted};

pub(crate) type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
/// A base-device operation in progress.
pub(crate) type IoFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BdevError>> + 'a>>;

/// Runs `futs` concurrently (each polled when the task is woken) until all have
/// finished; the first error wins.
pub(crate) async fn try_join_all(futs: Vec<IoFuture<'_>>) -> Result<(), BdevError> {
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    let mut first_err = Ok(());
    std::future::poll_fn(|cx| {
        let mut left = false;
        for slot in &mut futs {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        first_err = std::mem::replace(&mut first_err, Ok(())).and(r);
                        *slot = None;
                    }
                    Poll::Pending => left = true,
                }
            }
        }
        if left {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    first_err
}

/// Turns a buffer shortage into a wait of a bounded number of loop turns.
const BUFFER_PATIENCE: u32 = 1_000_000;

/// The metadata reactor's view of the base device, in bytes.
pub(crate) struct BaseIo {
    pub chan: IoChannel,
    pub bs: u64,
    /// Largest piece per request: the pool's largest buffer and the device limit.
    pub chunk: u64,
}

impl BaseIo {
    pub fn new(chan: IoChannel, r: &Reactor) -> Self {
        let info = chan.info();
        let bs = u64::from(info.block_size);
        let chunk = (r.pool().max_size() as u64).min(u64::from(info.max_transfer)) / bs * bs;
        Self {
            chan,
            bs,
            chunk: chunk.max(bs),
        }
    }

    pub fn submit(&self, op: IoOp) -> Submitted {
        self.chan.submit_async(op)
    }

    async fn buffer(&self, len: usize) -> Result<DmaBuf, BdevError> {
        for _ in 0..BUFFER_PATIENCE {
            if let Some(b) = Reactor::with(|r| r.pool().alloc(len)) {
                return Ok(b);
            }
            yield_now().await;
        }
        Err(BdevError::Io(libc::ENOMEM))
    }

    /// Reads `len` bytes at byte `off` (both block multiples), a piece at a time: only
    /// start-up reads the label and metadata this way.
    pub async fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, BdevError> {
        let mut out = vec![0u8; len as usize];
        let mut at = 0;
        while at < len {
            let n = self.chunk.min(len - at);
            let buf = self.read_piece(off + at, n).await?;
            out[at as usize..(at + n) as usize].copy_from_slice(buf.as_slice());
            at += n;
        }
        Ok(out)
    }

    /// Writes `data` (a block multiple) at byte `off`, up to 16 requests at a time.
    pub async fn write(&self, off: u64, data: &[u8]) -> Result<(), BdevError> {
        let mut pending: Vec<Submitted> = Vec::new();
        let mut first_err = Ok(());
        for (i, piece) in data.chunks(self.chunk as usize).enumerate() {
            let mut buf = match self.buffer(piece.len()).await {
                Ok(b) => b,
                Err(e) => {
                    // Nothing may still be in flight when this returns: the next
                    // commit writes the same blocks, and a late piece would land on it.
                    for p in pending {
                        let _ = p.await;
                    }
                    return Err(e);
                }
            };
            buf.as_mut_slice().copy_from_slice(piece);
            pending.push(self.submit(IoOp::Write {
                lba: (off + i as u64 * self.chunk) / self.bs,
                blocks: piece.len() as u64 / self.bs,
                buf,
                fua: false,
            }));
            if pending.len() >= 16 {
                first_err = first_err.and(pending.remove(0).await.0);
            }
        }
        for p in pending {
            first_err = first_err.and(p.await.0);
        }
        first_err
    }

    /// Write Zeroes over `len` bytes at `off`, in requests of at most `piece` bytes,
    /// one after the other.
    async fn write_zeroes(&self, off: u64, len: u64, piece: u64) -> Result<(), BdevError> {
        let mut at = 0;
        while at < len {
            let n = piece.min(len - at);
            self.submit(IoOp::WriteZeroes {
                lba: (off + at) / self.bs,
                blocks: n / self.bs,
            })
            .await
            .0?;
            at += n;
        }
        Ok(())
    }

    /// Makes a large area read as zeroes with Write Zeroes requests of up to 1 GiB
    /// (for devices where that writes no data).
    pub async fn zero_all(&self, off: u64, len: u64) -> Result<(), BdevError> {
        self.write_zeroes(off, len, 1 << 30).await
    }

    /// Makes `len` bytes at `off` read as zeroes.
    pub async fn zero(&self, off: u64, len: u64) -> Result<(), BdevError> {
        if self.chan.info().ops.contains(Ops::WRITE_ZEROES) {
            // Write zeroes carries no buffer; keep requests to a sane size anyway.
            return self.write_zeroes(off, len, 64 * self.chunk).await;
        }
        let zeroes = vec![0u8; self.chunk.min(len) as usize];
        let mut at = 0;
        while at < len {
            let n = self.chunk.min(len - at);
            self.write(off + at, &zeroes[..n as usize]).await?;
            at += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst`: each piece is read into a buffer that is
    /// then written as it is (no copy in memory), up to 16 pieces at a time.
    pub async fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), BdevError> {
        let pieces: Vec<(u64, u64)> = (0..len.div_ceil(self.chunk))
            .map(|i| (i * self.chunk, self.chunk.min(len - i * self.chunk)))
            .collect();
        for group in pieces.chunks(16) {
            let jobs = group
                .iter()
                .map(|&(at, n)| Box::pin(self.copy_piece(src + at, dst + at, n)) as IoFuture<'_>)
                .collect();
            try_join_all(jobs).await?;
        }
        Ok(())
    }

    /// Reads `n` bytes at byte `off` (both block multiples) into a pool buffer.
    async fn read_piece(&self, off: u64, n: u64) -> Result<DmaBuf, BdevError> {
        let buf = self.buffer(n as usize).await?;
        let (res, buf) = self
            .submit(IoOp::Read {
                lba: off / self.bs,
                blocks: n / self.bs,
                buf,
            })
            .await;
        res?;
        buf.ok_or(BdevError::Io(libc::EIO))
    }

    async fn copy_piece(&self, src: u64, dst: u64, n: u64) -> Result<(), BdevError> {
        let buf = self.read_piece(src, n).await?;
        self.submit(IoOp::Write {
            lba: dst / self.bs,
            blocks: n / self.bs,
            buf,
            fua: false,
        })
        .await
        .0
    }

    pub async fn flush(&self) -> Result<(), BdevError> {
        if !self.chan.info().ops.contains(Ops::FLUSH) {
            return Ok(());
        }
        self.submit(IoOp::Flush).await.0
    }
}
