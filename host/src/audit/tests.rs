//! Tests of the audit line (keys, order, escaping), the denial messages, and the log file.

use super::*;
use crate::policy::{Gate, Policy, SocketOp};

fn event(use_: Use, addr: &str, allowed: bool, rule: Option<&str>) -> AuditEvent {
    AuditEvent::new("proxy", use_, addr, allowed, rule.map(String::from))
}

#[test]
fn the_line_has_the_contract_keys_in_order() {
    let mut ev = event(Use::TcpConnect, "10.0.0.5:80", false, None);
    ev.ts = "2025-01-02T03:04:05.678Z".into();
    assert_eq!(
        ev.to_json_line(),
        r#"{"ts":"2025-01-02T03:04:05.678Z","guest":"proxy","use":"tcp-connect","addr":"10.0.0.5:80","decision":"deny","rule":null}"#
    );
    let mut ev = event(
        Use::Dns,
        "db.test",
        true,
        Some("policy.toml:3: allow \"dns=*.test\""),
    );
    ev.ts = "2025-01-02T03:04:05.678Z".into();
    assert_eq!(
        ev.to_json_line(),
        r#"{"ts":"2025-01-02T03:04:05.678Z","guest":"proxy","use":"dns","addr":"db.test","decision":"allow","rule":"policy.toml:3: allow \"dns=*.test\""}"#
    );
}

#[test]
fn the_timestamp_is_rfc3339_utc() {
    let ev = event(
        Use::TcpListen,
        "127.0.0.1:7000",
        true,
        Some("--listen 127.0.0.1:7000"),
    );
    let parsed = chrono::DateTime::parse_from_rfc3339(&ev.ts).unwrap();
    assert_eq!(parsed.offset().local_minus_utc(), 0);
    assert!(ev.ts.ends_with('Z'), "{}", ev.ts);
    let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6);
}

#[test]
fn events_come_from_gate_verdicts() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let gate = Gate::new(Policy::from_flags(&s(&["[::1]:7000"]), &[], &[]).unwrap());
    let v = gate.check(SocketOp::TcpListen, "[::1]:7000".parse().unwrap());
    let ev = AuditEvent::from_verdict("echo", &v);
    assert_eq!(
        (ev.use_.as_str(), ev.addr.as_str(), ev.allowed()),
        ("tcp-listen", "[::1]:7000", true)
    );
    assert_eq!(ev.rule.as_deref(), Some("--listen [::1]:7000"));
}

#[test]
fn denials_say_what_to_add() {
    let table = [
        (
            Use::TcpConnect,
            "127.0.0.1:5432",
            "sockbox: denied tcp-connect to 127.0.0.1:5432 (guest \"proxy\"); to allow it \
                 add --allow tcp-connect=127.0.0.1:5432",
        ),
        (
            Use::TcpListen,
            "127.0.0.1:7000",
            "sockbox: denied tcp-listen on 127.0.0.1:7000 (guest \"proxy\"); to allow it \
                 add --listen 127.0.0.1:7000",
        ),
        (
            Use::UdpBind,
            "[::1]:9000",
            "sockbox: denied udp-bind on [::1]:9000 (guest \"proxy\"); to allow it add \
                 --udp [::1]:9000",
        ),
        (
            Use::TcpAccept,
            "192.0.2.9:40000",
            "sockbox: denied tcp-accept from 192.0.2.9:40000 (guest \"proxy\"); to allow \
                 it add --allow tcp-accept=192.0.2.9",
        ),
        (
            Use::Dns,
            "db.test",
            "sockbox: denied dns for db.test (guest \"proxy\"); to allow it add --allow \
                 dns=db.test",
        ),
        (
            Use::UdpSend,
            "0.0.0.0:0",
            "sockbox: denied bind to 0.0.0.0:0 (guest \"proxy\"): to serve there add \
                 --udp 0.0.0.0:0; if it was about to send, the policy grants no udp-send: add \
                 --allow udp-send=<ip:port>",
        ),
    ];
    for (use_, addr, want) in table {
        assert_eq!(denial_message(&event(use_, addr, false, None)), want);
    }
}

#[test]
fn refusals_outside_the_rules_say_what_to_change() {
    let no_grant = AuditEvent::refused("hungry", "tcp-create", "ipv4", None);
    assert_eq!(
        denial_message(&no_grant),
        "sockbox: denied creating an ipv4 TCP socket (guest \"hungry\"): the policy grants \
             no tcp use; to allow it add --listen <ip:port> or --allow tcp-connect=<ip:port>"
    );
    assert_eq!(no_grant.limit(), None);
    let udp = AuditEvent::refused("hungry", "udp-create", "ipv6", None);
    assert!(denial_message(&udp).ends_with("add --udp <ip:port> or --allow udp-send=<ip:port>"));
    let full = AuditEvent::refused(
        "echo",
        "tcp-accept",
        "127.0.0.1:5000",
        Some(format!("{LIMIT_PREFIX}max-connections 2")),
    );
    assert_eq!(full.limit(), Some("max-connections 2"));
    assert_eq!(
        denial_message(&full),
        "sockbox: refused tcp-accept 127.0.0.1:5000 (guest \"echo\"): max-connections 2 \
             reached; raise it with --max-connections or `max-connections` in [limits]"
    );
    let line: serde_json::Value = serde_json::from_str(&full.to_json_line()).unwrap();
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["rule"], "limit: max-connections 2");
}

