//! `--metrics`: a scrape of `/metrics` on a running `sockbox up` (and `run`) whose values move
//! exactly as the test drives traffic and denials, `/readyz` flipping 503 → 200 → 503 as the
//! guests get ready and one fails for good, and hostile HTTP clients bounded while the
//! process serves on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStderr, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{PATIENCE, sockbox_command, test_guest};
use crate::up::manifest;

/// A `sockbox run`/`up` with `--metrics 127.0.0.1:0`: its metrics address read from stderr.
struct Process {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: mpsc::Receiver<String>,
    metrics: SocketAddr,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = sockbox_command()
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockbox");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + PATIENCE;
        let metrics = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr.recv_timeout(left).expect("a `metrics on` line");
            if let Some(rest) = line.strip_prefix("sockbox: metrics on http://") {
                let addr = rest.strip_suffix("/metrics").expect("the /metrics url");
                break addr.parse().expect("socket address");
            }
        };
        Process {
            child,
            stdout,
            stderr,
            metrics,
        }
    }

    /// The next `ready` line's transport, address and (under `up`) guest.
    fn ready(&mut self) -> (String, SocketAddr, String) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "sockbox ended before a ready line");
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                ["ready", transport, addr] => {
                    return (transport.into(), addr.parse().unwrap(), String::new());
                }
                ["ready", transport, addr, guest] => {
                    return (transport.into(), addr.parse().unwrap(), guest.into());
                }
                _ => {}
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        get(self.metrics, path)
    }

    /// The scrape's value of `series` (`sockbox_x{guest="g"}`).
    fn value(&self, series: &str) -> f64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    /// Scrapes until `series` reads `want` (a connection's close is seen a moment later).
    fn wait_value(&self, series: &str, want: f64) {
        let deadline = Instant::now() + PATIENCE;
        while self.value(series) != want {
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {}, not {want}",
                self.value(series)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_status(&self, path: &str, want: u16) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get(path);
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} stayed {status}: {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// One GET; the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: sockbox\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn echo_once(addr: SocketAddr, message: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(message).unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

#[test]
fn up_metrics_move_with_traffic_and_denials_and_readyz_flips_both_ways() {
    // The hostile guest becomes ready (its listen), is denied a lookup and a connect, then
    // waits on a connection to the test; once the test closes it, it allocates past
    // max-memory and fails for good.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let manifest = manifest(
        "metrics-up",
        &format!(
            r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]

[guests.udp]
component = "udp-echo"
udp = ["127.0.0.1:0"]

[guests.udp3]
component = "udp-echo-p3"
udp = ["127.0.0.1:0"]

[guests.hostile]
component = HOSTILE
listen = ["127.0.0.1:0"]
allow = ["tcp-connect=127.0.0.1:{port}"]
args = ["listen:127.0.0.1:0", "dns:example.com", "connect:127.0.0.1:9", "debug-string:127.0.0.1:{port}", "alloc:256"]
[guests.hostile.limits]
max-memory = "16MiB"
"#
        ),
    );
    let mut up = Process::start(&["up", manifest.to_str().unwrap()]);
    // The listener is up before any guest: not ready yet, or ready once all three are.
    let (status, _) = up.get("/healthz");
    assert_eq!(status, 200);
    let mut addrs = std::collections::HashMap::new();
    for _ in 0..4 {
        let (_, addr, guest) = up.ready();
        addrs.insert(guest, addr);
    }
    assert_eq!(up.wait_status("/readyz", 200), "ready\n");

    for message in [&b"hello\n"[..], b"metrics!\n", b"x"] {
        echo_once(addrs["echo"], message);
    }
    let echo = |name: &str| format!("sockbox_{name}{{guest=\"echo\"}}");
    up.wait_value(&echo("connections_active"), 0.0);
    assert_eq!(up.value(&echo("connections_total")), 3.0);
    assert_eq!(up.value(&echo("received_bytes_total")), 16.0);
    assert_eq!(up.value(&echo("sent_bytes_total")), 16.0);
    assert_eq!(up.value(&echo("ready")), 1.0);

    // WASI 0.2's batched receive and 0.3's one datagram a call, counted alike.
    for guest in ["udp", "udp3"] {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        for datagram in [&b"ping"[..], b"pong!"] {
            client.send_to(datagram, addrs[guest]).unwrap();
            let mut buf = [0; 64];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], datagram);
        }
        let udp = |name: &str| format!("sockbox_{name}{{guest=\"{guest}\"}}");
        // Received ones are counted before the guest has them (0.2) or as it gets them (0.3);
        // a sent one a moment after it left.
        up.wait_value(&udp("datagrams_received_total"), 2.0);
        assert_eq!(up.value(&udp("received_bytes_total")), 9.0);
        up.wait_value(&udp("datagrams_sent_total"), 2.0);
        assert_eq!(up.value(&udp("sent_bytes_total")), 9.0);
    }

    // The hostile guest's denials, by use; no peer address is a label anywhere.
    let (held, _) = upstream.accept().unwrap();
    let denials = |use_: &str| format!("sockbox_denials_total{{guest=\"hostile\",use=\"{use_}\"}}");
    assert_eq!(up.value(&denials("dns")), 1.0);
    assert_eq!(up.value(&denials("tcp-connect")), 1.0);
    assert_eq!(up.value(&denials("tcp-listen")), 0.0);
    assert_eq!(
        up.value("sockbox_dns_lookups_total{guest=\"hostile\"}"),
        1.0
    );
    assert_eq!(
        up.value("sockbox_memory_kills_total{guest=\"hostile\"}"),
        0.0
    );
    assert!(up.value("sockbox_memory_bytes{guest=\"hostile\"}") > 0.0);
    assert!(!up.get("/metrics").1.contains("127.0.0.1"));

    // Released, it fails for good: /readyz names it, the others serve on.
    drop(held);
    let body = up.wait_status("/readyz", 503);
    assert_eq!(body, "not ready: hostile\n");
    assert_eq!(
        up.value("sockbox_memory_kills_total{guest=\"hostile\"}"),
        1.0
    );
    assert_eq!(up.value("sockbox_ready{guest=\"hostile\"}"), 0.0);
    assert_eq!(up.value("sockbox_memory_bytes{guest=\"hostile\"}"), 0.0);
    echo_once(addrs["echo"], b"still here");
    assert!(up.alive());
}

