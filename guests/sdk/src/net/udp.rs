//! UDP: datagrams in and out with their boundaries kept, one at a time or in batches.
//!
//! A batch crosses to the host in one call each way (`receive` takes what is queued, `send`
//! what the last `check-send` permitted), so a busy server spends host calls, and poll rounds,
//! per batch rather than per datagram.

use std::cell::Cell;
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
    /// The last receive came back short: the queue was empty, so wait before the next one.
    drained: Cell<bool>,
    // Field order is drop order: pollables, then the streams they watch, then the socket.
    incoming_ready: Registration,
    outgoing_ready: Registration,
    incoming: IncomingDatagramStream,
    outgoing: OutgoingDatagramStream,
    socket: wasip2::sockets::udp::UdpSocket,
}

impl UdpSocket {
    /// The most datagrams one receive or send call moves: wasmtime's limit per call.
    pub const MAX_BATCH: usize = 16;

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
            drained: Cell::new(false),
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
        let mut datagrams = self.recv_batch(1).await?;
        Ok(datagrams.swap_remove(0))
    }

    /// Waits until at least one datagram has come, then returns those queued, oldest first, up
    /// to `max` (taken as 1 to [`UdpSocket::MAX_BATCH`]): payloads and senders.
    pub async fn recv_batch(&self, max: usize) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
        cooperate().await;
        let max = max.clamp(1, Self::MAX_BATCH);
        loop {
            if self.drained.get() {
                self.incoming_ready.wait().await;
            }
            let datagrams = self.incoming.receive(max as u64).map_err(io_error)?;
            self.drained.set(datagrams.len() < max);
            if !datagrams.is_empty() {
                return Ok(datagrams
                    .into_iter()
                    .map(|d| (d.data, from_wasi(d.remote_address)))
                    .collect());
            }
        }
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.send_batch([(data.to_vec(), to)]).await.pop() {
            Some((_, err)) => Err(err),
            None => Ok(()),
        }
    }

    /// Sends every datagram of `batch` (payload, destination) in order, as many per host call
    /// as the host permits, waiting whenever it permits none. A datagram that cannot be sent
    /// (a destination not granted, a payload over [`MAX_DATAGRAM`]) does not hold up the
    /// others: it comes back with its error, and the list is empty when all went out.
    pub async fn send_batch(
        &self,
        batch: impl IntoIterator<Item = (Vec<u8>, SocketAddr)>,
    ) -> Vec<(SocketAddr, io::Error)> {
        let mut failed = Vec::new();
        let datagrams: Vec<_> = batch
            .into_iter()
            .filter_map(|(data, to)| {
                if data.len() > MAX_DATAGRAM {
                    let message =
                        format!("datagram of {} bytes exceeds {MAX_DATAGRAM}", data.len());
                    failed.push((to, io::Error::new(io::ErrorKind::InvalidInput, message)));
                    return None;
                }
                Some(OutgoingDatagram {
                    data,
                    remote_address: Some(to_wasi(to)),
                })
            })
            .collect();
        if datagrams.is_empty() {
            return failed;
        }
        cooperate().await;
        for (index, code) in send_all(self, &datagrams).await {
            let to = datagrams[index]
                .remote_address
                .map(from_wasi)
                .expect("every datagram here has a destination");
            failed.push((to, send_error(code, to)));
        }
        failed
    }
}

/// The outgoing side as [`send_all`] drives it: WASI's `check-send` and `send`, and a wait for
/// the stream to take more. A seam so the batching rules are tested natively, on a fake.
trait Outgoing {
    type Datagram;
    fn check_send(&self) -> Result<u64, ErrorCode>;
    fn send(&self, datagrams: &[Self::Datagram]) -> Result<u64, ErrorCode>;
    async fn writable(&self);
}

impl Outgoing for UdpSocket {
    type Datagram = OutgoingDatagram;

    fn check_send(&self) -> Result<u64, ErrorCode> {
        self.outgoing.check_send()
    }

    fn send(&self, datagrams: &[OutgoingDatagram]) -> Result<u64, ErrorCode> {
        self.outgoing.send(datagrams)
    }

    async fn writable(&self) {
        self.outgoing_ready.wait().await
    }
}

