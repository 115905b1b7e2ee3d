//! The time guest: RFC 3339 over TCP, strftime formats over UDP.

use std::net::{SocketAddr, UdpSocket};

use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::{PATIENCE, policy, start, stop_clean, tcp, udp};

/// Sends `format` as one datagram and returns the reply as text.
pub(crate) async fn ask(server: SocketAddr, format: &str) -> String {
    let format = format.to_string();
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket.send_to(format.as_bytes(), server).expect("send");
        let mut buf = vec![0; 65_536];
        let (n, _) = socket.recv_from(&mut buf).expect("reply in time");
        String::from_utf8(buf[..n].to_vec()).expect("UTF-8 reply")
    })
    .await
    .unwrap()
}

pub(crate) fn assert_close_to_now(time: &str) {
    let time = DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|e| panic!("`{time}` is not RFC 3339: {e}"))
        .with_timezone(&Utc);
    let skew = (Utc::now() - time).num_milliseconds().abs();
    assert!(skew < 5_000, "{time} is {skew} ms away from now");
}

#[tokio::test]
async fn tcp_sends_one_rfc3339_line_and_closes() {
    let (guest, sockets) = start("time", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    assert_tcp_tells_the_time(tcp(&sockets)).await;
    stop_clean(guest).await;
}

/// Connects to a time server's TCP side: one RFC 3339 line close to now, then the close.
pub(crate) async fn assert_tcp_tells_the_time(server: SocketAddr) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut line))
        .await
        .expect("the guest closes after the line")
        .unwrap();
    let time = line.strip_suffix('\n').expect("ends with a newline");
    assert!(!time.contains('\n'), "one line: {line:?}");
    assert_close_to_now(time);
}

#[tokio::test]
async fn udp_formats_the_time_as_asked() {
    // Both transports in one instance.
    let (guest, sockets) =
        start("time", policy(&["127.0.0.1:0"], &["127.0.0.1:0"], &[]), &[]).await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let server = udp(&sockets);

    let before = Utc::now().format("%Y-%m-%d").to_string();
    let date = ask(server, "%Y-%m-%d").await;
    let after = Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        date == before || date == after,
        "{date} is not today ({before})"
    );

    assert_close_to_now(&ask(server, "").await);
    assert_eq!(ask(server, "%Q is no format").await, "ERR invalid format");
    // Still serving after a bad format, and TCP too.
    assert_eq!(
        ask(server, "year %Y").await,
        Utc::now().format("year %Y").to_string()
    );
    assert_tcp_tells_the_time(tcp(&sockets)).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn udp_only_is_enough() {
    let (guest, sockets) = start("time", policy(&[], &["127.0.0.1:0"], &[]), &[]).await;
    assert_close_to_now(&ask(udp(&sockets), "").await);
    stop_clean(guest).await;
}
