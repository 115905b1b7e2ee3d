//! `sockbox up`: several guests from one manifest in one process, each with its own policy,
//! restarted with backoff, given up after the cap, never disturbing the others.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockbox::supervise::{Ending, Event, Manifest, Supervisor};

use crate::support::{PATIENCE, SNEAKY_WAT, component_file, sockbox, sockbox_command, test_guest};

/// Restarts paced for tests: 10 ms first wait, two restarts before the guest is given up.
const FAST_RESTARTS: &str = "[supervisor]\nrestart-delay = 10\nmax-restarts = 2\n";

/// Writes `text` as `up.toml` in a fresh directory; `HOSTILE` in it becomes the hostile
/// guest's path.
pub(crate) fn manifest(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockbox-up-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("up.toml");
    let hostile = test_guest("hostile");
    let text = text.replace("HOSTILE", &format!("'{}'", hostile.display()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `sockbox up`: ready lines read from stdout, stderr collected line by line as it
/// comes so a test can wait for a log line while the guests keep running.
struct Up {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Up {
    fn start(manifest: &Path, extra: &[&str]) -> Up {
        let mut child = sockbox_command()
            .arg("up")
            .arg(manifest)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockbox up");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            stdout,
            stderr: receive,
            log: Vec::new(),
        }
    }

    /// The next `ready <transport> <addr> <guest>` line (the guests' own output is skipped).
    fn ready(&mut self) -> (String, SocketAddr, String) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read stdout");
            assert!(
                n > 0,
                "sockbox up ended before a ready line: {:?}",
                self.finish()
            );
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let ["ready", transport, addr, guest] = fields[..] {
                return (
                    transport.to_string(),
                    addr.parse().expect("socket address"),
                    guest.to_string(),
                );
            }
        }
    }

    /// The next `count` ready lines, by guest name.
    fn ready_by_guest(&mut self, count: usize) -> HashMap<String, (String, SocketAddr)> {
        (0..count)
            .map(|_| {
                let (transport, addr, guest) = self.ready();
                (guest, (transport, addr))
            })
            .collect()
    }

    /// Waits (bounded) for a stderr line containing `text`; returns it.
    fn wait_log(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {text:?}; stderr so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the exit; returns the status and all of stderr.
    fn finish(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait sockbox up") {
                break status;
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                panic!("sockbox up did not exit within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.stderr.recv_timeout(PATIENCE) {
            self.log.push(line);
        }
        (status.code(), self.log.join("\n"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_roundtrip(addr: SocketAddr, message: &[u8]) {
    let mut stream = TcpStream::connect(addr).expect("connect to echo");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(message).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, message);
}

/// One frame to rcmd and its reply payload; `None` if the connection closed first.
fn rcmd(addr: SocketAddr, command: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect to rcmd");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(&sockbox_wire::encode_frame(command.as_bytes()))
        .unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

#[test]
fn two_guests_serve_side_by_side_with_named_ready_lines() {
    let path = manifest(
        "two",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]

[guests.udp]
component = "udp-echo"
udp = ["127.0.0.1:0"]
audit = "udp-audit.jsonl"

# The same two in WASI 0.3, beside them.
[guests.echo3]
component = "echo-p3"
listen = ["127.0.0.1:0"]

[guests.udp3]
component = "udp-echo-p3"
udp = ["127.0.0.1:0"]
"#,
    );
    let audit = path.with_file_name("audit.jsonl");
    let udp_audit = path.with_file_name("udp-audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let _ = std::fs::remove_file(&udp_audit);
    let mut up = Up::start(&path, &["--audit", audit.to_str().unwrap()]);
    let ready = up.ready_by_guest(4);
    for (echo, udp) in [("echo", "udp"), ("echo3", "udp3")] {
        let (transport, echo) = &ready[echo];
        assert_eq!(transport, "tcp");
        let (transport, udp) = &ready[udp];
        assert_eq!(transport, "udp");
        assert_ne!(echo.port(), 0);
        assert_ne!(udp.port(), 0);

        echo_roundtrip(*echo, b"hello from a neighbour");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client.send_to(b"datagram", udp).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).expect("udp echo reply");
        assert_eq!((&buf[..n], from), (&b"datagram"[..], *udp));
    }

    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("guest `echo` started"), "{stderr}");
    assert!(stderr.contains("guest `udp` started"), "{stderr}");

    // One audit stream, each line naming its guest.
    let lines = std::fs::read_to_string(&audit).expect("audit file");
    let guests: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["guest"].to_string())
        .collect();
    assert!(guests.contains(&"\"echo\"".to_string()), "{lines}");
    assert!(guests.contains(&"\"udp\"".to_string()), "{lines}");
    // The guest's own file has its decisions only.
    let own = std::fs::read_to_string(&udp_audit).expect("the udp guest's audit file");
    assert!(own.contains("\"use\":\"udp-bind\""), "{own}");
    assert!(
        own.lines().all(|l| l.contains("\"guest\":\"udp\"")),
        "{own}"
    );
}

#[test]
fn a_bad_manifest_is_a_load_error_naming_the_line_and_runs_nothing() {
    let path = manifest(
        "bad",
        "[guests.echo]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:0\"]\nrestart = \"sometimes\"\n",
    );
    for check in [false, true] {
        let mut args = vec!["up", path.to_str().unwrap()];
        if check {
            args.push("--check");
        }
        let (status, stdout, stderr) = sockbox(&args);
        assert_eq!(status, Some(2), "stderr:\n{stderr}");
        assert_eq!(stdout, "", "nothing ran, nothing is ready");
        assert!(
            stderr.contains("up.toml:4: guest `echo`: restart must be"),
            "{stderr}"
        );
    }
}

#[test]
fn check_lists_every_guest_and_fails_on_a_component_that_does_not_fit() {
    let path = manifest(
        "check",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.clock]
component = "time"
listen = ["127.0.0.1:0"]
udp = ["127.0.0.1:0"]
restart = "on-failure"
instances = 2
"#,
    );
    let (status, stdout, stderr) = sockbox(&["up", "--check", path.to_str().unwrap()]);
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
    assert_eq!(
        stdout,
        "echo component=echo tcp=127.0.0.1:0 restart=never instances=1\n\
         clock component=time tcp=127.0.0.1:0 udp=127.0.0.1:0 restart=on-failure instances=2\n"
    );
    assert!(
        !stderr.contains("started"),
        "--check runs nothing: {stderr}"
    );

    let sneaky = component_file("up-sneaky", SNEAKY_WAT);
    let path = manifest(
        "check-bad",
        &format!(
            "[guests.echo]\ncomponent = \"echo\"\n[guests.sneaky]\ncomponent = '{}'\n",
            sneaky.display()
        ),
    );
    let (status, stdout, stderr) = sockbox(&["up", "--check", path.to_str().unwrap()]);
    assert_eq!(status, Some(2), "stderr:\n{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("up.toml:3: guest `sneaky`"), "{stderr}");
    assert!(stderr.contains("imports something"), "{stderr}");
}

#[test]
fn a_failing_guest_is_restarted_with_backoff_then_given_up_while_echo_serves() {
    let path = manifest(
        "restart",
        &format!(
            r#"{FAST_RESTARTS}
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]

[guests.flaky]
component = HOSTILE
args = ["exit:3"]
restart = "on-failure"
"#
        ),
    );
    let mut up = Up::start(&path, &[]);
    let (_, echo, guest) = up.ready();
    assert_eq!(guest, "echo");
    up.wait_log("guest `flaky` given up");
    echo_roundtrip(echo, b"still here");

    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(
        status,
        Some(1),
        "a guest failed for good; stderr:\n{stderr}"
    );
    // WASI 0.2's exit carries only success or failure, so status 3 arrives as 1.
    for expected in [
        "guest `flaky` exited with status 1",
        "guest `flaky` restarting in 10ms (restart 1 of at most 2",
        "guest `flaky` started (run 2)",
        "guest `flaky` restarting in 20ms (restart 2 of at most 2",
        "guest `flaky` started (run 3)",
        "guest `flaky` given up",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("started (run 4)"), "{stderr}");
    assert!(
        stderr.contains("sockbox: failed for good: `flaky`"),
        "{stderr}"
    );
    assert!(!stderr.contains("guest `echo` exited"), "{stderr}");
}

#[test]
fn a_trap_beside_echo_leaves_it_serving() {
    let path = manifest(
        "trap",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.trap]
component = HOSTILE
args = ["trap"]
"#,
    );
    let mut up = Up::start(&path, &[]);
    let (_, echo, _) = up.ready();
    let line = up.wait_log("guest `trap` failed");
    assert!(line.contains("wasm backtrace"), "{line}");
    echo_roundtrip(echo, b"after the trap");
    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(
        status,
        Some(1),
        "the trap is final (restart = never):\n{stderr}"
    );
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn a_memory_bomb_beside_echo_hits_its_own_limit_only() {
    let path = manifest(
        "bomb",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.bomb]
component = HOSTILE
args = ["alloc:256"]
[guests.bomb.limits]
max-memory = "16MiB"
"#,
    );
    let mut up = Up::start(&path, &[]);
    let (_, echo, _) = up.ready();
    up.wait_log("guest `bomb` failed");
    echo_roundtrip(echo, &vec![7u8; 1 << 20]);
    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("memory allocation of 268435456 bytes failed"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_every_guest_and_exits_0_even_spinning_and_stuck_ones() {
    let path = manifest(
        "sigterm",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.clock]
component = "time"
listen = ["127.0.0.1:0"]
instances = 2
[guests.spin]
component = HOSTILE
args = ["spin"]
[guests.spin.limits]
max-busy = 600000
[guests.hold]
component = HOSTILE
args = ["hold"]
"#,
    );
    let mut up = Up::start(&path, &[]);
    let ready = up.ready_by_guest(2);
    up.wait_log("guest `spin` started");
    up.wait_log("guest `hold` started");
    // A guest computing without pause does not starve its neighbours.
    echo_roundtrip(ready["echo"].1, b"beside a spinning guest");
    let mut time = String::new();
    let mut stream = TcpStream::connect(ready["clock"].1).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.read_to_string(&mut time).unwrap();
    assert!(time.ends_with("Z\n"), "{time:?}");

    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("asking every guest to stop"), "{stderr}");
    assert!(stderr.contains("guest `clock#1` started"), "{stderr}");
}

#[test]
fn a_restarted_guest_keeps_its_port_and_says_ready_again() {
    for component in ["rcmd", "rcmd-p3"] {
        restarted_keeps_its_port(component);
    }
}

fn restarted_keeps_its_port(component: &str) {
    // `seq 1000000` builds ~7 MB of output: past 6 MiB of memory rcmd traps, and is restarted.
    let path = manifest(
        &format!("port-{component}"),
        &format!(
            r#"{FAST_RESTARTS}
[guests.rcmd]
component = "{component}"
listen = ["127.0.0.1:0"]
restart = "on-failure"
[guests.rcmd.limits]
max-memory = "6MiB"
"#
        ),
    );
    let mut up = Up::start(&path, &[]);
    let (_, first, guest) = up.ready();
    assert_eq!(guest, "rcmd");
    assert_eq!(rcmd(first, "echo hi").as_deref(), Some(&b"\0hi"[..]));
    assert_eq!(
        rcmd(first, "seq 1000000"),
        None,
        "the guest traps instead of replying"
    );
    up.wait_log("guest `rcmd` restarting in 10ms");
    let (_, again, guest) = up.ready();
    assert_eq!((again, guest.as_str()), (first, "rcmd"));
    assert_eq!(rcmd(again, "upper back").as_deref(), Some(&b"\0BACK"[..]));

    up.terminate();
    let (status, stderr) = up.finish();
    // It was restarted and then stopped by the signal: nothing failed for good.
    assert_eq!(status, Some(0), "{component}: stderr:\n{stderr}");
    assert!(stderr.contains("guest `rcmd` started (run 2)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_ends_by_itself_once_every_guest_has_ended_for_good() {
    let hostile = test_guest("hostile");
    let text = format!(
        "{FAST_RESTARTS}\n[guests.once]\ncomponent = '{h}'\nargs = [\"args\"]\n\
         [guests.always]\ncomponent = '{h}'\nargs = [\"args\"]\nrestart = \"always\"\n\
         [guests.failed]\ncomponent = '{h}'\nargs = [\"trap\"]\nrestart = \"never\"\n",
        h = hostile.display()
    );
    let manifest = Manifest::parse(&text, "up.toml", Path::new(".")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let outcome = tokio::time::timeout(
        PATIENCE,
        Supervisor::new(manifest).capture_output(true).run(
            std::future::pending(),
            Arc::new(move |e| sink.lock().unwrap().push(e)),
        ),
    )
    .await
    .expect("ends without a stop signal")
    .expect("loads");

    let endings: HashMap<_, _> = outcome.endings.iter().cloned().collect();
    assert_eq!(endings["once"], Ending::Clean);
    // `always` restarts after clean exits too, until the cap.
    assert!(matches!(&endings["always"], Ending::GaveUp(how) if how == "exited cleanly"));
    assert!(matches!(&endings["failed"], Ending::Failed(how) if how.contains("unreachable")));
    assert!(!outcome.succeeded());
    let starts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Started { instance, .. } if instance == "always"))
        .count();
    assert_eq!(starts, 3, "the first run and two restarts");
}

#[test]
fn the_example_manifest_checks() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/up.toml");
    let (status, stdout, stderr) = sockbox(&["up", "--check", path.to_str().unwrap()]);
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout.contains(
            "clock component=time tcp=127.0.0.1:7001 udp=127.0.0.1:9001 restart=on-failure instances=2"
        ),
        "{stdout}"
    );
}

