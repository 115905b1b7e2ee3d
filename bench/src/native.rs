//! The native baselines a guest is compared with: the same protocols as the built-in guests,
//! written the plain way, in two shapes.
//!
//! - `native-evloop`: one thread, a tokio current-thread runtime, one task per connection. A
//!   guest instance runs one thread of wasm too, so this is the like-for-like baseline.
//! - `native-threads`: std::net with one thread per connection (one per core for UDP), the
//!   classic tutorial server, to show what a thread per client costs and buys.
//!
//! They run in their own process (`sockbox bench --serve ...`), so that client and server never
//! share a descriptor table and the server's RSS is its own.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;

use anyhow::{Context, Result};
use sockbox_wire::{FrameDecoder, encode_frame};

/// The shape of a native server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NativeKind {
    /// One thread per connection (std::net).
    Threads,
    /// One thread, an event loop (tokio current-thread runtime).
    Evloop,
}

impl NativeKind {
    pub fn name(self) -> &'static str {
        match self {
            NativeKind::Threads => "native-threads",
            NativeKind::Evloop => "native-evloop",
        }
    }
}

impl FromStr for NativeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native-threads" => Ok(NativeKind::Threads),
            "native-evloop" => Ok(NativeKind::Evloop),
            _ => Err(format!(
                "`{s}` is not a native server (native-threads or native-evloop)"
            )),
        }
    }
}

/// The wire protocol a server speaks; the same as the built-in guest of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: every byte back; on half-close, flush and close.
    Echo,
    /// UDP: every datagram back to its sender.
    UdpEcho,
    /// TCP: each `u32` length-prefixed frame answered with a frame of the same payload.
    Framing,
}

impl Protocol {
    /// The built-in guest that speaks this protocol.
    pub fn guest(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::UdpEcho => "udp-echo",
            Protocol::Framing => "framing",
        }
    }

    pub fn is_udp(self) -> bool {
        self == Protocol::UdpEcho
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "echo" => Ok(Protocol::Echo),
            "udp-echo" => Ok(Protocol::UdpEcho),
            "framing" => Ok(Protocol::Framing),
            _ => Err(format!(
                "`{s}` is not a protocol (echo, udp-echo or framing)"
            )),
        }
    }
}

/// What a frame larger than this gets, as the framing guest answers it.
const FRAME_TOO_LARGE: &[u8] = b"ERR frame too large";

/// Read buffer of a framing connection.
const FRAME_READ_BUF: usize = 16 * 1024;

/// Stack of a connection thread: the buffers live on the heap, so 2 MiB each would only
/// reserve address space for nothing.
const THREAD_STACK: usize = 256 * 1024;

/// Binds `listen`, serves `proto` in the background for the rest of the process, and returns
/// the bound address. The socket is bound before this returns, so connections succeed at once.
pub fn start(kind: NativeKind, proto: Protocol, listen: SocketAddr) -> Result<SocketAddr> {
    if proto.is_udp() {
        let socket = UdpSocket::bind(listen).with_context(|| format!("bind UDP {listen}"))?;
        let addr = socket.local_addr()?;
        match kind {
            NativeKind::Threads => udp_threads(socket)?,
            NativeKind::Evloop => evloop(move || udp_evloop(socket))?,
        }
        Ok(addr)
    } else {
        let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
        deepen_backlog(&listener)?;
        let addr = listener.local_addr()?;
        match kind {
            NativeKind::Threads => {
                std::thread::Builder::new()
                    .name("accept".into())
                    .spawn(move || accept_threads(listener, proto))?;
            }
            NativeKind::Evloop => evloop(move || tcp_evloop(listener, proto))?,
        }
        Ok(addr)
    }
}

/// The accept queue the guest SDK and tokio ask for; std's 128 overflows when hundreds of
/// clients connect at once, and every overflow costs a client a one-second SYN retransmit.
const LISTEN_BACKLOG: i32 = 1024;

/// Listens again with [`LISTEN_BACKLOG`] (Linux updates the queue of a listening socket).
fn deepen_backlog(listener: &TcpListener) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen() on a descriptor the listener owns and keeps open during the call.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set the listen backlog");
    }
    Ok(())
}

/// The `sockbox bench --serve` mode: starts the server, prints the same `ready <tcp|udp> ADDR`
/// line as `sockbox run`, and serves until stdin closes, so a server whose bench process died,
/// however it died, goes too.
pub fn serve(kind: NativeKind, proto: Protocol, listen: SocketAddr) -> Result<()> {
    let addr = start(kind, proto, listen)?;
    let transport = if proto.is_udp() { "udp" } else { "tcp" };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {transport} {addr}")?;
    out.flush()?;
    drop(out);
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    Ok(())
}

/// Runs `serve` on its own thread inside a current-thread runtime.
fn evloop<F, Fut>(serve: F) -> Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the event loop")?;
    std::thread::Builder::new()
        .name("evloop".into())
        .spawn(move || {
            if let Err(err) = runtime.block_on(serve()) {
                eprintln!("sockbox bench: native-evloop server stopped: {err}");
            }
        })?;
    Ok(())
}

