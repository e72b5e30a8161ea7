//! `uring`: files and block devices through the reactor's io_uring.
//!
//! The file is opened with `O_DIRECT` when the file system accepts it (probed with one
//! aligned read at open; otherwise a warning and buffered I/O). Each reactor's channel
//! keeps at most `queue_depth` requests in the ring and queues the rest. FUA writes use
//! `RWF_DSYNC`, flush is `fdatasync`, write-zeroes is `fallocate(ZERO_RANGE)` (or a
//! punched hole where zero-range is not supported), unmap punches a hole.
// UNSAFETY: SQEs carry raw pointers into request buffers; each buffer is moved into
// the in-flight slot of its request and stays there until the kernel completes it.
#![expect(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferrox_reactor::{CqHandler, DmaBuf, HandlerId, Reactor};
use io_uring::{opcode, squeue, types};

use crate::{
    defer_completion, validate_block_size, BdevError, BdevInfo, BlockDevice, ChannelImpl,
    Completion, IoOp, Ops, RegistryError,
};

/// A file or block device served through io_uring.
pub struct UringBdev {
    info: BdevInfo,
    file: File,
    path: PathBuf,
    direct: bool,
    queue_depth: usize,
    /// Write Zeroes punches holes: on a regular file from the start (a file stays
    /// sparse, and ZERO_RANGE would allocate the range), on a block device once
    /// `fallocate(ZERO_RANGE)` was refused.
    no_zero_range: AtomicBool,
}

