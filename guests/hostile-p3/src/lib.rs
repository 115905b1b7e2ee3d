//! hostile-p3: `hostile`'s attempts (see `guests/hostile`) through WASI 0.3 sockets, so every
//! escape and limit test runs against a 0.3 guest too.
//!
//! Same language: each argument is one attempt, each prints exactly one line
//! `RESULT <attempt> ok <detail>` or `RESULT <attempt> err <error>`, and the guest exits 0
//! unless an attempt is meant to end it. Attempts: `listen:ADDR` (`wasi-listen` is the same:
//! 0.3 has only the raw calls) `connect:ADDR|NAME:PORT` `bound-connect:ADDR` `udp-bind:ADDR`
//! `udp-send:ADDR` `udp-connect:ADDR` `dns:NAME` `fs:PATH` `fs-write:PATH` `fs-list:PATH` `env`
//! `args` `alloc:MIB` `tcp-sockets:N` `udp-sockets:N` `trap` `exit:N` `spin` `hold`
//! `udp-conversation:DECOY:MS` `dns-long:BYTES:COUNT` (as `hostile`'s, see its `udp_conv.rs`
//! and `limits.rs`).
//! Errors are WASI 0.3's error codes as WIT names them (`access-denied`).

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use wasip3::exports::cli::run::Guest;
use wasip3::sockets::types::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, TcpSocket,
    UdpSocket,
};
use wasip3::wit_stream;

/// What the guest sends over anything it manages to open (as `hostile`'s).
const MARKER: &[u8] = b"hostile was here\n";

struct Hostile;

wasip3::cli::command::export!(Hostile);

impl Guest for Hostile {
    async fn run() -> Result<(), ()> {
        for attempt in std::env::args().skip(1) {
            let line = match try_attempt(&attempt).await {
                Ok(detail) => format!("RESULT {attempt} ok {detail}"),
                Err(error) => format!("RESULT {attempt} err {error}"),
            };
            println!("{}", line.replace(['\n', '\r'], " "));
        }
        Ok(())
    }
}

async fn try_attempt(attempt: &str) -> Result<String, String> {
    let (kind, target) = attempt.split_once(':').unwrap_or((attempt, ""));
    match kind {
        "listen" | "wasi-listen" => listen(parse_addr(target)?),
        "connect" => connect(target).await,
        "bound-connect" => bound_connect(parse_addr(target)?).await,
        "udp-bind" => udp_bind(parse_addr(target)?),
        "udp-send" => udp_send(parse_addr(target)?, false).await,
        "udp-connect" => udp_send(parse_addr(target)?, true).await,
        "dns" => resolve(target)
            .await
            .map(|ips| format!("resolved to {ips:?}")),
        "fs" => std::fs::read(target)
            .map(|bytes| format!("read {} bytes", bytes.len()))
            .map_err(describe_io),
        "fs-write" => std::fs::write(target, MARKER)
            .map(|()| format!("wrote {} bytes", MARKER.len()))
            .map_err(describe_io),
        "fs-list" => std::fs::read_dir(target)
            .map(|entries| format!("{} entries", entries.count()))
            .map_err(describe_io),
        "env" => Ok(format!("{:?}", std::env::vars().collect::<Vec<_>>())),
        "args" => Ok(format!("{:?}", std::env::args().collect::<Vec<_>>())),
        "alloc" => alloc(target),
        "tcp-sockets" | "udp-sockets" => hoard(kind, target),
        "trap" => std::process::abort(),
        "exit" => std::process::exit(
            target
                .parse()
                .map_err(|_| format!("not a status: {target}"))?,
        ),
        "spin" => spin(),
        "hold" => hold().await,
        "udp-conversation" => conversation(target).await,
        "dns-long" => dns_long(target).await,
        _ => Err(format!("unknown attempt {attempt:?}")),
    }
}

/// Binds exactly `addr`, listens, and closes at once.
fn listen(addr: SocketAddr) -> Result<String, String> {
    let socket = TcpSocket::create(family(addr)).map_err(describe)?;
    socket.bind(to_wasi(addr)).map_err(describe)?;
    let accepted = socket.listen().map_err(describe)?;
    let local = from_wasi(socket.get_local_address().map_err(describe)?);
    drop(accepted);
    Ok(format!("listened on {local} (closed at once)"))
}

/// Connects (resolving a name first if given one), sends the marker and closes.
async fn connect(target: &str) -> Result<String, String> {
    let remote = match target.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let (name, port) = target
                .rsplit_once(':')
                .ok_or_else(|| format!("expected name:port, got {target:?}"))?;
            let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
            let ip = *resolve(name).await?.first().ok_or("no address")?;
            SocketAddr::new(ip, port)
        }
    };
    let socket = TcpSocket::create(family(remote)).map_err(describe)?;
    send_marker(socket, remote).await?;
    Ok(format!("connected to {remote} and sent the marker"))
}

