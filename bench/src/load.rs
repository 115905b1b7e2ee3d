//! The load generator: loopback clients that drive a server and count what came back.
//!
//! One generator for guests and native servers alike, so both sides see the same client. Every
//! client is a closed loop (send, wait for the whole answer, repeat) that checks each answer
//! byte for byte. Load starts with a warm-up; only what completes inside the measurement
//! window that follows counts. Every loop is bounded in time and every operation has a
//! timeout, so a server that collapses yields a low figure and a failure count, never a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use super::stats::{fairness, percentile};

/// Longest wait for one exchange (or read) before the client counts as failed.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a datagram's echo before it counts as lost and the next one is sent.
const UDP_REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// Connections opened at once when setting up many clients; more would overflow a small
/// accept backlog and cost a one-second SYN retransmit.
const CONNECT_CONCURRENCY: usize = 32;

/// Connections checked at once after the idle phase.
const CHECK_CONCURRENCY: usize = 64;

/// Failures in a row after which opening more connections is pointless.
const GIVE_UP_AFTER: u64 = 20;

/// Warm-up, then the measurement window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    pub warmup: Duration,
    pub measure: Duration,
}

/// The measurement window, fixed when the load starts.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn starting_now(phases: Phases) -> Window {
        let from = Instant::now() + phases.warmup;
        Window {
            from,
            to: from + phases.measure,
        }
    }

    fn contains(&self, at: Instant) -> bool {
        self.from <= at && at <= self.to
    }
}

/// What a load achieved inside its measurement window.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Exchanges (round trips, frames, datagrams) or bytes completed inside the window.
    pub completed: u64,
    /// The window's length.
    pub window: Duration,
    /// Latency of each exchange completed in the window, in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Exchanges each connected client completed inside the window (one that failed later
    /// keeps what it completed).
    pub per_client: Vec<u64>,
    /// Clients or connections that failed (error, timeout, wrong answer).
    pub failures: u64,
    /// Datagrams that got no echo in time (UDP may drop; not a failure).
    pub lost: u64,
    /// What went wrong first, to explain `failures`.
    pub first_error: Option<String>,
}

impl LoadStats {
    /// Completed per second of the window.
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(f64::EPSILON)
    }

    pub fn p50_us(&self) -> Option<f64> {
        percentile(&self.latencies_ns, 50.0).map(|ns| ns as f64 / 1000.0)
    }

    pub fn p99_us(&self) -> Option<f64> {
        percentile(&self.latencies_ns, 99.0).map(|ns| ns as f64 / 1000.0)
    }

    /// How evenly the clients were served ([`fairness`]).
    pub fn fairness(&self) -> Option<f64> {
        fairness(&self.per_client)
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.failures += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    fn absorb(&mut self, other: LoadStats) {
        self.completed += other.completed;
        self.latencies_ns.extend(other.latencies_ns);
        self.per_client.extend(other.per_client);
        self.failures += other.failures;
        self.lost += other.lost;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn finish(mut self, phases: Phases) -> LoadStats {
        self.window = phases.measure;
        self.latencies_ns.sort_unstable();
        self
    }
}

/// What a client sends in one exchange; the answer must be the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// `n` bytes, echoed.
    Raw(usize),
    /// A frame (`u32` big-endian length + `n` bytes of payload), answered with one frame of
    /// the same payload: the same bytes as the request.
    Frame(usize),
}

impl Message {
    fn build(self) -> Vec<u8> {
        match self {
            Message::Raw(n) => pattern(n),
            Message::Frame(n) => sockbox_wire::encode_frame(&pattern(n)),
        }
    }

    /// Writes the exchange's number into the payload, so a stale or duplicated answer
    /// cannot pass for the right one.
    fn stamp(self, request: &mut [u8], seq: u64) {
        let payload = match self {
            Message::Raw(_) => &mut request[..],
            Message::Frame(_) => &mut request[sockbox_wire::HEADER_LEN..],
        };
        let bytes = seq.to_le_bytes();
        let n = payload.len().min(bytes.len());
        payload[..n].copy_from_slice(&bytes[..n]);
    }
}

/// `clients` connections, each a closed loop of `message` → the same bytes back.
pub async fn exchange(
    addr: SocketAddr,
    clients: usize,
    message: Message,
    phases: Phases,
) -> LoadStats {
    let (streams, mut stats) = connect_all(addr, clients).await;
    let window = Window::starting_now(phases);
    let tasks = streams
        .into_iter()
        .map(|stream| tokio::spawn(exchange_loop(stream, message, window)))
        .collect();
    stats.absorb(join_all(tasks, window).await);
    stats.finish(phases)
}

