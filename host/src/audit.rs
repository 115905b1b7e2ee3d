//! Decision events: the JSON line `--audit` appends for every capability decision, and the
//! one stderr line a person sees for a denial.
//!
//! The line's shape is part of the outside contract (scripts and CI parse it), so the fields
//! and their order are fixed here and tested.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::policy::{Use, Verdict, is_implicit_bind_addr, suggest_grant};

/// `"allow"` or `"deny"` in the audit line.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// One capability decision. Field order is the order of the JSON keys.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339, UTC.
    pub ts: String,
    pub guest: String,
    #[serde(rename = "use")]
    pub use_: String,
    /// `ip:port`, or the name for `dns`.
    pub addr: String,
    pub decision: Decision,
    /// The matched rule as the user wrote it, or a `default: ...` explanation; null if denied.
    pub rule: Option<String>,
    /// What the grant to add for a denial should name, when that is not `addr` (see
    /// [`Verdict::grant_addr`]). Not part of the audit line.
    #[serde(skip)]
    pub grant_target: Option<String>,
}

impl AuditEvent {
    pub fn new(
        guest: impl Into<String>,
        use_: Use,
        addr: impl fmt::Display,
        allowed: bool,
        rule: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            ts: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            guest: log_text(&guest.into()),
            use_: use_.to_string(),
            addr: log_text(&addr.to_string()),
            decision: if allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            rule,
            grant_target: None,
        }
    }

    pub fn from_verdict(guest: impl Into<String>, v: &Verdict) -> AuditEvent {
        let mut event = AuditEvent::new(guest, v.use_, v.addr, v.allowed, v.rule.clone());
        event.grant_target = (v.grant_addr != v.addr).then(|| v.grant_addr.to_string());
        event
    }

    /// A socket the host refused outside any address rule: `tcp-create`/`udp-create` with the
    /// address family when the policy grants no use of that protocol (`rule` null), or any
    /// socket use with `rule` naming the limit it met (`limit: max-connections 1024`).
    pub fn refused(
        guest: impl Into<String>,
        use_: &str,
        addr: impl fmt::Display,
        rule: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            ts: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            guest: log_text(&guest.into()),
            use_: use_.to_string(),
            addr: log_text(&addr.to_string()),
            decision: Decision::Deny,
            rule,
            grant_target: None,
        }
    }

    /// A refusal because a limit was met (see [`AuditEvent::refused`]).
    pub fn limit(&self) -> Option<&str> {
        self.rule.as_deref()?.strip_prefix(LIMIT_PREFIX)
    }

    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// The JSON object, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an audit event always serializes")
    }
}

/// How the `rule` of a refusal by a limit begins.
pub const LIMIT_PREFIX: &str = "limit: ";

/// Longest text (in bytes, after escaping) a guest-controlled string keeps in a log line.
pub const LOG_TEXT_MAX: usize = 256;

/// A guest-controlled string as every log shows it (stderr lines, tracing, the audit log,
/// the decision list): no raw newlines, terminal escapes, control or invisible format
/// characters (each is written as its Rust escape, `\n`, `\u{1b}`, and `\` as `\\`), and
/// at most [`LOG_TEXT_MAX`] bytes, cut at a character with `…` appended.
pub fn log_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOG_TEXT_MAX) + 3);
    for c in text.chars() {
        let start = out.len();
        match c {
            // Printable, and harmless inside the audit line's JSON string and stderr.
            '"' | '\'' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
        if out.len() > LOG_TEXT_MAX {
            out.truncate(start);
            out.push('…');
            break;
        }
    }
    out
}

/// The one stderr line for a denial: the use, the address and the grant that would allow it.
pub fn denial_message(ev: &AuditEvent) -> String {
    let guest = &ev.guest;
    if let Some(limit) = ev.limit() {
        let flag = limit
            .split_whitespace()
            .next()
            .filter(|name| name.starts_with("max-"))
            .map(|name| format!("; raise it with --{name} or `{name}` in [limits]"))
            .unwrap_or_default();
        return format!(
            "sockbox: refused {} {} (guest {guest:?}): {limit} reached{flag}",
            ev.use_, ev.addr
        );
    }
    if let Some(proto) = ev.use_.strip_suffix("-create") {
        let grant = if proto == "tcp" {
            "--listen <ip:port> or --allow tcp-connect=<ip:port>"
        } else {
            "--udp <ip:port> or --allow udp-send=<ip:port>"
        };
        return format!(
            "sockbox: denied creating an {} {} socket (guest {guest:?}): the policy grants no \
             {proto} use; to allow it add {grant}",
            ev.addr,
            proto.to_uppercase()
        );
    }
    let use_: Option<Use> = ev.use_.parse().ok();
    let addr: Option<SocketAddr> = ev.addr.parse().ok();
    if let (Some(u @ (Use::TcpConnect | Use::UdpSend)), Some(a)) = (use_, addr)
        && is_implicit_bind_addr(a)
    {
        // Denied at the bind before the connect/send, so the destination is not known; and an
        // explicit bind to the wildcard looks the same, so name both ways out.
        let serve = if u == Use::TcpConnect {
            "--listen"
        } else {
            "--udp"
        };
        return format!(
            "sockbox: denied bind to {addr} (guest {guest:?}): to serve there add {serve} {addr}; \
             if it was about to {verb}, the policy grants no {u}: add {grant}",
            addr = ev.addr,
            verb = if u == Use::TcpConnect {
                "connect"
            } else {
                "send"
            },
            grant = suggest_grant(u, "<ip:port>")
        );
    }
    let Some(u) = use_ else {
        return format!("sockbox: denied {} {} (guest {guest:?})", ev.use_, ev.addr);
    };
    let preposition = match u {
        Use::TcpListen | Use::UdpBind => "on",
        Use::TcpAccept | Use::UdpRecv => "from",
        Use::TcpConnect | Use::UdpSend => "to",
        Use::Dns => "for",
    };
    format!(
        "sockbox: denied {u} {preposition} {} (guest {guest:?}); to allow it add {}",
        ev.addr,
        suggest_grant(u, ev.grant_target.as_deref().unwrap_or(&ev.addr))
    )
}

