//! What a [`Stream`](super::stream::Stream) runs over: plain TCP now; the seam where
//! kernel TLS or a TLS library goes later.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

/// A non-blocking, ordered, reliable byte stream.
///
/// Reads and writes never block: they return `WouldBlock`, and the reactor polls
/// [`Transport::raw_fd`] for readiness.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` for a non-empty `buf` means the peer closed.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes from `bufs` in order, in one call; returns the bytes taken.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// The descriptor the reactor waits on.
    fn raw_fd(&self) -> RawFd;
    /// Ends the stream both ways.
    fn shutdown(&self) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn shutdown(&self) -> io::Result<()> {
        TcpStream::shutdown(self, Shutdown::Both)
    }
}
