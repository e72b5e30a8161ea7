//! The driver's error type.
#![forbid(unsafe_code)]

use crate::spec::Status;

/// Errors of the NVMe PCIe driver: attaching, bringing a controller up, and commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device cannot be opened through VFIO; `hint` is the command that fixes it.
    #[error("{bdf}: {what}\n  hint: {hint}")]
    Setup {
        bdf: String,
        what: String,
        hint: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// CSTS.RDY did not reach the expected value within CAP.TO.
    #[error("controller {id}: CSTS.RDY did not become {want} within {ms} ms (CAP.TO)")]
    ReadyTimeout { id: String, want: u8, ms: u64 },
    /// CSTS.CFS is set.
    #[error("controller {id}: fatal status (CSTS.CFS=1); the controller needs a reset")]
    Fatal { id: String },
    /// An admin command got no completion in time.
    #[error(
        "controller {id}: admin command {what} (opcode {opcode:#04x}) timed out after {ms} ms"
    )]
    AdminTimeout {
        id: String,
        what: &'static str,
        opcode: u8,
        ms: u64,
    },
    /// A command completed with an error status.
    #[error("controller {id}: {what} failed: {status:?}")]
    Command {
        id: String,
        what: &'static str,
        status: Status,
    },
    /// The controller returned data that cannot be right (e.g. a short Identify).
    #[error("controller {id}: {what}")]
    BadData { id: String, what: String },
    /// An I/O command timed out; the controller was reset.
    #[error("I/O command opcode {opcode:#04x} (cid {cid:#06x}) on queue {qid} timed out after {ms} ms; aborted and the controller reset")]
    IoTimeout {
        qid: u16,
        cid: u16,
        opcode: u8,
        ms: u64,
    },
    /// The controller was reset while the command was in flight.
    #[error("the controller was reset while the command was in flight")]
    Reset,
    /// Every I/O queue the controller granted is in use.
    #[error("controller {id}: all {granted} I/O queues are in use (one per reactor)")]
    NoQueue { id: String, granted: u16 },
    /// The submission queue is full.
    #[error("submission queue full")]
    QueueFull,
    /// The data buffer does not belong to a DMA-mapped pool, or is too large.
    #[error("data buffer not DMA-mapped or too large for one PRP list")]
    BadBuffer,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
