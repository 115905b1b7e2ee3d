//! Wiring the policy into wasmtime-wasi: every address the guest uses is judged by the
//! [`Gate`] and recorded before the operation happens.
//!
//! wasmtime-wasi hands each socket, when it is created, a copy of the context's address check,
//! and calls it with an address and a use only, never saying which socket. TCP needs no more.
//! For UDP the answer depends on the socket (who it sent to, whether it was bound to serve),
//! so every UDP socket is created with its own check, bound to its own [`UdpSocketState`]
//! (see `link/udp.rs`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::state::Shared;
use crate::policy::{Gate, SocketOp, UdpSocketState};

/// The context's check: TCP, and any UDP question asked outside a socket of its own (none is:
/// every UDP socket gets [`grant_udp_socket`]'s check), judged as for a fresh socket.
pub(crate) fn grant(builder: &mut WasiCtxBuilder, gate: Arc<Gate>, shared: Arc<Shared>) {
    builder.allow_tcp(true).allow_udp(true);
    builder.socket_addr_check(move |addr, use_| {
        let verdict = gate.check(op(use_), addr);
        if !verdict.repeat {
            shared.record(&verdict);
        }
        let allowed = verdict.allowed;
        Box::pin(async move { allowed })
    });
}

/// The check of one UDP socket, with that socket's conversation state.
///
/// A received datagram is let through here and judged by the `receive` hook instead (see
/// `link/udp.rs`): wasmtime-wasi drops a datagram this check refuses inside a loop that reads
/// the next one at once, so a flood of refused datagrams would keep one host call (or one
/// runtime task) spinning for as long as it lasts. The hook judges at most one batch per call.
pub(crate) fn grant_udp_socket(
    builder: &mut WasiCtxBuilder,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    socket: Arc<UdpSocketState>,
) {
    builder.allow_udp(true);
    builder.socket_addr_check(move |addr, use_| {
        let allowed = match use_ {
            SocketAddrUse::UdpReceive => true,
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend => {
                let verdict = gate.check_udp(&socket, op(use_), addr, Instant::now());
                if !verdict.repeat {
                    shared.record(&verdict);
                }
                verdict.allowed
            }
            // A UDP socket never asks about TCP; refuse rather than guess.
            _ => false,
        };
        Box::pin(async move { allowed })
    });
}

/// The check of one WASI 0.3 UDP socket. 0.3 has no datagram batch to judge in a hook (its
/// `receive` is one datagram per call), so each received datagram is judged here, and one the
/// policy refuses costs a yield: wasmtime-wasi drops it and reads the next in a loop, and the
/// yield lets the guest's other tasks and every other guest run while a flood of refused
/// datagrams lasts.
pub(crate) fn grant_udp_socket_p3(
    builder: &mut WasiCtxBuilder,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    socket: Arc<UdpSocketState>,
) {
    builder.allow_udp(true);
    builder.socket_addr_check(move |addr, use_| {
        let allowed = match use_ {
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                let verdict = gate.check_udp(&socket, op(use_), addr, Instant::now());
                if !verdict.repeat {
                    shared.record(&verdict);
                }
                verdict.allowed
            }
            _ => false,
        };
        Box::pin(async move {
            if !allowed && matches!(use_, SocketAddrUse::UdpReceive) {
                tokio::task::yield_now().await;
            }
            allowed
        })
    });
}

fn op(use_: SocketAddrUse) -> SocketOp {
    match use_ {
        SocketAddrUse::TcpBind => SocketOp::TcpBind,
        SocketAddrUse::TcpListen => SocketOp::TcpListen,
        SocketAddrUse::TcpAccept => SocketOp::TcpAccept,
        SocketAddrUse::TcpConnect => SocketOp::TcpConnect,
        SocketAddrUse::UdpBind => SocketOp::UdpBind,
        SocketAddrUse::UdpSend => SocketOp::UdpSend,
        SocketAddrUse::UdpReceive => SocketOp::UdpReceive,
    }
}
