//! The attempts std cannot express, made with `wasi:sockets` directly: binding exactly the
//! address given (an IPv4-mapped IPv6 address reaches the host as written), binding a granted
//! address before connecting elsewhere, and resolving a name.
//!
//! Resources are declared parent first, so they drop child first: streams and pollables
//! before their socket, the socket before the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sockbox_guest::net::addr::{family, from_wasi, to_wasi};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::resolve_addresses;
use wasip2::sockets::network::{ErrorCode, IpAddress, IpAddressFamily};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

use crate::MARKER;

/// Binds exactly `addr`, listens, and closes at once.
pub fn listen(addr: SocketAddr) -> Result<String, String> {
    let network = instance_network();
    let socket = create_tcp_socket(family(addr)).map_err(describe)?;
    socket
        .start_bind(&network, to_wasi(addr))
        .map_err(describe)?;
    settle(&socket, || socket.finish_bind())?;
    socket.start_listen().map_err(describe)?;
    settle(&socket, || socket.finish_listen())?;
    let local = from_wasi(socket.local_address().map_err(describe)?);
    Ok(format!("listened on {local} (closed at once)"))
}

/// Binds the loopback address of `remote`'s family on an OS-chosen port (what a listen grant
/// for port 0 covers), then connects from there to `remote` and sends the marker.
pub fn bound_connect(remote: SocketAddr) -> Result<String, String> {
    let local: SocketAddr = match remote {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let network = instance_network();
    let socket = create_tcp_socket(family(remote)).map_err(describe)?;
    socket
        .start_bind(&network, to_wasi(local))
        .map_err(describe)?;
    settle(&socket, || socket.finish_bind())?;
    let bound = from_wasi(socket.local_address().map_err(describe)?);
    socket
        .start_connect(&network, to_wasi(remote))
        .map_err(describe)?;
    let (_input, output) = settle(&socket, || socket.finish_connect())?;
    output
        .blocking_write_and_flush(MARKER)
        .map_err(|e| format!("{e:?}"))?;
    Ok(format!(
        "bound {bound}, connected to {remote} and sent the marker"
    ))
}

/// Resolves `name` through `wasi:sockets/ip-name-lookup`.
pub fn resolve(name: &str) -> Result<String, String> {
    let network = instance_network();
    let lookup = resolve_addresses(&network, name).map_err(describe)?;
    let mut found = Vec::new();
    loop {
        match lookup.resolve_next_address() {
            Ok(Some(ip)) => found.push(ip_from_wasi(ip)),
            Ok(None) => return Ok(format!("resolved to {found:?}")),
            Err(ErrorCode::WouldBlock) => lookup.subscribe().block(),
            Err(code) => return Err(describe(code)),
        }
    }
}

/// Drives a `finish-*` call of a two-phase socket operation to its end.
fn settle<T>(
    socket: &TcpSocket,
    mut finish: impl FnMut() -> Result<T, ErrorCode>,
) -> Result<T, String> {
    loop {
        match finish() {
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            other => return other.map_err(describe),
        }
    }
}

/// WASI's error name (`access-denied (error 1)`), the same on every host OS.
fn describe(code: ErrorCode) -> String {
    code.to_string()
}

fn ip_from_wasi(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).into(),
        IpAddress::Ipv6(s) => Ipv6Addr::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7).into(),
    }
}

/// Creates up to `count` sockets (`tcp` or `udp`, IPv4) and keeps every one it gets for the
/// rest of the run, as a guest leaking sockets would; stops at the first refusal.
pub fn hoard(kind: &str, count: &str) -> Result<String, String> {
    let count: usize = count
        .parse()
        .map_err(|_| format!("not a number of sockets: {count}"))?;
    let mut created = 0;
    while created < count {
        let result = match kind {
            "tcp" => create_tcp_socket(IpAddressFamily::Ipv4).map(std::mem::forget),
            _ => wasip2::sockets::udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4)
                .map(std::mem::forget),
        };
        if let Err(err) = result {
            return Err(format!("created {created}, then {}", describe(err)));
        }
        created += 1;
    }
    Ok(format!("created {created}"))
}
