//! Third-party components: a plain `wasi:cli/command` on Rust std, with no `control` import.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::{Cli, policy, start, tcp, test_guest};

#[tokio::test]
async fn plain_command_is_ready_when_it_listens() {
    let (guest, sockets) = start(
        test_guest("plain-echo"),
        policy(&[], &[], &["tcp-listen=127.0.0.1:0"]),
        &["127.0.0.1:0"],
    )
    .await;
    assert!(!guest.uses_control());
    let addr = tcp(&sockets);
    let back = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"third party").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        back
    })
    .await
    .unwrap();
    assert_eq!(back, b"third party");
    assert!(
        guest.stdout().contains(&format!("listening on {addr}")),
        "{}",
        guest.stdout()
    );
    guest.request_shutdown();
}

#[test]
fn plain_command_runs_under_the_cli() {
    let guest = test_guest("plain-echo");
    let mut cli = Cli::spawn(&[
        "run",
        guest.to_str().unwrap(),
        "--allow",
        "tcp-listen=127.0.0.1:0",
        "--",
        "127.0.0.1:0",
    ]);
    let (transport, addr) = cli.ready();
    assert_eq!(transport, "tcp");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"ping").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"ping");
    // It cannot be asked to stop (no control import): it is stopped, and that is not a failure.
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
}
