//! TCP: a listener that accepts connections, and a stream that reads, writes and half-closes.
//!
//! [`TcpStream`] and its halves implement `futures-lite`'s `AsyncRead` and `AsyncWrite` (also
//! through a shared reference, as their own methods take `&self`), so the ecosystem's helpers
//! (`io::copy`, `BufReader`, `AsyncBufReadExt::read_line`, codecs...) compose with them.
//! `AsyncWrite::poll_close` is a half-close ([`TcpStream::shutdown_write`]). The SDK's own
//! methods stay the fast paths: [`TcpStream::copy_to`] and [`ReadHalf::pipe_to`] splice
//! host-side (the bytes never enter guest memory), and [`TcpStream::write_all`] does not wait
//! for the send.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use futures_lite::io::{AsyncRead, AsyncWrite};

use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::ErrorCode;
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

use super::addr::{family, from_wasi, to_wasi};
use super::io_error;
use crate::runtime::{Registration, cooperate};
use crate::streams::{InputStream, OutputStream};

/// Connections the kernel may hold for us before we accept them: enough for a burst of
/// clients connecting at once (tokio's default too; the OS may cap it lower).
const LISTEN_BACKLOG: u64 = 1024;

/// A listening TCP socket.
pub struct TcpListener {
    // Declared before `socket`: the pollable is the socket's child and must be dropped first.
    readiness: Registration,
    socket: TcpSocket,
}

impl TcpListener {
    /// Binds and listens on `addr` (the host must have granted it; port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = create_tcp_socket(family(addr)).map_err(io_error)?;
        // Declared after `socket`, so dropped before it on every early return.
        let readiness = Registration::new(socket.subscribe());
        let network = instance_network();
        socket
            .start_bind(&network, to_wasi(addr))
            .map_err(io_error)?;
        finish(&readiness, || socket.finish_bind()).await?;
        // Best effort: a host that refuses keeps its default (wasmtime's is 128).
        let _ = socket.set_listen_backlog_size(LISTEN_BACKLOG);
        socket.start_listen().map_err(io_error)?;
        finish(&readiness, || socket.finish_listen()).await?;
        Ok(TcpListener { readiness, socket })
    }

    /// The address actually listened on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_address().map(from_wasi).map_err(io_error)
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        cooperate().await;
        let (socket, input, output) = finish(&self.readiness, || self.socket.accept()).await?;
        let stream = TcpStream::from_parts(socket, input, output);
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }
}

/// Tries a socket operation and, each time it would block, waits on the socket's pollable
/// and tries again. (Readiness can be spurious, e.g. for a client the host refused.)
async fn finish<T>(
    readiness: &Registration,
    mut attempt: impl FnMut() -> Result<T, ErrorCode>,
) -> io::Result<T> {
    loop {
        match attempt() {
            Err(ErrorCode::WouldBlock) => readiness.wait().await,
            other => return other.map_err(io_error),
        }
    }
}

/// One TCP connection. Cheap to share: [`TcpStream::split`] gives halves that can live in
/// different tasks.
pub struct TcpStream {
    conn: Rc<Connection>,
}

struct Connection {
    // Field order is drop order: both streams (and their pollables) before the socket.
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Tell the peer we are gone even if the host keeps the socket around a moment longer.
        let _ = self.socket.shutdown(ShutdownType::Both);
    }
}

impl TcpStream {
    fn from_parts(
        socket: TcpSocket,
        input: wasip2::io::streams::InputStream,
        output: wasip2::io::streams::OutputStream,
    ) -> TcpStream {
        TcpStream {
            conn: Rc::new(Connection {
                input: InputStream::new(input),
                output: OutputStream::new(output),
                socket,
            }),
        }
    }

    /// Connects to `addr` (the host must have granted `tcp-connect` for it).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = create_tcp_socket(family(addr)).map_err(io_error)?;
        let network = instance_network();
        socket
            .start_connect(&network, to_wasi(addr))
            .map_err(io_error)?;
        let (input, output) = {
            // Scoped so the pollable is gone before the socket can be dropped on error.
            let readiness = Registration::new(socket.subscribe());
            finish(&readiness, || socket.finish_connect()).await?
        };
        Ok(TcpStream::from_parts(socket, input, output))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.conn
            .socket
            .remote_address()
            .map(from_wasi)
            .map_err(io_error)
    }

    /// Our end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.conn
            .socket
            .local_address()
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
        self.conn.output.write_all(buf).await?;
        self.conn.output.flush()
    }

    /// Copies everything from this stream to `to` until this side reaches end of stream,
    /// without passing the bytes through guest memory.
    pub async fn copy_to(&self, to: &TcpStream) -> io::Result<u64> {
        self.conn.input.copy_to(&to.conn.output).await
    }

    /// Half-close: no more writes from us; the peer reads end of stream, and can still send.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.conn.output.flushed().await?;
        self.shutdown_send()
    }

    fn shutdown_send(&self) -> io::Result<()> {
        self.conn
            .socket
            .shutdown(ShutdownType::Send)
            .map_err(io_error)
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

/// The `AsyncRead` impls: a stream or its reading half, owned or shared.
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
                let stream = self.stream();
                ready!(stream.conn.output.poll_flushed(cx))?;
                Poll::Ready(stream.shutdown_send())
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
