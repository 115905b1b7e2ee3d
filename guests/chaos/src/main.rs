//! chaos: random sequences of socket operations, for the differential check.
//!
//! Driven by a seed, it creates, binds, listens, connects, accepts, sends, receives and drops
//! TCP and UDP sockets of both families, in any order, with addresses drawn from lists the test
//! gives it (inside and outside the policy the test also drew). It never decides anything
//! itself: every operation goes to the host, and the line it prints is what the host answered.
//! The e2e test `security_diff` compares those answers, the kernel's view of the process
//! (`/proc`) and the audit log with a model of the policy.
//!
//! Arguments: `SEED OPS CHECK_EVERY PAUSE_MS ADDR...`, each ADDR one of `L=ip:port` (a local
//! address to bind), `T=ip:port` (a TCP server to connect to), `U=ip:port` (a UDP peer).
//!
//! Output, one line each, nothing else on stdout:
//! - `OP <n> <op> <id|-> <args...> ok <detail...>` or `... err <error-code>`
//! - every CHECK_EVERY ops: `CHECK <n>`, one `LIVE <id> <tcp|udp> <state> <local|-> <remote|->
//!   <origin>` per socket held, `PAUSE <n>`; then it sleeps PAUSE_MS (the test reads `/proc`
//!   meanwhile) and prints `RESUME <n> <unix-ns>`, the wall clock before its next operation, so
//!   the test can tell whether its snapshot was taken while nothing moved.
//! - `DONE <n>` at the end (the guest then exits 0).
//!
//! Every wait is bounded (a few ms to 2 s), so a run always ends. Resources are declared
//! parent last in each struct, so streams drop before their socket.

use std::net::SocketAddr;

use sockbox_guest::net::addr::{from_wasi, to_wasi};

use wasip2::clocks::{monotonic_clock, wall_clock};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Network};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::tcp_create_socket::create_tcp_socket;
use wasip2::sockets::udp::{
    IncomingDatagramStream, OutgoingDatagram, OutgoingDatagramStream, UdpSocket,
};
use wasip2::sockets::udp_create_socket::create_udp_socket;

/// Most sockets held at once; past it the guest drops instead of creating.
const MAX_LIVE: usize = 24;
/// How long a connect may take (loopback answers at once; this only bounds a stuck host).
const CONNECT_WAIT_NS: u64 = 2_000_000_000;
/// How long an accept or receive waits for something to arrive before it says would-block.
const SHORT_WAIT_NS: u64 = 20_000_000;

/// `percent` in a hundred: the odds of an operation or an address family.
fn chance(rng: &mut fastrand::Rng, percent: u64) -> bool {
    rng.u64(..100) < percent
}

struct Tcp {
    streams: Option<(InputStream, OutputStream)>,
    socket: TcpSocket,
    state: &'static str,
    accepted: bool,
}

struct Udp {
    streams: Option<(IncomingDatagramStream, OutgoingDatagramStream)>,
    socket: UdpSocket,
    bound: bool,
}

enum Sock {
    Tcp(Tcp),
    Udp(Udp),
}

impl Sock {
    fn v6(&self) -> bool {
        let family = match self {
            Sock::Tcp(t) => t.socket.address_family(),
            Sock::Udp(u) => u.socket.address_family(),
        };
        matches!(family, IpAddressFamily::Ipv6)
    }
}

