//! Wiring the policy into wasmtime-wasi: every address the guest uses is judged by the
//! [`Gate`] and recorded before the operation happens.

use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::state::Shared;
use crate::policy::{Gate, SocketOp};

pub(crate) fn grant(builder: &mut WasiCtxBuilder, gate: Arc<Gate>, shared: Arc<Shared>) {
    builder.allow_tcp(true).allow_udp(true);
    builder.socket_addr_check(move |addr, use_| {
        let op = match use_ {
            SocketAddrUse::TcpBind => SocketOp::TcpBind,
            SocketAddrUse::TcpListen => SocketOp::TcpListen,
            SocketAddrUse::TcpAccept => SocketOp::TcpAccept,
            SocketAddrUse::TcpConnect => SocketOp::TcpConnect,
            SocketAddrUse::UdpBind => SocketOp::UdpBind,
            SocketAddrUse::UdpSend => SocketOp::UdpSend,
            SocketAddrUse::UdpReceive => SocketOp::UdpReceive,
        };
        let verdict = gate.check(op, addr);
        if !verdict.repeat {
            shared.record(&verdict);
        }
        let allowed = verdict.allowed;
        Box::pin(async move { allowed })
    });
}
