//! Async WASI byte streams: each operation is tried first and waits on the stream's pollable
//! only when it would block.
//!
//! The pollable is subscribed on the first wait and kept for the stream's life (in a field
//! declared before the stream, so it is dropped first).
//!
//! A read or splice that returns less than it asked for has drained what the host had, so the
//! next one waits on the pollable first rather than spending a host call (and wasmtime's
//! zero-filled read buffer) on a certain "nothing yet". If more arrived meanwhile, the
//! pollable is already ready and the reactor's next poll says so.
//!
//! How much to ask for adapts too: wasmtime zero-fills a buffer of the size asked on every
//! read and splice, so a connection of small messages asks for little, and one that keeps
//! filling what it asked for is offered four times more next time, up to 64 KiB.
//!
//! Writes do not wait for their flush: a flush only asks the host to send, and the next
//! write's `check-write` waits if the host is still busy. Only a half-close waits for it.
//!
//! Each operation is a `poll_*` function, so the same code serves the SDK's own async methods
//! and the `futures-lite` `AsyncRead`/`AsyncWrite` impls of `net::TcpStream` and its halves.
//! A wait's state (`seen`: the readiness count it started from) belongs to the waiting future;
//! the trait impls, which have no future of their own, keep theirs in the stream.

use std::cell::{Cell, OnceCell};
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll, ready};

use wasip2::io::streams::{self, StreamError};

use crate::runtime::{Registration, cooperate, poll_cooperate};

/// The range of bytes asked of the host per read or splice (wasmtime moves at most 64 KiB
/// per call anyway).
const MIN_CHUNK: usize = 4 * 1024;
const MAX_CHUNK: usize = 64 * 1024;

/// The readable end of a WASI stream (a TCP connection's input).
pub(crate) struct InputStream {
    readiness: OnceCell<Registration>,
    /// The last read or splice came back short: wait before trying again.
    drained: Cell<bool>,
    /// Bytes to ask for next, from what the last calls returned.
    chunk: Cell<usize>,
    /// The wait state of [`InputStream::poll_read`] (the `AsyncRead` impls).
    read_seen: Cell<Option<u64>>,
    stream: streams::InputStream,
}

impl InputStream {
    pub(crate) fn new(stream: streams::InputStream) -> InputStream {
        InputStream {
            readiness: OnceCell::new(),
            drained: Cell::new(false),
            chunk: Cell::new(MIN_CHUNK),
            read_seen: Cell::new(None),
            stream,
        }
    }

    /// Notes that a call asking for `asked` bytes got `got`.
    fn got(&self, asked: usize, got: usize) {
        self.drained.set(got < asked);
        self.chunk.set(next_chunk(self.chunk.get(), asked, got));
    }

    /// Ready once the reactor reports the stream readable (call it only after a read came back
    /// short or empty).
    fn poll_readable(&self, cx: &mut Context<'_>, seen: &mut Option<u64>) -> Poll<()> {
        ready!(
            self.readiness
                .get_or_init(|| Registration::new(self.stream.subscribe()))
                .poll_wait(cx, seen)
        );
        // The next wait starts from this readiness.
        *seen = None;
        self.drained.set(false);
        Poll::Ready(())
    }

    async fn readable(&self) {
        let mut seen = None;
        poll_fn(|cx| self.poll_readable(cx, &mut seen)).await
    }

