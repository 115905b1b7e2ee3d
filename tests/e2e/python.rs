//! Python guests (guests/python): built with componentize-py, checked with the same native
//! clients as the Rust guests of the same name, plus what only Python guests have (`sockbox
//! build`, `sockbox run app.py`, `sockbox new --lang python`).
//!
//! componentize-py comes the way the wasm target does, with nothing installed by hand: a
//! pinned install into a virtual environment under the target dir on first use, reused after.
//! Without python3 these tests fail and say so; they never skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sockbox::{CompileCache, Policy, RunningGuest, Sandbox};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    Cli, PATIENCE, compile_cache_dir, policy, sockbox_command, stop_clean, tcp, temp_dir, udp,
};
use crate::venv;

/// The pinned componentize-py, in a virtual environment made once, shared by all runs.
pub(crate) fn componentize_py() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let version = sockbox::python::COMPONENTIZE_PY_VERSION;
        let requirement = format!("componentize-py=={version}");
        let venv = venv::pinned(
            &format!("componentize-py-{version}"),
            &[&requirement],
            "bin/componentize-py",
        );
        venv.join("bin/componentize-py")
    })
}

/// `sockbox` with the test's componentize-py and compile cache.
fn sockbox_py() -> Command {
    let mut command = sockbox_command();
    command.env("SOCKBOX_COMPONENTIZE_PY", componentize_py());
    command
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Python guest's component, built once per test run with `sockbox build` (and taken from
/// the build cache when its sources have not changed since the last run).
fn python_guest(script: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(wasm) = built.get(script) {
        return wasm.clone();
    }
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-guests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(script).file_stem().unwrap().to_str().unwrap();
    let wasm = out_dir.join(format!("{stem}.wasm"));
    let out = sockbox_py()
        .arg("build")
        .arg(repo().join(script))
        .arg("--output")
        .arg(&wasm)
        .output()
        .expect("run sockbox build");
    assert!(
        out.status.success(),
        "sockbox build {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(script.to_string(), wasm.clone());
    wasm
}

/// Starts a Python guest through the library, with the shared compile cache (a Python
/// component is tens of MB: compiled once, then loaded).
async fn start_py(script: &str, policy: Policy) -> (RunningGuest, Vec<sockbox::ReadySocket>) {
    let wasm = python_guest(script);
    let mut guest = Sandbox::builder(wasm)
        .policy(policy)
        .capture_output(true)
        .compile_cache(CompileCache::Dir(compile_cache_dir()))
        .start()
        .await
        .expect("guest starts");
    let verdict = tokio::time::timeout(PATIENCE * 4, guest.ready())
        .await
        .expect("the guest is ready or gone in time");
    let sockets = verdict.unwrap_or_else(|e| panic!("{script} ready: {e:#}\n{}", guest.stderr()));
    (guest, sockets)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn echo_returns_a_mebibyte_and_closes_after_half_close() {
    let (guest, sockets) =
        start_py("guests/python/echo.py", policy(&["127.0.0.1:0"], &[], &[])).await;
    let data = pattern(1 << 20);
    assert_eq!(crate::echo::roundtrip(tcp(&sockets), &data).await, data);
    assert_eq!(crate::echo::roundtrip(tcp(&sockets), b"").await, b"");
    stop_clean(guest).await;
}

#[tokio::test]
async fn echo_serves_a_hundred_clients_at_once() {
    let (guest, sockets) =
        start_py("guests/python/echo.py", policy(&["127.0.0.1:0"], &[], &[])).await;
    crate::echo::hundred_clients_at_once(tcp(&sockets)).await;
    stop_clean(guest).await;
}

#[tokio::test]
async fn shutdown_ends_idle_connections_and_the_guest_cleanly() {
    let (guest, sockets) =
        start_py("guests/python/echo.py", policy(&["127.0.0.1:0"], &[], &[])).await;
    let mut idle = TcpStream::connect(tcp(&sockets)).await.unwrap();
    idle.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    idle.read_exact(&mut back).await.unwrap();
    let stopping = std::time::Instant::now();
    stop_clean(guest).await;
    // Between requests, so not held for the drain period: closed at once.
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    // The client sees the close (an EOF, or a reset), not a connection left hanging.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, idle.read_to_end(&mut rest))
        .await
        .expect("closed, not hanging");
    assert!(rest.is_empty(), "{read:?} {rest:?}");
}

#[tokio::test]
async fn udp_echo_returns_datagrams_of_every_size_unchanged() {
    let (guest, sockets) = start_py(
        "guests/python/udp_echo.py",
        policy(&[], &["127.0.0.1:0", "[::1]:0"], &[]),
    )
    .await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let payloads = vec![
        Vec::new(),
        pattern(1400),
        pattern(60_000),
        b"after".to_vec(),
    ];
    for socket in &sockets {
        let back = crate::udp_echo::bounce(socket.addr, payloads.clone()).await;
        assert_eq!(back, payloads, "{socket}");
    }
    stop_clean(guest).await;
}

#[tokio::test]
async fn time_server_speaks_the_time_protocol_on_both_transports() {
    use chrono::Utc;
    let (guest, sockets) = start_py(
        "guests/python/time_server.py",
        policy(&["127.0.0.1:0"], &["127.0.0.1:0"], &[]),
    )
    .await;
    let server = udp(&sockets);
    crate::time::assert_close_to_now(&crate::time::ask(server, "").await);
    let before = Utc::now().format("%Y-%m-%d").to_string();
    let date = crate::time::ask(server, "%Y-%m-%d").await;
    assert!(
        date == before || date == Utc::now().format("%Y-%m-%d").to_string(),
        "{date}"
    );
    assert_eq!(
        crate::time::ask(server, "%Q is no format").await,
        "ERR invalid format"
    );
    assert_eq!(crate::time::ask(server, "100%").await, "ERR invalid format");
    assert_eq!(
        crate::time::ask(server, "year %Y").await,
        Utc::now().format("year %Y").to_string()
    );

    crate::time::assert_tcp_tells_the_time(tcp(&sockets)).await;
    stop_clean(guest).await;
}

/// Asks the dial test guest to connect to `to`; returns its one-line answer.
async fn dial(client: &mut BufReader<TcpStream>, to: std::net::SocketAddr) -> String {
    request(client, &format!("{} {}", to.ip(), to.port())).await
}

/// Sends `line` and returns the one-line answer.
async fn request(client: &mut BufReader<TcpStream>, line: &str) -> String {
    let line = format!("{line}\n");
    client.get_mut().write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, client.read_line(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

#[tokio::test]
async fn a_denied_connect_is_a_permission_error_in_python_and_audited() {
    let granted = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to_granted = granted.local_addr().unwrap();
    let decoy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to_decoy = decoy.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut peer, _)) = granted.accept().await {
            peer.write_all(b"upstream here\n").await.ok();
        }
    });
    let (guest, sockets) = start_py(
        "tests/e2e/python/dial.py",
        policy(
            &["127.0.0.1:0"],
            &[],
            &[&format!("tcp-connect={to_granted}")],
        ),
    )
    .await;
    let mut client = BufReader::new(TcpStream::connect(tcp(&sockets)).await.unwrap());

    assert_eq!(dial(&mut client, to_granted).await, "ok upstream here\n");
    assert_eq!(
        dial(&mut client, to_decoy).await,
        "error access-denied PermissionError\n"
    );
    // Still serving after the denial, and nothing reached the decoy.
    assert_eq!(dial(&mut client, to_granted).await, "ok upstream here\n");
    // A connection the guest forgets without closing is released children-first: the
    // instance does not trap ("resource has children") and goes on serving.
    let forget = format!("forget {} {}", to_granted.ip(), to_granted.port());
    assert_eq!(request(&mut client, &forget).await, "forgot\n");
    assert_eq!(dial(&mut client, to_granted).await, "ok upstream here\n");
    let reached = tokio::time::timeout(std::time::Duration::from_millis(200), decoy.accept()).await;
    assert!(reached.is_err(), "the decoy was never connected to");

    let decisions = guest.decisions();
    let denied: Vec<_> = decisions.iter().filter(|d| !d.allowed()).collect();
    assert_eq!(denied.len(), 1, "{decisions:#?}");
    assert_eq!(denied[0].use_, "tcp-connect");
    assert_eq!(denied[0].addr, to_decoy.to_string());
    drop(client);
    stop_clean(guest).await;
}

/// Writes `pieces` one at a time, a moment apart, so the guest sees them as separate reads.
async fn send_split(client: &mut BufReader<TcpStream>, pieces: &[&[u8]]) {
    for piece in pieces {
        client.get_mut().write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

async fn read_line(client: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, client.read_line(&mut line))
        .await
        .expect("an answer in time")
        .unwrap();
    line
}

#[tokio::test]
async fn start_server_serves_asyncio_streams_on_every_granted_address() {
    let (guest, sockets) = start_py(
        "tests/e2e/python/streams.py",
        policy(&["127.0.0.1:0", "[::1]:0"], &[], &[]),
    )
    .await;
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let listening: Vec<String> = sockets.iter().map(|s| s.addr.to_string()).collect();
    for socket in &sockets {
        let stream = TcpStream::connect(socket.addr).await.unwrap();
        let me = stream.local_addr().unwrap();
        let mut client = BufReader::new(stream);
        assert_eq!(request(&mut client, "peer").await, format!("peer {me}\n"));
        let sockname = format!("sockname {}\n", socket.addr);
        assert_eq!(request(&mut client, "sockname").await, sockname);
        let all = format!("sockets {}\n", listening.join(" "));
        assert_eq!(request(&mut client, "sockets").await, all);
    }

    // start_server's host and port pick among the --listen grants; both given, the host's
    // policy decides (port-0 grants allow port 0 only).
    let mut client = BufReader::new(TcpStream::connect(sockets[0].addr).await.unwrap());
    let listening = |answer: String| -> Vec<std::net::SocketAddr> {
        let addrs = answer
            .strip_prefix("listening ")
            .expect(&answer)
            .split_whitespace();
        addrs.map(|a| a.parse().expect(a)).collect()
    };
    let v6 = listening(request(&mut client, "listen ::1 -").await);
    assert!(
        v6.len() == 1 && v6[0].ip() == sockets[1].addr.ip(),
        "{v6:?}"
    );
    assert!(v6[0].port() != 0 && v6[0] != sockets[1].addr, "{v6:?}");
    let both = listening(request(&mut client, "listen - 0").await);
    let ips: Vec<_> = both.iter().map(|a| a.ip()).collect();
    assert_eq!(ips, [sockets[0].addr.ip(), sockets[1].addr.ip()]);
    for (line, answer) in [
        ("listen 10.9.8.7 -", "error OSError -\n"),
        ("listen - 7", "error OSError -\n"),
        (
            "listen 127.0.0.1 9",
            "error PermissionError access-denied\n",
        ),
    ] {
        assert_eq!(request(&mut client, line).await, answer, "{line}");
    }

    let stream = TcpStream::connect(sockets[0].addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut client = BufReader::new(stream);
    // The old names are the new classes.
    assert_eq!(request(&mut client, "names").await, "aliases True\n");
    assert_eq!(request(&mut client, "lines").await, "one\n");
    assert_eq!(read_line(&mut client).await, "two\n");
    // readexactly and readuntil (a separator split between writes) wait for the rest.
    send_split(&mut client, &[b"exactly 10\nabc", b"defg", b"hij"]).await;
    assert_eq!(read_line(&mut client).await, "exactly abcdefghij\n");
    send_split(&mut client, &[b"until -;-\nx-", b";", b"-"]).await;
    assert_eq!(read_line(&mut client).await, "until x-;-\n");
    // The client closes before the bytes it announced: IncompleteReadError, then EOF.
    send_split(&mut client, &[b"exactly 5\nab"]).await;
    client.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, client.read_to_string(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(rest, "incomplete 2 5 eof=True\n");

    // Past the reader's limit (1024, given to start_server): LimitOverrunError.
    let mut client = BufReader::new(TcpStream::connect(sockets[1].addr).await.unwrap());
    let long = [b"until ;\n".as_slice(), &[b'a'; 2000]].concat();
    client.get_mut().write_all(&long).await.unwrap();
    assert_eq!(read_line(&mut client).await, "overrun\n");

    // write_eof half-closes: the client sees EOF while its own side is still open.
    let mut client = BufReader::new(TcpStream::connect(sockets[1].addr).await.unwrap());
    assert_eq!(request(&mut client, "eof").await, "bye True\n");
    assert_eq!(read_line(&mut client).await, "", "EOF after write_eof");
    drop(client);

    // serve_forever returns when the host asks the guest to stop: a clean exit.
    stop_clean(guest).await;
}

#[test]
fn every_public_name_of_sockbox_guest_is_in_the_guide() {
    let init = std::fs::read_to_string(repo().join("guests/python/sockbox_guest/__init__.py"))
        .expect("read __init__.py");
    let all = init
        .split_once("__all__ = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .expect("__init__.py has __all__")
        .0;
    let names: Vec<&str> = all
        .split(',')
        .map(|name| name.trim().trim_matches('"'))
        .filter(|name| !name.is_empty())
        .collect();
    assert!(names.contains(&"start_server"), "{names:?}");
    let guide = std::fs::read_to_string(repo().join("docs/writing-guests.md")).unwrap();
    let python = guide
        .split_once("# Writing a guest in Python")
        .expect("the guide has a Python part")
        .1;
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !python.contains(&format!("`{name}")))
        .collect();
    assert!(missing.is_empty(), "not in writing-guests.md: {missing:?}");
}

#[test]
fn sockbox_run_builds_and_serves_a_py_file() {
    // The same cache as `sockbox build`: the second build of unchanged sources is a lookup.
    python_guest("guests/python/echo.py");
    let mut command = sockbox_py();
    command
        .arg("run")
        .arg(repo().join("guests/python/echo.py"))
        .args(["--listen", "127.0.0.1:0"]);
    let mut run = Cli::from_command(command);
    let (transport, addr) = run.ready();
    assert_eq!(transport, "tcp");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"from the CLI").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"from the CLI");
    run.signal("TERM");
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn new_python_scaffolds_a_guest_that_serves() {
    let dir = temp_dir("py-new").join("greeter");
    let out = sockbox_command()
        .args(["new", "greeter", "--lang", "python", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("sockbox run"), "{stderr}");
    assert!(stderr.contains("componentize-py==0.25.1"), "{stderr}");
    let script = dir.join("greeter.py");
    assert!(script.is_file());

    let mut command = sockbox_py();
    command
        .arg("run")
        .arg(&script)
        .args(["--listen", "127.0.0.1:0"]);
    let mut run = Cli::from_command(command);
    let (_, addr) = run.ready();
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    stream
        .get_mut()
        .write_all(b"world\nand you\r\n")
        .await
        .unwrap();
    for want in ["hello, world\n", "hello, and you\n"] {
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line, want);
    }
    run.signal("TERM");
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(0), "{stderr}");

    // The scaffold's own end-to-end test, as its user runs it.
    let unittest = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-m", "unittest", "discover", "-v"])
        .arg(&dir)
        .env("SOCKBOX", env!("CARGO_BIN_EXE_sockbox"))
        .env("SOCKBOX_CACHE_DIR", compile_cache_dir())
        .env("SOCKBOX_COMPONENTIZE_PY", componentize_py())
        .output()
        .expect("run python3 -m unittest");
    let report = String::from_utf8_lossy(&unittest.stderr);
    assert!(unittest.status.success(), "{report}");
    assert!(
        report.contains("test_greets_each_line") && report.contains("OK"),
        "{report}"
    );
}

#[test]
fn new_python_refuses_names_that_would_not_import() {
    let dir = temp_dir("py-new-bad");
    for (name, says) in [
        ("time", "hide Python's own `time`"),
        ("my-guest", "not a good Python module name"),
    ] {
        let out = sockbox_command()
            .args(["new", name, "--lang", "python", "--dir"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(!dir.join(name).exists(), "nothing written for {name}");
    }
}

#[test]
fn a_py_guest_without_componentize_py_says_how_to_install_it() {
    let dir = temp_dir("py-no-tool");
    let script = dir.join("app.py");
    std::fs::write(&script, "raise SystemExit(0)\n").unwrap();
    let out = sockbox_command()
        .arg("run")
        .arg(&script)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SOCKBOX_COMPONENTIZE_PY")
        .env("PATH", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pip install componentize-py==0.25.1"),
        "{stderr}"
    );
}

#[test]
fn a_python_syntax_error_fails_the_build_with_python_s_message() {
    let dir = temp_dir("py-syntax");
    let script = dir.join("broken.py");
    std::fs::write(
        &script,
        "from sockbox_guest import Guest\n\nclass Run(Guest)\n    pass\n",
    )
    .unwrap();
    let out = sockbox_py()
        .arg("build")
        .arg(&script)
        .arg("--output")
        .arg(dir.join("broken.wasm"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SyntaxError"), "{stderr}");
    assert!(stderr.contains("broken.py"), "{stderr}");
    assert!(!dir.join("broken.wasm").exists());
}

#[test]
fn sockbox_up_runs_a_python_guest_beside_a_rust_one() {
    python_guest("guests/python/echo.py"); // built (and cached) once
    let dir = temp_dir("py-up");
    let manifest = dir.join("up.toml");
    let script = repo().join("guests/python/echo.py");
    std::fs::write(
        &manifest,
        format!(
            "[guests.py-echo]\ncomponent = '{}'\nlisten = [\"127.0.0.1:0\"]\n\n\
             [guests.rust-echo]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:0\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let mut command = sockbox_py();
    command.arg("up").arg(&manifest);
    let mut up = Cli::from_command(command);
    let first = up.ready().1;
    let second = up.ready().1;
    for addr in [first, second] {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"side by side").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"side by side", "{addr}");
    }
    up.signal("TERM");
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
}
