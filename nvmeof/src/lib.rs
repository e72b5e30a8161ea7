//! NVMe over TCP: the PDU codec and digests, and the target.
//!
//! # Architecture
//!
//! [`host`] is the initiator: a remote namespace as a `BlockDevice`, polled by the
//! reactors like any other backend.
//!
//! [`pdu`] is the codec: pure functions that parse and check headers and encode
//! PDUs, and [`pdu::stream::Stream`], the framing both the host and the target
//! receive and transmit with, over a [`pdu::transport::Transport`]. [`target`] serves subsystems over TCP: a listener poller
//! accepts connections and spreads them over the reactors; each connection is one
//! queue pair, polled by its reactor, that turns capsules into admin, fabrics or I/O
//! commands. I/O commands go to the namespace's bdev channel on the same reactor and
//! complete there. Controllers (shared by one admin and several I/O queues, possibly on
//! different reactors) keep their state behind small locks touched only by admin and
//! fabrics commands, never by reads and writes.
//!
//! # What it doesn't implement
//!
//! TLS and DH-HMAC-CHAP authentication, ANA/multipath reporting, reservations,
//! several R2Ts in flight per command (MAXR2T is 1 by construction: one R2T covers a
//! whole transfer of at most MDTS = 128 KiB).

pub mod host;
pub mod pdu;
pub mod target;

pub use target::{SubsystemConfig, Target, TargetError, TargetShared};