#[test]
fn busy_kills_and_restarts_are_counted_per_run() {
    // A guest that computes without yielding: stopped by max-busy at each of its three runs
    // (the first and two restarts), while echo keeps the process (and its listener) up.
    let manifest = manifest(
        "metrics-busy",
        r#"
[supervisor]
restart-delay = 10
max-restarts = 2

[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]

[guests.spin]
component = HOSTILE
args = ["spin"]
restart = "on-failure"
[guests.spin.limits]
max-busy = 100
"#,
    );
    let mut up = Process::start(&["up", manifest.to_str().unwrap()]);
    let (_, echo, _) = up.ready();
    up.wait_value("sockbox_busy_kills_total{guest=\"spin\"}", 3.0);
    assert_eq!(up.value("sockbox_restarts_total{guest=\"spin\"}"), 2.0);
    assert_eq!(up.value("sockbox_memory_kills_total{guest=\"spin\"}"), 0.0);
    assert_eq!(up.value("sockbox_busy_kills_total{guest=\"echo\"}"), 0.0);
    assert_eq!(up.value("sockbox_restarts_total{guest=\"echo\"}"), 0.0);
    echo_once(echo, b"beside a runaway");
    assert!(up.alive());
}

#[test]
fn run_metrics_count_one_guest_and_hostile_http_clients_are_bounded() {
    let mut run = Process::start(&["run", "echo", "--listen", "127.0.0.1:0"]);
    let (_, addr, _) = run.ready();
    run.wait_status("/readyz", 200);
    echo_once(addr, b"abc");
    run.wait_value("sockbox_connections_active{guest=\"echo\"}", 0.0);
    assert_eq!(run.value("sockbox_connections_total{guest=\"echo\"}"), 1.0);
    assert_eq!(
        run.value("sockbox_received_bytes_total{guest=\"echo\"}"),
        3.0
    );
    assert!(run.value("sockbox_descriptors_budget") > 0.0);

    // Many idle connections: past 16 a client is closed at once.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(run.metrics).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(run.metrics).unwrap();
    extra.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    assert_eq!(
        extra.read(&mut [0; 16]).unwrap_or(0),
        0,
        "closed, not served"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // A slow head is cut off after 5 s.
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let mut slow = TcpStream::connect(run.metrics).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    slow.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    assert!(!answer.contains("sockbox_"), "{answer}");
    // A huge head is refused, never answered with metrics.
    let mut huge = TcpStream::connect(run.metrics).unwrap();
    huge.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // The process serves on: metrics, and the guest.
    assert_eq!(run.get("/healthz").0, 200);
    echo_once(addr, b"after");
    assert_eq!(run.value("sockbox_connections_total{guest=\"echo\"}"), 2.0);
    assert!(run.alive());
    let _ = run.stderr.try_recv();
}

#[test]
fn json_logs_are_one_object_a_line_naming_the_guest() {
    let hostile = test_guest("hostile");
    let out = sockbox_command()
        .env("SOCKBOX_LOG", "info")
        .args(["--log-format", "json", "run"])
        .arg(&hostile)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--",
            "listen:127.0.0.1:0",
            "connect:127.0.0.1:9",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run sockbox");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let denial = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("denied tcp-connect"))
        })
        .unwrap_or_else(|| panic!("no denial line in:\n{stderr}"));
    assert_eq!(denial["guest"], "hostile");
    assert_eq!(denial["level"], "WARN");
    // The tracing lines carry their fields beside the message (a socket's readiness here).
    assert!(
        lines
            .iter()
            .any(|l| l["guest"] == "hostile" && l["level"] == "INFO"),
        "{stderr}"
    );
    // stdout is unchanged: the guest's own output passes as it is.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("RESULT connect:127.0.0.1:9 err")),
        "{stdout}"
    );
}
