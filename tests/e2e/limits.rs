//! Limits: no grant no socket, the socket cap, the connection cap and the busy limit. Each is
//! met by a guest while another client or guest shows that the host kept serving.

use std::time::Duration;

use sockbox::{AuditEvent, GuestExit, Policy, RunningGuest, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::escape::{Attempted, HOSTILES, hostile_results};
use crate::support::{PATIENCE, component_file, policy, start, stop_clean, tcp, test_guest};

/// Runs the hostile guest's `attempts` to its end under `policy` (some attempts, such as
/// hoarding sockets, take a while on a busy machine: the bound only stops a hung run).
pub(crate) async fn hostile(
    policy: Policy,
    attempts: &[&str],
) -> (Vec<Attempted>, Vec<AuditEvent>) {
    hostile_as("hostile", policy, attempts).await
}

/// [`hostile`] with the hostile guest of one WASI world (see [`HOSTILES`]).
pub(crate) async fn hostile_as(
    hostile: &str,
    policy: Policy,
    attempts: &[&str],
) -> (Vec<Attempted>, Vec<AuditEvent>) {
    let mut guest = Sandbox::builder(test_guest(hostile))
        .policy(policy)
        .args(attempts.iter().copied())
        .capture_output(true)
        .start()
        .await
        .expect("hostile starts");
    let exit = guest.finish(4 * PATIENCE).await;
    assert!(exit.is_clean(), "hostile {exit}\n{}", guest.stderr());
    (hostile_results(&guest.stdout()), guest.decisions())
}

fn refusals<'a>(decisions: &'a [AuditEvent], use_: &str) -> Vec<&'a AuditEvent> {
    decisions
        .iter()
        .filter(|e| e.use_ == use_ && !e.allowed())
        .collect()
}

#[tokio::test]
async fn a_guest_with_no_grant_cannot_create_a_single_socket() {
    for hostile in HOSTILES {
        no_grant_no_socket(hostile).await;
    }
}

async fn no_grant_no_socket(hostile: &str) {
    let (results, decisions) = hostile_as(
        hostile,
        Policy::default(),
        &["tcp-sockets:100000", "udp-sockets:100000"],
    )
    .await;
    for result in &results {
        // Refused at the first one: nothing was created, so nothing reached the OS.
        assert!(!result.ok, "{result}");
        assert!(result.detail.starts_with("created 0, then "), "{result}");
        assert!(result.detail.contains("access-denied"), "{result}");
    }
    assert_eq!(results.len(), 2);
    for use_ in ["tcp-create", "udp-create"] {
        let refused = refusals(&decisions, use_);
        assert_eq!(refused.len(), 1, "{decisions:#?}");
        assert_eq!(
            (refused[0].addr.as_str(), refused[0].rule.as_deref()),
            ("ipv4", None)
        );
    }
}

#[tokio::test]
async fn a_tcp_grant_does_not_open_udp() {
    for hostile in HOSTILES {
        tcp_grant_no_udp(hostile).await;
    }
}

async fn tcp_grant_no_udp(hostile: &str) {
    let granted = policy(&[], &[], &["tcp-connect=127.0.0.1:9"]);
    let attempts = ["tcp-sockets:3", "udp-sockets:3"];
    let (results, decisions) = hostile_as(hostile, granted, &attempts).await;
    assert!(results[0].ok, "{}", results[0]);
    assert_eq!(results[0].detail, "created 3");
    assert!(
        !results[1].ok && results[1].detail.contains("access-denied"),
        "{}",
        results[1]
    );
    assert_eq!(refusals(&decisions, "udp-create").len(), 1);
}

#[tokio::test]
async fn the_socket_cap_stops_a_hoarding_guest_inside_the_guest() {
    for hostile in HOSTILES {
        socket_cap(hostile).await;
    }
}

async fn socket_cap(hostile: &str) {
    let mut capped = policy(&[], &["127.0.0.1:0"], &["tcp-connect=127.0.0.1:9"]);
    capped.limits.max_sockets = Some(40);
    let attempts = ["tcp-sockets:10000", "udp-sockets:5"];
    let (results, decisions) = hostile_as(hostile, capped, &attempts).await;
    let tcp = &results[0];
    assert!(!tcp.ok, "{tcp}");
    assert!(tcp.detail.starts_with("created 40, then "), "{tcp}");
    assert!(tcp.detail.contains("new-socket-limit"), "{tcp}");
    // Still at the cap: UDP counts against the same one.
    assert!(
        results[1].detail.starts_with("created 0, then "),
        "{}",
        results[1]
    );
    let refused = refusals(&decisions, "tcp-create");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].rule.as_deref(), Some("limit: max-sockets 40"));
}

