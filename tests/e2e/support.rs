//! Helpers shared by the tests: starting guests, talking to them, running the CLI.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::Duration;

use sockbox::{Policy, ReadySocket, RunningGuest, Sandbox, Transport};

/// How long a test waits for anything before it fails instead of hanging CI.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Where the build put every guest component, test-only guests included: set by build.rs for
/// this package's targets at compile time; the library itself carries no build-machine path.
pub const GUEST_WASM_DIR: &str = env!("SOCKBOX_GUEST_WASM_DIR");

/// A test-only guest component built alongside the built-ins (e.g. `plain-echo`).
pub fn test_guest(name: &str) -> PathBuf {
    let path = PathBuf::from(GUEST_WASM_DIR).join(format!("{name}.wasm"));
    assert!(path.exists(), "test guest {} was not built", path.display());
    path
}

/// A policy from the CLI's vocabulary.
pub fn policy(listen: &[&str], udp: &[&str], allow: &[&str]) -> Policy {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Policy::from_flags(&own(listen), &own(udp), &own(allow)).expect("valid test policy")
}

/// Starts `guest` with its output captured and waits (bounded) for its readiness verdict.
async fn launch(
    guest: impl Into<sockbox::GuestSource>,
    policy: Policy,
    args: &[&str],
) -> (RunningGuest, anyhow::Result<Vec<ReadySocket>>) {
    let mut running = Sandbox::builder(guest)
        .policy(policy)
        .args(args.iter().copied())
        .capture_output(true)
        .start()
        .await
        .expect("guest starts");
    let verdict = tokio::time::timeout(PATIENCE, running.ready())
        .await
        .expect("the guest is ready or gone in time");
    (running, verdict)
}

/// Starts `guest` with `policy`, waits until it is ready, returns it and its sockets.
pub async fn start(
    guest: impl Into<sockbox::GuestSource>,
    policy: Policy,
    args: &[&str],
) -> (RunningGuest, Vec<ReadySocket>) {
    let (running, verdict) = launch(guest, policy, args).await;
    let sockets =
        verdict.unwrap_or_else(|e| panic!("guest ready: {e:#}\nstderr:\n{}", running.stderr()));
    (running, sockets)
}

/// Starts `guest` and expects it to end before it is ready; returns it and the error.
pub async fn start_expecting_failure(
    guest: impl Into<sockbox::GuestSource>,
    policy: Policy,
    args: &[&str],
) -> (RunningGuest, anyhow::Error) {
    let (running, verdict) = launch(guest, policy, args).await;
    let err = verdict.expect_err("the guest must not get ready");
    (running, err)
}

/// The first TCP socket among `sockets`.
pub fn tcp(sockets: &[ReadySocket]) -> SocketAddr {
    sockets
        .iter()
        .find(|s| s.transport == Transport::Tcp)
        .expect("a TCP socket")
        .addr
}

/// Stops the guest and asserts it ended cleanly.
pub async fn stop_clean(guest: RunningGuest) {
    let stderr = guest.stderr();
    let exit = guest.stop(Duration::from_secs(10)).await;
    assert!(exit.is_clean(), "guest {exit}\nstderr:\n{stderr}");
}

/// The sockbox binary, with its compile cache in the test's own target dir, not the user's.
pub fn sockbox_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sockbox"));
    command.env("SOCKBOX_CACHE_DIR", compile_cache_dir());
    command
}

/// Where the CLI tests keep compiled components between runs.
pub fn compile_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// The sockbox binary, running with piped stdout/stderr.
pub struct Cli {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    /// stderr once [`Cli::ready_on_stderr`] has read into it, with what it read.
    stderr: Option<(String, BufReader<ChildStderr>)>,
}

impl Cli {
    pub fn spawn(args: &[&str]) -> Cli {
        let mut command = sockbox_command();
        command.args(args);
        Cli::from_command(command)
    }

    /// Runs a prepared sockbox command (extra environment, say) with piped stdout/stderr.
    pub fn from_command(mut command: Command) -> Cli {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockbox");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Cli {
            child,
            stdout,
            stderr: None,
        }
    }

    /// Reads stdout up to the next `ready <transport> <addr>` line.
    pub fn ready(&mut self) -> (String, SocketAddr) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read sockbox stdout");
            if n == 0 {
                let out = self.finish();
                panic!("sockbox ended before a ready line: {out:?}");
            }
            let mut fields = line.split_whitespace();
            if fields.next() == Some("ready") {
                let transport = fields.next().expect("transport").to_string();
                let addr = fields
                    .next()
                    .expect("address")
                    .parse()
                    .expect("socket address");
                return (transport, addr);
            }
        }
    }

    /// Reads stderr up to the `ready tcp <addr>` line, for commands whose stdout carries
    /// something else (`learn`).
    pub fn ready_on_stderr(&mut self) -> SocketAddr {
        let (seen, stderr) = self.stderr.get_or_insert_with(|| {
            let pipe = self.child.stderr.take().expect("stderr not taken yet");
            (String::new(), BufReader::new(pipe))
        });
        loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).expect("read sockbox stderr");
            assert!(n > 0, "sockbox ended before a ready line; stderr:\n{seen}");
            seen.push_str(&line);
            if let Some(addr) = line.trim().strip_prefix("ready tcp ") {
                return addr.parse().expect("socket address");
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process; returns status code and stderr.
    pub fn finish(&mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait sockbox") {
                use std::io::Read;
                let stderr = match (self.stderr.take(), self.child.stderr.take()) {
                    (Some((mut seen, mut rest)), _) => {
                        rest.read_to_string(&mut seen).ok();
                        seen
                    }
                    (None, Some(mut pipe)) => {
                        let mut all = String::new();
                        pipe.read_to_string(&mut all).ok();
                        all
                    }
                    (None, None) => String::new(),
                };
                return (status.code(), stderr);
            }
            if std::time::Instant::now() > deadline {
                self.child.kill().ok();
                panic!("sockbox did not exit within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs sockbox to completion (for commands that exit by themselves).
pub fn sockbox(args: &[&str]) -> (Option<i32>, String, String) {
    let out = sockbox_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sockbox");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A component that would be a fine command, but imports `wasi:http`, which sockbox's world
/// does not provide.
pub const SNEAKY_WAT: &str = r#"(component
    (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
    (core module $m (func (export "run") (result i32) i32.const 0))
    (core instance $i (instantiate $m))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $cli (export "run" (func $run)))
    (export "wasi:cli/run@0.2.12" (instance $cli)))"#;

/// A fresh, empty temporary directory for one test (names are unique across the suite).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockbox-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A component file in a fresh temporary directory.
pub fn component_file(name: &str, wat: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockbox-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// The first UDP socket among `sockets`.
pub fn udp(sockets: &[ReadySocket]) -> SocketAddr {
    sockets
        .iter()
        .find(|s| s.transport == Transport::Udp)
        .expect("a UDP socket")
        .addr
}

/// Sends one length-prefixed frame (`u32` big-endian length + payload).
pub async fn write_frame(stream: &mut (impl tokio::io::AsyncWrite + Unpin), payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(&sockbox_wire::encode_frame(payload))
        .await
        .expect("write frame");
}

/// Reads one length-prefixed frame's payload; fails the test after [`PATIENCE`].
pub async fn read_frame(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let len = stream.read_u32().await? as usize;
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>(payload)
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("frame in time")
        .expect("read frame")
}
