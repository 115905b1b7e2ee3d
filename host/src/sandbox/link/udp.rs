//! UDP sockets judged one by one: each socket has its own conversation state
//! ([`UdpSocketState`](crate::policy::UdpSocketState): what it was bound as, which peers it
//! talks with), and received datagrams are judged in the guest's `receive` call, a bounded
//! batch at a time.
//!
//! - Creation (called by the socket constructor in `sockets`) gives the new socket its own
//!   address check, bound to its own state (see `network::grant_udp_socket`).
//! - `udp-socket.stream` records which socket a datagram stream reads, so that
//! - `incoming-datagram-stream.receive` can judge each datagram wasmtime-wasi read (at most
//!   16 a read) against that socket's state, record the decision and drop the refused ones.
//!   While all are refused it reads on, up to [`MAX_REFUSED_PER_CALL`]; then it returns none
//!   (as when nothing is queued) and the guest's next `poll` sees the socket still readable,
//!   so a flood of refused datagrams costs the guest a bounded step per call, never one
//!   unbounded host call.
//!
//! Which state belongs to which socket and stream is kept in `udp_sockets.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::sockets::network::{Host as _, IpAddressFamily, IpSocketAddress};
use wasmtime_wasi::p2::bindings::sockets::udp::{
    HostIncomingDatagramStream, HostUdpSocket, IncomingDatagram, IncomingDatagramStream,
};
use wasmtime_wasi::p2::bindings::sockets::udp_create_socket;
use wasmtime_wasi::p2::{SocketError, UdpSocket};
use wasmtime_wasi::sockets::{WasiSocketsCtx, WasiSocketsCtxView, WasiSocketsView};

use super::{UDP, guest_code};
use crate::policy::{SocketOp, UdpSocketState};
use crate::sandbox::network::{self, Receive};
use crate::sandbox::state::HostState;

/// Refused datagrams one `receive` call reads at most before it returns to the guest (with
/// nothing, as when nothing is queued): a flood of refused datagrams costs the guest a
/// bounded step per call, and the guest stays in control between them.
const MAX_REFUSED_PER_CALL: usize = 256;

/// Creates a UDP socket whose address checks are judged with a state of its own. The
/// constructor hook in `sockets` calls this instead of wasmtime-wasi's.
pub(crate) async fn create_socket(
    state: &mut HostState,
    family: IpAddressFamily,
) -> Result<Resource<UdpSocket>, SocketError> {
    let (mut own, socket_state) = own_context(state, Receive::InHook);
    let mut view = WasiSocketsCtxView {
        ctx: &mut own,
        table: &mut state.table,
    };
    let socket = udp_create_socket::Host::create_udp_socket(&mut view, family).await?;
    state.udp.insert_socket(socket.rep(), &socket_state);
    Ok(socket)
}

/// A sockets context holding one new UDP socket's own check, and that socket's state (for
/// either world: `p3/sockets.rs` creates 0.3's sockets in it too).
///
/// wasmtime-wasi copies the context's check into each socket it creates, and offers no other
/// way to give one socket its own: the socket is created in this context, with the guest's
/// table.
pub(super) fn own_context(
    state: &HostState,
    receive: Receive,
) -> (WasiSocketsCtx, Arc<UdpSocketState>) {
    let socket_state = Arc::new(state.gate.udp_socket());
    let mut builder = WasiCtxBuilder::new();
    network::grant_udp_socket(
        &mut builder,
        state.gate.clone(),
        state.shared.clone(),
        socket_state.clone(),
        receive,
    );
    (std::mem::take(builder.build().sockets()), socket_state)
}

/// Replaces `udp-socket.stream` and `incoming-datagram-stream.receive` (see the module
/// documentation).
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.instance(UDP)?.func_wrap_async(
        "[method]udp-socket.stream",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, remote): (Resource<UdpSocket>, Option<IpSocketAddress>)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let mut view = state.sockets();
                let streams = HostUdpSocket::stream(&mut view, socket, remote).await;
                let streams = guest_code(&mut view, streams)?;
                if let Ok((incoming, _)) = &streams {
                    state.udp.insert_stream(incoming.rep(), rep);
                }
                Ok((streams,))
            })
        },
    )?;
    linker.instance(UDP)?.func_wrap(
        "[method]incoming-datagram-stream.receive",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, max_results): (Resource<IncomingDatagramStream>, u64)| {
            let rep = stream.rep();
            let state = store.data_mut();
            // A stream whose socket state is unknown hears nobody (it cannot happen: every
            // stream is made by the hook above, from a socket made by `create_socket`).
            let socket = state.udp.stream(rep).unwrap_or_default();
            let (gate, shared) = (state.gate.clone(), state.shared.clone());
            let mut kept: Vec<IncomingDatagram> = Vec::new();
            let mut refused = 0;
            loop {
                let mut view = state.sockets();
                // wasmtime-wasi reads at most 16 datagrams (and ~64 KiB) a call.
                let this = Resource::new_borrow(rep);
                let datagrams =
                    match HostIncomingDatagramStream::receive(&mut view, this, max_results) {
                        Ok(datagrams) => datagrams,
                        Err(err) if refused == 0 => {
                            return Ok((Err(view.convert_error_code(err)?),));
                        }
                        // Reported by the next call; the refused ones were consumed.
                        Err(_) => break,
                    };
                let read = datagrams.len();
                let now = Instant::now();
                for datagram in datagrams {
                    let from = SocketAddr::from(datagram.remote_address);
                    let verdict = gate.check_udp(&socket, SocketOp::UdpReceive, from, now);
                    if !verdict.repeat {
                        shared.record(&verdict);
                    }
                    if verdict.allowed {
                        kept.push(datagram);
                    } else {
                        refused += 1;
                    }
                }
                // Refused datagrams are read on (draining the socket buffer, so a flood does
                // not crowd out the datagrams that are allowed) but at most
                // MAX_REFUSED_PER_CALL of them: then the guest gets control back.
                let drained = (read as u64) < max_results.min(16);
                if !kept.is_empty() || read == 0 || drained || refused >= MAX_REFUSED_PER_CALL {
                    break;
                }
            }
            super::traffic::received_datagrams(&shared, &kept);
            Ok((Ok(kept),))
        },
    )?;
    Ok(())
}
