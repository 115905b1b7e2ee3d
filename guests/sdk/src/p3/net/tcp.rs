//! TCP over WASI 0.3: a listener whose `listen` stream yields connections, and a stream that
//! reads `receive`'s bytes, writes into the stream given to `send`, and half-closes by
//! dropping that.
//!
//! [`TcpStream`] and its halves implement `futures-lite`'s `AsyncRead` and `AsyncWrite` (also
//! through a shared reference) exactly as in the 0.2 backend. [`TcpStream::copy_to`], a host
//! splice in 0.2, is a read/write loop here: one buffer of at most [`COPY_CHUNK`] in flight
//! each way.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

use wasip3::sockets::types::TcpSocket;
use wasip3::wit_bindgen::StreamReader;
use wasip3::wit_stream;

use super::addr::{family, from_wasi, to_wasi};
use super::io_error;
use crate::runtime::cooperate;
use crate::streams::{InputStream, OutputStream};

/// Connections the kernel may hold for us before we accept them: enough for a burst of
/// clients connecting at once (tokio's default too; the OS may cap it lower).
const LISTEN_BACKLOG: u64 = 1024;

/// Most bytes [`TcpStream::copy_to`] moves per read.
const COPY_CHUNK: usize = 64 * 1024;

/// A listening TCP socket.
pub struct TcpListener {
    /// Taken by the accept in progress (an accept cancelled midway puts it back).
    accepted: Cell<Option<StreamReader<TcpSocket>>>,
    socket: TcpSocket,
}

impl TcpListener {
    /// Binds and listens on `addr` (the host must have granted it; port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = TcpSocket::create(family(addr)).map_err(io_error)?;
        socket.bind(to_wasi(addr)).map_err(io_error)?;
        // Best effort: a host that refuses keeps its default (wasmtime's is 128).
        let _ = socket.set_listen_backlog_size(LISTEN_BACKLOG);
        let accepted = socket.listen().map_err(io_error)?;
        Ok(TcpListener {
            accepted: Cell::new(Some(accepted)),
            socket,
        })
    }

    /// The address actually listened on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .get_local_address()
            .map(from_wasi)
            .map_err(io_error)
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        cooperate().await;
        let mut accepted = Borrowed::take(&self.accepted).ok_or_else(|| {
            io::Error::other("another task is accepting on this listener already")
        })?;
        let socket = accepted.stream().next().await.ok_or_else(|| {
            io::Error::new(io::ErrorKind::ConnectionAborted, "the listener stopped")
        })?;
        drop(accepted);
        let stream = TcpStream::from_socket(socket);
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }
}

/// The listener's stream of connections, taken for one accept and put back however it ends.
struct Borrowed<'a> {
    home: &'a Cell<Option<StreamReader<TcpSocket>>>,
    stream: Option<StreamReader<TcpSocket>>,
}

impl<'a> Borrowed<'a> {
    fn take(home: &'a Cell<Option<StreamReader<TcpSocket>>>) -> Option<Borrowed<'a>> {
        let stream = home.take()?;
        Some(Borrowed {
            home,
            stream: Some(stream),
        })
    }

    fn stream(&mut self) -> &mut StreamReader<TcpSocket> {
        self.stream.as_mut().expect("present until dropped")
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        self.home.set(self.stream.take());
    }
}

/// One TCP connection. Cheap to share: [`TcpStream::split`] gives halves that can live in
/// different tasks.
pub struct TcpStream {
    conn: Rc<Connection>,
}

struct Connection {
    // Field order is drop order: the streams, then the socket.
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
}

impl TcpStream {
    fn from_socket(socket: TcpSocket) -> TcpStream {
        let (input, received) = socket.receive();
        let (writer, to_send) = wit_stream::new::<u8>();
        let sent = socket.send(to_send);
        TcpStream {
            conn: Rc::new(Connection {
                input: InputStream::new(input, received),
                output: OutputStream::new(writer, sent),
                socket,
            }),
        }
    }

    /// Connects to `addr` (the host must have granted `tcp-connect` for it).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::create(family(addr)).map_err(io_error)?;
        socket.connect(to_wasi(addr)).await.map_err(io_error)?;
        Ok(TcpStream::from_socket(socket))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.conn
            .socket
            .get_remote_address()
            .map(from_wasi)
            .map_err(io_error)
    }

