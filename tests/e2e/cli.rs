//! The `sockbox run` command line: ready lines, signals, exit statuses, error messages.

use crate::support::{Cli, SNEAKY_WAT, component_file, sockbox};
use std::io::{Read, Write};
use std::net::TcpStream;

fn echo_once(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(msg).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    back
}

#[test]
fn run_echo_prints_ready_line_and_stops_cleanly_on_sigterm() {
    let mut cli = Cli::spawn(&["run", "echo", "--listen", "127.0.0.1:0"]);
    let (transport, addr) = cli.ready();
    assert_eq!(transport, "tcp");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the actual port, not the one asked");
    assert_eq!(echo_once(addr, b"hello sockbox"), b"hello sockbox");
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut cli = Cli::spawn(&["run", "echo", "--listen", "127.0.0.1:0"]);
    let (_, addr) = cli.ready();
    let _open = TcpStream::connect(addr).unwrap(); // a client still connected at shutdown
    cli.signal("INT");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn stdout_carries_only_ready_lines() {
    let mut cli = Cli::spawn(&[
        "run",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
    ]);
    let (_, first) = cli.ready();
    let (_, second) = cli.ready();
    assert!(first.is_ipv4() && second.is_ipv6(), "{first} {second}");
    cli.signal("TERM");
    let (code, _) = cli.finish();
    assert_eq!(code, Some(0));
    let mut rest = String::new();
    cli.stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing else on stdout");
}

#[test]
fn bad_listen_address_is_a_usage_error() {
    let (code, stdout, stderr) = sockbox(&["run", "echo", "--listen", "127.0.0.1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
}

#[test]
fn unknown_guest_is_a_load_error() {
    let (code, _, stderr) = sockbox(&["run", "no-such-guest", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no-such-guest") && stderr.contains("echo"),
        "{stderr}"
    );
}

#[test]
fn forbidden_import_is_exit_2_naming_the_import() {
    let path = component_file("sneaky", SNEAKY_WAT);
    let (code, _, stderr) = sockbox(&["run", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("wasi:http/outgoing-handler@0.2.0"),
        "{stderr}"
    );
}

#[test]
fn guest_trap_is_exit_1_with_wasm_backtrace() {
    let path = component_file(
        "trap",
        r#"(component
            (core module $m
              (func $explode (export "run") (result i32) unreachable))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $cli (export "run" (func $run)))
            (export "wasi:cli/run@0.2.12" (instance $cli)))"#,
    );
    let (code, stdout, stderr) = sockbox(&["run", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("wasm backtrace"), "{stderr}");
    assert!(
        stderr.contains("explode"),
        "the trapping function is named: {stderr}"
    );
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn denied_listen_names_the_flag_to_add() {
    let guest = crate::support::test_guest("plain-echo");
    // A TCP grant elsewhere, so the socket is created and the listen itself is judged.
    let (code, stdout, stderr) = sockbox(&[
        "run",
        guest.to_str().unwrap(),
        "--allow",
        "tcp-connect=127.0.0.1:9",
        "--",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(stderr.contains("denied tcp-listen"), "{stderr}");
    assert!(stderr.contains("--listen 127.0.0.1:0"), "{stderr}");
}

#[test]
fn with_no_grant_at_all_not_even_a_socket_is_created() {
    let guest = crate::support::test_guest("plain-echo");
    let (code, stdout, stderr) = sockbox(&["run", guest.to_str().unwrap(), "--", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(
        stderr.contains(
            "denied creating an ipv4 TCP socket (guest \"plain-echo\"): the policy grants no tcp \
             use; to allow it add --listen <ip:port> or --allow tcp-connect=<ip:port>"
        ),
        "{stderr}"
    );
}

#[test]
fn a_guest_that_exits_right_after_listening_still_gets_its_ready_line() {
    // The line races the guest's exit (the printer used to be stopped after one yield, and
    // lost it when busy cores delayed it): many runs at once, so the cores are busy.
    for hostile in crate::escape::HOSTILES {
        let guest = crate::support::test_guest(hostile);
        let runs: Vec<_> = (0..12)
            .map(|_| {
                let guest = guest.clone();
                std::thread::spawn(move || {
                    sockbox(&[
                        "run",
                        guest.to_str().unwrap(),
                        "--listen",
                        "127.0.0.1:0",
                        "--",
                        "listen:127.0.0.1:0",
                    ])
                })
            })
            .collect();
        for run in runs {
            let (code, stdout, stderr) = run.join().unwrap();
            assert_eq!(code, Some(0), "{stderr}");
            assert!(stdout.contains("RESULT listen:127.0.0.1:0 ok"), "{stdout}");
            let ready = stdout
                .lines()
                .filter(|l| l.starts_with("ready tcp 127.0.0.1:"));
            assert_eq!(ready.count(), 1, "{hostile}: {stdout}\n{stderr}");
        }
    }
}

#[test]
fn max_memory_stops_a_guest_that_grows_past_it() {
    for hostile in crate::escape::HOSTILES {
        max_memory_stops(hostile);
    }
}

fn max_memory_stops(hostile: &str) {
    let guest = crate::support::test_guest(hostile);
    let guest = guest.to_str().unwrap();
    // 16 MiB fits under no limit...
    let (code, stdout, stderr) = sockbox(&["run", guest, "--", "alloc:16"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("RESULT alloc:16 ok"), "{stdout}");
    // ...but not under an 8 MiB cap: the allocation fails inside the guest, a guest failure.
    let (code, stdout, stderr) = sockbox(&["run", guest, "--max-memory", "8MiB", "--", "alloc:16"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("RESULT alloc:16 ok"), "{stdout}");
    assert!(stderr.contains("memory allocation"), "{stderr}");
}

#[test]
fn a_bad_max_memory_is_a_usage_error() {
    let (code, _, stderr) = sockbox(&[
        "run",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--max-memory",
        "lots",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("lots"), "{stderr}");
}

#[test]
fn files_that_are_not_components_are_named_with_what_to_do() {
    let dir = std::env::temp_dir().join(format!("sockbox-badfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.join("missing.wasm");
    let cases = [
        (
            &text,
            "is not a WebAssembly component",
            "--target wasm32-wasip2",
        ),
        (
            &core,
            "is a core WebAssembly module, not a component",
            "wasm-tools component new",
        ),
        (
            &missing,
            "cannot read the component",
            "a built-in name: echo",
        ),
    ];
    for (path, what, todo) in cases {
        let path = path.to_str().unwrap();
        let (code, stdout, stderr) = sockbox(&["run", path, "--listen", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(path), "names the file: {stderr}");
        assert!(stderr.contains(what) && stderr.contains(todo), "{stderr}");
        assert!(!stderr.contains("file:"), "no internal cache key: {stderr}");
    }
}