async fn tcp_evloop(listener: TcpListener, proto: Protocol) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a client gone before accept: keep serving the others.
            Err(err) => {
                eprintln!("sockbox bench: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // A latency-tuned native server sets TCP_NODELAY. A guest cannot (WASI 0.2 has no such
        // option and wasmtime-wasi does not set it), so the comparison is against the best
        // native setting.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = match proto {
                Protocol::Echo => echo_async(stream).await,
                _ => framing_async(stream).await,
            };
        });
    }
}

/// Read buffer of an event-loop echo connection: `tokio::io::copy`'s 8 KiB buffer made the
/// native echo the slower side of `tcp-bulk` (a guest's echo splices in the host).
const ECHO_READ_BUF: usize = 64 * 1024;

/// The tokio echo with a 64 KiB read buffer, then half-close our side.
async fn echo_async(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; ECHO_READ_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn framing_async(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; FRAME_READ_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        decoder.extend(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => stream.write_all(&encode_frame(&payload)).await?,
                Ok(None) => break,
                Err(_) => {
                    stream.write_all(&encode_frame(FRAME_TOO_LARGE)).await?;
                    return stream.shutdown().await;
                }
            }
        }
    }
}

async fn udp_evloop(socket: UdpSocket) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        // A peer that vanished (ICMP unreachable) must not stop the server.
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

fn accept_threads(listener: TcpListener, proto: Protocol) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _ = match proto {
                    Protocol::Echo => echo_blocking(&stream),
                    _ => framing_blocking(&stream),
                };
            });
        if let Err(err) = spawned {
            eprintln!("sockbox bench: no thread for a connection: {err}");
        }
    }
}

/// The tutorial echo: `io::copy` from the socket to itself, then half-close our side.
fn echo_blocking(stream: &TcpStream) -> std::io::Result<()> {
    std::io::copy(&mut &*stream, &mut &*stream)?;
    stream.shutdown(Shutdown::Write)
}

fn framing_blocking(mut stream: &TcpStream) -> std::io::Result<()> {
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; FRAME_READ_BUF];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        decoder.extend(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => stream.write_all(&encode_frame(&payload))?,
                Ok(None) => break,
                Err(_) => {
                    stream.write_all(&encode_frame(FRAME_TOO_LARGE))?;
                    return stream.shutdown(Shutdown::Write);
                }
            }
        }
    }
}

/// UDP has no connections to give threads to: one thread per core shares the socket.
fn udp_threads(socket: UdpSocket) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..cores {
        let socket = socket.try_clone()?;
        std::thread::Builder::new()
            .name("udp".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let _ = socket.send_to(&buf[..n], from);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                    }
                }
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KINDS: [NativeKind; 2] = [NativeKind::Threads, NativeKind::Evloop];
    const PATIENCE: Duration = Duration::from_secs(10);

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    #[test]
    fn echo_sends_every_byte_back_and_closes_after_half_close() {
        for kind in KINDS {
            let addr = start(kind, Protocol::Echo, loopback()).unwrap();
            let mut stream = connect(addr);
            let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let writer = {
                let mut stream = stream.try_clone().unwrap();
                let sent = sent.clone();
                std::thread::spawn(move || {
                    stream.write_all(&sent).unwrap();
                    stream.shutdown(Shutdown::Write).unwrap();
                })
            };
            let mut back = Vec::new();
            stream.read_to_end(&mut back).expect("echo until closed");
            writer.join().unwrap();
            assert!(back == sent, "{}: {} bytes back", kind.name(), back.len());
        }
    }

    #[test]
    fn framing_answers_each_frame_however_it_is_split() {
        for kind in KINDS {
            let addr = start(kind, Protocol::Framing, loopback()).unwrap();
            let mut stream = connect(addr);
            let mut wire = encode_frame(b"first");
            wire.extend(encode_frame(b""));
            wire.extend(encode_frame(&[7; 70_000]));
            // Glued frames, then the last one split across writes.
            let (head, tail) = wire.split_at(wire.len() - 30_000);
            stream.write_all(head).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            stream.write_all(tail).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).unwrap();
            assert!(back == wire, "{}: {} bytes back", kind.name(), back.len());
        }
    }

    #[test]
    fn framing_answers_an_oversized_header_with_an_error_frame() {
        for kind in KINDS {
            let addr = start(kind, Protocol::Framing, loopback()).unwrap();
            let mut stream = connect(addr);
            stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).unwrap();
            assert_eq!(back, encode_frame(FRAME_TOO_LARGE), "{}", kind.name());
        }
    }

    #[test]
    fn udp_echo_sends_each_datagram_back_to_its_sender() {
        for kind in KINDS {
            let addr = start(kind, Protocol::UdpEcho, loopback()).unwrap();
            let socket = UdpSocket::bind(loopback()).unwrap();
            socket.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = [0u8; 2048];
            for payload in [&b"hello"[..], b"", &[9; 1400]] {
                socket.send_to(payload, addr).unwrap();
                let (n, from) = socket.recv_from(&mut buf).expect("reply in time");
                assert_eq!(from, addr, "{}", kind.name());
                assert_eq!(&buf[..n], payload, "{}", kind.name());
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for kind in KINDS {
            assert_eq!(kind.name().parse::<NativeKind>(), Ok(kind));
        }
        for proto in [Protocol::Echo, Protocol::UdpEcho, Protocol::Framing] {
            assert_eq!(proto.guest().parse::<Protocol>(), Ok(proto));
        }
        assert!("native".parse::<NativeKind>().is_err());
    }
}
