//! The reactor's io_uring: feature probing, submission and completion dispatch.
//!
//! Every reactor owns one ring. Users (bdev channels, the reactor itself) register a
//! [`CqHandler`] and get a [`HandlerId`]; an SQE's `user_data` is the handler id in the
//! high 32 bits and a handler-chosen tag in the low 32 bits, so a completion is routed
//! without allocation or lookup beyond one slab index.
//!
//! SQEs are written locally and published once per loop turn by [`Ring::flush`]; a
//! parked reactor publishes and waits in one `io_uring_enter`.
// UNSAFETY: pushing an SQE hands raw pointers to the kernel; the callers of the unsafe
// `push` promise the memory stays valid until the completion, and registering buffers
// hands the kernel the pool's mappings, which live for the whole process.
#![expect(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

/// Receives the completions of SQEs pushed with its handler id.
pub trait CqHandler {
    /// `tag` is the low 32 bits of `user_data`; `result` is the CQE's result (a negative
    /// errno on failure); `flags` the CQE flags.
    fn complete(&self, tag: u32, result: i32, flags: u32);
}

/// Identifies a registered completion handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerId(pub(crate) u32);

impl HandlerId {
    /// `user_data` for an SQE whose completion goes to this handler with `tag`.
    pub fn user_data(self, tag: u32) -> u64 {
        (u64::from(self.0) << 32) | u64::from(tag)
    }
}

/// What the kernel's io_uring offers, probed at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingFeatures {
    pub ext_arg: bool,
    pub fast_poll: bool,
    pub nodrop: bool,
    pub sqpoll: bool,
    pub fixed_buffers: bool,
    pub send_zc: bool,
    pub recv_multishot: bool,
    pub poll_multishot: bool,
    pub provided_buffer_rings: bool,
    pub fallocate: bool,
    pub single_issuer: bool,
}

/// A reactor's io_uring and its completion handlers.
pub struct Ring {
    ring: RefCell<IoUring>,
    handlers: RefCell<Vec<Option<Rc<dyn CqHandler>>>>,
    free_handlers: RefCell<Vec<u32>>,
    pending: Cell<u32>,
    in_flight: Cell<u64>,
    completions: Cell<u64>,
    features: RingFeatures,
}

/// Handler ids below this are reserved for the reactor itself.
pub(crate) const FIRST_USER_HANDLER: u32 = 1;

/// Whether SQPOLL rings can be created, probed once per process. Call it first from a
/// non-reactor thread (`ReactorGroup::start` does): the probe ring's kernel thread is
/// briefly named after the thread that made it.
pub(crate) fn sqpoll_supported() -> bool {
    static SQPOLL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SQPOLL.get_or_init(|| {
        IoUring::<squeue::Entry>::builder()
            .setup_sqpoll(1000)
            .build(4)
            .is_ok()
    })
}

