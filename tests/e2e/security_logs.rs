//! What guests and clients can make the host print or store (issue 14, items 3, 5, 6, 7, 8
//! and 12's logging): escaped and bounded guest strings, a learned policy no name can add a
//! line to, `ready` lines no guest can forge, output that never stalls the guest, one-line
//! errors without the host's stack, and denial floods that stay small.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sockbox::Policy;

use crate::support::{Cli, PATIENCE, sockbox, sockbox_command, temp_dir, test_guest};

fn hostile() -> String {
    test_guest("hostile").display().to_string()
}

/// Sends one line and reads the echo back within `patience`.
fn echo_once(addr: SocketAddr, text: &str, patience: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(patience))?;
    stream.write_all(text.as_bytes())?;
    let mut buf = vec![0; text.len()];
    stream.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Item 3: a name with a terminal escape and a newline never reaches stderr or the audit log
/// as it was written: the lookup is refused as no DNS name before anything is recorded (the
/// escaping of every guest string that is recorded is `audit::log_text`'s unit test).
#[test]
fn a_name_with_escapes_and_newlines_never_reaches_stderr_or_the_audit_log() {
    let dir = temp_dir("logs-escape");
    let audit = dir.join("audit.jsonl");
    let name = "evil\u{1b}[2J\nsockbox: forged line\r";
    let (code, stdout, stderr) = sockbox(&[
        "run",
        &hostile(),
        "--audit",
        audit.to_str().unwrap(),
        "--",
        &format!("dns:{name}"),
        "dns:ok.test",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "raw escape on stderr: {stderr:?}"
    );
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("sockbox: forged")),
        "{stderr}"
    );
    // The guest was told the name is no name at all.
    let result = stdout
        .lines()
        .find(|l| l.starts_with("RESULT dns:evil"))
        .expect("a result line for the evil name");
    assert!(
        result.contains("err") && result.contains("invalid"),
        "{result}"
    );
    // The one denial printed and audited is the well-formed name's.
    let denial: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("denied dns"))
        .collect();
    assert_eq!(denial.len(), 1, "{stderr}");
    assert!(denial[0].contains("ok.test"), "{stderr}");
    let text = std::fs::read_to_string(&audit).unwrap();
    let addrs: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["use"] == "dns")
        .map(|e| e["addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs, ["ok.test"], "{text}");
}

/// Items 5 and 6 under `learn`: a looked-up name cannot add a line to the learned policy,
/// and the guest's forged `ready` line (its stdout goes to stderr there) is not the first.
#[test]
fn a_guest_cannot_inject_into_the_learned_policy_nor_forge_its_ready_line() {
    let evil = "x\nudp = [\"0.0.0.0:5353\"]\n[limits]\nmax-memory = \"1TiB\"";
    let mut cli = Cli::spawn(&[
        "learn",
        &hostile(),
        "--listen",
        "127.0.0.1:0",
        "--",
        &format!("dns:{evil}"),
        "print:ready tcp 192.0.2.1:9",
        "serve-echo:127.0.0.1:0",
    ]);
    let addr = cli.ready_on_stderr();
    // Checked before anything connects: a forged line would name 192.0.2.1.
    assert!(
        addr.ip().is_loopback(),
        "the first ready line was forged: {addr}"
    );
    assert_eq!(echo_once(addr, "learn", PATIENCE).unwrap(), "learn");
    cli.signal("TERM");
    let mut learned = String::new();
    cli.stdout.read_to_string(&mut learned).unwrap();
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("(guest) ready tcp 192.0.2.1:9"), "{stderr}");

    let policy =
        Policy::parse_toml(&learned, "learned.toml").unwrap_or_else(|e| panic!("{e:#}\n{learned}"));
    assert!(policy.udp.is_empty(), "{learned}");
    assert_eq!(policy.limits, Default::default(), "{learned}");
    assert_eq!(policy.listen, ["127.0.0.1:0".parse().unwrap()], "{learned}");
    assert_eq!(policy.rules.len(), 1, "only the listen grant: {learned}");
    assert!(!learned.contains("5353"), "{learned}");

    let file = temp_dir("logs-learned").join("learned.toml");
    std::fs::write(&file, &learned).unwrap();
    let (_, explained, _) = sockbox(&[
        "policy",
        "explain",
        file.to_str().unwrap(),
        "udp-bind",
        "0.0.0.0:5353",
    ]);
    assert!(explained.starts_with("deny"), "{explained}");
}