async fn exchange_loop(mut stream: TcpStream, message: Message, window: Window) -> LoadStats {
    let mut stats = LoadStats::default();
    let mut request = message.build();
    let mut reply = vec![0u8; request.len()];
    for seq in 0u64.. {
        let sent_at = Instant::now();
        if sent_at >= window.to {
            break;
        }
        message.stamp(&mut request, seq);
        let (mut from_server, mut to_server) = stream.split();
        // Writing and reading at once: a large request never deadlocks against its answer.
        let round_trip = async {
            tokio::try_join!(
                to_server.write_all(&request),
                from_server.read_exact(&mut reply)
            )
        };
        match timeout(OP_TIMEOUT, round_trip).await {
            Ok(Ok(_)) if reply == request => {}
            Ok(Ok(_)) => {
                stats.fail("an answer differed from its request");
                break;
            }
            Ok(Err(err)) => {
                stats.fail(err);
                break;
            }
            Err(_) => {
                stats.fail(format!("no answer within {OP_TIMEOUT:?}"));
                break;
            }
        }
        let done = Instant::now();
        if window.contains(done) {
            stats.completed += 1;
            stats.latencies_ns.push((done - sent_at).as_nanos() as u64);
        }
    }
    stats
}

/// One connection writing `chunk`-byte blocks as fast as the echo comes back; `completed` is
/// the bytes echoed inside the window (checked against what was sent).
pub async fn bulk(addr: SocketAddr, chunk: usize, phases: Phases) -> LoadStats {
    let mut stats = LoadStats::default();
    let stream = match connect(addr).await {
        Ok(stream) => stream,
        Err(err) => {
            stats.fail(err);
            return stats.finish(phases);
        }
    };
    let (mut from_server, mut to_server) = stream.into_split();
    let sent = Arc::new(pattern(chunk));
    let window = Window::starting_now(phases);
    let writer = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            while Instant::now() < window.to {
                match timeout(OP_TIMEOUT, to_server.write_all(&sent)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            to_server
        })
    };
    let mut buf = vec![0u8; chunk];
    let mut position = 0u64;
    loop {
        let now = Instant::now();
        if now >= window.to {
            break;
        }
        match timeout_at(
            (now + OP_TIMEOUT).min(window.to),
            from_server.read(&mut buf),
        )
        .await
        {
            Err(_) if Instant::now() >= window.to => break,
            Err(_) => {
                stats.fail(format!("no bytes back for {OP_TIMEOUT:?}"));
                break;
            }
            Ok(Ok(0)) => {
                stats.fail("the server closed the connection");
                break;
            }
            Ok(Ok(n)) => {
                if !continues_pattern(&sent, position, &buf[..n]) {
                    stats.fail("echoed bytes differ from the bytes sent");
                    break;
                }
                position += n as u64;
                if window.contains(Instant::now()) {
                    stats.completed += n as u64;
                }
            }
            Ok(Err(err)) => {
                stats.fail(err);
                break;
            }
        }
    }
    writer.abort();
    stats.finish(phases)
}

/// Whether `data`, found at `position` of the echoed stream, is what an endless repetition of
/// `chunk` has there.
fn continues_pattern(chunk: &[u8], mut position: u64, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let offset = (position % chunk.len() as u64) as usize;
        let n = data.len().min(chunk.len() - offset);
        if data[..n] != chunk[offset..offset + n] {
            return false;
        }
        data = &data[n..];
        position += n as u64;
    }
    true
}

/// `sockets` UDP clients, each a closed loop of one `size`-byte datagram → its echo. A
/// datagram with no echo within 200 ms counts as lost and the next one goes out.
pub async fn udp_echo(addr: SocketAddr, sockets: usize, size: usize, phases: Phases) -> LoadStats {
    let window = Window::starting_now(phases);
    let tasks = (0..sockets)
        .map(|_| tokio::spawn(udp_loop(addr, size.max(8), window)))
        .collect();
    join_all(tasks, window).await.finish(phases)
}