    /// Reads some bytes into `buf`; `Ok(0)` at end of stream (or for an empty `buf`).
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut seen = None;
        poll_fn(|cx| self.poll_read_into(cx, buf, &mut seen)).await
    }

    /// [`InputStream::read`] as a poll function, for `AsyncRead::poll_read`.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut seen = self.read_seen.take();
        let poll = self.poll_read_into(cx, buf, &mut seen);
        self.read_seen.set(seen);
        poll
    }

    fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: &mut Option<u64>,
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let bytes = ready!(self.poll_read_vec(cx, buf.len(), seen))?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    /// Reads some bytes, at most `max` (at least 1 is asked for), in the vector the host
    /// filled, so the caller can keep it without a copy; empty at end of stream.
    pub(crate) async fn read_vec(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut seen = None;
        poll_fn(|cx| self.poll_read_vec(cx, max, &mut seen)).await
    }

    fn poll_read_vec(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        seen: &mut Option<u64>,
    ) -> Poll<io::Result<Vec<u8>>> {
        ready!(poll_cooperate(cx));
        loop {
            if self.drained.get() {
                ready!(self.poll_readable(cx, seen));
            }
            let asked = max.clamp(1, self.chunk.get());
            match self.stream.read(asked as u64) {
                // WASI's empty read means "nothing yet", not end of stream.
                Ok(bytes) if bytes.is_empty() => self.drained.set(true),
                Ok(bytes) => {
                    self.got(asked, bytes.len());
                    return Poll::Ready(Ok(bytes));
                }
                Err(StreamError::Closed) => return Poll::Ready(Ok(Vec::new())),
                Err(StreamError::LastOperationFailed(err)) => {
                    return Poll::Ready(Err(io::Error::other(err.to_debug_string())));
                }
            }
        }
    }

    /// [`InputStream::read_vec`] for the last `max` bytes of a message. Once they are all in,
    /// what follows is likely still on its way (the peer waits for an answer), so the next
    /// read waits for the reactor's poll instead of spending a zero-filled read on a
    /// "nothing yet".
    pub(crate) async fn read_vec_to_end(&self, max: usize) -> io::Result<Vec<u8>> {
        let bytes = self.read_vec(max).await?;
        if bytes.len() == max {
            self.drained.set(true);
        }
        Ok(bytes)
    }

    /// Moves everything from this stream into `to` until this one ends, host-side (the bytes
    /// never enter guest memory). Returns the bytes moved.
    pub(crate) async fn copy_to(&self, to: &OutputStream) -> io::Result<u64> {
        let mut copied = 0;
        loop {
            cooperate().await;
            if self.drained.get() {
                self.readable().await;
            }
            let asked = self.chunk.get();
            match to.stream.splice(&self.stream, asked as u64) {
                Ok(0) => {
                    // Either side may be holding us up; the output says whether it has room.
                    match to.stream.check_write() {
                        Ok(0) => to.writable().await,
                        Ok(_) => self.drained.set(true),
                        Err(StreamError::Closed) => return Ok(copied),
                        Err(err) => return Err(write_error(err)),
                    }
                }
                Ok(n) => {
                    copied += n;
                    self.got(asked, usize::try_from(n).unwrap_or(asked));
                }
                Err(StreamError::Closed) => return Ok(copied),
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(io::Error::other(err.to_debug_string()));
                }
            }
        }
    }
}

/// The writable end of a WASI stream (a TCP connection's output).
pub(crate) struct OutputStream {
    readiness: OnceCell<Registration>,
    /// The wait state of the `AsyncWrite` impls' poll functions.
    write_seen: Cell<Option<u64>>,
    stream: streams::OutputStream,
}

impl OutputStream {
    pub(crate) fn new(stream: streams::OutputStream) -> OutputStream {
        OutputStream {
            readiness: OnceCell::new(),
            write_seen: Cell::new(None),
            stream,
        }
    }

    fn poll_writable(&self, cx: &mut Context<'_>, seen: &mut Option<u64>) -> Poll<()> {
        ready!(
            self.readiness
                .get_or_init(|| Registration::new(self.stream.subscribe()))
                .poll_wait(cx, seen)
        );
        *seen = None;
        Poll::Ready(())
    }

    async fn writable(&self) {
        let mut seen = None;
        poll_fn(|cx| self.poll_writable(cx, &mut seen)).await
    }