/// Echoes `message` over `stream` and returns what came back.
async fn echo_once(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    back
}

/// Whether the host closed `stream` without a byte (a refused client).
async fn closed_at_once(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"anyone?").await;
    let mut buf = [0; 16];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither served nor closed in time"),
    }
}

#[tokio::test]
async fn past_max_connections_new_clients_are_refused_and_the_others_served() {
    // WASI 0.2's accept and 0.3's stream of accepted connections.
    for echo in ["echo", "echo-p3"] {
        max_connections(echo).await;
    }
}

async fn max_connections(echo: &str) {
    let mut capped = policy(&["127.0.0.1:0"], &[], &[]);
    capped.limits.max_connections = Some(2);
    let (guest, sockets) = start(echo, capped, &[]).await;
    let addr = tcp(&sockets);
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut first, b"one").await, b"one");
    assert_eq!(echo_once(&mut second, b"two").await, b"two");

    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_at_once(&mut third).await);
    assert_eq!(echo_once(&mut first, b"still").await, b"still");

    // A place frees up when a client leaves; the guest notices the close on its own time, so
    // the next client may be refused once or twice before it is served.
    drop(second);
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut next = TcpStream::connect(addr).await.unwrap();
            next.write_all(b"back").await.unwrap();
            let mut buf = [0; 4];
            if next.read_exact(&mut buf).await.is_ok() {
                return buf;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a client is served once a place is free");
    assert_eq!(&served, b"back");

    let decisions = guest.decisions();
    let refused = refusals(&decisions, "tcp-accept");
    assert!(!refused.is_empty());
    assert_eq!(refused[0].rule.as_deref(), Some("limit: max-connections 2"));
    assert!(
        refused[0].addr.starts_with("127.0.0.1:"),
        "{}",
        refused[0].addr
    );
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_wasi_p3_guest_spinning_in_a_task_is_stopped_by_max_busy() {
    let mut limited = Policy::default();
    limited.limits.max_busy = Some(Duration::from_millis(300));
    let mut spinner = Sandbox::builder(test_guest("hostile_p3"))
        .policy(limited)
        .args(["spin"])
        .capture_output(true)
        .start()
        .await
        .expect("hostile_p3 starts");
    let exit = spinner.finish(PATIENCE).await;
    let GuestExit::Trapped(err) = exit else {
        panic!("the spinning guest must be stopped, it {exit}");
    };
    let message = format!("{err:?}");
    assert!(
        message.contains("more than 300 ms without yielding"),
        "{message}"
    );
    assert!(message.contains("max-busy"), "{message}");
}

/// `wasi:cli/run` that never returns and never calls the host.
const SPIN_WAT: &str = r#"(component
    (core module $m (func (export "run") (result i32) (loop $l (br $l)) i32.const 0))
    (core instance $i (instantiate $m))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $cli (export "run" (func $run)))
    (export "wasi:cli/run@0.2.12" (instance $cli)))"#;

#[tokio::test]
async fn a_runaway_loop_is_stopped_by_max_busy_while_a_neighbour_serves() {
    let (echo, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut client = TcpStream::connect(tcp(&sockets)).await.unwrap();

    let mut limited = Policy::default();
    limited.limits.max_busy = Some(Duration::from_millis(300));
    let mut spinner: RunningGuest = Sandbox::builder(component_file("spin", SPIN_WAT))
        .policy(limited)
        .start()
        .await
        .expect("spin starts");
    // While it spins, the neighbour answers.
    for round in 0..5 {
        let message = format!("round {round}");
        assert_eq!(
            echo_once(&mut client, message.as_bytes()).await,
            message.as_bytes()
        );
    }
    let exit = spinner.finish(PATIENCE).await;
    let GuestExit::Trapped(err) = exit else {
        panic!("the spinning guest must be stopped, it {exit}");
    };
    let message = format!("{err:?}");
    assert!(
        message.contains("more than 300 ms without yielding"),
        "{message}"
    );
    assert!(message.contains("max-busy"), "{message}");
    assert_eq!(echo_once(&mut client, b"after").await, b"after");
    stop_clean(echo).await;
}