async fn udp_loop(addr: SocketAddr, size: usize, window: Window) -> LoadStats {
    let mut stats = LoadStats::default();
    let local = SocketAddr::new(addr.ip(), 0);
    let socket = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(err) => {
            stats.fail(err);
            return stats;
        }
    };
    if let Err(err) = socket.connect(addr).await {
        stats.fail(err);
        return stats;
    }
    let mut datagram = pattern(size);
    let mut buf = vec![0u8; size + 1];
    for seq in 0u64.. {
        let sent_at = Instant::now();
        if sent_at >= window.to {
            break;
        }
        datagram[..8].copy_from_slice(&seq.to_le_bytes());
        if let Err(err) = socket.send(&datagram).await {
            stats.fail(err);
            break;
        }
        let echoed = loop {
            match timeout_at(sent_at + UDP_REPLY_TIMEOUT, socket.recv(&mut buf)).await {
                Ok(Ok(n)) if buf[..n] == datagram[..] => break Ok(true),
                Ok(Ok(_)) => continue, // a late echo of an earlier datagram
                Ok(Err(err)) => break Err(err),
                Err(_) => break Ok(false),
            }
        };
        match echoed {
            Ok(true) => {
                let done = Instant::now();
                if window.contains(done) {
                    stats.completed += 1;
                    stats.latencies_ns.push((done - sent_at).as_nanos() as u64);
                }
            }
            Ok(false) => stats.lost += 1,
            // Refused: nothing listens any more.
            Err(err) => {
                stats.fail(err);
                break;
            }
        }
    }
    stats
}

/// Connections opened one after another, each proven by a one-byte echo, and kept open.
#[derive(Debug, Default)]
pub struct OpenStats {
    pub streams: Vec<TcpStream>,
    /// From the first connect to the last echo.
    pub elapsed: Duration,
    /// Connections that could not be opened or did not echo.
    pub failures: u64,
    pub first_error: Option<String>,
}

/// Opens `n` connections one after another; each writes one byte and reads it back. Stops
/// (counting the rest as failed) after `patience` or 20 failures in a row.
pub async fn open_one_by_one(addr: SocketAddr, n: usize, patience: Duration) -> OpenStats {
    let mut stats = OpenStats {
        streams: Vec::with_capacity(n),
        ..OpenStats::default()
    };
    let started = Instant::now();
    let mut failed_in_a_row = 0;
    for i in 0..n {
        let stop = if started.elapsed() > patience {
            Some(format!("stopped after {patience:?}"))
        } else if failed_in_a_row >= GIVE_UP_AFTER {
            Some(format!("stopped after {GIVE_UP_AFTER} failures in a row"))
        } else {
            None
        };
        if let Some(why) = stop {
            stats.failures += (n - i) as u64;
            stats.first_error = Some(match stats.first_error.take() {
                Some(first) => format!("{first}; {why}"),
                None => why,
            });
            break;
        }
        match timeout(OP_TIMEOUT, open_and_echo(addr)).await {
            Ok(Ok(stream)) => {
                stats.streams.push(stream);
                failed_in_a_row = 0;
                continue;
            }
            Ok(Err(err)) => stats.first_error.get_or_insert(err.to_string()),
            Err(_) => stats
                .first_error
                .get_or_insert(format!("no echo within {OP_TIMEOUT:?}")),
        };
        stats.failures += 1;
        failed_in_a_row += 1;
    }
    stats.elapsed = started.elapsed();
    stats
}

async fn open_and_echo(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = connect(addr).await?;
    echo_one_byte(&mut stream, b'o').await?;
    Ok(stream)
}

/// Sends one more byte on every connection and counts those that do not echo it in time.
pub async fn echo_each(streams: &mut [TcpStream]) -> (u64, Option<String>) {
    let results: Vec<Result<(), String>> = futures::stream::iter(streams.iter_mut())
        .map(|stream| async move {
            match timeout(OP_TIMEOUT, echo_one_byte(stream, b'i')).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no echo within {OP_TIMEOUT:?}")),
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let failures = results.iter().filter(|r| r.is_err()).count() as u64;
    let first = results.into_iter().find_map(Result::err);
    (failures, first)
}

async fn echo_one_byte(stream: &mut TcpStream, byte: u8) -> std::io::Result<()> {
    stream.write_all(&[byte]).await?;
    let mut back = [0u8];
    stream.read_exact(&mut back).await?;
    if back[0] != byte {
        return Err(std::io::Error::other("the echo differs from the byte sent"));
    }
    Ok(())
}

/// A client connection: no Nagle delay for small requests, and reset on drop so thousands of
/// closed connections leave no TIME_WAIT behind between rounds.
async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = timeout(OP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::other(format!("connect: no answer within {OP_TIMEOUT:?}"))
        })??;
    stream.set_nodelay(true)?;
    stream.set_zero_linger()?;
    Ok(stream)
}

/// Opens `n` connections, a few at a time; failures are counted, not fatal.
async fn connect_all(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, LoadStats) {
    let results: Vec<std::io::Result<TcpStream>> = futures::stream::iter(0..n)
        .map(|_| connect(addr))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut stats = LoadStats::default();
    let mut streams = Vec::with_capacity(n);
    for result in results {
        match result {
            Ok(stream) => streams.push(stream),
            Err(err) => stats.fail(format!("connect: {err}")),
        }
    }
    (streams, stats)
}