/// Size at which an audit log is rotated unless told otherwise (see [`AuditLog::open_bounded`]).
pub const DEFAULT_AUDIT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// An append-only JSONL file of audit events, shared by every guest of a run. It is bounded:
/// a line that would take it past its size bound first renames it to `FILE.1` (replacing the
/// previous one) and starts a fresh `FILE`, so the log never holds more than twice the bound.
#[derive(Debug)]
pub struct AuditLog {
    // One `write_all` per line on an O_APPEND file: lines from concurrent writers (even other
    // processes) do not interleave, and nothing is lost in a buffer if the host is killed.
    file: Mutex<Appender>,
    path: PathBuf,
    max_size: u64,
}

#[derive(Debug)]
struct Appender {
    file: File,
    /// Bytes in the current file as far as this process knows (others may append too).
    size: u64,
}

impl AuditLog {
    /// Opens (appending) with the default bound, [`DEFAULT_AUDIT_MAX_SIZE`].
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog> {
        AuditLog::open_bounded(path, DEFAULT_AUDIT_MAX_SIZE)
    }

    /// Opens (appending); past `max_size` bytes the file is rotated to `FILE.1`.
    pub fn open_bounded(path: impl AsRef<Path>, max_size: u64) -> Result<AuditLog> {
        let path = path.as_ref();
        anyhow::ensure!(max_size > 0, "the audit log's size bound must be above 0");
        let file = append(path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(AuditLog {
            file: Mutex::new(Appender { file, size }),
            path: path.to_path_buf(),
            max_size,
        })
    }

    pub fn write(&self, ev: &AuditEvent) -> io::Result<()> {
        let mut line = ev.to_json_line();
        line.push('\n');
        let mut out = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if out.size > 0 && out.size + line.len() as u64 > self.max_size {
            self.rotate(&mut out)?;
        }
        out.file.write_all(line.as_bytes())?;
        out.size += line.len() as u64;
        out.file.flush()
    }

    fn rotate(&self, out: &mut Appender) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        out.file = append(&self.path).map_err(io::Error::other)?;
        out.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open audit log {}", path.display()))
}

/// How many denials per guest are printed and audited each second; the rest are counted.
pub const DENIALS_PER_SECOND: u32 = 100;

/// A token bucket for one guest's denials: [`DENIALS_PER_SECOND`] a second, as a burst or
/// spread; what it refuses is counted for a summary.
#[derive(Debug)]
pub struct DenialBudget {
    tokens: f64,
    last: std::time::Instant,
    /// Denials not logged since the last summary, and when the first of them was.
    suppressed: u64,
    since: Option<std::time::Instant>,
}

impl Default for DenialBudget {
    fn default() -> Self {
        DenialBudget {
            tokens: f64::from(DENIALS_PER_SECOND),
            last: std::time::Instant::now(),
            suppressed: 0,
            since: None,
        }
    }
}

impl DenialBudget {
    /// Whether this denial is logged; if not, it is counted.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let rate = f64::from(DENIALS_PER_SECOND);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            self.since.get_or_insert(now);
            false
        }
    }

    /// The count to report, once a second at most: denials suppressed since the last summary
    /// and how long that was.
    pub fn summary_due(&mut self, now: std::time::Instant) -> Option<(u64, std::time::Duration)> {
        let since = self.since?;
        if now.saturating_duration_since(since) < std::time::Duration::from_secs(1) {
            return None;
        }
        self.summary(now)
    }

    /// The count to report now, whatever the time (the guest is ending).
    pub fn summary(&mut self, now: std::time::Instant) -> Option<(u64, std::time::Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.suppressed);
        Some((count, now.saturating_duration_since(since)))
    }
}

/// The `use` of the audit event that reports denials not logged one by one.
pub const SUPPRESSED_USE: &str = "denials-suppressed";

/// The audit event for `count` denials that went unlogged: `use` is
/// `denials-suppressed`, `addr` the count, `rule` the rate limit.
pub fn suppressed_event(guest: &str, count: u64) -> AuditEvent {
    AuditEvent::refused(
        guest,
        SUPPRESSED_USE,
        count,
        Some(format!(
            "rate-limit: {DENIALS_PER_SECOND} denials a second per guest"
        )),
    )
}

/// The stderr line for the same.
pub fn suppressed_message(guest: &str, count: u64, over: std::time::Duration) -> String {
    format!(
        "sockbox: {count} more denials (guest {guest:?}) in the last {:.1} s were not printed or \
         audited one by one (at most {DENIALS_PER_SECOND} a second per guest)",
        over.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
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
        assert!(
            denial_message(&udp).ends_with("add --udp <ip:port> or --allow udp-send=<ip:port>")
        );
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
}
