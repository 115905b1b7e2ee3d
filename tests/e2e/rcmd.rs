//! The rcmd guest: framed command lines, a status byte and the output back.

use tokio::net::TcpStream;

use crate::support::{policy, read_frame, start, stop_clean, tcp, write_frame};

/// Runs one command line; returns the status byte and the output.
async fn run(stream: &mut TcpStream, command: &str) -> (u8, Vec<u8>) {
    write_frame(stream, command.as_bytes()).await;
    let reply = read_frame(stream).await;
    let (status, output) = reply.split_first().expect("a status byte");
    (*status, output.to_vec())
}

#[tokio::test]
async fn commands_and_their_replies() {
    let (guest, sockets) = start("rcmd", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();

    assert_eq!(
        run(&mut stream, "upper hello, World").await,
        (0, b"HELLO, WORLD".to_vec())
    );
    assert_eq!(
        run(&mut stream, "echo  as  given").await,
        (0, b" as  given".to_vec())
    );
    assert_eq!(run(&mut stream, "rev abc").await, (0, b"cba".to_vec()));
    assert_eq!(run(&mut stream, "wc hello").await, (0, b"5".to_vec()));
    assert_eq!(
        run(&mut stream, "sha256 abc").await,
        (
            0,
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_vec()
        )
    );
    let (status, help) = run(&mut stream, "help").await;
    assert_eq!(status, 0);
    let help = String::from_utf8(help).unwrap();
    for command in [
        "echo", "upper", "rev", "wc", "sha256", "seq", "time", "help",
    ] {
        assert!(help.contains(command), "help lists {command}: {help}");
    }
    let (status, time) = run(&mut stream, "time").await;
    assert_eq!(status, 0);
    let time = String::from_utf8(time).unwrap();
    chrono::DateTime::parse_from_rfc3339(&time).unwrap_or_else(|e| panic!("{time}: {e}"));

    let (status, message) = run(&mut stream, "rm -rf /").await;
    assert_eq!(status, 1);
    assert!(
        String::from_utf8_lossy(&message).contains("unknown command"),
        "{message:?}"
    );
    assert_eq!(run(&mut stream, "seq 1000001").await.0, 1);
    // Errors do not end the session.
    assert_eq!(
        run(&mut stream, "echo still here").await,
        (0, b"still here".to_vec())
    );
    stop_clean(guest).await;
}

#[tokio::test]
async fn seq_100000_is_byte_exact() {
    let (guest, sockets) = start("rcmd", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = TcpStream::connect(tcp(&sockets)).await.unwrap();
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    let (status, output) = run(&mut stream, "seq 100000").await;
    assert_eq!(status, 0);
    assert!(output == expected.as_bytes(), "seq 100000 differs");
    stop_clean(guest).await;
}
