//! hostile: a guest that tries to get out, to prove the sandbox holds.
//!
//! Every argument is one attempt at something a server granted only its own listen address
//! must not be able to do: listen elsewhere, connect or send elsewhere, resolve names, read or
//! write the host's files, read the host's environment. For each attempt it prints exactly one
//! line to stdout, `RESULT <attempt> ok <detail>` or `RESULT <attempt> err <error>`, and goes
//! on with the next; it exits 0 (unless an attempt is meant to end it), so a denial never
//! looks like a crash. The e2e `escape` tests run it under a minimal policy and check that
//! each attempt failed, was judged by the host and left nothing on the wire; the same attempts
//! under a grant are their controls.
//!
//! Attempts (ADDR is `ip:port`, `[ipv6]:port`; `connect` also takes `name:port`):
//! `listen:ADDR` `wasi-listen:ADDR` `connect:ADDR` `bound-connect:ADDR` `udp-bind:ADDR`
//! `udp-send:ADDR` `udp-connect:ADDR` `dns:NAME` `fs:PATH` `fs-write:PATH` `fs-list:PATH`
//! `env` `args` `alloc:MIB` (grow memory by MIB mebibytes, to meet `--max-memory`)
//! `tcp-sockets:N` `udp-sockets:N` (create N sockets and keep them, to meet `--max-sockets`).
//! `trap` (wasm `unreachable`) `exit:N` (exit with status N) `spin` (compute forever without
//! calling the host) `hold` (sleep forever in a host call): what a supervisor must survive.
//! `linger`, `dns-hold`, `dns-settle`, `dns-churn`, `dns-long`, `empty-writes`: the host's
//! limits, see `limits.rs`.
//! `udp-conversation:DECOY:MS` `hop-marks:N` `udp-receive-calls:ADDR:MS`: see `udp_conv`.

mod limits;
mod logs;
mod udp_conv;
mod wasi;

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};

/// What the guest sends over anything it manages to open, so a test can recognise it.
pub const MARKER: &[u8] = b"hostile was here\n";

fn main() {
    for attempt in std::env::args().skip(1) {
        let line = match try_attempt(&attempt) {
            Ok(detail) => format!("RESULT {attempt} ok {detail}"),
            Err(error) => format!("RESULT {attempt} err {error}"),
        };
        // One line per attempt, whatever the detail holds.
        println!("{}", line.replace(['\n', '\r'], " "));
    }
}

fn try_attempt(attempt: &str) -> Result<String, String> {
    let (kind, target) = attempt.split_once(':').unwrap_or((attempt, ""));
    match kind {
        "listen" => listen(target),
        "wasi-listen" => wasi::listen(parse_addr(target)?),
        "connect" => connect(target),
        "bound-connect" => wasi::bound_connect(parse_addr(target)?),
        "udp-bind" => udp_bind(target),
        "udp-send" => udp_send(parse_addr(target)?),
        "udp-connect" => udp_connect(parse_addr(target)?),
        "dns" => wasi::resolve(target),
        "fs" => std::fs::read(target)
            .map(|bytes| format!("read {} bytes", bytes.len()))
            .map_err(describe),
        "fs-write" => std::fs::write(target, MARKER)
            .map(|()| format!("wrote {} bytes", MARKER.len()))
            .map_err(describe),
        "fs-list" => std::fs::read_dir(target)
            .map(|entries| format!("{} entries", entries.count()))
            .map_err(describe),
        "env" => Ok(format!("{:?}", std::env::vars().collect::<Vec<_>>())),
        "args" => Ok(format!("{:?}", std::env::args().collect::<Vec<_>>())),
        "alloc" => alloc(target),
        "tcp-sockets" => wasi::hoard("tcp", target),
        "udp-sockets" => wasi::hoard("udp", target),
        "trap" => std::process::abort(),
        "exit" => std::process::exit(
            target
                .parse()
                .map_err(|_| format!("not a status: {target}"))?,
        ),
        "spin" => spin(),
        "hold" => hold(),
        "print" | "serve-echo" | "noisy-echo" | "debug-string" => logs::try_attempt(kind, target),
        "linger" | "dns-hold" | "dns-settle" | "dns-churn" | "dns-long" | "empty-writes" => {
            limits::attempt(kind, target)
        }
        "udp-conversation" => udp_conv::conversation(target),
        "hop-marks" => udp_conv::hop_marks(target),
        "udp-receive-calls" => udp_conv::receive_calls(target),
        _ => Err(format!("unknown attempt {attempt:?}")),
    }
}

/// Binds and listens through std (wasi-libc), then closes the listener at once: a success
/// is the evidence, an open port would only be a risk.
fn listen(addr: &str) -> Result<String, String> {
    let listener = TcpListener::bind(addr).map_err(describe)?;
    let local = listener.local_addr().map_err(describe)?;
    drop(listener);
    Ok(format!("listened on {local} (closed at once)"))
}

/// Connects (resolving a name if given one), sends the marker and closes.
fn connect(target: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(target).map_err(describe)?;
    let peer = stream.peer_addr().map_err(describe)?;
    stream.write_all(MARKER).map_err(describe)?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(format!("connected to {peer} and sent the marker"))
}

fn udp_bind(addr: &str) -> Result<String, String> {
    let socket = UdpSocket::bind(addr).map_err(describe)?;
    let local = socket.local_addr().map_err(describe)?;
    Ok(format!("bound {local} (closed at once)"))
}

/// Sends the marker from an OS-chosen port, as a UDP client does.
fn udp_send(to: SocketAddr) -> Result<String, String> {
    let socket = UdpSocket::bind(any_port(to)).map_err(describe)?;
    let sent = socket.send_to(MARKER, to).map_err(describe)?;
    Ok(format!("sent {sent} bytes to {to}"))
}

/// Connects a UDP socket (sets its default peer), then sends the marker.
fn udp_connect(to: SocketAddr) -> Result<String, String> {
    let socket = UdpSocket::bind(any_port(to)).map_err(describe)?;
    socket.connect(to).map_err(describe)?;
    let sent = socket.send(MARKER).map_err(describe)?;
    Ok(format!("connected to {to}, sent {sent} bytes"))
}

/// The unspecified address of `addr`'s family, port 0: what a client binds to send from.
fn any_port(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("expected ip:port or [ipv6]:port, got {s:?}"))
}

/// The error kind first, so a test can match it without knowing the OS's wording.
fn describe(err: std::io::Error) -> String {
    format!("{:?}: {err}", err.kind())
}

/// Allocates and touches `mib` MiB; past a memory limit the allocation fails, which Rust turns
/// into an abort (a trap the host reports), exactly what a runaway guest would hit.
fn alloc(mib: &str) -> Result<String, String> {
    let mib: usize = mib
        .parse()
        .map_err(|_| format!("not a number of MiB: {mib}"))?;
    let mut block = vec![0u8; mib << 20];
    block.iter_mut().step_by(4096).for_each(|b| *b = 1);
    Ok(format!("{} bytes", block.len()))
}

/// Computes forever without a single host call: only the host's epoch yields stop it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Blocks forever inside a host call (a clock wait), as a stuck guest would.
fn hold() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
    }
}