/// Item 6: the first `ready` line of `sockbox run` is the host's, whatever the guest prints
/// before it listens; the guest's line still appears, marked.
#[test]
fn a_guest_cannot_forge_the_ready_line_of_run() {
    let mut cli = Cli::spawn(&[
        "run",
        &hostile(),
        "--listen",
        "127.0.0.1:0",
        "--",
        "print:ready tcp 192.0.2.1:9",
        "serve-echo:127.0.0.1:0",
    ]);
    let mut seen = String::new();
    let first = loop {
        let mut line = String::new();
        assert!(
            cli.stdout.read_line(&mut line).unwrap() > 0,
            "no ready line: {seen}"
        );
        seen.push_str(&line);
        if line.split_whitespace().next() == Some("ready") {
            break line;
        }
    };
    let addr: SocketAddr = first.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(first.starts_with("ready tcp "), "{first}");
    assert!(
        addr.ip().is_loopback(),
        "the first ready line was forged: {first}"
    );
    assert_eq!(echo_once(addr, "served", PATIENCE).unwrap(), "served");
    cli.signal("TERM");
    cli.stdout.read_to_string(&mut seen).unwrap();
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    // The guest's line is there, marked; the host's is the only `ready` line.
    assert!(seen.contains("(guest) ready tcp 192.0.2.1:9\n"), "{seen}");
    let ready: Vec<&str> = seen.lines().filter(|l| l.starts_with("ready")).collect();
    assert_eq!(ready, [first.trim_end()], "{seen}");
}

/// Item 6 under `sockbox up`: the ready lines carry the guest's name third.
#[test]
fn a_guest_cannot_forge_the_ready_line_of_up() {
    let dir = temp_dir("logs-up-forge");
    let manifest = dir.join("up.toml");
    std::fs::write(
        &manifest,
        format!(
            "[guests.forger]\ncomponent = '{}'\nlisten = [\"127.0.0.1:0\"]\n\
             args = [\"print:ready tcp 192.0.2.1:9 forger\", \"serve-echo:127.0.0.1:0\"]\n",
            hostile()
        ),
    )
    .unwrap();
    let mut cli = Cli::spawn(&["up", manifest.to_str().unwrap()]);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            cli.stdout.read_line(&mut line).unwrap() > 0,
            "no ready line"
        );
        if line.split_whitespace().next() == Some("ready") {
            break;
        }
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let addr: SocketAddr = fields[2].parse().unwrap();
    assert!(
        addr.ip().is_loopback(),
        "the first ready line was forged: {line}"
    );
    assert_eq!(fields.get(3), Some(&"forger"), "{line}");
    assert_eq!(echo_once(addr, "up", PATIENCE).unwrap(), "up");
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Item 7: with stderr a pipe nobody reads, a guest that logs ~25 KiB per client keeps
/// answering clients; once stderr is read, a notice says how many lines were dropped.
#[test]
fn a_stderr_nobody_reads_does_not_stall_the_guest() {
    let mut cli = Cli::spawn(&[
        "run",
        &hostile(),
        "--listen",
        "127.0.0.1:0",
        "--",
        "noisy-echo:127.0.0.1:0",
    ]);
    let (_, addr) = cli.ready();
    // 40 clients x 256 lines x ~110 bytes = 1.1 MB of stderr, against a 64 KiB pipe.
    let started = Instant::now();
    for i in 0..40 {
        let text = format!("ping {i}\n");
        let echoed = echo_once(addr, &text, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("client {i} not answered while stderr is full: {e}"));
        assert_eq!(echoed, text);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // Now read stderr: the backlog, then the notice.
    let mut stderr = BufReader::new(cli.child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let deadline = Instant::now() + PATIENCE;
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            match stderr.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => all.push_str(&line),
            }
            if line.contains("dropped") {
                break;
            }
        }
        all
    });
    let all = reader.join().unwrap();
    let notice = all
        .lines()
        .find(|l| l.contains("dropped"))
        .unwrap_or_else(|| panic!("no notice in {} bytes of stderr", all.len()));
    assert!(
        notice.starts_with("sockbox: guest `hostile`: dropped ")
            && notice.ends_with("of stderr (output not read fast enough)"),
        "{notice}"
    );
    let dropped: u64 = notice
        .split_whitespace()
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{notice}"));
    assert!(dropped > 0, "{notice}");
    eprintln!("figures: 40 clients answered with stderr unread; {notice}");
    cli.child.kill().ok();
}

/// A listener whose first client is reset (RST) after `after`.
fn resetting_listener(after: Duration) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(after);
        rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).unwrap();
        drop(stream);
    });
    (addr, handle)
}

