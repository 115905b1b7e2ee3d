//! Attempts on what the host lets one guest hold: lingering closes, name lookups in flight,
//! over-long names, empty writes. Each takes `TARGET:COUNT` (the count after the last `:`).
//!
//! - `linger:ADDR:N`: N times, connect to ADDR (a peer that never reads), fill the send buffer
//!   until a write stays pending, and drop the connection; `lingered N` or `lingered K, then E`.
//! - `dns-hold:NAME:N`: start N lookups of NAME, wait for each answer and keep them all, then
//!   drop them; `held N` or `held K, then E`.
//! - `dns-settle:NAME:N`: as `dns-hold`, but a refusal by the host's cap is retried (10 ms
//!   apart, for at most 10 s), for after lookups were dropped: their slots come back.
//! - `dns-churn:NAME:N`: start N lookups and drop each at once; `started N, refused R`.
//! - `dns-long:BYTES:N`: N lookups of a BYTES-long name; `N refused with E` or the first surprise.
//! - `empty-writes:WHERE:N`: N empty writes, with a `check-write` and a flush every 1 024,
//!   to `stdout`, `stderr` or `tcp=ADDR` (a fresh connection); `wrote nothing N times`.

use std::net::SocketAddr;

use wasip2::clocks::monotonic_clock::subscribe_duration;
use wasip2::io::poll::poll;
use wasip2::io::streams::OutputStream;
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::{ResolveAddressStream, resolve_addresses};
use wasip2::sockets::network::{ErrorCode, Network};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

use sockbox_guest::net::addr::{family, to_wasi};

/// Runs one attempt of this module; `kind` is the part before the first `:`.
pub fn attempt(kind: &str, target: &str) -> Result<String, String> {
    let (what, count) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("expected TARGET:COUNT, got {target:?}"))?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("not a count: {count:?}"))?;
    match kind {
        "linger" => linger(parse_addr(what)?, count),
        "dns-hold" => dns_hold(what, count, false),
        "dns-settle" => dns_hold(what, count, true),
        "dns-churn" => dns_churn(what, count),
        "dns-long" => dns_long(what, count),
        "empty-writes" => empty_writes(what, count),
        _ => Err(format!("unknown attempt {kind:?}")),
    }
}

fn linger(addr: SocketAddr, count: usize) -> Result<String, String> {
    let network = instance_network();
    for done in 0..count {
        let (socket, input, output) =
            connect(&network, addr).map_err(|e| format!("lingered {done}, then {e}"))?;
        fill(&output).map_err(|e| format!("lingered {done}, then {e}"))?;
        // Children first: the output stream (its write still pending) lingers in the host.
        drop(output);
        drop(input);
        drop(socket);
    }
    Ok(format!("lingered {count}"))
}

type Connection = (
    TcpSocket,
    wasip2::io::streams::InputStream,
    wasip2::io::streams::OutputStream,
);

/// Connects with a small send buffer, so filling it takes a few kilobytes.
fn connect(network: &Network, addr: SocketAddr) -> Result<Connection, String> {
    let socket = create_tcp_socket(family(addr)).map_err(describe)?;
    let _ = socket.set_send_buffer_size(4096);
    socket
        .start_connect(network, to_wasi(addr))
        .map_err(describe)?;
    loop {
        match socket.finish_connect() {
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            Err(e) => return Err(describe(e)),
            Ok((input, output)) => return Ok((socket, input, output)),
        }
    }
}

/// Writes until a write stays pending for 100 ms: the peer's window and our buffer are full.
fn fill(output: &OutputStream) -> Result<(), String> {
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..100_000 {
        match output.check_write().map_err(|e| format!("{e:?}"))? {
            0 => {
                let ready = output.subscribe();
                let timeout = subscribe_duration(100_000_000);
                if !poll(&[&ready, &timeout]).contains(&0) {
                    return Ok(());
                }
            }
            n => output
                .write(&chunk[..chunk.len().min(n as usize)])
                .map_err(|e| format!("{e:?}"))?,
        }
    }
    Err("the send buffer never filled".into())
}

