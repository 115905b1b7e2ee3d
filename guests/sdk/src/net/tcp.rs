//! TCP: a listener that accepts connections, and a stream that reads, writes and half-closes.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;
use wstd::io::{AsyncInputStream, AsyncOutputStream};
use wstd::runtime::AsyncPollable;

use super::addr::{family, from_wasi, to_wasi};
use super::io_error;

/// A listening TCP socket.
pub struct TcpListener {
    // Declared before `socket`: the pollable is the socket's child and must be dropped first.
    readiness: AsyncPollable,
    socket: TcpSocket,
}

impl TcpListener {
    /// Binds and listens on `addr` (the host must have granted it; port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = create_tcp_socket(family(addr)).map_err(io_error)?;
        let readiness = AsyncPollable::new(socket.subscribe());
        let network = instance_network();
        socket
            .start_bind(&network, to_wasi(addr))
            .map_err(io_error)?;
        readiness.wait_for().await;
        socket.finish_bind().map_err(io_error)?;
        socket.start_listen().map_err(io_error)?;
        readiness.wait_for().await;
        socket.finish_listen().map_err(io_error)?;
        Ok(TcpListener { readiness, socket })
    }

    /// The address actually listened on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_address().map(from_wasi).map_err(io_error)
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            self.readiness.wait_for().await;
            match self.socket.accept() {
                Ok((socket, input, output)) => {
                    let stream = TcpStream::from_parts(socket, input, output);
                    let peer = stream.peer_addr()?;
                    return Ok((stream, peer));
                }
                // Readiness can be spurious (e.g. a client the host refused); wait again.
                Err(wasip2::sockets::network::ErrorCode::WouldBlock) => continue,
                Err(code) => return Err(io_error(code)),
            }
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
    input: AsyncInputStream,
    output: AsyncOutputStream,
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
                input: AsyncInputStream::new(input),
                output: AsyncOutputStream::new(output),
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
        let streams = {
            // Scoped so the pollable is gone before the socket can be dropped on error.
            let readiness = AsyncPollable::new(socket.subscribe());
            loop {
                readiness.wait_for().await;
                match socket.finish_connect() {
                    Err(wasip2::sockets::network::ErrorCode::WouldBlock) => continue,
                    other => break other,
                }
            }
        };
        let (input, output) = streams.map_err(io_error)?;
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

    /// Writes all of `buf` and flushes it to the host.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.conn.output.write_all(buf).await?;
        self.conn.output.flush().await
    }

    /// Copies everything from this stream to `to` until this side reaches end of stream,
    /// without passing the bytes through guest memory.
    pub async fn copy_to(&self, to: &TcpStream) -> io::Result<u64> {
        self.conn.input.copy_to(&to.conn.output).await
    }

    /// Half-close: no more writes from us; the peer reads end of stream, and can still send.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.conn.output.flush().await?;
        self.conn
            .socket
            .shutdown(ShutdownType::Send)
            .map_err(io_error)
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
    /// Writes all of `buf` and flushes it.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }

    /// Half-close: the peer reads end of stream.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown_write().await
    }
}
