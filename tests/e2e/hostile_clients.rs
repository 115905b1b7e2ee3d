//! Hostile clients: each one is followed by a well-behaved client that must be served, so a
//! client can cost the guest its own connection and nothing more.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chat::Client as ChatClient;
use crate::support::{PATIENCE, policy, read_frame, start, stop_clean, tcp, write_frame};

/// Every built-in here runs in both worlds: its WASI 0.2 form and its 0.3 form (`NAME-p3`), so
/// the SDK's timers, reads and writes are tried in both backends.
const WORLDS: [&str; 2] = ["", "-p3"];

/// The error frame of docs/contract.md: `u32` length, then `ERR frame too large`.
const TOO_LARGE: &[u8] = b"\x00\x00\x00\x13ERR frame too large";

/// What chat tells a client it drops for falling behind.
const TOO_SLOW: &str = "* you were too slow; disconnected\n";

/// Everything the guest sends until it closes the connection; a reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the guest closes the connection in time");
        match read {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client that must be served as if nothing had happened: a frame each way, checked.
async fn well_behaved_framed(addr: SocketAddr, payload: &[u8], expected: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut stream, payload).await;
    assert_eq!(read_frame(&mut stream).await, expected);
}

/// An `rcmd` reply: status byte 0, then the output.
fn ok(output: &str) -> Vec<u8> {
    [&[0u8][..], output.as_bytes()].concat()
}

/// Waits (bounded) until the guest's stderr contains `text`.
async fn stderr_says(guest: &sockbox::RunningGuest, text: &str) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !guest.stderr().contains(text) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "stderr never said {text:?}:\n{}",
        guest.stderr()
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    for world in WORLDS {
        a_silent_client_is_closed_after_the_idle_timeout_in(world).await;
    }
}

async fn a_silent_client_is_closed_after_the_idle_timeout_in(world: &str) {
    let args = ["--idle-timeout", "1s", "--read-timeout", "10s"];
    let (guest, sockets) = start(
        format!("framing{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &args,
    )
    .await;
    let addr = tcp(&sockets);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        read_until_closed(&mut silent).await,
        b"",
        "closed without a reply"
    );
    stderr_says(&guest, "idle timeout").await;
    well_behaved_framed(addr, b"after the silent one", b"after the silent one").await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_slowloris_client_is_closed_after_the_read_timeout() {
    for world in WORLDS {
        a_slowloris_client_is_closed_after_the_read_timeout_in(world).await;
    }
}

async fn a_slowloris_client_is_closed_after_the_read_timeout_in(world: &str) {
    let args = ["--idle-timeout", "30s", "--read-timeout", "1s"];
    let (guest, sockets) = start(
        format!("framing{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &args,
    )
    .await;
    let addr = tcp(&sockets);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.set_nodelay(true).unwrap();
    // A 100-byte frame, one byte every 200 ms: each byte keeps it from being idle, and the
    // whole would take over 20 s. The guest must not wait for it.
    let frame = sockbox_wire::encode_frame(&[b's'; 100]);
    let mut sent = 0;
    let mut closed = false;
    for byte in &frame {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0; 64];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Err(_) => {} // nothing from the guest: go on
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "the guest answered a frame never completed: {:?}",
                &buf[..n]
            ),
        }
    }
    assert!(
        closed,
        "the guest kept a one-byte-a-time client for the whole frame"
    );
    assert!(
        sent < frame.len(),
        "closed before the frame could be complete"
    );
    stderr_says(&guest, "read timeout").await;
    well_behaved_framed(addr, b"after the slow one", b"after the slow one").await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn rcmd_takes_the_same_timeouts() {
    for world in WORLDS {
        rcmd_takes_the_same_timeouts_in(world).await;
    }
}

