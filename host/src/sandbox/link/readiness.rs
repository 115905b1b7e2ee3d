//! Knowing when a guest's socket is ready, for any component.
//!
//! A socket is ready when listening (TCP) or binding (UDP) has finished: from then on a
//! client's connection or datagram is queued by the OS. Guests built on `control` say so
//! themselves, but third-party components do not, so the host wraps the two WASI functions
//! that complete those operations and reports the socket's local address when they succeed.

use std::net::SocketAddr;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::{TCP, UDP, guest_code};
use crate::sandbox::state::HostState;
use crate::sandbox::types::Transport;

/// Replaces `finish-listen` and UDP `finish-bind` with versions that also report readiness.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.finish-listen",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            let rep = socket.rep();
            let state = store.data_mut();
            let mut view = state.sockets();
            let result = match HostTcpSocket::finish_listen(&mut view, socket) {
                Ok(()) => HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep))
                    .map(SocketAddr::from),
                Err(err) => Err(err),
            };
            let result = guest_code(&mut view, result)?;
            if let Ok(addr) = result {
                state.shared.socket_ready(Transport::Tcp, addr);
            }
            Ok((result.map(drop),))
        },
    )?;
    linker.instance(UDP)?.func_wrap(
        "[method]udp-socket.finish-bind",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<UdpSocket>,)| {
            let rep = socket.rep();
            let state = store.data_mut();
            let mut view = state.sockets();
            let result = match HostUdpSocket::finish_bind(&mut view, socket) {
                Ok(()) => HostUdpSocket::local_address(&mut view, Resource::new_borrow(rep))
                    .map(SocketAddr::from),
                Err(err) => Err(err),
            };
            let result = guest_code(&mut view, result)?;
            // A socket bound only to send (see `udp`) serves nobody: not ready.
            if let Ok(addr) = result
                && state.udp.serves(rep)
            {
                state.shared.socket_ready(Transport::Udp, addr);
            }
            Ok((result.map(drop),))
        },
    )?;
    Ok(())
}
