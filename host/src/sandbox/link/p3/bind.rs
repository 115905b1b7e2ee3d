//! A sharing guest's WASI 0.3 binds, checked against the process's port claims: the twin of
//! `link/bind.rs` (which explains the claims), on 0.3's `bind` of both socket kinds and the
//! address a listener got. A UDP bind that serves (a `udp-bind` grant) also reports the socket
//! ready, which 0.2 does in `finish-bind`.

use std::net::SocketAddr;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p3::bindings::sockets::types::{
    ErrorCode, HostTcpSocket, HostUdpSocket, IpSocketAddress,
};
use wasmtime_wasi::sockets::{TcpSocket, UdpSocket, WasiSocketsView};

use super::{SOCKETS, guest_code};
use crate::sandbox::link::bind::{claim_bound, post_bind, pre_bind};
use crate::sandbox::reuseport::{find_udp_p3, set_reuseport};
use crate::sandbox::state::HostState;
use crate::sandbox::types::Transport;

pub(super) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    let mut types = linker.instance(SOCKETS)?;
    types.func_wrap_async(
        "[method]tcp-socket.bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, local): (Resource<TcpSocket>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let Ok(claimed) = pre_bind(state, Transport::Tcp, addr) else {
                    return Ok((Err(ErrorCode::AddressInUse),));
                };
                let mut view = state.sockets();
                let result = guest_code(HostTcpSocket::bind(&mut view, socket, local).await)?;
                let bound = result.is_ok().then(|| {
                    HostTcpSocket::get_local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                post_bind(state, Transport::Tcp, addr, claimed, bound.flatten(), false);
                Ok((result,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]udp-socket.bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, local): (Resource<UdpSocket>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let Ok(claimed) = pre_bind(state, Transport::Udp, addr) else {
                    return Ok((Err(ErrorCode::AddressInUse),));
                };
                let share = state.share_ports;
                let mut view = state.sockets();
                // Port 0 without SO_REUSEPORT, so the kernel picks a port nobody shares.
                let unshared = if share && addr.port() == 0 {
                    let fd = find_udp_p3(&mut view, rep);
                    match fd.and_then(|fd| set_reuseport(fd, false).map(|()| fd)) {
                        Ok(fd) => Some(fd),
                        Err(err) => {
                            tracing::error!("cannot bind a shared UDP socket to port 0: {err:#}");
                            return Ok((Err(ErrorCode::Other(None)),));
                        }
                    }
                } else {
                    None
                };
                let result = guest_code(HostUdpSocket::bind(&mut view, socket, local).await)?;
                let bound = result.is_ok().then(|| {
                    HostUdpSocket::get_local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                let bound = bound.flatten();
                let serving = state.udp.serves(rep);
                if let Some(fd) = unshared
                    && (serving || result.is_err())
                    && let Err(err) = set_reuseport(fd, true)
                {
                    tracing::error!("cannot share the port of a UDP socket: {err:#}");
                }
                post_bind(state, Transport::Udp, addr, claimed, bound, serving);
                // A socket bound only to send serves nobody: not ready.
                if let Some(bound) = bound
                    && serving
                {
                    state.shared.socket_ready(Transport::Udp, bound);
                }
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

/// A sharing guest's listener claims the address it got, as 0.2's `start-listen` does.
pub(super) fn listening(state: &mut HostState, local: SocketAddr) {
    if state.share_ports {
        claim_bound(state, Transport::Tcp, local);
    }
}
