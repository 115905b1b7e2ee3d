//! Conversions between `std::net` addresses and WASI's: the SDK's sockets use them, and so do
//! the test guests that call `wasi:sockets` directly (hostile, chaos), rather than keep copies.
//! WASI 0.2's types, or 0.3's with the `p3` feature (the same shapes).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
#[cfg(not(feature = "p3"))]
use wasip2::sockets::network::{
    IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
#[cfg(feature = "p3")]
use wasip3::sockets::types::{
    IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};

/// A WASI socket address as `std`'s (flow info and scope id kept).
pub fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
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

/// A `std` socket address as WASI's (flow info and scope id kept).
pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                address: (a, b, c, d),
                port: v4.port(),
            })
        }
        SocketAddr::V6(v6) => {
            let s = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                port: v6.port(),
                flow_info: v6.flowinfo(),
                scope_id: v6.scope_id(),
            })
        }
    }
}

/// The WASI address family of `addr`, for creating a socket that can bind or reach it.
pub fn family(addr: SocketAddr) -> IpAddressFamily {
    match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}