async fn rcmd_takes_the_same_timeouts_in(world: &str) {
    let args = ["--idle-timeout", "1s"];
    let (guest, sockets) = start(
        format!("rcmd{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &args,
    )
    .await;
    let addr = tcp(&sockets);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, b"");
    well_behaved_framed(addr, b"upper still served", &ok("STILL SERVED")).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_chat_client_that_never_reads_is_dropped_and_the_others_told() {
    for world in WORLDS {
        a_chat_client_that_never_reads_is_dropped_and_the_others_told_in(world).await;
    }
}

async fn a_chat_client_that_never_reads_is_dropped_and_the_others_told_in(world: &str) {
    let args = ["--max-queue", "65536"];
    let (guest, sockets) = start(
        format!("chat{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &args,
    )
    .await;
    let addr = tcp(&sockets);
    let mut talker = ChatClient::join(addr, "talker").await;
    let mut listener = ChatClient::join(addr, "listener").await;
    assert_eq!(talker.next_line().await, "* listener joined\n");
    // A small receive buffer, and never a read until it is dropped.
    let mut sleeper = ChatClient::join_with_recv_buffer(addr, "sleeper", Some(4096)).await;
    assert_eq!(listener.next_line().await, "* sleeper joined\n");
    assert_eq!(talker.next_line().await, "* sleeper joined\n");

    // Lockstep, so only the sleeper falls behind: each line is read by the listener before
    // the next is said. 10 KB lines; the sleeper's socket buffers and 64 KiB queue fill.
    let text = "z".repeat(10_000);
    let expected = format!("talker: {text}\n");
    let mut dropped = false;
    for i in 0..2_000 {
        talker.say(&text).await;
        let line = listener.next_line().await;
        if line == "* sleeper left\n" {
            dropped = true;
            assert_eq!(listener.next_line().await, expected, "line {i}");
            break;
        }
        assert_eq!(line, expected, "line {i}");
    }
    assert!(dropped, "20 MB later the sleeper is still in the room");
    assert_eq!(talker.next_line().await, "* sleeper left\n");

    // The sleeper finds the notice at the end of what it was sent (best effort, but it reads
    // now, so the guest's write fits), then the end of the connection.
    let mut rest = String::new();
    let read = tokio::time::timeout(PATIENCE, sleeper.lines.read_to_string(&mut rest)).await;
    assert!(read.expect("closed in time").is_ok());
    assert!(
        rest.ends_with(TOO_SLOW),
        "...{:?}",
        &rest[rest.len().saturating_sub(80)..]
    );

    let mut newcomer = ChatClient::join(addr, "newcomer").await;
    assert_eq!(listener.next_line().await, "* newcomer joined\n");
    talker.say("welcome").await;
    assert_eq!(newcomer.next_line().await, "talker: welcome\n");
    assert_eq!(listener.next_line().await, "talker: welcome\n");
    stop_clean(guest).await;
}

#[tokio::test]
async fn garbage_gets_the_error_frame_and_the_next_client_is_served() {
    for world in WORLDS {
        garbage_gets_the_error_frame_and_the_next_client_is_served_in(world).await;
    }
}

async fn garbage_gets_the_error_frame_and_the_next_client_is_served_in(world: &str) {
    for guest_name in ["framing", "rcmd"] {
        let (guest, sockets) = start(
            format!("{guest_name}{world}").as_str(),
            policy(&["127.0.0.1:0"], &[], &[]),
            &[],
        )
        .await;
        let addr = tcp(&sockets);
        // An HTTP request read as a frame header announces about 1.2 GB.
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_until_closed(&mut garbage).await,
            TOO_LARGE,
            "{guest_name}"
        );
        let expected = match guest_name {
            "rcmd" => ok("SERVED"),
            _ => b"upper served".to_vec(),
        };
        well_behaved_framed(addr, b"upper served", &expected).await;
        stop_clean(guest).await;
    }
}

#[tokio::test]
async fn rcmd_answers_a_frame_of_binary_garbage_with_an_error_and_serves_on() {
    for world in WORLDS {
        rcmd_answers_a_frame_of_binary_garbage_with_an_error_and_serves_on_in(world).await;
    }
}

async fn rcmd_answers_a_frame_of_binary_garbage_with_an_error_and_serves_on_in(world: &str) {
    let (guest, sockets) = start(
        format!("rcmd{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &[],
    )
    .await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    write_frame(&mut stream, &[0xff, 0xfe, 0x00, 0x80, 0xc3]).await;
    let reply = read_frame(&mut stream).await;
    assert_eq!(
        reply[0],
        1,
        "status 1: {:?}",
        String::from_utf8_lossy(&reply)
    );
    write_frame(&mut stream, b"rev olleh").await;
    assert_eq!(read_frame(&mut stream).await, ok("hello"));
    stop_clean(guest).await;
}

#[tokio::test]
async fn an_oversized_header_to_rcmd_gets_the_error_frame_and_a_close() {
    for world in WORLDS {
        an_oversized_header_to_rcmd_gets_the_error_frame_and_a_close_in(world).await;
    }
}

async fn an_oversized_header_to_rcmd_gets_the_error_frame_and_a_close_in(world: &str) {
    let (guest, sockets) = start(
        format!("rcmd{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &[],
    )
    .await;
    let addr = tcp(&sockets);
    let mut offender = TcpStream::connect(addr).await.unwrap();
    offender
        .write_all(&((16u32 << 20) + 1).to_be_bytes())
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut offender).await, TOO_LARGE);
    well_behaved_framed(addr, b"wc four", &ok("4")).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_frame_cut_short_by_a_close_or_a_reset_costs_only_that_connection() {
    for world in WORLDS {
        a_frame_cut_short_by_a_close_or_a_reset_costs_only_that_connection_in(world).await;
    }
}

async fn a_frame_cut_short_by_a_close_or_a_reset_costs_only_that_connection_in(world: &str) {
    for guest_name in ["framing", "rcmd"] {
        let (guest, sockets) = start(
            format!("{guest_name}{world}").as_str(),
            policy(&["127.0.0.1:0"], &[], &[]),
            &[],
        )
        .await;
        let addr = tcp(&sockets);
        for reset in [false, true] {
            let mut cut = TcpStream::connect(addr).await.unwrap();
            // The header announces 100 000 bytes; 10 come, then the client goes.
            cut.write_all(&100_000u32.to_be_bytes()).await.unwrap();
            cut.write_all(b"echo 12345").await.unwrap();
            if reset {
                cut.set_zero_linger().unwrap(); // SO_LINGER 0: the drop sends RST
            }
            drop(cut);
            // A frame glued to a cut one is cut too: header plus half a payload, then RST.
            let mut glued = TcpStream::connect(addr).await.unwrap();
            let mut bytes = sockbox_wire::encode_frame(b"echo whole");
            bytes.extend_from_slice(&sockbox_wire::encode_frame(&[b'h'; 70_000])[..35_000]);
            glued.write_all(&bytes).await.unwrap();
            let expected = match guest_name {
                "rcmd" => ok("whole"),
                _ => b"echo whole".to_vec(),
            };
            assert_eq!(read_frame(&mut glued).await, expected);
            if reset {
                glued.set_zero_linger().unwrap();
            }
            drop(glued);
            let expected = match guest_name {
                "rcmd" => ok("next"),
                _ => b"echo next".to_vec(),
            };
            well_behaved_framed(addr, b"echo next", &expected).await;
        }
        stderr_says(&guest, "into a frame").await;
        stop_clean(guest).await;
    }
}

#[tokio::test]
async fn a_reset_in_the_middle_of_a_long_reply_costs_only_that_connection() {
    for world in WORLDS {
        a_reset_in_the_middle_of_a_long_reply_costs_only_that_connection_in(world).await;
    }
}

async fn a_reset_in_the_middle_of_a_long_reply_costs_only_that_connection_in(world: &str) {
    let (guest, sockets) = start(
        format!("rcmd{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &[],
    )
    .await;
    let addr = tcp(&sockets);
    let mut greedy = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut greedy, b"seq 1000000").await; // about 6.9 MB back
    let mut first = [0; 1024];
    greedy.read_exact(&mut first).await.unwrap();
    greedy.set_zero_linger().unwrap();
    drop(greedy);
    well_behaved_framed(addr, b"upper after", &ok("AFTER")).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn shutdown_answers_every_frame_in_hand_before_closing() {
    for world in WORLDS {
        shutdown_answers_every_frame_in_hand_before_closing_in(world).await;
    }
}

async fn shutdown_answers_every_frame_in_hand_before_closing_in(world: &str) {
    let (mut guest, sockets) = start(
        format!("framing{world}").as_str(),
        policy(&["127.0.0.1:0"], &[], &[]),
        &[],
    )
    .await;
    let addr = tcp(&sockets);
    let payload: Vec<u8> = (0..200_000).map(|i| (i % 251) as u8).collect();
    let frame = sockbox_wire::encode_frame(&payload);
    let half = frame.len() / 2;
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A round trip first: the guest has this connection in hand.
        write_frame(&mut stream, b"hello").await;
        assert_eq!(read_frame(&mut stream).await, b"hello");
        stream.write_all(&frame[..half]).await.unwrap();
        clients.push(stream);
    }
    let mut idle = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut idle, b"idle").await;
    assert_eq!(read_frame(&mut idle).await, b"idle");

    guest.request_shutdown();
    // The rest of each frame comes after the shutdown began: it is answered all the same.
    for stream in &mut clients {
        stream.write_all(&frame[half..]).await.unwrap();
    }
    for (i, stream) in clients.iter_mut().enumerate() {
        assert!(
            read_frame(stream).await == payload,
            "client {i}: reply differs"
        );
        assert_eq!(
            read_until_closed(stream).await,
            b"",
            "client {i}: closed after"
        );
    }
    assert_eq!(
        read_until_closed(&mut idle).await,
        b"",
        "an idle one is closed"
    );
    let exit = guest.finish(Duration::from_secs(10)).await;
    assert!(exit.is_clean(), "guest {exit}\nstderr:\n{}", guest.stderr());
}