/// Binds loopback of `remote`'s family on an OS-chosen port, then connects from there.
async fn bound_connect(remote: SocketAddr) -> Result<String, String> {
    let local: SocketAddr = match remote {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = TcpSocket::create(family(remote)).map_err(describe)?;
    socket.bind(to_wasi(local)).map_err(describe)?;
    let bound = from_wasi(socket.get_local_address().map_err(describe)?);
    send_marker(socket, remote).await?;
    Ok(format!(
        "bound {bound}, connected to {remote} and sent the marker"
    ))
}

async fn send_marker(socket: TcpSocket, remote: SocketAddr) -> Result<(), String> {
    socket.connect(to_wasi(remote)).await.map_err(describe)?;
    let (mut tx, rx) = wit_stream::new::<u8>();
    let sent = socket.send(rx);
    let rest = tx.write_all(MARKER.to_vec()).await;
    drop(tx);
    if !rest.is_empty() {
        return Err(format!("{} bytes not sent", rest.len()));
    }
    sent.await.map_err(describe)
}

fn udp_bind(addr: SocketAddr) -> Result<String, String> {
    let socket = UdpSocket::create(family(addr)).map_err(describe)?;
    socket.bind(to_wasi(addr)).map_err(describe)?;
    let local = from_wasi(socket.get_local_address().map_err(describe)?);
    Ok(format!("bound {local} (closed at once)"))
}

/// Sends the marker from an OS-chosen port, to `to` or (`connected`) to its default peer.
async fn udp_send(to: SocketAddr, connected: bool) -> Result<String, String> {
    let socket = UdpSocket::create(family(to)).map_err(describe)?;
    if connected {
        socket.connect(to_wasi(to)).map_err(describe)?;
        socket.send(MARKER.to_vec(), None).await.map_err(describe)?;
        Ok(format!("connected to {to}, sent {} bytes", MARKER.len()))
    } else {
        let from: SocketAddr = match to {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        socket.bind(to_wasi(from)).map_err(describe)?;
        let sent = socket.send(MARKER.to_vec(), Some(to_wasi(to))).await;
        sent.map_err(describe)?;
        Ok(format!("sent {} bytes to {to}", MARKER.len()))
    }
}

async fn resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    let found = wasip3::sockets::ip_name_lookup::resolve_addresses(name.to_string()).await;
    let found = found.map_err(|code| kebab(&format!("{code:?}")))?;
    Ok(found
        .into_iter()
        .map(|ip| match ip {
            wasip3::sockets::types::IpAddress::Ipv4((a, b, c, d)) => {
                IpAddr::from(Ipv4Addr::new(a, b, c, d))
            }
            wasip3::sockets::types::IpAddress::Ipv6(s) => {
                IpAddr::from(Ipv6Addr::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7))
            }
        })
        .collect())
}

/// Two sockets bound to send (`0.0.0.0:0`), `PORTS <a> <b>` printed, the marker sent from `a`
/// to DECOY; then for MS milliseconds every datagram either hears is answered and noted. A
/// sandbox that made these sockets servers would let strangers in, and `b` hear `a`'s peer.
async fn conversation(target: &str) -> Result<String, String> {
    let (decoy, millis) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("expected DECOY:MS, got {target:?}"))?;
    let decoy = parse_addr(decoy)?;
    let millis: u64 = millis
        .parse()
        .map_err(|_| format!("not a number of ms: {millis}"))?;
    let bind_any = || -> Result<UdpSocket, String> {
        let socket = UdpSocket::create(IpAddressFamily::Ipv4).map_err(describe)?;
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        socket.bind(to_wasi(any)).map_err(describe)?;
        Ok(socket)
    };
    let sockets = [Rc::new(bind_any()?), Rc::new(bind_any()?)];
    let port = |s: &UdpSocket| {
        s.get_local_address()
            .map(|a| from_wasi(a).port())
            .map_err(describe)
    };
    println!("PORTS {} {}", port(&sockets[0])?, port(&sockets[1])?);
    std::io::stdout().flush().map_err(describe_io)?;
    let marker = sockets[0].send(MARKER.to_vec(), Some(to_wasi(decoy))).await;
    marker.map_err(describe)?;
    let heard = [Rc::new(RefCell::new(Vec::new())), Rc::default()];
    let mut answering: Vec<_> = sockets
        .iter()
        .zip(&heard)
        .map(|(socket, heard)| {
            let (socket, heard) = (socket.clone(), heard.clone());
            wasip3::spawn_local(async move {
                while let Ok((bytes, from)) = socket.receive().await {
                    // Reported as `hostile`'s: the bytes sent.
                    let len = bytes.len();
                    let answer = socket.send(bytes, Some(from)).await;
                    let answer = answer.map(|()| len).map_err(describe);
                    let from = from_wasi(from);
                    heard
                        .borrow_mut()
                        .push(format!("{from}(answer {answer:?})"));
                }
            })
        })
        .collect();
    wasip3::clocks::monotonic_clock::wait_for(millis * 1_000_000).await;
    answering.iter_mut().for_each(|task| task.cancel());
    let [a, b] = heard.map(|h| h.borrow().clone());
    Ok(format!("a heard {a:?} b heard {b:?}"))
}

