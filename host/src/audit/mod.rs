//! Decision events: the JSON line `--audit` appends for every capability decision, and the
//! one stderr line a person sees for a denial.
//!
//! The line's shape is part of the outside contract (scripts and CI parse it), so the fields
//! and their order are fixed here and tested. `log` writes the lines to a bounded file;
//! `budget` rate-limits a guest's denials and summarises the rest.

mod budget;
mod log;

use std::fmt;
use std::net::SocketAddr;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::policy::{Use, Verdict, is_implicit_bind_addr, suggest_grant};

pub use budget::{DENIALS_PER_SECOND, SUPPRESSED_USE};
pub(crate) use budget::{DenialBudget, suppressed_event, suppressed_message};
pub use log::{AuditLog, DEFAULT_AUDIT_MAX_SIZE};

/// `"allow"` or `"deny"` in the audit line.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The use was allowed.
    Allow,
    /// The use was denied (or refused by a limit).
    Deny,
}

/// One capability decision. Field order is the order of the JSON keys.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339, UTC.
    pub ts: String,
    /// The guest's name (its instance name under `up`), made safe for a log line.
    pub guest: String,
    #[serde(rename = "use")]
    /// The use (`tcp-connect`, ...), or `tcp-create`/`udp-create`, or `denials-suppressed`.
    pub use_: String,
    /// `ip:port`, or the name for `dns`.
    pub addr: String,
    /// Whether the use was allowed.
    pub decision: Decision,
    /// The matched rule as the user wrote it, or a `default: ...` explanation; null if denied.
    pub rule: Option<String>,
    /// What the grant to add for a denial should name, when that is not `addr` (a denied
    /// listen on the wildcard names its port 0). Not part of the audit line.
    #[serde(skip)]
    pub grant_target: Option<String>,
}

impl AuditEvent {
    /// An event stamped now for `use_` of `addr`, allowed or denied by `rule`.
    pub fn new(
        guest: impl Into<String>,
        use_: Use,
        addr: impl fmt::Display,
        allowed: bool,
        rule: Option<String>,
    ) -> AuditEvent {
        let decision = if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        };
        AuditEvent::now(guest.into(), use_.as_str(), addr, decision, rule)
    }

    /// The event of one gate verdict (keeping the address a grant for it would name).
    pub(crate) fn from_verdict(guest: impl Into<String>, v: &Verdict) -> AuditEvent {
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
        AuditEvent::now(guest.into(), use_, addr, Decision::Deny, rule)
    }

    /// An event stamped now, its guest-controlled texts made safe for a log line.
    fn now(
        guest: String,
        use_: &str,
        addr: impl fmt::Display,
        decision: Decision,
        rule: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            ts: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            guest: log_text(&guest),
            use_: use_.to_string(),
            addr: log_text(&addr.to_string()),
            decision,
            rule,
            grant_target: None,
        }
    }

    /// A refusal because a limit was met (see [`AuditEvent::refused`]).
    pub fn limit(&self) -> Option<&str> {
        self.rule.as_deref()?.strip_prefix(LIMIT_PREFIX)
    }

    /// Whether the use was allowed.
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// The JSON object, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an audit event always serializes")
    }
}

/// How the `rule` of a refusal by a limit begins.
pub(crate) const LIMIT_PREFIX: &str = "limit: ";

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
pub(crate) fn denial_message(ev: &AuditEvent) -> String {
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

#[cfg(test)]
mod tests;
