//! The other subcommands: check, policy explain, learn, new, client.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{
    Cli, PATIENCE, SNEAKY_WAT, component_file, policy, sockbox, start, stop_clean, tcp, temp_dir,
};

#[test]
fn check_reports_world_and_possible_uses() {
    let (code, stdout, stderr) = sockbox(&["check", "echo"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("sockbox:guest/control"), "{stdout}");
    assert!(
        stdout.contains("conforms to sockbox:guest/server"),
        "{stdout}"
    );
    assert!(
        stdout.contains("could attempt: tcp-listen, tcp-accept, tcp-connect"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("udp-bind"),
        "echo imports no UDP: {stdout}"
    );
    assert!(stdout.contains("\nwasi: WASI 0.2\n"), "{stdout}");
}

#[test]
fn check_tells_a_wasi_p3_guest_by_its_run_export() {
    let (code, stdout, stderr) = sockbox(&["check", "echo-p3"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("wasi:cli/run@0.3"), "{stdout}");
    assert!(stdout.contains("sockbox:guest/stop"), "{stdout}");
    assert!(
        stdout.contains("conforms to sockbox:guest/server"),
        "{stdout}"
    );
    assert!(stdout.contains("\nwasi: WASI 0.3\n"), "{stdout}");
}

/// A component exporting both worlds' `run`: which to call is unclear, so it is refused.
const BOTH_RUNS_WAT: &str = r#"(component
    (core module $m (func (export "run") (result i32) i32.const 0))
    (core instance $i (instantiate $m))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $p2 (export "run" (func $run)))
    (instance $p3 (export "run" (func $run)))
    (export "wasi:cli/run@0.2.12" (instance $p2))
    (export "wasi:cli/run@0.3.0" (instance $p3)))"#;

#[test]
fn check_refuses_a_component_exporting_both_worlds_runs() {
    let path = component_file("both-runs", BOTH_RUNS_WAT);
    let (code, stdout, _) = sockbox(&["check", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("DOES NOT CONFORM"), "{stdout}");
    assert!(
        stdout.contains("exports both wasi:cli/run@0.2 and @0.3"),
        "{stdout}"
    );
    assert!(!stdout.contains("\nwasi: "), "{stdout}");
}

#[test]
fn check_refuses_a_component_outside_the_world() {
    let path = component_file("check-sneaky", SNEAKY_WAT);
    let (code, stdout, _) = sockbox(&["check", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stdout.contains("DOES NOT CONFORM"), "{stdout}");
    assert!(
        stdout.contains("wasi:http/outgoing-handler@0.2.0"),
        "{stdout}"
    );
}

#[test]
fn policy_explain_names_the_rule() {
    let dir = temp_dir("explain");
    let file = dir.join("policy.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:7000\"]\nallow = [\"tcp-connect=127.0.0.0/8:5432\", \"dns=*.test\"]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, stdout, _) = sockbox(&["policy", "explain", file, "tcp-connect", "127.0.0.9:5432"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.starts_with("allow tcp-connect 127.0.0.9:5432"),
        "{stdout}"
    );
    assert!(stdout.contains(":2:"), "names the line: {stdout}");
    let (code, stdout, _) = sockbox(&["policy", "explain", file, "tcp-connect", "127.0.0.1:5433"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("--allow tcp-connect=127.0.0.1:5433"),
        "{stdout}"
    );
    let (code, stdout, _) = sockbox(&["policy", "explain", file, "dns", "db.test"]);
    assert_eq!(code, Some(0), "{stdout}");
    let (code, _, stderr) = sockbox(&["policy", "explain", file, "tcp-conect", "127.0.0.1:1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("tcp-conect"), "{stderr}");
}

#[test]
fn learn_prints_a_policy_that_runs_the_guest_without_denials() {
    let mut cli = Cli::spawn(&["learn", "echo", "--listen", "127.0.0.1:0"]);
    // stdout carries only the policy: the ready line is on stderr.
    let addr = cli.ready_on_stderr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"learn me").unwrap();
    drop(stream);
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let mut learned = String::new();
    std::io::Read::read_to_string(&mut cli.stdout, &mut learned).unwrap();
    assert!(learned.contains("listen = [\"127.0.0.1:0\"]"), "{learned}");
    assert!(learned.contains("allow = []"), "{learned}");

    let file = temp_dir("learned").join("learned.toml");
    std::fs::write(&file, &learned).unwrap();
    let mut run = Cli::spawn(&[
        "run",
        "echo",
        "--policy",
        file.to_str().unwrap(),
        "--fail-on-denial",
    ]);
    let (_, addr) = run.ready();
    std::net::TcpStream::connect(addr).unwrap();
    run.signal("TERM");
    let (code, stderr) = run.finish();
    assert_eq!(
        code,
        Some(0),
        "no denials under the learned policy: {stderr}"
    );
}

#[tokio::test]
async fn new_scaffolds_a_guest_that_builds_and_serves() {
    let dir = temp_dir("new");
    let crate_dir = dir.join("hello-guest");
    // `--sdk`: a checkout's SDK, as SDK developers use it (the SDK built into the binary is
    // tested from outside the repository in scaffold.rs).
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../guests/sdk");
    let (code, _, stderr) = sockbox(&[
        "new",
        "hello-guest",
        "--dir",
        crate_dir.to_str().unwrap(),
        "--sdk",
        sdk,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!crate_dir.join("vendor").exists());
    assert!(
        stderr.contains("cargo build --release --target wasm32-wasip2"),
        "{stderr}"
    );

    // Share the guests' target dir so the SDK and its dependencies are not compiled again.
    let target_dir = PathBuf::from(crate::support::GUEST_WASM_DIR).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdout(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let wasm = target_dir.join("wasm32-wasip2/release/hello-guest.wasm");
    let (guest, sockets) = start(wasm, policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let mut stream = tokio::net::TcpStream::connect(tcp(&sockets)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"world\n").await.unwrap();
    let mut reply = [0u8; 13];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"hello, world\n");
    stop_clean(guest).await;
}

#[test]
fn new_refuses_to_overwrite() {
    let dir = temp_dir("new-exists");
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let (code, _, stderr) = sockbox(&["new", "x", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn tcp_client_pipes_stdin_to_the_server_and_back() {
    let mut server = Cli::spawn(&["run", "echo", "--listen", "127.0.0.1:0"]);
    let (_, addr) = server.ready();
    let mut client = Command::new(env!("CARGO_BIN_EXE_sockbox"))
        .args(["client", "tcp", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"line one\nline two\n");
    server.signal("TERM");
    assert_eq!(server.finish().0, Some(0));
}

/// Runs `sockbox client MODE ADDR` with `input` on stdin; returns its stdout.
fn client(mode: &str, addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut client = Command::new(env!("CARGO_BIN_EXE_sockbox"))
        .args(["client", mode, &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client.stdin.take().unwrap().write_all(input).unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn udp_client_sends_a_datagram_per_line() {
    let mut server = Cli::spawn(&["run", "udp-echo", "--udp", "127.0.0.1:0"]);
    let (transport, addr) = server.ready();
    assert_eq!(transport, "udp");
    assert_eq!(client("udp", addr, b"one\ntwo\n"), b"one\ntwo\n");
    server.signal("TERM");
    assert_eq!(server.finish().0, Some(0));
}

#[test]
fn framed_client_sends_a_frame_per_line() {
    let mut server = Cli::spawn(&["run", "framing", "--listen", "127.0.0.1:0"]);
    let (_, addr) = server.ready();
    assert_eq!(
        client("framed", addr, b"first frame\nsecond\n"),
        b"first frame\nsecond\n"
    );
    server.signal("TERM");
    assert_eq!(server.finish().0, Some(0));
}
