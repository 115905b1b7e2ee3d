//! A TCP connection's byte streams in WASI 0.3: `receive`'s `stream<u8>` and the one we give
//! to `send`, behind the same crate-internal API as the 0.2 backend's `streams.rs`, so
//! `framed`, `lines` and `net::TcpStream` are shared.
//!
//! Reads: an operation in flight lives in the stream, not in the caller's future, so a read
//! cancelled by a timeout or a `select` loses nothing (the next read takes it over), and bytes
//! beyond what a caller asked for wait for the next one. While a connection is active its read
//! stays posted; once it has been pending a while ([`idle`]) it is cancelled, its buffer freed,
//! and the connection waits for readiness with a zero-length read (the design doc's
//! `read_when_ready`). Writes: each is handed to the host and the caller goes on (as 0.2's
//! `write` + `flush`); the next write, a flush or a half-close waits for it. At most one write
//! and one read are in flight per connection, so memory per connection is bounded.

mod idle;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use wasip3::sockets::types::ErrorCode;
use wasip3::wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

use crate::net::io_error;
use crate::runtime::{cooperate, poll_cooperate, spawn, timeout};

/// The range of bytes asked of the host per read: what a posted read holds while it waits.
/// A connection of small messages asks for little; one that keeps filling what it asked for
/// is offered four times more next time, up to what wasmtime moves per call anyway.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// How long a connection dropped with a write still in flight keeps trying to deliver it.
const LINGER: Duration = Duration::from_secs(5);

type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

/// The readable end of a connection (`receive`'s stream and its result future).
pub(crate) struct InputStream {
    state: RefCell<ReadState>,
    /// Bytes read beyond what the caller asked for.
    surplus: RefCell<Surplus>,
    /// Bytes to ask for next, from what the last reads returned.
    chunk: Cell<usize>,
}

enum ReadState {
    Idle(Reader),
    /// A read in flight, of this many bytes at most.
    Reading(Boxed<(Reader, usize, io::Result<Vec<u8>>)>),
    Ended,
}

/// What a read needs between operations: the stream, its result, and whether the last read
/// went idle (the next one starts with a readiness wait).
struct Reader {
    stream: StreamReader<u8>,
    result: Option<FutureReader<Result<(), ErrorCode>>>,
    parked: bool,
}

impl InputStream {
    pub(crate) fn new(
        stream: StreamReader<u8>,
        result: FutureReader<Result<(), ErrorCode>>,
    ) -> InputStream {
        InputStream {
            // A new connection starts idle: no buffer until its first bytes are there (a burst
            // of clients connecting costs no memory per client).
            state: RefCell::new(ReadState::Idle(Reader {
                stream,
                result: Some(result),
                parked: true,
            })),
            surplus: RefCell::new(Surplus::default()),
            chunk: Cell::new(MIN_READ),
        }
    }

    /// Reads some bytes into `buf`; `Ok(0)` at end of stream (or for an empty `buf`).
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// [`InputStream::read`] as a poll function, for `AsyncRead::poll_read`.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let bytes = ready!(self.poll_read_vec(cx, buf.len()))?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    /// Reads some bytes, at most `max` (at least 1 is asked for); empty at end of stream.
    pub(crate) async fn read_vec(&self, max: usize) -> io::Result<Vec<u8>> {
        poll_fn(|cx| self.poll_read_vec(cx, max)).await
    }

    /// [`InputStream::read_vec`] for the last `max` bytes of a message (the 0.2 backend waits
    /// differently after them; here every read waits the same way).
    pub(crate) async fn read_vec_to_end(&self, max: usize) -> io::Result<Vec<u8>> {
        self.read_vec(max).await
    }

    fn poll_read_vec(&self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Vec<u8>>> {
        let max = max.max(1);
        if let Some(bytes) = self.surplus.borrow_mut().take(max) {
            return Poll::Ready(Ok(bytes));
        }
        ready!(poll_cooperate(cx));
        let mut state = self.state.borrow_mut();
        loop {
            match &mut *state {
                ReadState::Ended => return Poll::Ready(Ok(Vec::new())),
                ReadState::Reading(read) => {
                    let (reader, asked, result) = ready!(read.as_mut().poll(cx));
                    *state = match result {
                        Ok(ref bytes) if bytes.is_empty() => ReadState::Ended,
                        Err(_) => ReadState::Ended,
                        Ok(_) => ReadState::Idle(reader),
                    };
                    drop(state);
                    let mut bytes = result?;
                    self.chunk
                        .set(next_chunk(self.chunk.get(), asked, bytes.len()));
                    if bytes.len() > max {
                        self.surplus.borrow_mut().keep(bytes.split_off(max));
                    }
                    return Poll::Ready(Ok(bytes));
                }
                ReadState::Idle(_) => {
                    let ReadState::Idle(reader) = std::mem::replace(&mut *state, ReadState::Ended)
                    else {
                        unreachable!()
                    };
                    let asked = max.min(self.chunk.get());
                    *state = ReadState::Reading(Box::pin(async move {
                        let (reader, result) = read_some(reader, asked).await;
                        (reader, asked, result)
                    }));
                }
            }
        }
    }
}

/// Bytes a read brought beyond what its caller asked for (the read was posted for an earlier,
/// larger request), handed out before the next read.
#[derive(Default)]
struct Surplus {
    bytes: Vec<u8>,
    taken: usize,
}

impl Surplus {
    fn keep(&mut self, bytes: Vec<u8>) {
        debug_assert!(
            self.taken >= self.bytes.len(),
            "only kept once all was taken"
        );
        *self = Surplus { bytes, taken: 0 };
    }

