//! WASI 0.3 sockets counted where they are born and die, and readiness: the 0.3 twins of
//! `link/sockets.rs` and `link/readiness.rs`.
//!
//! - `[static]tcp-socket.create` and `[static]udp-socket.create` are admitted by the guest's
//!   [`SocketLedger`](crate::sandbox::ledger::SocketLedger) exactly as 0.2's constructors are (a
//!   guest with no TCP or UDP rule gets `access-denied`, one at its cap `new-socket-limit`), and
//!   share their port when the guest runs as several instances. A UDP socket gets its own
//!   address check, bound to its own conversation state (see `network::grant_udp_socket`).
//! - `[method]tcp-socket.listen` reports the socket ready, as 0.2's `finish-listen` does, and
//!   hands the guest a stream of accepted connections that the ledger counts (see `accept`).
//! - The destructors of both socket resources give the socket's place back.
//!
//! UDP readiness (a bind that serves) is reported by `bind`, which replaces the bind functions.

use std::net::SocketAddr;

use anyhow::Result;
use wasmtime::component::{Access, Linker, Resource, ResourceType};
use wasmtime::{AsContextMut, StoreContextMut};
use wasmtime_wasi::p3::bindings::sockets::types::{
    ErrorCode, HostTcpSocket, HostTcpSocketWithStore, HostUdpSocket, IpAddressFamily,
};
use wasmtime_wasi::p3::sockets::SocketError;
use wasmtime_wasi::sockets::{
    TcpSocket, UdpSocket, WasiSockets, WasiSocketsCtxView, WasiSocketsView,
};

use super::{SOCKETS, accept, guest_code};
use crate::sandbox::ledger::Refusal;
use crate::sandbox::link::sockets::admit_socket;
use crate::sandbox::link::udp;
use crate::sandbox::network::Receive;
use crate::sandbox::reuseport;
use crate::sandbox::state::HostState;
use crate::sandbox::types::Transport;

/// What a 0.3 guest at its socket cap is told, in `error-code.other`.
pub(crate) const NEW_SOCKET_LIMIT: &str = "new-socket-limit";

pub(super) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    let mut types = linker.instance(SOCKETS)?;
    types.func_wrap(
        "[static]tcp-socket.create",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            if let Err(code) = admit(state, family, Transport::Tcp) {
                return Ok((Err(code),));
            }
            let result = HostTcpSocket::create(&mut state.sockets(), family);
            Ok((created(state, result, Transport::Tcp)?,))
        },
    )?;
    types.func_wrap_async(
        "[static]udp-socket.create",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Err(code) = admit(state, family, Transport::Udp) {
                    return Ok((Err(code),));
                }
                let result = create_udp(state, family).await;
                Ok((created(state, result, Transport::Udp)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]tcp-socket.listen",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            Box::new(async move {
                let rep = socket.rep();
                let access = Access::<HostState, WasiSockets>::new(store.as_context_mut(), view);
                let listening = HostTcpSocketWithStore::listen(access, socket).await;
                let listening = match guest_code(listening)? {
                    Ok(listening) => listening,
                    Err(code) => return Ok((Err(code),)),
                };
                let state = store.data_mut();
                let local = HostTcpSocket::get_local_address(
                    &mut state.sockets(),
                    Resource::new_borrow(rep),
                );
                if let Ok(local) = local {
                    let local = SocketAddr::from(local);
                    super::bind::listening(state, local);
                    state.shared.socket_ready(Transport::Tcp, local);
                }
                Ok((Ok(accept::counted(store, listening)?),))
            })
        },
    )?;
    types.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.ledger.release(rep);
            Ok(())
        },
    )?;
    types.resource(
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

/// The guest's sockets, for wasmtime-wasi's functions that take the store.
fn view(state: &mut HostState) -> WasiSocketsCtxView<'_> {
    state.sockets()
}

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
        // 0.3 has no `new-socket-limit`: the nearest code, with 0.2's name as its text.
        _ => ErrorCode::Other(Some(NEW_SOCKET_LIMIT.into())),
    })
}

/// A UDP socket with its own address check, as `link/udp.rs` makes 0.2's; 0.3's received
/// datagrams are judged in that check.
async fn create_udp(
    state: &mut HostState,
    family: IpAddressFamily,
) -> Result<Resource<UdpSocket>, SocketError> {
    let (mut own, socket_state) = udp::own_context(state, Receive::Here);
    let mut view = WasiSocketsCtxView {
        ctx: &mut own,
        table: &mut state.table,
    };
    let socket = HostUdpSocket::create(&mut view, family).await?;
    state.udp.insert_socket(socket.rep(), &socket_state);
    Ok(socket)
}

/// A socket the guest was admitted to create: shared with its other instances if they share
/// ports (a socket that cannot be is closed again), or its place given back if there is none.
fn created<T: Send + 'static>(
    state: &mut HostState,
    result: Result<Resource<T>, SocketError>,
    transport: Transport,
) -> wasmtime::Result<Result<Resource<T>, ErrorCode>> {
    let mut result = guest_code(result)?;
    if state.share_ports
        && let Ok(socket) = &result
    {
        let rep = socket.rep();
        let mut view = state.sockets();
        let shared = match transport {
            Transport::Tcp => reuseport::share_tcp_p3(&mut view, rep),
            Transport::Udp => reuseport::share_udp_p3(&mut view, rep),
        };
        if let Err(err) = shared {
            let kind = transport.to_string().to_uppercase();
            tracing::error!("cannot share the port of a {kind} socket: {err:#}");
            drop(view.table.delete(Resource::<T>::new_own(rep))?);
            result = Err(ErrorCode::Other(None));
        }
    }
    if result.is_err() {
        state.ledger.refund();
    }
    Ok(result)
}
