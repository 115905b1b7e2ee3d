//! The echo guest through the library API: bytes, concurrency, half-close, IPv6, denials.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    PATIENCE, policy, start, start_expecting_failure, stop_clean, tcp, test_guest,
};

/// Sends `data`, half-closes, and returns everything read until the server closes.
pub(crate) async fn roundtrip(addr: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("write");
        wr.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, rd.read_to_end(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    writer.await.unwrap();
    back
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn one_mebibyte_round_trip() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let data = pattern(1 << 20);
    assert_eq!(roundtrip(tcp(&sockets), &data).await, data);
    stop_clean(guest).await;
}

#[tokio::test]
async fn hundred_concurrent_clients() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    hundred_clients_at_once(tcp(&sockets)).await;
    stop_clean(guest).await;
}

/// A hundred clients, all connected before any finishes, each echoed its own 1 KiB: the
/// guest must serve them at once, not in turn.
pub(crate) async fn hundred_clients_at_once(addr: std::net::SocketAddr) {
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let clients = streams.into_iter().enumerate().map(|(i, mut stream)| {
        tokio::spawn(async move {
            let msg = format!("client {i} says hello\n").repeat(50);
            stream.write_all(msg.as_bytes()).await.unwrap();
            let mut back = vec![0; msg.len()];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg.as_bytes(), "client {i}");
        })
    });
    for client in clients {
        tokio::time::timeout(PATIENCE, client)
            .await
            .expect("in time")
            .unwrap();
    }
}

#[tokio::test]
async fn half_close_flushes_then_closes() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    stream.write_all(b"first ").await.unwrap();
    let mut first = [0u8; 6];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"first ");
    stream.write_all(b"and the rest").await.unwrap();
    stream.shutdown().await.unwrap(); // half-close: we can still read
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("server closes after flushing")
        .unwrap();
    assert_eq!(rest, b"and the rest");
    stop_clean(guest).await;
}

#[tokio::test]
async fn ipv6_loopback() {
    let (guest, sockets) = start("echo", policy(&["[::1]:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
    assert_eq!(roundtrip(addr, b"over IPv6").await, b"over IPv6");
    stop_clean(guest).await;
}

#[tokio::test]
async fn two_listen_addresses_both_serve() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0", "[::1]:0"], &[], &[]), &[]).await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    for socket in &sockets {
        assert_eq!(roundtrip(socket.addr, b"both").await, b"both");
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn abrupt_disconnects_never_trap_the_guest() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(&[7; 4096]).await;
        // RST instead of FIN: the guest's next read or write fails mid-stream.
        stream.set_zero_linger().unwrap();
        drop(stream);
    }
    // Still serving, and still stops cleanly with those connections gone.
    assert_eq!(roundtrip(addr, b"still here").await, b"still here");
    // Connections left open at shutdown are dropped by the guest without trapping.
    let _idle = TcpStream::connect(addr).await.unwrap();
    stop_clean(guest).await;
}

#[tokio::test]
async fn denied_listen_is_seen_by_guest_and_reported_by_host() {
    // plain-echo binds the address in its argument; the policy grants only a connect elsewhere.
    let (guest, err) = start_expecting_failure(
        test_guest("plain-echo"),
        policy(&[], &[], &["tcp-connect=127.0.0.1:9"]),
        &["127.0.0.1:0"],
    )
    .await;
    assert!(err.to_string().contains("status 1"), "{err:#}");
    let stderr = guest.stderr().to_lowercase();
    assert!(
        stderr.contains("permission denied") || stderr.contains("access"),
        "the guest sees access-denied: {stderr}"
    );
    let denials: Vec<_> = guest
        .decisions()
        .into_iter()
        .filter(|e| !e.allowed())
        .collect();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0].use_.to_string(), "tcp-listen");
    assert_eq!(denials[0].addr, "127.0.0.1:0");
    assert_eq!(denials[0].rule, None);
    assert_eq!(guest.denials(), 1);
}

#[tokio::test]
async fn forbidden_import_is_refused_at_load() {
    let bytes = wat::parse_str(crate::support::SNEAKY_WAT).unwrap();
    let err = match sockbox::Sandbox::builder(sockbox::GuestSource::Bytes {
        name: "sneaky".into(),
        bytes: bytes.into(),
    })
    .start()
    .await
    {
        Ok(_) => panic!("a component importing wasi:http must not load"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("wasi:http/outgoing-handler@0.2.0"), "{err}");
    assert!(err.contains("does not provide"), "{err}");
}
