//! Attempts on what the host prints or stores: forged `ready` lines, output floods, and the
//! host's error strings as a guest sees them.
//!
//! `print:TEXT` writes TEXT and a newline to stdout as is (e.g. `print:ready tcp 192.0.2.1:9`).
//! `serve-echo:ADDR` listens on ADDR and echoes each client's first read back, forever.
//! `noisy-echo:ADDR` does the same but first writes 256 lines (~25 KiB) to stderr per client.
//! `debug-string:ADDR` connects to ADDR, reads until the connection fails and answers with
//! `wasi:io/error.to-debug-string` of the failure, newlines written as `\n`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use wasip2::io::streams::StreamError;
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

pub fn try_attempt(kind: &str, target: &str) -> Result<String, String> {
    match kind {
        "print" => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{target}").map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            Ok("printed".into())
        }
        "serve-echo" => serve(target, 0),
        "noisy-echo" => serve(target, 256),
        "debug-string" => debug_string(target),
        _ => Err(format!("unknown attempt {kind}")),
    }
}

fn serve(addr: &str, noise: usize) -> Result<String, String> {
    let listener = TcpListener::bind(addr).map_err(|e| e.to_string())?;
    let line = "x".repeat(90);
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(mut stream) = stream else { continue };
        for i in 0..noise {
            eprintln!("client {n} line {i}: {line}");
        }
        let mut buf = [0u8; 1024];
        if let Ok(got) = stream.read(&mut buf) {
            let _ = stream.write_all(&buf[..got]);
        }
    }
    Ok("served".into())
}

fn debug_string(target: &str) -> Result<String, String> {
    let addr: SocketAddr = target
        .parse()
        .map_err(|_| format!("not ip:port: {target}"))?;
    let SocketAddr::V4(v4) = addr else {
        return Err("IPv4 only".into());
    };
    let [a, b, c, d] = v4.ip().octets();
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        address: (a, b, c, d),
        port: v4.port(),
    });
    let network = instance_network();
    let socket = create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| e.to_string())?;
    socket
        .start_connect(&network, remote)
        .map_err(|e| e.to_string())?;
    let (input, _output) = loop {
        match socket.finish_connect() {
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    loop {
        match input.blocking_read(4096) {
            Ok(_) => continue,
            Err(StreamError::LastOperationFailed(err)) => {
                return Ok(err.to_debug_string().replace('\n', "\\n"));
            }
            Err(StreamError::Closed) => return Err("closed without an error".into()),
        }
    }
}
