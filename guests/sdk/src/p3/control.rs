//! The `sockbox:guest/control` interface for a WASI 0.3 guest: what the host granted and "I am
//! ready" from `control` (unchanged, its addresses in WASI 0.2's types), "please stop" from
//! `stop`, a future (`control.shutdown`'s pollable belongs to WASI 0.2's poll loop).

use std::future::{Future, IntoFuture};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};

mod bindings {
    wit_bindgen_p3::generate!({
        path: "../../wit",
        world: "control-p3",
        runtime_path: "wit_bindgen_p3::rt",
        // `control`'s WASI 0.2 types, generated here (wasip2's are another wit-bindgen's).
        generate_all,
    });
}

use bindings::sockbox::guest::{control as wit, stop};
use bindings::wasi::sockets::network::{IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress};

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
        requested: Box::pin(stop::requested().into_future()),
    }
}

/// A future that completes when the host requests shutdown.
#[must_use = "a shutdown signal does nothing unless awaited"]
pub struct Shutdown {
    requested: Pin<Box<dyn Future<Output = ()>>>,
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.requested.as_mut().poll(cx)
    }
}

/// `control`'s addresses are WASI 0.2's `ip-socket-address` (the same shape as 0.3's, another
/// type): as `std`'s, flow info and scope id kept.
fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(Ipv4SocketAddress {
            address: (a, b, c, d),
            port,
        }) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)),
        IpSocketAddress::Ipv6(Ipv6SocketAddress {
            address: s,
            port,
            flow_info,
            scope_id,
        }) => {
            let ip = Ipv6Addr::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7);
            SocketAddr::V6(SocketAddrV6::new(ip, port, flow_info, scope_id))
        }
    }
}