/// COUNT lookups of a well-formed name of BYTES bytes (labels of 63 letters); all must fail
/// the same way, reported as `COUNT refused with <error>`.
async fn dns_long(target: &str) -> Result<String, String> {
    let (bytes, count) = target
        .split_once(':')
        .ok_or_else(|| format!("expected BYTES:COUNT, got {target:?}"))?;
    let bytes: usize = bytes
        .parse()
        .map_err(|_| format!("not a length: {bytes}"))?;
    let count: usize = count.parse().map_err(|_| format!("not a count: {count}"))?;
    let name: String = (0..bytes)
        .map(|i| if i % 64 == 63 { '.' } else { 'a' })
        .collect();
    let mut first: Option<String> = None;
    for i in 0..count {
        let error = match resolve(&name).await {
            Ok(_) => return Err(format!("lookup {i} was answered")),
            Err(error) => error,
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

/// Creates up to `count` sockets and keeps each one, as a guest leaking sockets would; stops
/// at the first refusal.
fn hoard(kind: &str, count: &str) -> Result<String, String> {
    let count: usize = count
        .parse()
        .map_err(|_| format!("not a number of sockets: {count}"))?;
    for created in 0..count {
        let result = match kind {
            "tcp-sockets" => TcpSocket::create(IpAddressFamily::Ipv4).map(std::mem::forget),
            _ => UdpSocket::create(IpAddressFamily::Ipv4).map(std::mem::forget),
        };
        if let Err(err) = result {
            return Err(format!("created {created}, then {}", describe(err)));
        }
    }
    Ok(format!("created {count}"))
}

/// Allocates and touches `mib` MiB; past a memory limit the allocation aborts (a trap).
fn alloc(mib: &str) -> Result<String, String> {
    let mib: usize = mib
        .parse()
        .map_err(|_| format!("not a number of MiB: {mib}"))?;
    let mut block = vec![0u8; mib << 20];
    block.iter_mut().step_by(4096).for_each(|b| *b = 1);
    Ok(format!("{} bytes", block.len()))
}

/// Computes forever without a host call: only the host's epoch yields stop it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Waits forever on a 0.3 clock, as a stuck guest would.
async fn hold() -> ! {
    loop {
        wasip3::clocks::monotonic_clock::wait_for(24 * 3600 * 1_000_000_000).await;
    }
}

fn family(addr: SocketAddr) -> IpAddressFamily {
    match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("expected ip:port or [ipv6]:port, got {s:?}"))
}

/// The error code as WIT names it (`access-denied`), as `hostile` prints 0.2's; `other`'s text
/// alone when it has one (the host says `new-socket-limit` there).
fn describe(code: ErrorCode) -> String {
    if let ErrorCode::Other(Some(text)) = &code {
        return text.clone();
    }
    kebab(&format!("{code:?}"))
}

/// A WIT name from wit-bindgen's debug form: `error-code::access-denied`, or
/// `ErrorCode::AccessDenied`, both give `access-denied`.
fn kebab(debug: &str) -> String {
    let name = debug.rsplit("::").next().unwrap_or(debug);
    let mut kebab = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kebab.push('-');
        }
        kebab.push(c.to_ascii_lowercase());
    }
    kebab
}

fn describe_io(err: std::io::Error) -> String {
    format!("{:?}: {err}", err.kind())
}

fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port: a.port(),
            address: a.ip().octets().into(),
        }),
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: a.flowinfo(),
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                scope_id: a.scope_id(),
            })
        }
    }
}

fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(a) => {
            let (b0, b1, b2, b3) = a.address;
            SocketAddr::from(([b0, b1, b2, b3], a.port))
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            let ip = Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7);
            SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                a.port,
                a.flow_info,
                a.scope_id,
            ))
        }
    }
}
