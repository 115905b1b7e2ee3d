//! Datagrams counted for metrics (WASI 0.3): UDP's `send` and `receive`, answered by
//! wasmtime-wasi's own implementation, plus the count (the twin of `link/traffic.rs`'s UDP
//! part).
//!
//! A 0.3 TCP connection's bytes are not counted: they move between the guest's memory and the
//! socket inside wasmtime-wasi's stream producer and consumer, which no linker function sees
//! (counting them would mean relaying every byte through the host).

use anyhow::Result;
use wasmtime::component::{Accessor, Linker, Resource};
use wasmtime_wasi::p3::bindings::sockets::types::{HostUdpSocketWithStore, IpSocketAddress};
use wasmtime_wasi::sockets::{UdpSocket, WasiSockets, WasiSocketsCtxView, WasiSocketsView};

use super::{SOCKETS, guest_code};
use crate::sandbox::state::HostState;

pub(super) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    let mut types = linker.instance(SOCKETS)?;
    types.func_wrap_concurrent(
        "[method]udp-socket.send",
        |store: &Accessor<HostState>,
         (socket, data, remote): (Resource<UdpSocket>, Vec<u8>, Option<IpSocketAddress>)| {
            Box::pin(async move {
                let bytes = data.len();
                let sockets = store.with_getter::<WasiSockets>(sockets_of);
                let sent = WasiSockets::send(&sockets, socket, data, remote).await;
                let sent = guest_code(sent)?;
                if sent.is_ok() {
                    store.with(|mut access| {
                        access.data_mut().shared.metrics.datagrams_sent(1, bytes)
                    });
                }
                Ok((sent,))
            })
        },
    )?;
    types.func_wrap_concurrent(
        "[method]udp-socket.receive",
        |store: &Accessor<HostState>, (socket,): (Resource<UdpSocket>,)| {
            Box::pin(async move {
                let sockets = store.with_getter::<WasiSockets>(sockets_of);
                let received = guest_code(WasiSockets::receive(&sockets, socket).await)?;
                // Only what the policy let through reaches here: refused datagrams are dropped
                // inside wasmtime-wasi's receive (`network.rs`, `Receive::Here`).
                if let Ok((data, _)) = &received {
                    let bytes = data.len();
                    store.with(|mut access| {
                        access
                            .data_mut()
                            .shared
                            .metrics
                            .datagrams_received(1, bytes)
                    });
                }
                Ok((received,))
            })
        },
    )?;
    Ok(())
}

/// wasmtime-wasi's view of the guest's sockets, as its own linker functions get it.
fn sockets_of(state: &mut HostState) -> WasiSocketsCtxView<'_> {
    state.sockets()
}