    /// Hands all of `buf` to the host, as fast as `check-write` allows.
    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        cooperate().await;
        let mut seen = None;
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.poll_write_some(cx, buf, &mut seen)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Hands as much of `buf` as the host takes now (at least one byte), waiting for room.
    fn poll_write_some(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        seen: &mut Option<u64>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.stream.check_write() {
                Ok(0) => ready!(self.poll_writable(cx, seen)),
                Ok(permit) => {
                    let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
                    self.stream.write(&buf[..n]).map_err(write_error)?;
                    return Poll::Ready(Ok(n));
                }
                Err(err) => return Poll::Ready(Err(write_error(err))),
            }
        }
    }

    /// `AsyncWrite::poll_write`: some of `buf` handed to the host and a send asked for (as
    /// [`OutputStream::flush`]), so a caller that never flushes still has its bytes sent.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(poll_cooperate(cx));
        let mut seen = self.write_seen.take();
        let poll = self.poll_write_some(cx, buf, &mut seen);
        self.write_seen.set(seen);
        let n = ready!(poll)?;
        self.flush()?;
        Poll::Ready(Ok(n))
    }

    /// Asks the host to send everything written so far, without waiting. A stream that
    /// buffers takes no more writes until that is done, so the next write waits for it (in
    /// wasmtime a TCP write is already on its way and this is a no-op): answers can be written
    /// back to back without a poll round between them.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.stream.flush().map_err(write_error)
    }

    /// Waits until everything written so far has left the stream (before a half-close).
    pub(crate) async fn flushed(&self) -> io::Result<()> {
        let mut seen = None;
        poll_fn(|cx| self.poll_flushed_with(cx, &mut seen)).await
    }

    /// [`OutputStream::flushed`] as a poll function: `AsyncWrite::poll_flush`.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut seen = self.write_seen.take();
        let poll = self.poll_flushed_with(cx, &mut seen);
        self.write_seen.set(seen);
        poll
    }

    fn poll_flushed_with(
        &self,
        cx: &mut Context<'_>,
        seen: &mut Option<u64>,
    ) -> Poll<io::Result<()>> {
        // Asking again on a later poll is harmless: the flush covers what was written before.
        self.flush()?;
        // After a flush, `check-write` answers 0 until the flush is complete.
        loop {
            match self.stream.check_write() {
                Ok(0) => ready!(self.poll_writable(cx, seen)),
                Ok(_) => return Poll::Ready(Ok(())),
                Err(err) => return Poll::Ready(Err(write_error(err))),
            }
        }
    }
}

/// The next chunk size: four times more after a full call, otherwise enough for twice what
/// came, within [`MIN_CHUNK`, `MAX_CHUNK`].
fn next_chunk(chunk: usize, asked: usize, got: usize) -> usize {
    if got >= asked {
        (chunk * 4).min(MAX_CHUNK)
    } else {
        (got * 2).next_power_of_two().clamp(MIN_CHUNK, MAX_CHUNK)
    }
}

fn write_error(err: StreamError) -> io::Error {
    match err {
        StreamError::Closed => io::ErrorKind::ConnectionReset.into(),
        StreamError::LastOperationFailed(err) => io::Error::other(err.to_debug_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_while_full_and_shrink_to_what_comes() {
        let mut chunk = MIN_CHUNK;
        let mut sizes = Vec::new();
        for _ in 0..4 {
            chunk = next_chunk(chunk, chunk, chunk);
            sizes.push(chunk);
        }
        assert_eq!(sizes, [16 << 10, MAX_CHUNK, MAX_CHUNK, MAX_CHUNK]);
        assert_eq!(next_chunk(MAX_CHUNK, MAX_CHUNK, 5_000), 16 << 10);
        assert_eq!(next_chunk(MAX_CHUNK, MAX_CHUNK, 64), MIN_CHUNK);
        // A caller's small buffer filled is no reason to shrink.
        assert_eq!(next_chunk(MAX_CHUNK, 100, 100), MAX_CHUNK);
    }
}
