//! Attempts on UDP conversations and shared ports (issue 14, items 1 and 11).
//!
//! `udp-conversation:DECOY:MS`: binds two sockets to `0.0.0.0:0` (what a policy with only a
//! `udp-send` grant allows, to send), prints `PORTS <a> <b>` at once, sends the marker from
//! `a` to DECOY, then for MS milliseconds answers every datagram either socket hears with the
//! same bytes and reports who each heard. A sandbox that turned these sockets into servers
//! would let strangers in, and `b` would hear `a`'s peer.
//!
//! `hop-marks:N`: creates N unbound TCP and N unbound UDP sockets with hop limits 1, 2, ...,
//! 255, 1, ... and keeps them: a host that finds a guest's new socket by a hop-limit mark
//! must not be misled by them.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use wasip2::sockets::network::IpAddressFamily;

use crate::{MARKER, describe, parse_addr};

pub fn conversation(target: &str) -> Result<String, String> {
    let (decoy, millis) = addr_and_millis(target, "DECOY:MS")?;
    let sockets = [bind_any()?, bind_any()?];
    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).map_err(describe);
    println!("PORTS {} {}", port(&sockets[0])?, port(&sockets[1])?);
    std::io::stdout().flush().map_err(describe)?;
    sockets[0].send_to(MARKER, decoy).map_err(describe)?;
    let mut heard = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let mut idle = true;
        for (socket, heard) in sockets.iter().zip(&mut heard) {
            match socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    idle = false;
                    let answer = socket.send_to(&buf[..len], from).map_err(|e| e.kind());
                    heard.push(format!("{from}(answer {answer:?})"));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(describe(e)),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(format!("a heard {:?} b heard {:?}", heard[0], heard[1]))
}

fn bind_any() -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(describe)?;
    socket.set_nonblocking(true).map_err(describe)?;
    Ok(socket)
}

pub fn hop_marks(count: &str) -> Result<String, String> {
    let count: usize = count
        .parse()
        .map_err(|_| format!("not a number of sockets: {count}"))?;
    for i in 0..count {
        let hops = (i % 255) as u8 + 1;
        let tcp = wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
            .map_err(|e| format!("{e:?}"))?;
        tcp.set_hop_limit(hops).map_err(|e| format!("{e:?}"))?;
        std::mem::forget(tcp);
        let udp = wasip2::sockets::udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4)
            .map_err(|e| format!("{e:?}"))?;
        udp.set_unicast_hop_limit(hops)
            .map_err(|e| format!("{e:?}"))?;
        std::mem::forget(udp);
    }
    Ok(format!("marked {count} TCP and {count} UDP sockets"))
}

/// `udp-receive-calls:ADDR:MS`: binds ADDR, prints `BOUND <port>`, sleeps MS (the test queues
/// datagrams meanwhile), then calls `receive` without waiting in between until a call returns
/// a datagram, and reports how many calls returned none before it. A host that drops refused
/// datagrams inside one call drains any number of them in the first call.
pub fn receive_calls(target: &str) -> Result<String, String> {
    use wasip2::sockets::instance_network::instance_network;
    let (addr, millis) = addr_and_millis(target, "ADDR:MS")?;
    let wasi_err = |e: wasip2::sockets::network::ErrorCode| format!("{e:?}");
    let network = instance_network();
    let socket = wasip2::sockets::udp_create_socket::create_udp_socket(
        sockbox_guest::net::addr::family(addr),
    )
    .map_err(wasi_err)?;
    socket
        .start_bind(&network, sockbox_guest::net::addr::to_wasi(addr))
        .map_err(wasi_err)?;
    socket.finish_bind().map_err(wasi_err)?;
    // Room for a few hundred small datagrams (the kernel caps it at its maximum).
    let _ = socket.set_receive_buffer_size(4 << 20);
    let local = sockbox_guest::net::addr::from_wasi(socket.local_address().map_err(wasi_err)?);
    println!("BOUND {}", local.port());
    std::io::stdout().flush().map_err(describe)?;
    std::thread::sleep(Duration::from_millis(millis));
    let (incoming, outgoing) = socket.stream(None).map_err(wasi_err)?;
    let mut result = Err("no datagram came".to_string());
    for empty in 0..100_000 {
        let datagrams = incoming.receive(16).map_err(wasi_err)?;
        if let Some(first) = datagrams.first() {
            let from = sockbox_guest::net::addr::from_wasi(first.remote_address);
            result = Ok(format!("{empty} empty calls, then one from {from}"));
            break;
        }
    }
    drop((incoming, outgoing));
    result
}

/// `ADDR:MS`, the argument both attempts take (`form` names it in the error).
fn addr_and_millis(target: &str, form: &str) -> Result<(SocketAddr, u64), String> {
    let (addr, millis) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("expected {form}, got {target:?}"))?;
    let millis = millis
        .parse()
        .map_err(|_| format!("not milliseconds: {millis}"))?;
    Ok((parse_addr(addr)?, millis))
}