#[test]
fn a_denied_wildcard_listen_suggests_port_0_but_a_denied_wildcard_bind_its_own_port() {
    let gate = Gate::new(Policy::default());
    let message = |op, addr: &str| {
        let verdict = gate.check(op, addr.parse().unwrap());
        denial_message(&AuditEvent::from_verdict("echo", &verdict))
    };
    // After a bind to 0.0.0.0:0 the listen carries the OS's port.
    let listen = message(SocketOp::TcpListen, "0.0.0.0:41234");
    assert!(listen.contains("on 0.0.0.0:41234"), "{listen}");
    assert!(listen.ends_with("add --listen 0.0.0.0:0"), "{listen}");
    // An explicit bind to a port is judged at the bind, for that port.
    let bind = message(SocketOp::TcpBind, "0.0.0.0:7000");
    assert!(bind.ends_with("add --listen 0.0.0.0:7000"), "{bind}");
    let bind6 = message(SocketOp::TcpBind, "[::]:7000");
    assert!(bind6.ends_with("add --listen [::]:7000"), "{bind6}");
    // The grant target stays out of the audit line.
    let event = AuditEvent::from_verdict(
        "echo",
        &gate.check(SocketOp::TcpListen, "0.0.0.0:41234".parse().unwrap()),
    );
    assert!(
        !event.to_json_line().contains("grant"),
        "{}",
        event.to_json_line()
    );
}

#[test]
fn the_log_appends_one_line_per_event() {
    let dir = std::env::temp_dir().join(format!("sockbox-audit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);
    {
        let log = AuditLog::open(&path).unwrap();
        log.write(&event(Use::TcpConnect, "10.0.0.5:80", false, None))
            .unwrap();
    }
    // Reopening appends rather than truncating.
    let log = AuditLog::open(&path).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    log.write(&event(Use::UdpSend, "[::1]:9", true, Some("r")))
                        .unwrap();
                }
            });
        }
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 101);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["decision"] == "allow" || v["decision"] == "deny");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn guest_text_is_escaped_and_cut_in_one_place() {
    assert_eq!(log_text("db.test"), "db.test");
    assert_eq!(
        log_text("a\nb\r\u{1b}[31m\\\u{202e}\"q\""),
        "a\\nb\\r\\u{1b}[31m\\\\\\u{202e}\"q\""
    );
    let long = log_text(&"é".repeat(1000));
    assert!(
        long.len() <= LOG_TEXT_MAX + '…'.len_utf8(),
        "{}",
        long.len()
    );
    assert!(long.ends_with('…'));
    let escapes = log_text(&"\n".repeat(1000));
    assert!(
        escapes.len() <= LOG_TEXT_MAX + 3 && escapes.ends_with("\\n…"),
        "{escapes}"
    );
    let event = AuditEvent::new("g", Use::Dns, "x\ny", false, None);
    assert_eq!(event.addr, "x\\ny");
    assert!(!denial_message(&event).contains('\n'));
}

#[test]
fn the_log_rotates_at_its_size_bound() {
    let dir = std::env::temp_dir().join(format!("sockbox-audit-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let old = dir.join("audit.jsonl.1");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&old);
    let log = AuditLog::open_bounded(&path, 1000).unwrap();
    for port in 0..100 {
        let addr = format!("10.0.0.5:{port}");
        log.write(&event(Use::TcpConnect, &addr, false, None))
            .unwrap();
    }
    let now = std::fs::read_to_string(&path).unwrap();
    let before = std::fs::read_to_string(&old).unwrap();
    assert!(now.len() <= 1000 && before.len() <= 1000);
    // The newest lines are kept, whole, in order.
    assert!(
        now.ends_with("10.0.0.5:99\",\"decision\":\"deny\",\"rule\":null}\n"),
        "{now}"
    );
    for line in before.lines().chain(now.lines()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(AuditLog::open_bounded(&path, 0).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_log_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();
}

#[test]
fn opening_an_impossible_path_names_it() {
    let err = AuditLog::open("/nonexistent-dir/audit.jsonl").unwrap_err();
    assert!(
        format!("{err:#}").starts_with("cannot open audit log /nonexistent-dir/audit.jsonl"),
        "{err:#}"
    );
}