    /// Up to `max` bytes, if any are left.
    fn take(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.taken >= self.bytes.len() {
            return None;
        }
        let to = self.bytes.len().min(self.taken + max);
        let bytes = self.bytes[self.taken..to].to_vec();
        self.taken = to;
        if to == self.bytes.len() {
            *self = Surplus::default(); // the buffer is freed with its last byte
        }
        Some(bytes)
    }
}

/// One read of up to `size` bytes: posted while the connection is active, and once idle (see
/// [`idle`]) a readiness wait that holds no buffer. Empty at end of stream; the stream's
/// error, if it ended with one.
async fn read_some(mut reader: Reader, size: usize) -> (Reader, io::Result<Vec<u8>>) {
    loop {
        let after_readiness = reader.parked;
        if reader.parked {
            let (result, _) = reader.stream.read(Vec::new()).await;
            match result {
                StreamResult::Complete(_) => reader.parked = false,
                StreamResult::Dropped => return ended(reader).await,
                StreamResult::Cancelled => continue,
            }
        }
        let (result, bytes) = {
            let mut read = pin!(reader.stream.read(Vec::with_capacity(size)));
            let mut ticket = idle::Ticket::default();
            let mut first = true;
            let done = poll_fn(|cx| {
                let first = std::mem::replace(&mut first, false);
                match read.as_mut().poll(cx) {
                    Poll::Ready(done) => Poll::Ready(Some(done)),
                    // Readiness can be stale (wasmtime answers it from a cached flag that
                    // clears only once a read would block): back to waiting without a buffer.
                    Poll::Pending if after_readiness && first => Poll::Ready(None),
                    Poll::Pending if ticket.poll_parked(cx) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            // Cancelled, the read may still have raced some bytes in.
            done.unwrap_or_else(|| read.as_mut().cancel())
        };
        match result {
            StreamResult::Complete(0) => {}
            StreamResult::Complete(_) => return (reader, Ok(bytes)),
            StreamResult::Dropped => return ended(reader).await,
            StreamResult::Cancelled => reader.parked = true, // the buffer is freed here
        }
    }
}

/// The next read's size: four times more after a full read, otherwise enough for twice what
/// came, within [`MIN_READ`, `MAX_READ`] (as the 0.2 backend's `streams.rs` sizes its reads).
fn next_chunk(chunk: usize, asked: usize, got: usize) -> usize {
    if got >= asked {
        (chunk * 4).min(MAX_READ)
    } else {
        (got * 2).next_power_of_two().clamp(MIN_READ, MAX_READ)
    }
}

/// End of stream: clean, or the error the connection ended with.
async fn ended(mut reader: Reader) -> (Reader, io::Result<Vec<u8>>) {
    let result = match reader.result.take() {
        Some(result) => result.await.map_err(io_error),
        None => Ok(()),
    };
    (reader, result.map(|()| Vec::new()))
}

/// The writable end of a connection: the stream given to `send`.
pub(crate) struct OutputStream {
    state: RefCell<WriteState>,
    /// `send`'s result: kept, not awaited (a broken connection shows as a write not taken).
    _result: FutureReader<Result<(), ErrorCode>>,
}

enum WriteState {
    Idle(StreamWriter<u8>),
    /// A write handed to the host; its output says whether the peer took all of it.
    Writing(Boxed<(StreamWriter<u8>, bool)>),
    /// Half-closed by us.
    Closed,
    /// The peer stopped reading, or the connection broke.
    Broken,
}

impl OutputStream {
    pub(crate) fn new(
        stream: StreamWriter<u8>,
        result: FutureReader<Result<(), ErrorCode>>,
    ) -> OutputStream {
        OutputStream {
            state: RefCell::new(WriteState::Idle(stream)),
            _result: result,
        }
    }

    /// Hands all of `buf` to the host; returns once the previous write is done and this one
    /// has begun (see [`OutputStream::poll_flushed`]).
    pub(crate) async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        cooperate().await;
        self.write_owned(buf.to_vec()).await
    }

    /// [`OutputStream::write_all`] of bytes we own already (no copy).
    pub(crate) async fn write_owned(&self, bytes: Vec<u8>) -> io::Result<()> {
        let mut bytes = Some(bytes);
        poll_fn(|cx| {
            ready!(self.poll_flushed(cx))?;
            Poll::Ready(self.start(bytes.take().expect("polled after completion"), cx))
        })
        .await
    }

    /// `AsyncWrite::poll_write`: all of `buf` handed to the host once the previous write is
    /// done.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(poll_cooperate(cx));
        ready!(self.poll_flushed(cx))?;
        Poll::Ready(self.start(buf.to_vec(), cx).map(|()| buf.len()))
    }

    /// Begins writing `bytes` (no write is in flight), polling the write once so a peer with
    /// room takes them at once.
    fn start(&self, bytes: Vec<u8>, cx: &mut Context<'_>) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let mut writer = match std::mem::replace(&mut *state, WriteState::Broken) {
            WriteState::Idle(writer) => writer,
            WriteState::Closed => {
                *state = WriteState::Closed;
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "write after shutdown_write",
                ));
            }
            _ => return Err(io::ErrorKind::ConnectionReset.into()),
        };
        let mut write: Boxed<_> = Box::pin(async move {
            let rest = writer.write_all(bytes).await;
            (writer, rest.is_empty())
        });
        *state = match write.as_mut().poll(cx) {
            Poll::Ready((writer, true)) => WriteState::Idle(writer),
            Poll::Ready((_, false)) => return Err(io::ErrorKind::ConnectionReset.into()),
            Poll::Pending => WriteState::Writing(write),
        };
        Ok(())
    }

    /// Nothing to do: writes are on their way as soon as they are made (a failure shows on the
    /// next write or flush).
    pub(crate) fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Ready once everything written so far has been taken by the host: `AsyncWrite::poll_flush`.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.borrow_mut();
        if let WriteState::Writing(write) = &mut *state {
            *state = match ready!(write.as_mut().poll(cx)) {
                (writer, true) => WriteState::Idle(writer),
                (_, false) => WriteState::Broken,
            };
        }
        match &*state {
            WriteState::Broken => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Half-close once everything written has been taken: the peer reads end of stream.
    pub(crate) fn poll_close(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flushed(cx))?;
        // Dropping our end of the stream is the half-close.
        *self.state.borrow_mut() = WriteState::Closed;
        Poll::Ready(Ok(()))
    }

    /// [`OutputStream::poll_close`] as a future.
    pub(crate) async fn close(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_close(cx)).await
    }
}

