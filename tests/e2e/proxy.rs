//! The proxy guest: clients piped to a granted upstream, half-closes passed on; a denied
//! upstream closes the client and is audited.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{PATIENCE, policy, start, stop_clean, tcp};

const BANNER: &[u8] = b"hello from upstream\n";

/// A native upstream for one client: greets, reads until the client half-closes, answers
/// with how much it got, then closes. Returns what it received.
async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(BANNER).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let answer = format!("got {} bytes\n", got.len());
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        got
    });
    (addr, task)
}

#[tokio::test]
async fn bytes_flow_both_ways_and_half_closes_pass_through() {
    let (upstream_addr, upstream_task) = upstream().await;
    let grant = format!("tcp-connect={upstream_addr}");
    let target = upstream_addr.to_string();
    let (guest, sockets) = start(
        "proxy",
        policy(&["127.0.0.1:0"], &[], &[&grant]),
        &[&target],
    )
    .await;
    let mut client = TcpStream::connect(tcp(&sockets)).await.unwrap();

    let mut banner = vec![0; BANNER.len()];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut banner))
        .await
        .expect("banner in time")
        .unwrap();
    assert_eq!(banner, BANNER);

    let data: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    client.write_all(&data).await.unwrap();
    // Upstream only answers once it sees our half-close, and we only get EOF if the
    // proxy passes upstream's on too.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .expect("both half-closes passed on")
        .unwrap();
    assert_eq!(rest, b"got 100000 bytes\n");
    let got = tokio::time::timeout(PATIENCE, upstream_task)
        .await
        .unwrap()
        .unwrap();
    assert!(got == data, "upstream received different bytes");
    stop_clean(guest).await;
}

/// Runs proxy towards a native listener with `allow` as the only extra grants, none of which
/// covers that listener. Two clients come and go; returns the guest's tcp-connect decisions
/// and the listener's address.
async fn denied_upstream(allow: &[&str]) -> (Vec<sockbox::AuditEvent>, String) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = upstream.local_addr().unwrap().to_string();
    let (guest, sockets) = start("proxy", policy(&["127.0.0.1:0"], &[], allow), &[&target]).await;
    let addr = tcp(&sockets);

    for _ in 0..2 {
        // Every client is closed the same way: the guest keeps serving.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest))
            .await
            .expect("the guest closes the client");
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    }
    // The connect was refused before it left the sandbox.
    let nothing = tokio::time::timeout(Duration::from_millis(200), upstream.accept()).await;
    assert!(nothing.is_err(), "a connection reached the upstream");
    // One stderr line per refused client, naming the upstream (written just after the close).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while guest.stderr().matches(&target).count() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stderr = guest.stderr();
    assert_eq!(stderr.matches(&target).count(), 2, "{stderr}");

    let decisions = guest
        .decisions()
        .into_iter()
        .filter(|e| e.use_ == "tcp-connect")
        .collect();
    stop_clean(guest).await;
    (decisions, target)
}

#[tokio::test]
async fn a_connect_grant_for_another_address_is_denied_for_the_upstream() {
    let (decisions, target) = denied_upstream(&["tcp-connect=127.0.0.1:1"]).await;
    let denied: Vec<_> = decisions.iter().filter(|e| !e.allowed()).collect();
    assert_eq!(denied.len(), 2, "{decisions:?}");
    assert!(denied.iter().all(|e| e.addr == target), "{denied:?}");
}

#[tokio::test]
async fn without_any_connect_grant_the_client_is_closed_and_the_denial_audited() {
    let (decisions, target) = denied_upstream(&[]).await;
    // The wildcard bind before each connect passes (it opens nothing); the connect to the
    // upstream is what is refused, and the audit names it.
    let denied: Vec<_> = decisions.iter().filter(|e| !e.allowed()).collect();
    assert_eq!(denied.len(), 2, "{decisions:?}");
    assert!(
        denied.iter().all(|e| e.addr == target && e.rule.is_none()),
        "{denied:?}"
    );
}
