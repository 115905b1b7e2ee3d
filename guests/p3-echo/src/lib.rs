//! A WASI 0.3 echo for the issue 16 groundwork (docs/design/wasi-p3.md): the smallest guest
//! that shows how a 0.3 server is written on `wasip3`, and the load the fairness figures use.
//!
//! Arguments are the addresses to listen on (`127.0.0.1:0`, `[::1]:0`); for each it prints
//! `listening <addr>` once bound, so a runner can find port 0's real port. Each connection is
//! its own spawned task: `receive()` gives a `stream<u8>`, `send()` takes one, and dropping
//! our writer half-closes the connection.
//!
//! `--readiness` (before the addresses) holds no read buffer while a connection is idle (see
//! `read_when_ready`); without it each connection keeps a `READ_BUF` read posted: the two ways
//! the SDK's 0.3 backend could read, measured side by side.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;

use wasip3::exports::cli::run::Guest;
use wasip3::sockets::types::{
    IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, TcpSocket,
};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{spawn_local, wit_stream};

/// Each connection keeps one read posted, so this is the idle memory per connection.
const READ_BUF: usize = 16 * 1024;

struct Echo;

wasip3::cli::command::export!(Echo);

impl Guest for Echo {
    async fn run() -> Result<(), ()> {
        let mut addrs = wasip3::cli::environment::get_arguments();
        addrs.remove(0); // the program name
        let readiness = addrs.first().is_some_and(|a| a == "--readiness");
        if readiness {
            addrs.remove(0);
        }
        if addrs.is_empty() {
            // Under `sockbox run --listen 127.0.0.1:0` (the bench's `--component`).
            addrs.push("127.0.0.1:0".into());
        }
        let mut accepting = Vec::new();
        for addr in addrs {
            let addr: SocketAddr = addr.parse().map_err(|e| eprintln!("{addr}: {e}"))?;
            let (socket, mut accepted) = listen(addr).map_err(|e| eprintln!("{addr}: {e:?}"))?;
            let bound = socket.get_local_address().map_err(|e| eprintln!("{e:?}"))?;
            println!("listening {}", from_wasi(bound));
            accepting.push(spawn_local(async move {
                let _socket = socket; // the listener lives as long as its accept loop
                while let Some(conn) = accepted.next().await {
                    spawn_local(echo(conn, readiness));
                }
            }));
        }
        for task in accepting {
            task.await;
        }
        Ok(())
    }
}

fn listen(
    addr: SocketAddr,
) -> Result<
    (TcpSocket, wasip3::wit_bindgen::StreamReader<TcpSocket>),
    wasip3::sockets::types::ErrorCode,
> {
    let family = match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    };
    let socket = TcpSocket::create(family)?;
    socket.bind(to_wasi(addr))?;
    let accepted = socket.listen()?;
    Ok((socket, accepted))
}

async fn echo(conn: TcpSocket, readiness: bool) {
    let (mut rx, rx_done) = conn.receive();
    let (mut tx, tx_reader) = wit_stream::new::<u8>();
    let tx_done = conn.send(tx_reader);
    let mut kept = Vec::new();
    loop {
        let (result, data) = if readiness {
            match read_when_ready(&mut rx).await {
                Some(read) => read,
                None => break,
            }
        } else {
            let mut buf = std::mem::take(&mut kept);
            buf.reserve(READ_BUF);
            rx.read(buf).await
        };
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
        let mut rest = tx.write_all(data).await;
        if !rest.is_empty() {
            break; // the peer stopped reading
        }
        if !readiness {
            rest.clear();
            kept = rest; // this mode keeps a buffer posted while idle anyway
        }
    }
    drop(tx); // half-close: the peer sees end of stream once everything is sent
    let _ = tx_done.await;
    let _ = rx_done.await;
}

/// Reads without leaving a buffer posted while the connection is idle. A zero-length read waits
/// for readiness, but wasmtime-wasi answers it from tokio's cached readiness, which stays set
/// until a read would block: so after each message it completes at once, stale. Hence: post
/// the real read, and if it does not complete on its first poll, cancel it (getting the buffer
/// back), free the buffer and wait for readiness again, which is then real.
async fn read_when_ready(
    rx: &mut wasip3::wit_bindgen::StreamReader<u8>,
) -> Option<(StreamResult, Vec<u8>)> {
    loop {
        let (ready, _) = rx.read(Vec::new()).await;
        if ready != StreamResult::Complete(0) {
            return None;
        }
        let mut read = pin!(rx.read(Vec::with_capacity(READ_BUF)));
        let first = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(done) => return Some(done),
            Poll::Pending => match read.as_mut().cancel() {
                (StreamResult::Cancelled, _) => continue, // the buffer is freed here
                done => return Some(done),                // raced: data arrived meanwhile
            },
        }
    }
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
            let ip = std::net::Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7);
            SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                a.port,
                a.flow_info,
                a.scope_id,
            ))
        }
    }
}
