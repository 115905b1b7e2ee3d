//! The guest SDK's `TcpStream` composes with `futures-lite`'s generic I/O helpers (issue 15):
//! the `io-compose` test guest serves with `BufReader`, `read_line`, `write_all`, `io::copy`
//! and `close` only, none of the SDK's own stream methods.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{PATIENCE, policy, start, stop_clean, tcp, test_guest};

/// Sends `data` in uneven pieces, half-closes, and returns everything read until end of stream.
async fn exchange(addr: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        for piece in data.chunks(7_777) {
            wr.write_all(piece).await.expect("write");
        }
        wr.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, rd.read_to_end(&mut back))
        .await
        .expect("the guest answers and half-closes in time")
        .expect("read");
    writer.await.unwrap();
    back
}

#[tokio::test]
async fn futures_lite_helpers_read_lines_copy_and_half_close_over_the_sdk_stream() {
    let (guest, sockets) = start(
        test_guest("io-compose"),
        policy(&["127.0.0.1:0"], &[], &[]),
        &[],
    )
    .await;
    let addr = tcp(&sockets);
    // A line, then 1 MiB that is not lines: `read_line` takes the first, `io::copy` the rest
    // (first what the BufReader already holds, then the stream), `close` ends it.
    let rest: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut sent = b"hello, sockbox\n".to_vec();
    sent.extend_from_slice(&rest);
    let mut expected = b"HELLO, SOCKBOX\n".to_vec();
    expected.extend_from_slice(&rest);
    let back = exchange(addr, &sent).await;
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "the bytes differ");
    // No newline before the end of stream: read_line gives what came; nothing is left to copy.
    assert_eq!(exchange(addr, b"no newline").await, b"NO NEWLINE");
    assert_eq!(exchange(addr, b"").await, b"");
    stop_clean(guest).await;
}