struct Chaos {
    /// The same seed gives the same sequence of draws.
    rng: fastrand::Rng,
    network: Network,
    sockets: Vec<(u32, Sock)>,
    next_id: u32,
    local: Vec<SocketAddr>,
    tcp_targets: Vec<SocketAddr>,
    udp_peers: Vec<SocketAddr>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: chaos SEED OPS CHECK_EVERY PAUSE_MS [L=|T=|U=ip:port]...");
        std::process::exit(2);
    }
    let number = |i: usize| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("chaos: not a number: {:?}", args[i]);
            std::process::exit(2)
        })
    };
    let (seed, ops, check_every, pause_ms) = (number(0), number(1), number(2), number(3));
    let mut chaos = Chaos {
        rng: fastrand::Rng::with_seed(seed),
        network: instance_network(),
        sockets: Vec::new(),
        next_id: 0,
        local: Vec::new(),
        tcp_targets: Vec::new(),
        udp_peers: Vec::new(),
    };
    for arg in &args[4..] {
        let (kind, addr) = arg.split_once('=').unwrap_or(("", arg));
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            eprintln!("chaos: not an address: {arg:?}");
            std::process::exit(2)
        };
        match kind {
            "L" => chaos.local.push(addr),
            "T" => chaos.tcp_targets.push(addr),
            "U" => chaos.udp_peers.push(addr),
            _ => {
                eprintln!("chaos: expected L=, T= or U=, got {arg:?}");
                std::process::exit(2)
            }
        }
    }
    for n in 1..=ops {
        chaos.step(n);
        if check_every > 0 && n % check_every == 0 {
            chaos.check(n, pause_ms);
        }
    }
    if check_every == 0 || ops % check_every != 0 {
        chaos.check(ops, pause_ms);
    }
    println!("DONE {ops}");
    // Streams before sockets before the network.
    chaos.sockets.clear();
}

impl Chaos {
    fn step(&mut self, n: u64) {
        let roll = self.rng.usize(..100);
        let op = match roll {
            0..=11 => "new",
            12..=21 => "bind",
            22..=29 => "listen",
            30..=41 => "connect",
            42..=51 => "accept",
            52..=65 => "send",
            66..=71 => "udp-connect",
            72..=85 => "recv",
            _ => "drop",
        };
        let line = match op {
            "new" if self.sockets.len() < MAX_LIVE => self.new_socket(),
            "new" | "drop" => self.drop_one(),
            _ => match self.pick(op) {
                Some(index) => self.act(op, index),
                // Nothing fits this operation: make a socket so later ones have material.
                None if self.sockets.len() < MAX_LIVE => self.new_socket(),
                None => self.drop_one(),
            },
        };
        println!("OP {n} {line}");
    }

    /// A socket `op` applies to, at random.
    fn pick(&mut self, op: &str) -> Option<usize> {
        let fits: Vec<usize> = self
            .sockets
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| match (op, s) {
                ("bind", Sock::Tcp(t)) => t.state == "fresh",
                ("bind", Sock::Udp(u)) => !u.bound,
                ("listen", Sock::Tcp(t)) => matches!(t.state, "fresh" | "bound"),
                ("connect", Sock::Tcp(t)) => matches!(t.state, "fresh" | "bound"),
                ("accept", Sock::Tcp(t)) => t.state == "listening",
                ("send" | "recv", Sock::Tcp(t)) => t.streams.is_some(),
                ("send" | "recv" | "udp-connect", Sock::Udp(u)) => u.bound,
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        (!fits.is_empty()).then(|| fits[self.rng.usize(..fits.len())])
    }

    /// An address from `list`, mostly of the socket's family (sometimes the other, which the
    /// host must refuse as an invalid argument).
    fn draw(&mut self, list: &[SocketAddr], v6: bool) -> Option<SocketAddr> {
        let same: Vec<SocketAddr> = list.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        let from = if same.is_empty() || chance(&mut self.rng, 8) {
            list
        } else {
            &same
        };
        (!from.is_empty()).then(|| from[self.rng.usize(..from.len())])
    }

    fn new_socket(&mut self) -> String {
        let tcp = chance(&mut self.rng, 50);
        let v6 = chance(&mut self.rng, 40);
        let family = if v6 {
            IpAddressFamily::Ipv6
        } else {
            IpAddressFamily::Ipv4
        };
        let kind = format!(
            "{}{}",
            if tcp { "tcp" } else { "udp" },
            if v6 { 6 } else { 4 }
        );
        let made = if tcp {
            create_tcp_socket(family).map(|socket| {
                Sock::Tcp(Tcp {
                    streams: None,
                    socket,
                    state: "fresh",
                    accepted: false,
                })
            })
        } else {
            create_udp_socket(family).map(|socket| {
                Sock::Udp(Udp {
                    streams: None,
                    socket,
                    bound: false,
                })
            })
        };
        match made {
            Ok(sock) => {
                let id = self.add(sock);
                format!("new {id} {kind} ok")
            }
            Err(code) => format!("new - {kind} err {}", code.name()),
        }
    }

    fn add(&mut self, sock: Sock) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.sockets.push((id, sock));
        id
    }

