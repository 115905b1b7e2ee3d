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

/// Where a UDP socket's received datagrams are judged.
#[derive(Clone, Copy)]
pub(crate) enum Receive {
    /// By the `receive` hook, a bounded batch a call (WASI 0.2, `link/udp.rs`): wasmtime-wasi
    /// drops a datagram this check refuses inside a loop that reads the next one at once, so a
    /// flood of refused datagrams would keep one host call spinning for as long as it lasts.
    InHook,
    /// Here, one datagram at a time (WASI 0.3 has no batch to judge in a hook). A refused one
    /// costs a yield: wasmtime-wasi drops it and reads the next in a loop, and the yield lets
    /// the guest's other tasks and every other guest run while a flood lasts.
    Here,
}

/// The check of one UDP socket, with that socket's conversation state.
pub(crate) fn grant_udp_socket(
    builder: &mut WasiCtxBuilder,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    socket: Arc<UdpSocketState>,
    receive: Receive,
) {
    builder.allow_udp(true);
    builder.socket_addr_check(move |addr, use_| {
        let judged_here = match use_ {
            SocketAddrUse::UdpReceive => matches!(receive, Receive::Here),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend => true,
            // A UDP socket never asks about TCP; refuse rather than guess.
            _ => return Box::pin(async { false }),
        };
        let allowed = !judged_here || {
            let verdict = gate.check_udp(&socket, op(use_), addr, Instant::now());
            if !verdict.repeat {
                shared.record(&verdict);
            }
            verdict.allowed
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