/// Sends all of `datagrams`, in order, each `send` within the permit of the `check-send` just
/// before it (sending more traps the guest). Returns the index and error of each that failed.
///
/// WASI reports an error only for the first datagram of a call: one failing further on ends
/// the call early with the count sent before it, as a full buffer does. The next call starts
/// at that datagram, which then goes out or fails as the first; a datagram refused mid-call is
/// thus tried twice (and the host records its denial twice).
async fn send_all<O: Outgoing>(out: &O, datagrams: &[O::Datagram]) -> Vec<(usize, ErrorCode)> {
    let mut failed = Vec::new();
    let mut next = 0;
    while next < datagrams.len() {
        let permit = match out.check_send() {
            Ok(0) => {
                out.writable().await;
                continue;
            }
            Ok(permit) => usize::try_from(permit).unwrap_or(usize::MAX),
            Err(code) => {
                // The stream itself is broken: nothing more will go out.
                failed.extend((next..datagrams.len()).map(|index| (index, code)));
                break;
            }
        };
        let end = datagrams.len().min(next.saturating_add(permit));
        match out.send(&datagrams[next..end]) {
            // Nothing taken although permitted: the host's buffer filled meanwhile.
            Ok(0) => out.writable().await,
            Ok(sent) => next += usize::try_from(sent).unwrap_or(usize::MAX).min(end - next),
            Err(code) => {
                failed.push((next, code));
                next += 1;
            }
        }
    }
    failed
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use std::cell::{Cell, RefCell};

    /// wasmtime's outgoing datagram stream in miniature: a permit per `check-send`, datagrams
    /// numbered by what they carry, some refused, and a buffer that fills up now and then.
    #[derive(Default)]
    struct FakeOutgoing {
        permit: Cell<u64>,
        /// Datagrams taken before the buffer is full; `None`: never full.
        room: Cell<Option<usize>>,
        refused: Vec<u32>,
        sent: RefCell<Vec<u32>>,
        attempts: RefCell<Vec<u32>>,
        waits: Cell<usize>,
    }

    impl Outgoing for FakeOutgoing {
        type Datagram = u32;

        fn check_send(&self) -> Result<u64, ErrorCode> {
            let permit = if self.room.get() == Some(0) { 0 } else { 16 };
            self.permit.set(permit);
            Ok(permit)
        }

        fn send(&self, datagrams: &[u32]) -> Result<u64, ErrorCode> {
            assert!(
                datagrams.len() as u64 <= self.permit.replace(0),
                "trap: unpermitted"
            );
            let mut count = 0;
            for &datagram in datagrams {
                if self.room.get() == Some(0) {
                    break;
                }
                self.attempts.borrow_mut().push(datagram);
                if self.refused.contains(&datagram) {
                    return if count == 0 {
                        Err(ErrorCode::AccessDenied)
                    } else {
                        Ok(count)
                    };
                }
                self.sent.borrow_mut().push(datagram);
                self.room.set(self.room.get().map(|room| room - 1));
                count += 1;
            }
            Ok(count)
        }

        async fn writable(&self) {
            self.waits.set(self.waits.get() + 1);
            self.room.set(Some(5));
        }
    }

    fn send(fake: &FakeOutgoing, datagrams: &[u32]) -> Vec<(usize, ErrorCode)> {
        block_on(send_all(fake, datagrams))
    }

    #[test]
    fn a_batch_goes_out_in_calls_of_at_most_the_permit() {
        let fake = FakeOutgoing::default();
        let datagrams: Vec<u32> = (0..40).collect();
        assert!(send(&fake, &datagrams).is_empty());
        assert_eq!(*fake.sent.borrow(), datagrams);
    }

    #[test]
    fn refused_datagrams_fail_alone_and_the_rest_go_out() {
        let fake = FakeOutgoing {
            refused: vec![0, 3, 4, 9],
            ..FakeOutgoing::default()
        };
        let failed = send(&fake, &(0..10).collect::<Vec<_>>());
        let indices: Vec<_> = failed.iter().map(|&(index, _)| index).collect();
        assert_eq!(indices, [0, 3, 4, 9]);
        assert!(
            failed
                .iter()
                .all(|&(_, code)| code == ErrorCode::AccessDenied)
        );
        assert_eq!(*fake.sent.borrow(), [1, 2, 5, 6, 7, 8]);
        // The first of a call is tried once; one found further on is tried again to learn why.
        let tries = |d| fake.attempts.borrow().iter().filter(|&&a| a == d).count();
        assert_eq!((tries(0), tries(3), tries(4), tries(9)), (1, 2, 1, 2));
    }

    #[test]
    fn a_full_buffer_waits_and_loses_nothing() {
        let fake = FakeOutgoing {
            room: Cell::new(Some(3)),
            ..FakeOutgoing::default()
        };
        let datagrams: Vec<u32> = (0..20).collect();
        assert!(send(&fake, &datagrams).is_empty());
        assert_eq!(*fake.sent.borrow(), datagrams);
        assert_eq!(fake.waits.get(), 4, "after 3, then every 5");
    }
}