    fn drop_one(&mut self) -> String {
        if self.sockets.is_empty() {
            return self.new_socket();
        }
        let index = self.rng.usize(..self.sockets.len());
        let (id, sock) = self.sockets.remove(index);
        drop(sock);
        format!("drop {id} ok")
    }

    fn act(&mut self, op: &str, index: usize) -> String {
        let v6 = self.sockets[index].1.v6();
        let id = self.sockets[index].0;
        let local = self.local.clone();
        let tcp_targets = self.tcp_targets.clone();
        let udp_peers = self.udp_peers.clone();
        let bind_addr = self.draw(&local, v6);
        let tcp_target = self.draw(&tcp_targets, v6);
        let udp_peer = self.draw(&udp_peers, v6);
        let extra = self.rng.u64(..);
        let network = &self.network;
        let (_, sock) = &mut self.sockets[index];
        let result = match (op, sock) {
            ("bind", Sock::Tcp(t)) => {
                let Some(addr) = bind_addr else {
                    return format!("bind {id} - err no-address");
                };
                let out = tcp_bind(network, t, addr);
                return format!("bind {id} {addr} {}", outcome(out));
            }
            ("bind", Sock::Udp(u)) => {
                let Some(addr) = bind_addr else {
                    return format!("bind {id} - err no-address");
                };
                let out = udp_bind(network, u, addr);
                return format!("bind {id} {addr} {}", outcome(out));
            }
            ("listen", Sock::Tcp(t)) => {
                let before = t
                    .socket
                    .local_address()
                    .map(|a| from_wasi(a).to_string())
                    .unwrap_or_else(|_| "-".into());
                let out = tcp_listen(t);
                return format!("listen {id} {before} {}", outcome(out));
            }
            ("connect", Sock::Tcp(t)) => {
                let Some(addr) = tcp_target else {
                    return format!("connect {id} - err no-address");
                };
                let out = tcp_connect(network, t, addr);
                return format!("connect {id} {addr} {}", outcome(out));
            }
            ("accept", Sock::Tcp(t)) => match tcp_accept(t) {
                Ok(accepted) => {
                    let local = accepted
                        .socket
                        .local_address()
                        .map(|a| from_wasi(a).to_string())
                        .unwrap_or_else(|_| "-".into());
                    let peer = accepted
                        .socket
                        .remote_address()
                        .map(|a| from_wasi(a).to_string())
                        .unwrap_or_else(|_| "-".into());
                    let new_id = self.add(Sock::Tcp(accepted));
                    return format!("accept {id} ok {new_id} {local} {peer}");
                }
                Err(code) => Err(code),
            },
            ("send", Sock::Tcp(t)) => tcp_send(t, extra),
            ("send", Sock::Udp(u)) => {
                let connected = u.socket.remote_address().is_ok();
                let to = if connected { None } else { udp_peer };
                if !connected && to.is_none() {
                    return format!("send {id} - err no-address");
                }
                let shown = to.map_or("-".to_string(), |a| a.to_string());
                let out = udp_send(u, to, extra);
                return format!("send {id} {shown} {}", outcome(out));
            }
            ("udp-connect", Sock::Udp(u)) => {
                let Some(addr) = udp_peer else {
                    return format!("udp-connect {id} - err no-address");
                };
                // A socket's streams must be gone before it gets new ones.
                u.streams = None;
                let out = u
                    .socket
                    .stream(Some(to_wasi(addr)))
                    .map(|streams| {
                        u.streams = Some(streams);
                        String::new()
                    })
                    .map_err(|c| c.name().to_string());
                return format!("udp-connect {id} {addr} {}", outcome(out));
            }
            ("recv", Sock::Tcp(t)) => tcp_recv(t),
            ("recv", Sock::Udp(u)) => udp_recv(u),
            (op, _) => Err(format!("unexpected-{op}")),
        };
        format!("{op} {id} {}", outcome(result))
    }

