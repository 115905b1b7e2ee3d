//! A sharing guest's binds, checked against the process's port claims (see `ports.rs`).
//!
//! `start-bind` of both socket kinds and TCP `start-listen` are replaced: for a guest that
//! shares its ports (`--instances`), a bind is checked against (and recorded in) the process's
//! claims, and so is the address a listener got, so no other guest's instances can join its
//! port. A UDP bind to port 0 would let the kernel pick a port another group shares, so it is
//! made without `SO_REUSEPORT`, which is set again once the port is chosen (the kernel forms a
//! UDP group when the second socket joins, TCP's at `listen`, and never shares a TCP port 0).

use std::net::SocketAddr;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpSocketAddress, Network};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::{TCP, UDP, guest_code};
use crate::policy::SocketOp;
use crate::sandbox::ports::{MAX_CLAIMS, Unclaimed};
use crate::sandbox::reuseport::{find_udp, set_reuseport};
use crate::sandbox::state::HostState;
use crate::sandbox::types::Transport;

/// Replaces `start-bind` of both socket kinds and TCP `start-listen` (see the module's
/// documentation).
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(TCP)?.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, network, local): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let claimed = match pre_bind(state, Transport::Tcp, addr) {
                    Ok(claimed) => claimed,
                    Err(code) => return Ok((Err(code),)),
                };
                let mut view = state.sockets();
                let result = HostTcpSocket::start_bind(&mut view, socket, network, local).await;
                let result = guest_code(&mut view, result)?;
                let bound = result.is_ok().then(|| {
                    HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                post_bind(state, Transport::Tcp, addr, claimed, bound.flatten(), false);
                Ok((result,))
            })
        },
    )?;
    linker.instance(TCP)?.func_wrap_async(
        "[method]tcp-socket.start-listen",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let mut view = state.sockets();
                let result = HostTcpSocket::start_listen(&mut view, socket).await;
                let result = guest_code(&mut view, result)?;
                let local = HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep));
                if result.is_ok()
                    && state.share_ports
                    && let Ok(local) = local
                {
                    claim_bound(state, Transport::Tcp, SocketAddr::from(local));
                }
                Ok((result,))
            })
        },
    )?;
    linker.instance(UDP)?.func_wrap_async(
        "[method]udp-socket.start-bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let claimed = match pre_bind(state, Transport::Udp, addr) {
                    Ok(claimed) => claimed,
                    Err(code) => return Ok((Err(code),)),
                };
                let share = state.share_ports;
                let mut view = state.sockets();
                // Port 0 without SO_REUSEPORT, so the kernel picks a port nobody shares.
                let unshared = if share && addr.port() == 0 {
                    let fd = find_udp(&mut view, rep);
                    match fd.and_then(|fd| set_reuseport(fd, false).map(|()| fd)) {
                        Ok(fd) => Some(fd),
                        Err(err) => {
                            tracing::error!("cannot bind a shared UDP socket to port 0: {err:#}");
                            return Ok((Err(ErrorCode::Unknown),));
                        }
                    }
                } else {
                    None
                };
                let result = HostUdpSocket::start_bind(&mut view, socket, network, local).await;
                let result = guest_code(&mut view, result)?;
                let bound = result.is_ok().then(|| {
                    HostUdpSocket::local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                let serving = state.udp.serves(rep);
                // A server's port is shared again, for its other instances to join; a socket
                // bound to send keeps its port to itself. A failed bind leaves it as it was.
                if let Some(fd) = unshared
                    && (serving || result.is_err())
                    && let Err(err) = set_reuseport(fd, true)
                {
                    tracing::error!("cannot share the port of a UDP socket: {err:#}");
                }
                post_bind(state, Transport::Udp, addr, claimed, bound.flatten(), serving);
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

/// Before a sharing guest's bind to a specific port that its policy grants: claims the
/// address for its group, or refuses with `address-in-use` if another group holds it. Returns
/// whether a claim was added. Binds the policy refuses are left to the policy (and its audit).
pub(super) fn pre_bind(
    state: &mut HostState,
    transport: Transport,
    addr: SocketAddr,
) -> Result<bool, ErrorCode> {
    if !state.share_ports || addr.port() == 0 {
        return Ok(false);
    }
    let op = match transport {
        Transport::Tcp => SocketOp::TcpBind,
        Transport::Udp => SocketOp::UdpBind,
    };
    if !state.gate.check(op, addr).allowed {
        return Ok(false);
    }
    state.ports.claim(transport, addr).map_err(|why| {
        let guest = &state.shared.guest;
        match why {
            Unclaimed::Taken(_) => tracing::warn!(
                guest = %guest,
                "{transport} {addr} is shared by another guest's instances; bind refused \
                 (address-in-use)"
            ),
            Unclaimed::Full => tracing::warn!(
                guest = %guest,
                "{transport} {addr}: this instance holds {MAX_CLAIMS} shared addresses already; \
                 bind refused (address-in-use)"
            ),
        }
        ErrorCode::AddressInUse
    })
}

/// After the bind: a failed one gives its claim back; a UDP server's bind to port 0 claims
/// the port it got (a TCP socket's is claimed when it listens; client sockets, bound to send
/// or connect, claim nothing).
pub(super) fn post_bind(
    state: &mut HostState,
    transport: Transport,
    addr: SocketAddr,
    claimed: bool,
    bound: Option<SocketAddr>,
    serving: bool,
) {
    let Some(actual) = bound else {
        if claimed {
            state.ports.release(transport, addr);
        }
        return;
    };
    // The kernel gave a port no other sharing socket held (TCP never shares a port 0, and the
    // UDP bind above was unshared), so the claim cannot conflict.
    if state.share_ports && addr.port() == 0 && serving {
        claim_bound(state, transport, actual);
    }
}

/// Claims an address the kernel chose (a port no other sharing socket held: TCP never shares
/// a port 0, and a UDP port-0 bind is made unshared), so only the cap can refuse it.
pub(super) fn claim_bound(state: &mut HostState, transport: Transport, actual: SocketAddr) {
    if let Err(why) = state.ports.claim(transport, actual) {
        tracing::warn!(guest = %state.shared.guest, "{transport} {actual} not claimed: {why:?}");
    }
}
