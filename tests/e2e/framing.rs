//! The framing guest: one frame back per frame, however the frames are cut on the wire.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    PATIENCE, policy, read_frame, start, start_expecting_failure, stop_clean, tcp, write_frame,
};

/// The error frame of docs/contract.md: `u32` length, then `ERR frame too large`.
const TOO_LARGE: &[u8] = b"\x00\x00\x00\x13ERR frame too large";

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 241) as u8).collect()
}

/// Everything the guest sends until it closes the connection (a reset fails the test).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the guest closes the connection")
        .expect("closed cleanly, not reset");
    rest
}

#[tokio::test]
async fn hundred_frames_glued_into_one_write() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    let payloads: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("frame number {i}").repeat(i % 7).into_bytes())
        .collect();
    let glued: Vec<u8> = payloads
        .iter()
        .flat_map(|p| sockbox_wire::encode_frame(p))
        .collect();
    stream.write_all(&glued).await.unwrap();
    for payload in &payloads {
        assert_eq!(&read_frame(&mut stream).await, payload);
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn one_frame_split_byte_by_byte() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let frame = sockbox_wire::encode_frame(b"hello, sticky world");
    for byte in &frame {
        stream.write_all(&[*byte]).await.unwrap();
        // A pause so each byte is its own segment, not coalesced by the kernel.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_frame(&mut stream).await, b"hello, sticky world");
    stop_clean(guest).await;
}

#[tokio::test]
async fn four_mebibyte_frame() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let (mut rd, mut wr) = TcpStream::connect(tcp(&sockets))
        .await
        .unwrap()
        .into_split();
    let payload = pattern(4 << 20);
    let sent = payload.clone();
    let writer = tokio::spawn(async move { write_frame(&mut wr, &sent).await });
    assert!(
        read_frame(&mut rd).await == payload,
        "4 MiB payload differs"
    );
    writer.await.unwrap();
    stop_clean(guest).await;
}

#[tokio::test]
async fn oversized_header_gets_the_error_frame_and_only_that_client_is_closed() {
    let (guest, sockets) = start(
        "framing",
        policy(&["127.0.0.1:0"], &[], &[]),
        &["--max-frame", "1024"],
    )
    .await;
    let addr = tcp(&sockets);
    let mut other = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut other, b"before").await;
    assert_eq!(read_frame(&mut other).await, b"before");

    let mut offender = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut offender, &pattern(1024)).await; // the maximum itself is fine
    assert_eq!(read_frame(&mut offender).await, pattern(1024));
    offender.write_all(&1025u32.to_be_bytes()).await.unwrap();
    assert_eq!(read_until_closed(&mut offender).await, TOO_LARGE);

    write_frame(&mut other, b"after").await;
    assert_eq!(read_frame(&mut other).await, b"after");
    let mut newcomer = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut newcomer, b"new").await;
    assert_eq!(read_frame(&mut newcomer).await, b"new");
    stop_clean(guest).await;
}

#[tokio::test]
async fn default_maximum_is_16_mebibytes() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    let header = ((16u32 << 20) + 1).to_be_bytes();
    stream.write_all(&header).await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, TOO_LARGE);
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_bad_max_frame_argument_fails_at_start() {
    let (guest, err) = start_expecting_failure(
        "framing",
        policy(&["127.0.0.1:0"], &[], &[]),
        &["--max-frame", "lots"],
    )
    .await;
    assert!(err.to_string().contains("status 1"), "{err:#}");
    assert!(guest.stderr().contains("--max-frame"), "{}", guest.stderr());
}

#[tokio::test]
async fn frames_around_and_beyond_one_write_come_back_whole_small_ones_between() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Sizes at and past the guest's 64 KiB write, each followed by a tiny frame.
    let sizes = [65_531, 65_532, 65_536, 70_000, 131_072, 200_000, 1 << 20];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .flat_map(|&n| [pattern(n), b"tiny".to_vec()])
        .collect();
    let sent = payloads.clone();
    let writer = tokio::spawn(async move {
        for payload in &sent {
            write_frame(&mut wr, payload).await;
        }
        wr
    });
    for payload in &payloads {
        assert_eq!(
            &read_frame(&mut rd).await,
            payload,
            "{} bytes",
            payload.len()
        );
    }
    drop(writer.await.unwrap());
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_large_frame_cut_short_does_not_disturb_the_next_client() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    let mut cut = TcpStream::connect(addr).await.unwrap();
    let frame = sockbox_wire::encode_frame(&pattern(150_000));
    cut.write_all(&frame[..100_000]).await.unwrap();
    cut.shutdown().await.unwrap();
    // Whatever the guest sent back before closing is a prefix of the frame it was answering.
    let back = read_until_closed(&mut cut).await;
    assert!(
        frame.starts_with(&back),
        "{} bytes back, not a prefix",
        back.len()
    );

    let mut next = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut next, b"still serving").await;
    assert_eq!(read_frame(&mut next).await, b"still serving");
    stop_clean(guest).await;
}