impl UringBdev {
    /// Opens `path`; when it does not exist and `create_size` is given, creates it as
    /// a sparse file of that many bytes.
    pub fn open(
        name: &str,
        path: &Path,
        create_size: Option<u64>,
        block_size: u32,
        queue_depth: usize,
    ) -> Result<Arc<Self>, RegistryError> {
        validate_block_size(name, block_size)?;
        let err = |source: std::io::Error| RegistryError::Open {
            name: name.to_string(),
            path: path.display().to_string(),
            source,
        };
        let invalid = |why: String| RegistryError::Invalid {
            name: name.to_string(),
            why,
        };
        if !path.exists() {
            let size = create_size.ok_or_else(|| {
                err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file, and no size was given to create it",
                ))
            })?;
            if size == 0 || size % u64::from(block_size) != 0 {
                return Err(invalid(format!(
                    "size {size} must be a non-zero multiple of the block size {block_size}"
                )));
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(err)?;
            f.set_len(size).map_err(err)?;
            tracing::info!(bdev = name, path = %path.display(), size, "created sparse backing file");
        }
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(true);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (mut file, mut direct) = match open(true) {
            Ok(f) => (f, true),
            Err(_) => (open(false).map_err(err)?, false),
        };
        let meta = file.metadata().map_err(err)?;
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return Err(invalid(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        }
        let len = file.seek(SeekFrom::End(0)).map_err(err)?;
        let num_blocks = len / u64::from(block_size);
        if num_blocks == 0 {
            return Err(invalid(format!(
                "{} holds {len} bytes, less than one {block_size}-byte block",
                path.display()
            )));
        }
        if len % u64::from(block_size) != 0 {
            tracing::warn!(
                bdev = name,
                len,
                block_size,
                "file size is not a multiple of the block size; the tail is unused"
            );
        }
        if direct && !direct_read_works(&file, block_size) {
            direct = false;
            file = open(false).map_err(err)?;
        }
        if !direct {
            tracing::warn!(bdev = name, path = %path.display(), "O_DIRECT is not available here; using buffered I/O (flush still makes writes durable)");
        }
        Ok(Arc::new(Self {
            info: BdevInfo {
                name: name.to_string(),
                uuid: crate::random_uuid(),
                block_size,
                num_blocks,
                optimal_io_boundary: 0,
                max_transfer: 1 << 20,
                // A block device may zero by writing zeroes; a file punches holes.
                ops: Ops::FLUSH
                    | Ops::FUA
                    | Ops::WRITE_ZEROES
                    | Ops::UNMAP
                    | if meta.is_file() {
                        Ops::CHEAP_ZEROES
                    } else {
                        Ops::empty()
                    },
                volatile_cache: true,
            },
            file,
            path: path.to_path_buf(),
            direct,
            queue_depth: queue_depth.max(1),
            no_zero_range: AtomicBool::new(meta.is_file()),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

/// One aligned `O_DIRECT` read of a block at offset 0: some file systems (tmpfs,
/// overlays of it) accept the flag at open and fail every I/O later.
fn direct_read_works(file: &File, block_size: u32) -> bool {
    use std::os::unix::fs::FileExt;
    let bs = block_size as usize;
    let mut v = vec![0u8; bs + 4096];
    let off = v.as_ptr().align_offset(4096);
    file.read_at(&mut v[off..off + bs], 0).is_ok()
}

impl BlockDevice for UringBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(self: Arc<Self>, r: &Reactor) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let qd = self.queue_depth;
        let ch = Rc::new(UringChannel {
            dev: self,
            hid: Cell::new(None),
            slots: RefCell::new((0..qd).map(|_| None).collect()),
            free: RefCell::new((0..qd as u32).rev().collect()),
            queued: RefCell::new(VecDeque::new()),
            closed: Cell::new(false),
            fixed: r.fixed_buffers(),
        });
        let hid = r.ring().register_handler(ch.clone());
        ch.hid.set(Some(hid));
        Ok(ch)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data { bytes: i32 },
    Flush,
    ZeroRange { offset: u64, len: u64 },
    Punch { advisory: bool },
}

struct InFlight {
    done: Completion,
    buf: Option<DmaBuf>,
    kind: Kind,
}

struct UringChannel {
    dev: Arc<UringBdev>,
    hid: Cell<Option<HandlerId>>,
    slots: RefCell<Vec<Option<InFlight>>>,
    free: RefCell<Vec<u32>>,
    queued: RefCell<VecDeque<(IoOp, Completion)>>,
    closed: Cell<bool>,
    fixed: bool,
}

impl UringChannel {
    fn fd(&self) -> types::Fd {
        types::Fd(self.dev.file.as_raw_fd())
    }

    fn start(&self, op: IoOp, done: Completion) {
        let Some(slot) = self.free.borrow_mut().pop() else {
            self.queued.borrow_mut().push_back((op, done));
            return;
        };
        let bs = u64::from(self.dev.info.block_size);
        let fd = self.fd();
        let (kind, mut buf, sqe): (Kind, Option<DmaBuf>, Option<squeue::Entry>) = match op {
            IoOp::Read { lba, mut buf, .. } => {
                let len = buf.len() as u32;
                let ptr = buf.as_mut_ptr();
                let sqe = if self.fixed {
                    opcode::ReadFixed::new(fd, ptr, len, buf.fixed_index())
                        .offset(lba * bs)
                        .build()
                } else {
                    opcode::Read::new(fd, ptr, len).offset(lba * bs).build()
                };
                (Kind::Data { bytes: len as i32 }, Some(buf), Some(sqe))
            }
            IoOp::Write { lba, buf, fua, .. } => {
                let len = buf.len() as u32;
                let ptr = buf.as_ptr();
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                let sqe = if self.fixed {
                    opcode::WriteFixed::new(fd, ptr, len, buf.fixed_index())
                        .offset(lba * bs)
                        .rw_flags(flags)
                        .build()
                } else {
                    opcode::Write::new(fd, ptr, len)
                        .offset(lba * bs)
                        .rw_flags(flags)
                        .build()
                };
                (Kind::Data { bytes: len as i32 }, Some(buf), Some(sqe))
            }
            IoOp::Flush => (
                Kind::Flush,
                None,
                Some(
                    opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                ),
            ),
            IoOp::WriteZeroes { lba, blocks } => {
                let (offset, len) = (lba * bs, blocks * bs);
                if self.dev.no_zero_range.load(Ordering::Relaxed) {
                    (
                        Kind::Punch { advisory: false },
                        None,
                        Some(punch(fd, offset, len)),
                    )
                } else {
                    let sqe = opcode::Fallocate::new(fd, len)
                        .offset(offset)
                        .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                        .build();
                    (Kind::ZeroRange { offset, len }, None, Some(sqe))
                }
            }
            IoOp::Unmap { lba, blocks } => (
                Kind::Punch { advisory: true },
                None,
                Some(punch(fd, lba * bs, blocks * bs)),
            ),
        };
        let sqe = sqe.expect("every op builds an entry");
        self.push(slot, sqe, kind, &mut buf, done);
    }

    fn push(
        &self,
        slot: u32,
        sqe: squeue::Entry,
        kind: Kind,
        buf: &mut Option<DmaBuf>,
        done: Completion,
    ) {
        let hid = self.hid.get().expect("channel registered");
        let sqe = sqe.user_data(hid.user_data(slot));
        // SAFETY: the entry points into `buf` (moved into the slot right below and kept
        // there until this slot's completion) and at the device's file, which the
        // channel keeps open through its `Arc<UringBdev>`.
        let pushed = Reactor::with(|r| unsafe { r.ring().push(&sqe) });
        match pushed {
            Ok(()) => {
                self.slots.borrow_mut()[slot as usize] = Some(InFlight {
                    done,
                    buf: buf.take(),
                    kind,
                });
            }
            Err(e) => {
                self.free.borrow_mut().push(slot);
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                Reactor::with(|r| defer_completion(r, done, Err(BdevError::Io(errno)), buf.take()));
            }
        }
    }

    fn in_flight_count(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }

    fn maybe_unregister(&self) {
        if self.closed.get() && self.in_flight_count() == 0 {
            if let Some(hid) = self.hid.take() {
                Reactor::with(|r| r.ring().unregister_handler(hid));
            }
        }
    }
}

fn punch(fd: types::Fd, offset: u64, len: u64) -> squeue::Entry {
    opcode::Fallocate::new(fd, len)
        .offset(offset)
        .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
        .build()
}

impl CqHandler for UringChannel {
    fn complete(&self, tag: u32, result: i32, _flags: u32) {
        let Some(io) = self.slots.borrow_mut()[tag as usize].take() else {
            tracing::error!(tag, "uring bdev: completion for an empty slot");
            return;
        };
        let res = match io.kind {
            Kind::Data { bytes } if result == bytes => Ok(()),
            Kind::Data { .. } if result >= 0 => Err(BdevError::Io(libc::EIO)),
            Kind::ZeroRange { offset, len } if result == -libc::EOPNOTSUPP => {
                // Not supported here: remember, and punch a hole instead (reads back
                // as zeroes). The slot is reused for the retry.
                self.dev.no_zero_range.store(true, Ordering::Relaxed);
                let mut none = None;
                self.push(
                    tag,
                    punch(self.fd(), offset, len),
                    Kind::Punch { advisory: false },
                    &mut none,
                    io.done,
                );
                return;
            }
            Kind::Punch { advisory: true } if result == -libc::EOPNOTSUPP => Ok(()),
            _ if result < 0 => Err(BdevError::from_errno(-result)),
            _ => Ok(()),
        };
        self.free.borrow_mut().push(tag);
        io.done.complete(res, io.buf);
        if self.closed.get() {
            self.maybe_unregister();
            return;
        }
        let next = self.queued.borrow_mut().pop_front();
        if let Some((op, done)) = next {
            self.start(op, done);
        }
    }
}

impl ChannelImpl for UringChannel {
    fn submit(&self, op: IoOp, done: Completion) {
        if self.closed.get() {
            let buf = op.into_buf();
            Reactor::with(|r| defer_completion(r, done, Err(BdevError::Closed), buf));
            return;
        }
        self.start(op, done);
    }

    fn in_flight(&self) -> usize {
        self.in_flight_count() + self.queued.borrow().len()
    }

    fn close(&self) {
        self.closed.set(true);
        let queued: Vec<_> = self.queued.borrow_mut().drain(..).collect();
        for (op, done) in queued {
            let buf = op.into_buf();
            Reactor::with(|r| defer_completion(r, done, Err(BdevError::Closed), buf));
        }
        self.maybe_unregister();
    }
}