    /// Our end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.conn
            .socket
            .get_local_address()
            .map(from_wasi)
            .map_err(io_error)
    }

    /// Reads some bytes; `Ok(0)` means the peer closed its sending side.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.conn.input.read(buf).await
    }

    /// Writes all of `buf` and asks the host to send it. Returns without waiting for the send
    /// to finish: a following write waits if it must, [`TcpStream::shutdown_write`] waits for
    /// it, and bytes written before the connection is dropped are still delivered.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.conn.output.write_all(buf).await
    }

    /// Copies everything from this stream to `to` until this side reaches end of stream.
    /// (WASI 0.3 has no host-side splice: the bytes pass through one bounded buffer.)
    pub async fn copy_to(&self, to: &TcpStream) -> io::Result<u64> {
        let mut copied = 0;
        loop {
            let bytes = self.conn.input.read_vec(COPY_CHUNK).await?;
            if bytes.is_empty() {
                return Ok(copied);
            }
            copied += bytes.len() as u64;
            to.conn.output.write_owned(bytes).await?;
        }
    }

    /// Half-close: no more writes from us; the peer reads end of stream, and can still send.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.conn.output.close().await
    }

    /// The connection's byte streams, for the SDK's readers and writers of frames and lines.
    pub(crate) fn input(&self) -> &InputStream {
        &self.conn.input
    }

    pub(crate) fn output(&self) -> &OutputStream {
        &self.conn.output
    }

    /// Splits the stream into a reading and a writing half, usable from different tasks.
    /// The connection closes when both halves are dropped.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (
            ReadHalf(TcpStream {
                conn: self.conn.clone(),
            }),
            WriteHalf(TcpStream { conn: self.conn }),
        )
    }
}

/// The reading half of a [`TcpStream`].
pub struct ReadHalf(TcpStream);

impl ReadHalf {
    /// Reads some bytes; `Ok(0)` means the peer closed its sending side.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }

    pub(crate) fn input(&self) -> &InputStream {
        self.0.input()
    }

    /// Copies everything from this half to `to` until end of stream, then half-closes `to`.
    pub async fn pipe_to(&self, to: &WriteHalf) -> io::Result<u64> {
        let copied = self.0.copy_to(&to.0).await?;
        to.shutdown_write().await?;
        Ok(copied)
    }
}

/// The writing half of a [`TcpStream`].
pub struct WriteHalf(TcpStream);

impl WriteHalf {
    /// Writes all of `buf` and asks the host to send it (see [`TcpStream::write_all`]).
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }

    /// Half-close: the peer reads end of stream.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown_write().await
    }
}

/// The `AsyncRead` impls: a stream or its reading half, owned or shared (as in the 0.2
/// backend's `net/tcp.rs`).
macro_rules! async_read {
    ($($ty:ty),*) => {$(
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.stream().conn.input.poll_read(cx, buf)
            }
        }
    )*};
}

/// The `AsyncWrite` impls: a stream or its writing half, owned or shared.
macro_rules! async_write {
    ($($ty:ty),*) => {$(
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.stream().conn.output.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.stream().conn.output.poll_flushed(cx)
            }

            /// A half-close, as [`TcpStream::shutdown_write`]: the peer reads end of stream.
            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.stream().conn.output.poll_close(cx)
            }
        }
    )*};
}

async_read!(TcpStream, &TcpStream, ReadHalf, &ReadHalf);
async_write!(TcpStream, &TcpStream, WriteHalf, &WriteHalf);

/// The stream behind each type the impls above are for.
trait AsStream {
    fn stream(&self) -> &TcpStream;
}

impl AsStream for TcpStream {
    fn stream(&self) -> &TcpStream {
        self
    }
}

impl AsStream for &TcpStream {
    fn stream(&self) -> &TcpStream {
        self
    }
}

impl AsStream for ReadHalf {
    fn stream(&self) -> &TcpStream {
        &self.0
    }
}

impl AsStream for &ReadHalf {
    fn stream(&self) -> &TcpStream {
        &self.0
    }
}

impl AsStream for WriteHalf {
    fn stream(&self) -> &TcpStream {
        &self.0
    }
}

impl AsStream for &WriteHalf {
    fn stream(&self) -> &TcpStream {
        &self.0
    }
}