#[test]
fn a_runaway_guest_is_stopped_by_max_busy_and_its_neighbour_serves() {
    let path = manifest(
        "busy",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.spin]
component = HOSTILE
args = ["spin"]
[guests.spin.limits]
max-busy = 200
"#,
    );
    let mut up = Up::start(&path, &[]);
    let ready = up.ready_by_guest(1);
    let stopped = up.wait_log("computed for more than 200 ms without yielding");
    assert!(stopped.contains("`spin`"), "{stopped}");
    echo_roundtrip(ready["echo"].1, b"after the runaway");
    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(status, Some(1), "spin failed for good:\n{stderr}");
}

#[test]
fn a_socket_hungry_guest_meets_its_cap_and_its_neighbour_keeps_accepting() {
    // No max-sockets: the default share of the process's descriptors is the cap.
    let path = manifest(
        "hungry",
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:0"]
[guests.hungry]
component = HOSTILE
args = ["tcp-sockets:1000000", "hold"]
allow = ["tcp-connect=127.0.0.1:9"]
"#,
    );
    let mut up = Up::start(&path, &[]);
    let ready = up.ready_by_guest(1);
    let refused = up.wait_log("refused tcp-create ipv4 (guest \"hungry\")");
    assert!(refused.contains("max-sockets"), "{refused}");
    // While it holds every socket it may, echo serves many clients at once.
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(ready["echo"].1).expect("echo accepts"))
        .collect();
    for (i, mut client) in clients.into_iter().enumerate() {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let message = format!("client {i}");
        client.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0; message.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
    up.terminate();
    let (status, stderr) = up.finish();
    assert_eq!(status, Some(0), "{stderr}");
}
