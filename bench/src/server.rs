//! One server under test, in a child process of its own: a guest (`sockbox run`) or a native
//! baseline (`sockbox bench --serve`), both from this same binary.
//!
//! A child process gives the server its own descriptor table (10 000 connections are 20 000
//! descriptors when client and server share one) and its own RSS to read. Both kinds print the
//! same `ready <tcp|udp> ADDR` line, so start-to-ready is measured the same way for both. The
//! child is killed when its [`ServerProcess`] is dropped, and on Linux also when the bench
//! process dies, so no server outlives a bench.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::native::{NativeKind, Protocol};

/// How long a server may take from spawn to its `ready` line; a cold compile in a debug
/// build is the slow case.
const READY_PATIENCE: Duration = Duration::from_secs(120);

/// How much of a server's stderr is kept to explain a failure.
const STDERR_TAIL: usize = 4096;

/// A server to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSpec {
    /// `sockbox run COMPONENT --listen|--udp 127.0.0.1:0 ARGS...`.
    Guest {
        /// A built-in guest name or a path to a component.
        component: String,
        proto: Protocol,
        /// Extra `sockbox run` options (e.g. `--instances 2`).
        args: Vec<String>,
        /// Start without the compiled-component cache.
        cold: bool,
    },
    /// `sockbox bench --serve KIND --proto PROTO --listen 127.0.0.1:0`.
    Native { kind: NativeKind, proto: Protocol },
}

impl ServerSpec {
    /// Who serves: the native kind, or `guest`.
    pub fn label(&self) -> String {
        match self {
            ServerSpec::Guest {
                component, args, ..
            } if args.is_empty() => format!("guest {component}"),
            ServerSpec::Guest {
                component, args, ..
            } => format!("guest {component} {}", args.join(" ")),
            ServerSpec::Native { kind, .. } => kind.name().to_string(),
        }
    }
}

/// A cap above any descriptor limit: the process's descriptor budget is what bounds it.
const UNLIMITED: &str = "1000000";

/// A running server, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// Native servers serve until this closes.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    start_to_ready: Duration,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl ServerProcess {
    /// Spawns the server from `exe` (this binary) and waits for its `ready` line.
    pub async fn start(exe: &Path, spec: &ServerSpec) -> Result<ServerProcess> {
        let mut command = Command::new(exe);
        let loopback = "127.0.0.1:0";
        match spec {
            ServerSpec::Guest {
                component,
                proto,
                args,
                cold,
            } => {
                let socket_flag = if proto.is_udp() { "--udp" } else { "--listen" };
                command.args(["run", component, socket_flag, loopback]);
                command.args(args);
                // The bench measures speed, not limits: the guest may hold as many clients
                // as the process's descriptors allow (10 000 idle ones for open-10k-s).
                command.args(["--max-connections", UNLIMITED, "--max-sockets", UNLIMITED]);
                if *cold {
                    command.arg("--no-cache");
                }
                command.stdin(Stdio::null());
            }
            ServerSpec::Native { kind, proto } => {
                let proto = proto.guest();
                command.args(["bench", "--serve", kind.name(), "--proto", proto]);
                command.args(["--listen", loopback]);
                command.stdin(Stdio::piped());
            }
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut command);

        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = keep_tail(child.stderr.take().expect("piped stderr"), &stderr);
        let mut server = ServerProcess {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            start_to_ready: Duration::ZERO,
            stderr,
            stderr_reader: Some(stderr_reader),
        };

        let ready = tokio::time::timeout(READY_PATIENCE, watch_ready(stdout)).await;
        match ready {
            Ok(Ok((at, addr))) => {
                server.addr = addr;
                server.start_to_ready = at - spawned_at;
                Ok(server)
            }
            Ok(Err(err)) => Err(server.failure(spec, &format!("{err:#}"))),
            Err(_) => Err(server.failure(spec, &format!("no ready line in {READY_PATIENCE:?}"))),
        }
    }

    /// The address the server reported ready on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From spawning the process to reading its `ready` line.
    pub fn start_to_ready(&self) -> Duration {
        self.start_to_ready
    }

    /// The server process's resident set size, in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS line in {path}"))
    }

    /// Kills the server and explains why it is no use, with the end of its stderr.
    fn failure(mut self, spec: &ServerSpec, why: &str) -> anyhow::Error {
        self.stop();
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => format!(" ({status})"),
            _ => String::new(),
        };
        let tail = String::from_utf8_lossy(&self.stderr.lock().expect("stderr tail")).into_owned();
        let tail = tail.trim();
        if tail.is_empty() {
            anyhow!("{} did not get ready: {why}{exited}", spec.label())
        } else {
            anyhow!(
                "{} did not get ready: {why}{exited}; its stderr ends with:\n{tail}",
                spec.label()
            )
        }
    }

    fn stop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe has closed with the process: the tail is complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads stdout up to the first `ready` line, noting when it arrived, then keeps draining it
/// on the same thread so a chatty guest never blocks on a full pipe.
async fn watch_ready(stdout: std::process::ChildStdout) -> Result<(Instant, SocketAddr)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("server-stdout".into())
        .spawn(move || {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(addr) = parse_ready(&String::from_utf8_lossy(&line))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((Instant::now(), addr));
                }
            }
        })
        .context("start the stdout reader")?;
    rx.await
        .map_err(|_| anyhow!("it exited before its ready line"))
}

/// The address of a `ready tcp|udp ADDR` line.
fn parse_ready(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace();
    if fields.next() != Some("ready") || !matches!(fields.next(), Some("tcp" | "udp")) {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Collects the last [`STDERR_TAIL`] bytes of `stderr` into `tail` until it closes.
fn keep_tail(mut stderr: std::process::ChildStderr, tail: &Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    let tail = Arc::clone(tail);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut tail = tail.lock().expect("stderr tail");
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    })
}

/// On Linux, the child is killed when the bench dies, even by SIGKILL, when no destructor
/// runs. (The signal follows the spawning thread; the bench spawns from threads that live
/// as long as it does.)
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec, and only makes one async-signal-safe
    // system call; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_parse() {
        assert_eq!(
            parse_ready("ready tcp 127.0.0.1:7000\n"),
            Some("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(
            parse_ready("ready udp [::1]:9000 echo"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(parse_ready("ready tcp"), None);
        assert_eq!(parse_ready("hello ready tcp 127.0.0.1:1"), None);
        assert_eq!(parse_ready("ready sctp 127.0.0.1:1"), None);
    }
}