impl Ring {
    pub fn new(entries: u32) -> io::Result<Self> {
        let single = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries);
        let (ring, single_issuer) = match single {
            Ok(r) => (r, true),
            Err(_) => (IoUring::new(entries)?, false),
        };
        let mut probe = io_uring::Probe::new();
        let probed = ring.submitter().register_probe(&mut probe).is_ok();
        let has = |code: u8| probed && probe.is_supported(code);
        let sqpoll = IoUring::<squeue::Entry>::builder()
            .setup_sqpoll(1000)
            .build(4)
            .is_ok();
        let p = ring.params();
        let features = RingFeatures {
            ext_arg: p.is_feature_ext_arg(),
            fast_poll: p.is_feature_fast_poll(),
            nodrop: p.is_feature_nodrop(),
            sqpoll,
            fixed_buffers: has(opcode::ReadFixed::CODE),
            send_zc: has(opcode::SendZc::CODE),
            // Multishot recv and provided-buffer rings arrived with 5.19/6.0; both are
            // signalled by the SendZc-era kernels' socket opcodes being present.
            recv_multishot: has(opcode::RecvMulti::CODE) && has(opcode::SendZc::CODE),
            poll_multishot: has(opcode::PollAdd::CODE) && p.is_feature_poll_32bits(),
            provided_buffer_rings: has(opcode::SendZc::CODE),
            fallocate: has(opcode::Fallocate::CODE),
            single_issuer,
        };
        Ok(Self {
            ring: RefCell::new(ring),
            handlers: RefCell::new(vec![None]),
            free_handlers: RefCell::new(Vec::new()),
            pending: Cell::new(0),
            in_flight: Cell::new(0),
            completions: Cell::new(0),
            features,
        })
    }

    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Registers the pool's regions as fixed buffers; returns whether it worked.
    pub fn register_buffers(&self, iovecs: &[libc::iovec]) -> bool {
        if !self.features.fixed_buffers || iovecs.is_empty() {
            return false;
        }
        // SAFETY: the iovecs describe the buffer pool's mappings, which are leaked and
        // so outlive the ring.
        let r = unsafe { self.ring.borrow().submitter().register_buffers(iovecs) };
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring fixed-buffer registration failed; using plain reads and writes");
                false
            }
        }
    }

    pub fn register_handler(&self, h: Rc<dyn CqHandler>) -> HandlerId {
        let mut hs = self.handlers.borrow_mut();
        if let Some(i) = self.free_handlers.borrow_mut().pop() {
            hs[i as usize] = Some(h);
            HandlerId(i)
        } else {
            hs.push(Some(h));
            HandlerId((hs.len() - 1) as u32)
        }
    }

    /// Unregisters a handler; the caller must have no SQE of it still in flight.
    pub fn unregister_handler(&self, id: HandlerId) {
        self.handlers.borrow_mut()[id.0 as usize] = None;
        self.free_handlers.borrow_mut().push(id.0);
    }

    /// Queues one SQE; it is published at the end of the loop turn.
    ///
    /// # Safety
    /// Every buffer and file descriptor the entry points at must stay valid until its
    /// completion has been delivered.
    pub unsafe fn push(&self, sqe: &squeue::Entry) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        // SAFETY: the caller guarantees the entry's pointers outlive the operation.
        if unsafe { ring.submission().push(sqe) }.is_err() {
            ring.submit()?;
            // SAFETY: as above; the queue was just drained into the kernel.
            unsafe { ring.submission().push(sqe) }
                .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "io_uring SQ full"))?;
        }
        self.pending.set(self.pending.get() + 1);
        self.in_flight.set(self.in_flight.get() + 1);
        Ok(())
    }

    /// Queues an operation that carries no pointer (poll, cancel): safe, because the
    /// kernel touches no user memory for it.
    pub(crate) fn push_pointerless(&self, sqe: &squeue::Entry) {
        // SAFETY: callers pass only PollAdd/AsyncCancel entries, which reference a
        // descriptor or a user_data value and no memory; a stale descriptor yields an
        // error completion, not memory access.
        if let Err(e) = unsafe { self.push(sqe) } {
            tracing::error!(error = %e, "cannot queue an internal io_uring operation");
        }
    }

    /// Operations pushed and not yet completed.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.get()
    }

    pub fn completions(&self) -> u64 {
        self.completions.get()
    }

    /// Publishes queued SQEs without waiting.
    pub(crate) fn flush(&self) {
        if self.pending.get() == 0 {
            return;
        }
        let ring = self.ring.borrow();
        if let Err(e) = ring.submit() {
            if e.raw_os_error() != Some(libc::EBUSY) {
                tracing::error!(error = %e, "io_uring submit failed");
            }
            return;
        }
        self.pending.set(0);
    }

    /// Publishes queued SQEs and waits for at least one completion or the timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) {
        let ring = self.ring.borrow();
        let r = match timeout {
            Some(t) if self.features.ext_arg => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args)
            }
            _ => ring.submitter().submit_and_wait(1),
        };
        match r {
            Ok(_) => self.pending.set(0),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {
                self.pending.set(0)
            }
            Err(e) => tracing::error!(error = %e, "io_uring wait failed"),
        }
    }

    /// Delivers every available completion; returns how many. Handler id 0 (the
    /// reactor's own operations) goes to `own`.
    pub(crate) fn reap(&self, own: &mut dyn FnMut(u32, i32, u32)) -> usize {
        let mut n = 0;
        loop {
            // Copy a batch out so handlers may push new SQEs while we deliver.
            let mut batch: [(u64, i32, u32); 32] = [(0, 0, 0); 32];
            let mut got = 0;
            {
                let mut ring = self.ring.borrow_mut();
                let mut cq = ring.completion();
                for cqe in cq.by_ref().take(32) {
                    batch[got] = (cqe.user_data(), cqe.result(), cqe.flags());
                    got += 1;
                }
            }
            if got == 0 {
                break;
            }
            n += got;
            for &(ud, res, flags) in &batch[..got] {
                let hid = (ud >> 32) as u32;
                let tag = ud as u32;
                // Multishot completions with the MORE flag keep the op in flight.
                if !io_uring::cqueue::more(flags) {
                    self.in_flight.set(self.in_flight.get().saturating_sub(1));
                }
                if hid < FIRST_USER_HANDLER {
                    own(tag, res, flags);
                    continue;
                }
                let h = self
                    .handlers
                    .borrow()
                    .get(hid as usize)
                    .and_then(|h| h.clone());
                match h {
                    Some(h) => h.complete(tag, res, flags),
                    None => tracing::warn!(hid, tag, res, "completion for an unregistered handler"),
                }
            }
        }
        self.completions.set(self.completions.get() + n as u64);
        n
    }
}
