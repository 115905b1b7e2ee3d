//! Many clients at once: 1000 connections open together, each making 10 round trips, through
//! echo and through framing. A liveness test: every client gets every byte or frame back and
//! the guest still stops cleanly with all of them connected. Nothing here measures speed.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{PATIENCE, policy, read_frame, start, stop_clean, tcp, write_frame};

const CLIENTS: usize = 1000;
const ROUND_TRIPS: usize = 10;

/// Bound on each phase: a slow debug build on a busy CI machine still serves 1000 clients in
/// far less, and a stalled guest fails the test instead of hanging it.
const LOAD_PATIENCE: Duration = Duration::from_secs(4 * PATIENCE.as_secs());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_echo_every_byte() {
    let (guest, sockets) = start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let open = round_trips_from_every_client(tcp(&sockets), echo_round_trips).await;
    // Shutdown cancels 1000 live connections without trapping.
    stop_clean(guest).await;
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_get_every_frame_back() {
    let (guest, sockets) = start("framing", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let open = round_trips_from_every_client(tcp(&sockets), frame_round_trips).await;
    stop_clean(guest).await;
    drop(open);
}

/// What client `client` sends in round `round`: its own bytes, of a size that varies from
/// one byte to a few KiB, so replies of different clients cannot be mistaken for each other.
fn message(client: usize, round: usize) -> Vec<u8> {
    let len = 1 + (client * 37 + round * 101) % 3000;
    format!("<client {client} round {round}>")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

async fn echo_round_trips(client: usize, mut stream: TcpStream) -> TcpStream {
    for round in 0..ROUND_TRIPS {
        let sent = message(client, round);
        stream.write_all(&sent).await.expect("write");
        let mut back = vec![0; sent.len()];
        stream.read_exact(&mut back).await.expect("read the echo");
        assert!(
            back == sent,
            "client {client} round {round}: wrong bytes back"
        );
    }
    stream
}

async fn frame_round_trips(client: usize, mut stream: TcpStream) -> TcpStream {
    for round in 0..ROUND_TRIPS {
        let sent = message(client, round);
        write_frame(&mut stream, &sent).await;
        let back = read_frame(&mut stream).await;
        assert!(
            back == sent,
            "client {client} round {round}: wrong frame back"
        );
    }
    stream
}

/// Connects every client first (so all are open at once), then runs `round_trips` on each
/// concurrently; returns the connections, still open.
async fn round_trips_from_every_client<F, Fut>(addr: SocketAddr, round_trips: F) -> Vec<TcpStream>
where
    F: Fn(usize, TcpStream) -> Fut,
    Fut: Future<Output = TcpStream> + Send + 'static,
{
    raise_descriptor_limit();
    let mut connecting = JoinSet::new();
    for client in 0..CLIENTS {
        connecting.spawn(async move { (client, TcpStream::connect(addr).await) });
    }
    let connected = join_all(connecting, "every client connected").await;
    let mut running = JoinSet::new();
    for (client, stream) in connected {
        let stream = stream.unwrap_or_else(|e| panic!("client {client} connects: {e}"));
        running.spawn(round_trips(client, stream));
    }
    join_all(running, "every client's round trips done").await
}

/// Every task's output; a task's panic fails the test with its own message.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>, what: &str) -> Vec<T> {
    let all = async {
        let mut outputs = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(output) => outputs.push(output),
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            }
        }
        outputs
    };
    tokio::time::timeout(LOAD_PATIENCE, all)
        .await
        .unwrap_or_else(|_| panic!("{what} within {LOAD_PATIENCE:?}"))
}

/// Both ends of 1000 connections live in this process (the clients and the guest's host), more
/// descriptors than a default soft limit of 1024 allows: raise it towards the hard limit.
fn raise_descriptor_limit() {
    let wanted = (2 * CLIENTS + 512) as libc::rlim_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && (limit.rlim_cur >= wanted || {
                limit.rlim_cur = wanted.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur == wanted
            })
    };
    assert!(
        raised,
        "this test needs {wanted} file descriptors; the hard limit is {}",
        limit.rlim_max
    );
}