    /// Prints the sockets held, pauses so the test can look at the kernel, then stamps the
    /// time it goes on.
    fn check(&mut self, n: u64, pause_ms: u64) {
        println!("CHECK {n}");
        for (id, sock) in &self.sockets {
            let (kind, state, local, remote, origin) = match sock {
                Sock::Tcp(t) => (
                    "tcp",
                    t.state,
                    t.socket.local_address().ok(),
                    t.socket.remote_address().ok(),
                    if t.accepted { "accepted" } else { "made" },
                ),
                Sock::Udp(u) => (
                    "udp",
                    match (u.bound, u.streams.is_some()) {
                        (false, _) => "fresh",
                        (true, false) => "bound",
                        (true, true) => "streaming",
                    },
                    u.socket.local_address().ok(),
                    u.socket.remote_address().ok(),
                    "made",
                ),
            };
            let show =
                |a: Option<IpSocketAddress>| a.map_or("-".into(), |a| from_wasi(a).to_string());
            println!(
                "LIVE {id} {kind} {state} {} {} {origin}",
                show(local),
                show(remote)
            );
        }
        println!("PAUSE {n}");
        monotonic_clock::subscribe_duration(pause_ms * 1_000_000).block();
        let now = wall_clock::now();
        let ns = u128::from(now.seconds) * 1_000_000_000 + u128::from(now.nanoseconds);
        println!("RESUME {n} {ns}");
    }
}

fn outcome(result: Result<String, String>) -> String {
    match result {
        Ok(detail) if detail.is_empty() => "ok".into(),
        Ok(detail) => format!("ok {detail}"),
        Err(code) => format!("err {code}"),
    }
}

/// Waits until `pollable` is ready or `ns` passed; true if it is ready.
fn wait(pollable: &Pollable, ns: u64) -> bool {
    let timeout = monotonic_clock::subscribe_duration(ns);
    let ready = poll(&[pollable, &timeout]);
    ready.contains(&0)
}

fn name(code: ErrorCode) -> String {
    code.name().to_string()
}

fn tcp_bind(network: &Network, t: &mut Tcp, addr: SocketAddr) -> Result<String, String> {
    t.socket.start_bind(network, to_wasi(addr)).map_err(name)?;
    settle(&t.socket, || t.socket.finish_bind())?;
    t.state = "bound";
    local_of_tcp(&t.socket)
}

fn tcp_listen(t: &mut Tcp) -> Result<String, String> {
    t.socket.start_listen().map_err(name)?;
    settle(&t.socket, || t.socket.finish_listen())?;
    t.state = "listening";
    local_of_tcp(&t.socket)
}

fn tcp_connect(network: &Network, t: &mut Tcp, addr: SocketAddr) -> Result<String, String> {
    t.socket
        .start_connect(network, to_wasi(addr))
        .map_err(name)?;
    let pollable = t.socket.subscribe();
    let result = loop {
        match t.socket.finish_connect() {
            Err(ErrorCode::WouldBlock) => {
                if !wait(&pollable, CONNECT_WAIT_NS) {
                    // Still connecting: leave it so, it can only be dropped from now on.
                    t.state = "connecting";
                    break Err("timeout".to_string());
                }
            }
            Ok(streams) => {
                t.streams = Some(streams);
                t.state = "connected";
                break local_of_tcp(&t.socket);
            }
            Err(code) => {
                t.state = "closed";
                break Err(name(code));
            }
        }
    };
    drop(pollable);
    result
}

fn tcp_accept(t: &mut Tcp) -> Result<Tcp, String> {
    let pollable = t.socket.subscribe();
    let mut waited = false;
    let result = loop {
        match t.socket.accept() {
            Ok((socket, input, output)) => {
                break Ok(Tcp {
                    streams: Some((input, output)),
                    socket,
                    state: "connected",
                    accepted: true,
                });
            }
            Err(ErrorCode::WouldBlock) if !waited => {
                waited = true;
                wait(&pollable, SHORT_WAIT_NS);
            }
            Err(code) => break Err(name(code)),
        }
    };
    drop(pollable);
    result
}

