//! The `sockbox:guest/control` interface: what the host granted, "I am ready", "please stop".

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::net::addr::from_wasi;
use crate::runtime::Registration;

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "control-only",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:sockets/network@0.2.12": wasip2::sockets::network,
        },
    });
}

use bindings::sockbox::guest::control as wit;

/// TCP addresses the host granted with `--listen`, in order. Port 0 means "any ephemeral port".
pub fn listen_addresses() -> Vec<SocketAddr> {
    wit::listen_addresses().into_iter().map(from_wasi).collect()
}

/// UDP addresses the host granted with `--udp`, in order.
pub fn udp_addresses() -> Vec<SocketAddr> {
    wit::udp_addresses().into_iter().map(from_wasi).collect()
}

/// Tells the host every socket is set up; it then reports the guest ready.
pub fn ready() {
    wit::ready();
}

/// Resolves once the host asks the guest to stop. Cheap to create; each one is independent.
pub fn shutdown() -> Shutdown {
    Shutdown {
        signal: Registration::new(wit::shutdown()),
        seen: None,
    }
}

/// A future that completes when the host requests shutdown.
#[must_use = "a shutdown signal does nothing unless awaited"]
pub struct Shutdown {
    signal: Registration,
    seen: Option<u64>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.signal.poll_wait(cx, &mut this.seen)
    }
}
