//! The WASI 0.3 built-ins (`<name>-p3`, the same sources on the SDK's `p3` backend) speak the
//! protocols of their 0.2 builds and stop cleanly: echo (bytes, half-close, IPv4 and IPv6, many
//! clients), udp-echo, chat and framing, through the library and through `sockbox run`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chat::Client;
use crate::echo::{hundred_clients_at_once, roundtrip};
use crate::support::{Cli, PATIENCE, policy, read_frame, start, stop_clean, tcp, udp, write_frame};
use crate::udp_echo::bounce;

/// Bytes that show a reordering or a lost chunk.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

#[tokio::test]
async fn echo_p3_echoes_bytes_and_half_close_on_ipv4_and_ipv6() {
    let (guest, sockets) = start(
        "echo-p3",
        policy(&["127.0.0.1:0", "[::1]:0"], &[], &[]),
        &[],
    )
    .await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let data = pattern(1 << 20);
    for socket in &sockets {
        // A mebibyte, then the client's half-close: all of it back, then the server's close.
        assert_eq!(roundtrip(socket.addr, &data).await, data, "{}", socket.addr);

        // After a half-close the client still reads what was in flight, then end of stream.
        let mut stream = TcpStream::connect(socket.addr).await.unwrap();
        stream.write_all(b"first ").await.unwrap();
        let mut first = [0u8; 6];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"first ");
        stream.write_all(b"and the rest").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
            .await
            .expect("server closes after flushing")
            .unwrap();
        assert_eq!(rest, b"and the rest", "{}", socket.addr);
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn echo_p3_serves_a_hundred_clients_at_once() {
    let (guest, sockets) = start("echo-p3", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    hundred_clients_at_once(tcp(&sockets)).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn udp_echo_p3_answers_datagrams_of_any_size() {
    let (guest, sockets) = start("udp-echo-p3", policy(&[], &["127.0.0.1:0"], &[]), &[]).await;
    let payloads = vec![
        Vec::new(),
        pattern(1400),
        pattern(60_000),
        b"after".to_vec(),
    ];
    assert_eq!(bounce(udp(&sockets), payloads.clone()).await, payloads);
    stop_clean(guest).await;
}

#[tokio::test]
async fn chat_p3_relays_between_two_clients() {
    let (guest, sockets) = start("chat-p3", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    let mut alice = Client::join(addr, "alice").await;
    let mut bob = Client::join(addr, "bob").await;
    assert_eq!(alice.next_line().await, "* bob joined\n");
    alice.say("hi bob").await;
    assert_eq!(bob.next_line().await, "alice: hi bob\n");
    bob.say("hi alice").await;
    assert_eq!(alice.next_line().await, "bob: hi alice\n");
    drop(bob);
    assert_eq!(alice.next_line().await, "* bob left\n");
    stop_clean(guest).await;
}

#[tokio::test]
async fn framing_p3_answers_frames_split_and_glued() {
    let (guest, sockets) = start("framing-p3", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    let large = pattern(200_000);
    write_frame(&mut stream, &large).await;
    write_frame(&mut stream, b"small").await;
    assert_eq!(read_frame(&mut stream).await, large);
    assert_eq!(read_frame(&mut stream).await, b"small");
    stop_clean(guest).await;
}

/// `sockbox run <guest>` with a client connected, then SIGTERM: exit 0 within the host's grace.
fn stops_on_sigterm(args: &[&str]) {
    let mut server = Cli::spawn(args);
    let (transport, addr) = server.ready();
    // An idle client (TCP) or a conversation (UDP) is open when the signal comes.
    let _client = match transport.as_str() {
        "tcp" => Some(std::net::TcpStream::connect(addr).unwrap()),
        _ => {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(PATIENCE)).unwrap();
            socket.send_to(b"ping", addr).unwrap();
            let mut buf = [0; 16];
            assert_eq!(socket.recv(&mut buf).unwrap(), 4);
            None
        }
    };
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    server.signal("TERM");
    let (code, stderr) = server.finish();
    assert_eq!(code, Some(0), "{args:?}\nstderr:\n{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{args:?} took {:?} to stop",
        signalled.elapsed()
    );
}

#[test]
fn echo_p3_stops_cleanly_on_sigterm() {
    stops_on_sigterm(&["run", "echo-p3", "--listen", "127.0.0.1:0"]);
}

#[test]
fn udp_echo_p3_stops_cleanly_on_sigterm() {
    stops_on_sigterm(&["run", "udp-echo-p3", "--udp", "127.0.0.1:0"]);
}

#[test]
fn chat_p3_stops_cleanly_on_sigterm() {
    stops_on_sigterm(&["run", "chat-p3", "--listen", "127.0.0.1:0"]);
}