/// Starts `count` lookups and keeps each once answered; with `retry`, waits out the cap.
fn dns_hold(name: &str, count: usize, retry: bool) -> Result<String, String> {
    let network = instance_network();
    let mut held: Vec<ResolveAddressStream> = Vec::new();
    let mut retries = 0;
    while held.len() < count {
        match resolve_addresses(&network, name) {
            Ok(lookup) => {
                // Answered (or failed) by the resolver: the call is over, only the handle is held.
                while let Err(ErrorCode::WouldBlock) = lookup.resolve_next_address() {
                    lookup.subscribe().block();
                }
                held.push(lookup);
            }
            Err(ErrorCode::TemporaryResolverFailure) if retry && retries < 1000 => {
                retries += 1;
                subscribe_duration(10_000_000).block();
            }
            Err(e) => return Err(format!("held {}, then {}", held.len(), describe(e))),
        }
    }
    Ok(format!("held {count}"))
}

fn dns_churn(name: &str, count: usize) -> Result<String, String> {
    let network = instance_network();
    let mut refused = 0;
    for started in 0..count {
        match resolve_addresses(&network, name) {
            Ok(lookup) => drop(lookup),
            Err(ErrorCode::TemporaryResolverFailure) => refused += 1,
            Err(e) => return Err(format!("started {started}, then {}", describe(e))),
        }
    }
    Ok(format!("started {count}, refused {refused}"))
}

fn dns_long(bytes: &str, count: usize) -> Result<String, String> {
    let bytes: usize = bytes
        .parse()
        .map_err(|_| format!("not a length: {bytes:?}"))?;
    // Labels of 63 letters: a well-formed name in all but its length.
    let name: String = (0..bytes)
        .map(|i| if i % 64 == 63 { '.' } else { 'a' })
        .collect();
    let network = instance_network();
    let mut first = None;
    for i in 0..count {
        let error = match resolve_addresses(&network, &name) {
            Ok(lookup) => loop {
                match lookup.resolve_next_address() {
                    Err(ErrorCode::WouldBlock) => lookup.subscribe().block(),
                    Err(e) => break describe(e),
                    Ok(_) => return Err(format!("lookup {i} was answered")),
                }
            },
            Err(e) => describe(e),
        };
        match &first {
            None => first = Some(error),
            Some(seen) if *seen != error => return Err(format!("{seen}, then {error}")),
            Some(_) => {}
        }
    }
    Ok(format!(
        "{count} refused with {}",
        first.unwrap_or_default()
    ))
}

fn empty_writes(target: &str, count: usize) -> Result<String, String> {
    let stream = match target {
        "stdout" => wasip2::cli::stdout::get_stdout(),
        "stderr" => wasip2::cli::stderr::get_stderr(),
        _ => {
            let addr = target
                .strip_prefix("tcp=")
                .ok_or_else(|| format!("stdout, stderr or tcp=ADDR, not {target:?}"))?;
            let (socket, input, output) = connect(&instance_network(), parse_addr(addr)?)?;
            let result = write_nothing(&output, count);
            // Children first.
            drop((output, input));
            drop(socket);
            return result;
        }
    };
    write_nothing(&stream, count)
}

fn write_nothing(stream: &OutputStream, count: usize) -> Result<String, String> {
    for i in 0..count {
        // A write of nothing is always within the budget `check-write` gave (zero or more).
        stream.write(&[]).map_err(|e| format!("{i}: {e:?}"))?;
        if i % 1024 == 1023 {
            stream.check_write().map_err(|e| format!("{i}: {e:?}"))?;
            stream.flush().map_err(|e| format!("{i}: {e:?}"))?;
            stream.subscribe().block();
        }
    }
    Ok(format!("wrote nothing {count} times"))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("expected ip:port or [ipv6]:port, got {s:?}"))
}

fn describe(code: ErrorCode) -> String {
    code.to_string()
}