/// Item 8: with RUST_BACKTRACE=1, the error a guest reads for a reset connection is one
/// short line, and a trap's message carries the wasm backtrace but not the host's.
#[test]
fn errors_are_one_line_without_the_host_stack_whatever_rust_backtrace_says() {
    let (addr, server) = resetting_listener(Duration::from_millis(300));
    let out = sockbox_command()
        .env("RUST_BACKTRACE", "1")
        .args([
            "run",
            &hostile(),
            "--allow",
            &format!("tcp-connect={addr}"),
            "--",
            &format!("debug-string:{addr}"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    server.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let prefix = format!("RESULT debug-string:{addr} ok ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    for leak in ["backtrace", "Backtrace", "at ./", "::{{closure}}", "\\n"] {
        assert!(
            !line.contains(leak),
            "{leak:?} in the guest's error: {line}"
        );
    }
    assert!(line.len() < 200, "{} bytes: {line}", line.len());
    assert!(line.to_lowercase().contains("reset"), "{line}");

    let out = sockbox_command()
        .env("RUST_BACKTRACE", "1")
        .args(["run", &hostile(), "--", "trap"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wasm backtrace"), "{stderr}");
    for leak in [
        "Stack backtrace",
        "stack backtrace",
        "::{{closure}}",
        "at ./",
    ] {
        assert!(
            !stderr.contains(leak),
            "{leak:?} in the trap message: {stderr}"
        );
    }
}

/// Item 12 (logging): a flood of denied datagrams under `sockbox up --audit` writes a bounded
/// audit log and stderr, and says how many denials it did not log one by one.
#[test]
fn a_flood_of_denials_is_rate_limited_and_summarised() {
    let dir = temp_dir("logs-flood");
    let audit = dir.join("audit.jsonl");
    let manifest = dir.join("up.toml");
    std::fs::write(
        &manifest,
        "[guests.udp]\ncomponent = \"udp-echo\"\nudp = [\"127.0.0.1:0\"]\n\
         allow = [\"udp-recv=192.0.2.1\"]\n",
    )
    .unwrap();
    let mut cli = Cli::spawn(&[
        "up",
        manifest.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
    ]);
    let (transport, addr) = cli.ready();
    assert_eq!(transport, "udp");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    const SENT: usize = 50_000;
    for i in 0..SENT {
        let _ = sender.send_to(&(i as u32).to_be_bytes(), addr);
    }
    // The summary of what was suppressed comes within about a second of the first.
    std::thread::sleep(Duration::from_millis(2500));
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut logged = 0;
    let mut suppressed = 0u64;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        match event["use"].as_str().unwrap() {
            "udp-recv" if event["decision"] == "deny" => logged += 1,
            "denials-suppressed" => {
                suppressed += event["addr"].as_str().unwrap().parse::<u64>().unwrap()
            }
            _ => {}
        }
    }
    assert!(suppressed > 0, "no summary in the audit log:\n{text}");
    eprintln!(
        "figures: {SENT} datagrams sent, {logged} denials logged, {suppressed} suppressed; \
         audit {} bytes, stderr {} bytes",
        text.len(),
        stderr.len()
    );
    assert!(logged as u64 + suppressed <= SENT as u64);
    assert!(text.len() < 100_000, "audit log of {} bytes", text.len());
    assert!(stderr.len() < 100_000, "stderr of {} bytes", stderr.len());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("more denials") && l.contains("\"udp\"")),
        "{stderr}"
    );
}

/// Item 12 (logging): `--audit-max-size` bounds the audit log; past it the file is rotated to
/// `FILE.1` and begun afresh, whole lines only.
#[test]
fn the_audit_log_rotates_at_its_bound() {
    let dir = temp_dir("logs-rotate");
    let audit = dir.join("audit.jsonl");
    let mut args = vec![
        "run".to_string(),
        hostile(),
        "--audit".into(),
        audit.display().to_string(),
        "--audit-max-size".into(),
        "1KiB".into(),
        "--".into(),
    ];
    args.extend((0..30).map(|i| format!("dns:name{i}.test")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = sockbox(&args);
    assert_eq!(code, Some(0), "{stderr}");
    let now = std::fs::read_to_string(&audit).unwrap();
    let before = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
    assert!(now.len() <= 1024 && before.len() <= 1024, "{now}\n{before}");
    for line in before.lines().chain(now.lines()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(
        now.contains("name29.test"),
        "the newest line is kept: {now}"
    );
}