/// Gathers the clients' statistics; a client still running well past the window (which its
/// own timeouts should prevent) is stopped and counted as failed.
async fn join_all(tasks: Vec<JoinHandle<LoadStats>>, window: Window) -> LoadStats {
    let deadline = window.to + OP_TIMEOUT + Duration::from_secs(1);
    let mut total = LoadStats::default();
    for mut task in tasks {
        match timeout_at(deadline, &mut task).await {
            Ok(Ok(stats)) => {
                total.per_client.push(stats.completed);
                total.absorb(stats);
            }
            Ok(Err(err)) => total.fail(format!("a client task failed: {err}")),
            Err(_) => {
                task.abort();
                total.fail("a client did not stop in time");
            }
        }
    }
    total
}

/// Recognisable, non-repeating-per-byte content.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{self, NativeKind, Protocol};

    const PHASES: Phases = Phases {
        warmup: Duration::from_millis(20),
        measure: Duration::from_millis(100),
    };

    fn native(proto: Protocol) -> SocketAddr {
        native::start(NativeKind::Evloop, proto, "127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn the_pattern_check_follows_the_stream_across_chunks() {
        let chunk = pattern(10);
        let stream: Vec<u8> = chunk.iter().cycle().take(35).copied().collect();
        assert!(continues_pattern(&chunk, 0, &stream));
        assert!(continues_pattern(&chunk, 7, &stream[7..23]));
        assert!(!continues_pattern(&chunk, 8, &stream[7..23]));
    }

    #[test]
    fn stamps_change_the_payload_not_the_header() {
        let message = Message::Frame(16);
        let mut request = message.build();
        message.stamp(&mut request, 0x0102);
        assert_eq!(&request[..4], &16u32.to_be_bytes());
        assert_eq!(&request[4..6], &[2, 1]);
        let mut short = Message::Raw(3).build();
        Message::Raw(3).stamp(&mut short, u64::MAX);
        assert_eq!(short, [255, 255, 255]);
    }

    #[tokio::test]
    async fn exchanges_against_an_echo_server_complete_without_failures() {
        let stats = exchange(native(Protocol::Echo), 4, Message::Raw(32), PHASES).await;
        assert_eq!(stats.failures, 0, "{:?}", stats.first_error);
        assert!(stats.completed > 0);
        assert!(stats.p50_us().unwrap() <= stats.p99_us().unwrap());
        // Each client's count, adding up to the total.
        assert_eq!(stats.per_client.len(), 4);
        assert_eq!(stats.per_client.iter().sum::<u64>(), stats.completed);
        assert!(stats.fairness().is_some_and(|f| f > 0.0 && f <= 1.0));
        let framed = exchange(native(Protocol::Framing), 2, Message::Frame(70_000), PHASES).await;
        assert_eq!(framed.failures, 0, "{:?}", framed.first_error);
        assert!(framed.completed > 0);
    }

    #[tokio::test]
    async fn bulk_and_udp_count_what_came_back() {
        let bulk = bulk(native(Protocol::Echo), 64 * 1024, PHASES).await;
        assert_eq!(bulk.failures, 0, "{:?}", bulk.first_error);
        assert!(bulk.completed > 0);
        let udp = udp_echo(native(Protocol::UdpEcho), 2, 64, PHASES).await;
        assert_eq!(udp.failures, 0, "{:?}", udp.first_error);
        assert!(udp.completed > 0);
    }

    #[tokio::test]
    async fn a_server_that_is_gone_is_a_failure_count_not_an_error() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let opened = open_one_by_one(addr, 30, Duration::from_secs(60)).await;
        assert_eq!(opened.failures, 30, "20 refused, then the rest given up");
        assert!(opened.streams.is_empty());
        assert!(opened.first_error.unwrap().contains("in a row"));
        let rr = exchange(addr, 3, Message::Raw(32), PHASES).await;
        assert_eq!((rr.completed, rr.failures), (0, 3));
        assert_eq!(rr.fairness(), None, "no client connected");
    }

    #[tokio::test]
    async fn opened_connections_stay_open_and_echo_again() {
        let opened = open_one_by_one(native(Protocol::Echo), 50, Duration::from_secs(30)).await;
        assert_eq!(opened.failures, 0, "{:?}", opened.first_error);
        let mut streams = opened.streams;
        assert_eq!(streams.len(), 50);
        assert_eq!(echo_each(&mut streams).await, (0, None));
    }
}
