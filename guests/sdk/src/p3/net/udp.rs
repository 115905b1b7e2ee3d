//! UDP over WASI 0.3: `send` and `receive` are async functions, one datagram each, with the
//! 0.2 backend's API (batches are sequences of single datagrams here).

use std::io;
use std::net::SocketAddr;

use wasip3::sockets::types::ErrorCode;

use super::addr::{family, from_wasi, to_wasi};
use super::io_error;
use crate::runtime::cooperate;

/// The largest payload a UDP datagram can carry over IPv4 or IPv6 without jumbograms.
pub const MAX_DATAGRAM: usize = 65_507;

/// A bound UDP socket that can receive from and send to any address the host allows.
pub struct UdpSocket {
    socket: wasip3::sockets::types::UdpSocket,
}

impl UdpSocket {
    /// The most datagrams one [`UdpSocket::recv_batch`] returns (the 0.2 backend's limit; a
    /// 0.3 receive takes one datagram, so a batch here is always one).
    pub const MAX_BATCH: usize = 16;

    /// Binds to `addr` (the host must have granted it with `--udp` or `udp-bind`).
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = wasip3::sockets::types::UdpSocket::create(family(addr)).map_err(io_error)?;
        socket.bind(to_wasi(addr)).map_err(io_error)?;
        Ok(UdpSocket { socket })
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .get_local_address()
            .map(from_wasi)
            .map_err(io_error)
    }

    /// Waits for the next datagram: its payload (possibly empty) and its sender.
    pub async fn recv_from(&self) -> io::Result<(Vec<u8>, SocketAddr)> {
        cooperate().await;
        let (data, from) = self.socket.receive().await.map_err(io_error)?;
        Ok((data, from_wasi(from)))
    }

    /// Waits until a datagram has come and returns it, as a batch of one (`max` is the 0.2
    /// backend's: WASI 0.3 receives one datagram per call, and a second receive that is not
    /// waited for cannot be cancelled without losing what it may have taken).
    pub async fn recv_batch(&self, _max: usize) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
        Ok(vec![self.recv_from().await?])
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.send_batch([(data.to_vec(), to)]).await.pop() {
            Some((_, err)) => Err(err),
            None => Ok(()),
        }
    }

    /// Sends every datagram of `batch` (payload, destination) in order. A datagram that cannot
    /// be sent (a destination not granted, a payload over [`MAX_DATAGRAM`]) does not hold up
    /// the others: it comes back with its error, and the list is empty when all went out.
    pub async fn send_batch(
        &self,
        batch: impl IntoIterator<Item = (Vec<u8>, SocketAddr)>,
    ) -> Vec<(SocketAddr, io::Error)> {
        let mut failed = Vec::new();
        for (data, to) in batch {
            if data.len() > MAX_DATAGRAM {
                let message = format!("datagram of {} bytes exceeds {MAX_DATAGRAM}", data.len());
                failed.push((to, io::Error::new(io::ErrorKind::InvalidInput, message)));
                continue;
            }
            cooperate().await;
            if let Err(code) = self.socket.send(data, Some(to_wasi(to))).await {
                failed.push((to, send_error(code, to)));
            }
        }
        failed
    }
}

fn send_error(code: ErrorCode, to: SocketAddr) -> io::Error {
    match code {
        ErrorCode::AccessDenied => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("sending to {to} is not granted"),
        ),
        code => io_error(code),
    }
}
