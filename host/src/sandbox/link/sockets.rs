//! Sockets counted where they are born and die, against the guest's [`SocketLedger`].
//!
//! The host replaces wasmtime-wasi's `create-tcp-socket`, `create-udp-socket` and `accept`,
//! and the destructors of both socket resources (the constructors also set `SO_REUSEPORT` when
//! instances share ports). A guest with no TCP (UDP) rule at all gets `access-denied` before
//! any socket reaches the OS; at its own cap, or when the guests of this process together
//! reach the process's budget, creating fails with `new-socket-limit` and a client it would
//! have accepted is accepted by the host and closed at once, so the guest never spins on a
//! full backlog.
//!
//! [`SocketLedger`]: crate::sandbox::ledger::SocketLedger

use std::net::SocketAddr;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Host as _, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{SocketError, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::{TCP, TCP_CREATE, UDP, UDP_CREATE, guest_code};
use crate::audit::AuditEvent;
use crate::sandbox::ledger::Refusal;
use crate::sandbox::reuseport;
use crate::sandbox::state::HostState;
use crate::sandbox::types::Transport;

/// Replaces socket creation, accept and the socket destructors with counting versions.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(TCP_CREATE)?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            if let Err(refusal) = admit(state, family, Transport::Tcp) {
                return Ok((Err(refusal),));
            }
            let result = tcp_create_socket::Host::create_tcp_socket(&mut state.sockets(), family);
            Ok((created(
                state,
                result,
                Transport::Tcp,
                reuseport::share_tcp,
            )?,))
        },
    )?;
    linker.instance(UDP_CREATE)?.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Err(refusal) = admit(state, family, Transport::Udp) {
                    return Ok((Err(refusal),));
                }
                let result = super::udp::create_socket(state, family).await;
                Ok((created(
                    state,
                    result,
                    Transport::Udp,
                    reuseport::share_udp,
                )?,))
            })
        },
    )?;
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: StoreContextMut<'_, HostState>, (listener,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let mut view = state.sockets();
            let accepted = match HostTcpSocket::accept(&mut view, listener) {
                Ok(accepted) => accepted,
                Err(err) => return Ok((Err(view.convert_error_code(err)?),)),
            };
            let streams = Some((accepted.1.rep(), accepted.2.rep()));
            let Err(refusal) = state.ledger.accept(accepted.0.rep(), streams) else {
                return Ok((Ok(accepted),));
            };
            let peer = close_accepted(state, accepted)?;
            let event =
                AuditEvent::refused(&state.shared.guest, "tcp-accept", peer, refusal.rule());
            state.shared.record_event(event);
            // Over max-connections the guest is not told: the host refused the client itself,
            // and the guest goes on waiting for the next one.
            let code = match refusal {
                Refusal::MaxConnections(_) => ErrorCode::WouldBlock,
                _ => ErrorCode::NewSocketLimit,
            };
            Ok((Err(code),))
        },
    )?;
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            let rep = socket.rep();
            let state = store.data_mut();
            let mut view = state.sockets();
            let result = HostTcpSocket::finish_connect(&mut view, socket);
            let result = guest_code(&mut view, result)?;
            if let Ok((input, output)) = &result {
                state.ledger.connected(rep, input.rep(), output.rep());
            }
            Ok((result,))
        },
    )?;
    linker.instance(TCP)?.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.ledger.release(rep);
            Ok(())
        },
    )?;
    linker.instance(UDP)?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            HostUdpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.ledger.release(rep);
            Ok(())
        },
    )?;
    Ok(())
}

/// Decides whether the guest may create one more socket; records a refusal.
fn admit(
    state: &mut HostState,
    family: IpAddressFamily,
    transport: Transport,
) -> Result<(), ErrorCode> {
    let family = match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    };
    admit_socket(state, family, transport).map_err(|refusal| match refusal {
        Refusal::NoGrant => ErrorCode::AccessDenied,
        _ => ErrorCode::NewSocketLimit,
    })
}

/// [`admit`] for either world: counts the socket in the ledger, or records why not.
pub(super) fn admit_socket(
    state: &mut HostState,
    family: &str,
    transport: Transport,
) -> Result<(), Refusal> {
    state.ledger.admit(transport).inspect_err(|refusal| {
        let use_ = match transport {
            Transport::Tcp => "tcp-create",
            Transport::Udp => "udp-create",
        };
        let event = AuditEvent::refused(&state.shared.guest, use_, family, refusal.rule());
        state.shared.record_event(event);
    })
}

/// A socket the guest was admitted to create, created or not: shared with the guest's other
/// instances if they share ports (`share`; a socket that cannot be is closed again), or its
/// place in the ledger given back if there is no socket after all.
fn created<T: Send + 'static>(
    state: &mut HostState,
    result: Result<Resource<T>, SocketError>,
    transport: Transport,
    share: fn(&mut WasiSocketsCtxView<'_>, u32) -> anyhow::Result<()>,
) -> wasmtime::Result<Result<Resource<T>, ErrorCode>> {
    let share_ports = state.share_ports;
    let mut view = state.sockets();
    let mut result = guest_code(&mut view, result)?;
    if share_ports && let Ok(socket) = &result {
        let rep = socket.rep();
        if let Err(err) = share(&mut view, rep) {
            let kind = transport.to_string().to_uppercase();
            tracing::error!("cannot share the port of a {kind} socket: {err:#}");
            drop(view.table.delete(Resource::<T>::new_own(rep))?);
            result = Err(ErrorCode::Unknown);
        }
    }
    if result.is_err() {
        state.ledger.refund();
    }
    Ok(result)
}

/// Takes an accepted connection out of the guest's table and closes it; returns its peer.
fn close_accepted(
    state: &mut HostState,
    (socket, input, output): (
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    ),
) -> wasmtime::Result<String> {
    let peer =
        HostTcpSocket::remote_address(&mut state.sockets(), Resource::new_borrow(socket.rep()))
            .map(|addr| SocketAddr::from(addr).to_string())
            .unwrap_or_else(|_| "unknown".into());
    // Children first: the table refuses to delete a socket whose streams are alive.
    drop(state.table.delete(output)?);
    drop(state.table.delete(input)?);
    drop(state.table.delete(socket)?);
    Ok(peer)
}
