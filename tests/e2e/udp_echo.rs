//! The udp-echo guest: datagrams of any size come back unchanged, empty ones too.

use std::net::{SocketAddr, UdpSocket};

use crate::support::{PATIENCE, policy, start, stop_clean, udp};

/// Sends each payload from a native std socket and returns what came back, in order.
pub(crate) async fn bounce(server: SocketAddr, payloads: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    // Blocking std sockets run off the runtime: the guest runs on this runtime too.
    tokio::task::spawn_blocking(move || {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(local).expect("bind client");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = vec![0; 65_536]; // a 60000-byte datagram needs a buffer that large
        payloads
            .iter()
            .map(|payload| {
                socket.send_to(payload, server).expect("send");
                let (n, from) = socket.recv_from(&mut buf).expect("reply in time");
                assert_eq!(from, server, "the reply comes from the guest's socket");
                buf[..n].to_vec()
            })
            .collect()
    })
    .await
    .unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

#[tokio::test]
async fn datagrams_of_0_1400_and_60000_bytes_come_back_unchanged() {
    let (guest, sockets) = start("udp-echo", policy(&[], &["127.0.0.1:0"], &[]), &[]).await;
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
async fn every_granted_address_is_served() {
    let (guest, sockets) = start(
        "udp-echo",
        policy(&[], &["127.0.0.1:0", "[::1]:0"], &[]),
        &[],
    )
    .await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    for socket in &sockets {
        let back = bounce(socket.addr, vec![b"hello".to_vec()]).await;
        assert_eq!(back, [b"hello"], "{socket}");
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn many_clients_at_once() {
    let (guest, sockets) = start("udp-echo", policy(&[], &["127.0.0.1:0"], &[]), &[]).await;
    let server = udp(&sockets);
    let clients = (0..20).map(|i| {
        let payloads = (0..10)
            .map(|j| format!("client {i} datagram {j}").into_bytes())
            .collect::<Vec<_>>();
        tokio::spawn(async move { (payloads.clone(), bounce(server, payloads).await) })
    });
    for client in clients {
        let (sent, back) = client.await.unwrap();
        assert_eq!(back, sent);
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_conversation_is_audited_once_each_way_not_per_datagram() {
    let (guest, sockets) = start("udp-echo", policy(&[], &["127.0.0.1:0"], &[]), &[]).await;
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 8]).collect();
    assert_eq!(bounce(udp(&sockets), payloads.clone()).await, payloads);
    let decisions = guest.decisions();
    let count = |use_: &str| decisions.iter().filter(|d| d.use_ == use_).count();
    assert_eq!(count("udp-recv"), 1, "{decisions:#?}");
    assert_eq!(count("udp-send"), 1, "{decisions:#?}");
    assert!(decisions.iter().all(|d| d.allowed()));
    stop_clean(guest).await;
}