fn tcp_send(t: &mut Tcp, extra: u64) -> Result<String, String> {
    let Some((_, output)) = &t.streams else {
        return Err("invalid-state".into());
    };
    let payload = format!("chaos {extra:016x}\n");
    let room = output.check_write().map_err(stream_error)?;
    let n = (room as usize).min(payload.len());
    if n == 0 {
        return Err("would-block".into());
    }
    output
        .write(&payload.as_bytes()[..n])
        .map_err(stream_error)?;
    Ok(n.to_string())
}

fn tcp_recv(t: &mut Tcp) -> Result<String, String> {
    let Some((input, _)) = &t.streams else {
        return Err("invalid-state".into());
    };
    let mut bytes = input.read(512).map_err(stream_error)?;
    if bytes.is_empty() {
        let pollable = input.subscribe();
        wait(&pollable, SHORT_WAIT_NS);
        drop(pollable);
        bytes = input.read(512).map_err(stream_error)?;
    }
    Ok(bytes.len().to_string())
}

fn stream_error(err: StreamError) -> String {
    match err {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(_) => "failed".into(),
    }
}

fn udp_bind(network: &Network, u: &mut Udp, addr: SocketAddr) -> Result<String, String> {
    u.socket.start_bind(network, to_wasi(addr)).map_err(name)?;
    loop {
        match u.socket.finish_bind() {
            Err(ErrorCode::WouldBlock) => u.socket.subscribe().block(),
            Err(code) => return Err(name(code)),
            Ok(()) => break,
        }
    }
    u.bound = true;
    u.socket
        .local_address()
        .map(|a| from_wasi(a).to_string())
        .map_err(name)
}

fn udp_streams(u: &mut Udp) -> Result<&(IncomingDatagramStream, OutgoingDatagramStream), String> {
    if u.streams.is_none() {
        u.streams = Some(u.socket.stream(None).map_err(name)?);
    }
    Ok(u.streams.as_ref().expect("just made"))
}

fn udp_send(u: &mut Udp, to: Option<SocketAddr>, extra: u64) -> Result<String, String> {
    let (_, outgoing) = udp_streams(u)?;
    let mut permits = outgoing.check_send().map_err(name)?;
    if permits == 0 {
        let pollable = outgoing.subscribe();
        wait(&pollable, SHORT_WAIT_NS);
        drop(pollable);
        permits = outgoing.check_send().map_err(name)?;
        if permits == 0 {
            return Err("would-block".into());
        }
    }
    let datagram = OutgoingDatagram {
        data: format!("chaos {extra:016x}").into_bytes(),
        remote_address: to.map(to_wasi),
    };
    let sent = outgoing.send(&[datagram]).map_err(name)?;
    Ok(sent.to_string())
}

fn udp_recv(u: &mut Udp) -> Result<String, String> {
    let (incoming, _) = udp_streams(u)?;
    let mut got = incoming.receive(8).map_err(name)?;
    if got.is_empty() {
        let pollable = incoming.subscribe();
        wait(&pollable, SHORT_WAIT_NS);
        drop(pollable);
        got = incoming.receive(8).map_err(name)?;
    }
    let mut line = got.len().to_string();
    for datagram in got {
        line.push(' ');
        line.push_str(&from_wasi(datagram.remote_address).to_string());
    }
    Ok(line)
}

fn settle(
    socket: &TcpSocket,
    mut finish: impl FnMut() -> Result<(), ErrorCode>,
) -> Result<(), String> {
    loop {
        match finish() {
            Err(ErrorCode::WouldBlock) => socket.subscribe().block(),
            other => return other.map_err(name),
        }
    }
}

fn local_of_tcp(socket: &TcpSocket) -> Result<String, String> {
    socket
        .local_address()
        .map(|a| from_wasi(a).to_string())
        .map_err(name)
}
