//! UDP: datagrams in and out with their boundaries kept.

use std::io;
use std::net::SocketAddr;

use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::ErrorCode;
use wasip2::sockets::udp::{IncomingDatagramStream, OutgoingDatagram, OutgoingDatagramStream};
use wasip2::sockets::udp_create_socket::create_udp_socket;

use super::addr::{family, from_wasi, to_wasi};
use super::io_error;
use crate::runtime::{Registration, cooperate};

/// The largest payload a UDP datagram can carry over IPv4 or IPv6 without jumbograms.
pub const MAX_DATAGRAM: usize = 65_507;

/// A bound UDP socket that can receive from and send to any address the host allows.
pub struct UdpSocket {
    // Field order is drop order: pollables, then the streams they watch, then the socket.
    incoming_ready: Registration,
    outgoing_ready: Registration,
    incoming: IncomingDatagramStream,
    outgoing: OutgoingDatagramStream,
    socket: wasip2::sockets::udp::UdpSocket,
}

impl UdpSocket {
    /// Binds to `addr` (the host must have granted it with `--udp` or `udp-bind`).
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = create_udp_socket(family(addr)).map_err(io_error)?;
        let network = instance_network();
        socket
            .start_bind(&network, to_wasi(addr))
            .map_err(io_error)?;
        {
            // Scoped so the pollable is gone before the socket can be dropped on error.
            let readiness = Registration::new(socket.subscribe());
            loop {
                match socket.finish_bind() {
                    Err(ErrorCode::WouldBlock) => readiness.wait().await,
                    other => break other.map_err(io_error)?,
                }
            }
        }
        let (incoming, outgoing) = socket.stream(None).map_err(io_error)?;
        Ok(UdpSocket {
            incoming_ready: Registration::new(incoming.subscribe()),
            outgoing_ready: Registration::new(outgoing.subscribe()),
            incoming,
            outgoing,
            socket,
        })
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_address().map(from_wasi).map_err(io_error)
    }

    /// Waits for the next datagram: its payload (possibly empty) and its sender.
    pub async fn recv_from(&self) -> io::Result<(Vec<u8>, SocketAddr)> {
        cooperate().await;
        loop {
            match self.incoming.receive(1).map_err(io_error)?.pop() {
                Some(datagram) => return Ok((datagram.data, from_wasi(datagram.remote_address))),
                None => self.incoming_ready.wait().await,
            }
        }
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        if data.len() > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram of {} bytes exceeds {MAX_DATAGRAM}", data.len()),
            ));
        }
        cooperate().await;
        loop {
            match self.outgoing.check_send() {
                Ok(0) => self.outgoing_ready.wait().await,
                Ok(_) => break,
                Err(code) => return Err(io_error(code)),
            }
        }
        let datagram = OutgoingDatagram {
            data: data.to_vec(),
            remote_address: Some(to_wasi(to)),
        };
        match self.outgoing.send(&[datagram]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "datagram not sent",
            )),
            Err(ErrorCode::AccessDenied) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("sending to {to} is not granted"),
            )),
            Err(code) => Err(io_error(code)),
        }
    }
}
