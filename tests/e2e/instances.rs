//! `--instances N`: several instances of one guest share each granted address and the kernel
//! spreads the clients over them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sockbox::{Sandbox, Transport};

use crate::support::{Cli, PATIENCE, policy};

/// Connects `count` clients one after another, each echoing its own bytes.
fn echo_clients(addr: std::net::SocketAddr, count: usize) {
    for i in 0..count {
        let message = format!("client {i}");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(message.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        stream.read_to_string(&mut back).unwrap();
        assert_eq!(back, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_port_and_both_serve() {
    // WASI 0.2 and 0.3: each world's listen shares the port through its own hook.
    for echo in ["echo", "echo-p3"] {
        share_one_port(echo).await;
    }
}

async fn share_one_port(echo: &str) {
    let (guests, sockets) = Sandbox::builder(echo)
        .policy(policy(&["127.0.0.1:0"], &[], &[]))
        .capture_output(true)
        .start_instances(2)
        .await
        .expect("both instances ready");
    assert_eq!(guests.len(), 2);
    assert_eq!(sockets.len(), 1, "one shared socket address: {sockets:?}");
    assert_eq!(sockets[0].transport, Transport::Tcp);
    let addr = sockets[0].addr;
    assert_ne!(addr.port(), 0);

    tokio::task::spawn_blocking(move || echo_clients(addr, 64))
        .await
        .unwrap();

    // Each instance accepted some of the 64 clients (all on one would be a 2^-63 chance).
    for guest in &guests {
        let accepted = guest
            .decisions()
            .iter()
            .filter(|d| d.use_ == "tcp-accept" && d.allowed())
            .count();
        assert!(accepted > 0, "instance {} accepted no client", guest.name());
    }
    assert_eq!(guests[0].name(), format!("{echo}#0"));
    assert_eq!(guests[1].name(), format!("{echo}#1"));
    for guest in guests {
        let exit = guest.stop(Duration::from_secs(10)).await;
        assert!(exit.is_clean(), "{exit}");
    }
}

#[test]
fn run_with_instances_prints_one_ready_line_and_stops_all_on_sigterm() {
    for echo in ["echo", "echo-p3"] {
        instances_stop_on_sigterm(echo);
    }
}

fn instances_stop_on_sigterm(echo: &str) {
    let dir = std::env::temp_dir().join(format!("sockbox-instances-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join(format!("{echo}-audit.jsonl"));
    let _ = std::fs::remove_file(&audit);
    let mut cli = Cli::spawn(&[
        "run",
        echo,
        "--listen",
        "127.0.0.1:0",
        "--instances",
        "2",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    let (transport, addr) = cli.ready();
    assert_eq!(transport, "tcp");
    echo_clients(addr, 64);
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{echo}: {stderr}");
    let mut rest = String::new();
    cli.stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest, "",
        "one ready line for the shared address, nothing else"
    );

    let log = std::fs::read_to_string(&audit).unwrap();
    for name in [format!("{echo}#0"), format!("{echo}#1")] {
        let accepts = log
            .lines()
            .filter(|l| l.contains(&format!("\"guest\":\"{name}\"")) && l.contains("tcp-accept"))
            .count();
        assert!(accepts > 0, "{name} accepted no client:\n{log}");
    }
}

#[test]
fn instances_must_be_a_count_or_auto() {
    let (code, _, stderr) = crate::support::sockbox(&[
        "run",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--instances",
        "zero",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("expected a number from 1 to 256 or `auto`"),
        "{stderr}"
    );
}