impl Drop for OutputStream {
    /// A write still in flight is finished by a task of its own (for at most [`LINGER`]), so
    /// bytes written before a connection is dropped are still delivered, as in WASI 0.2.
    fn drop(&mut self) {
        let state = std::mem::replace(self.state.get_mut(), WriteState::Closed);
        if let WriteState::Writing(write) = state
            && crate::runtime::running()
        {
            spawn(async move {
                let _ = timeout(LINGER, write).await;
            })
            .detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surplus_bytes_go_out_in_order_within_each_callers_limit() {
        let mut surplus = Surplus::default();
        assert_eq!(surplus.take(10), None);
        surplus.keep(b"abcdefg".to_vec());
        assert_eq!(surplus.take(3).as_deref(), Some(&b"abc"[..]));
        assert_eq!(surplus.take(3).as_deref(), Some(&b"def"[..]));
        assert_eq!(surplus.take(3).as_deref(), Some(&b"g"[..]));
        assert_eq!(surplus.take(3), None);
        assert_eq!(surplus.bytes.capacity(), 0, "freed once all is taken");
    }

    #[test]
    fn reads_grow_while_full_and_shrink_to_what_comes() {
        assert_eq!(next_chunk(MIN_READ, MIN_READ, MIN_READ), 16 << 10);
        assert_eq!(next_chunk(16 << 10, 16 << 10, 16 << 10), MAX_READ);
        assert_eq!(next_chunk(MAX_READ, MAX_READ, MAX_READ), MAX_READ);
        assert_eq!(next_chunk(MAX_READ, MAX_READ, 5_000), 16 << 10);
        assert_eq!(next_chunk(MAX_READ, MAX_READ, 64), MIN_READ);
        // A caller's small buffer filled is no reason to shrink.
        assert_eq!(next_chunk(MAX_READ, 100, 100), MAX_READ);
    }
}
