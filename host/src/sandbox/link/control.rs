//! The host side of `sockbox:guest/control`: granted addresses, ready, shutdown.

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::bindings::io::poll::Pollable as PollableHandle;
use wasmtime_wasi::p2::bindings::sockets::network::IpSocketAddress;
use wasmtime_wasi::p2::{Pollable, subscribe};

use crate::sandbox::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "control-only",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io/poll": wasmtime_wasi::p2::bindings::io::poll,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
        },
    });
}

use bindings::sockbox::guest::control;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    Ok(control::add_to_linker::<HostState, HasSelf<HostState>>(
        linker,
        |state| state,
    )?)
}

impl control::Host for HostState {
    fn listen_addresses(&mut self) -> wasmtime::Result<Vec<IpSocketAddress>> {
        Ok(to_wasi(&self.gate.policy().listen))
    }

    fn udp_addresses(&mut self) -> wasmtime::Result<Vec<IpSocketAddress>> {
        Ok(to_wasi(&self.gate.policy().udp))
    }

    fn ready(&mut self) -> wasmtime::Result<()> {
        self.shared.announce_ready();
        Ok(())
    }

    fn shutdown(&mut self) -> wasmtime::Result<Resource<PollableHandle>> {
        let signal = self
            .table
            .push(ShutdownSignal(self.shared.shutdown.subscribe()))?;
        subscribe(&mut self.table, signal)
    }
}

fn to_wasi(addrs: &[std::net::SocketAddr]) -> Vec<IpSocketAddress> {
    addrs.iter().map(|a| (*a).into()).collect()
}

/// Ready once the host asks the guest to stop; stays ready.
struct ShutdownSignal(tokio::sync::watch::Receiver<bool>);

#[async_trait::async_trait]
impl Pollable for ShutdownSignal {
    async fn ready(&mut self) {
        // An error means the host side is gone: that is a shutdown too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
