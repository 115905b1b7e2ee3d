//! `sockbox policy explain`: would this use of this address be allowed, and by which rule?
//!
//! It answers as the running gate would for a guest that has exchanged no datagrams yet, so
//! the defaults (any client may connect to a granted listener, UDP replies) show up here too.

use std::fmt;
use std::net::SocketAddr;

use anyhow::{Result, anyhow};

use super::Policy;
use super::gate::{DEFAULT_ACCEPT, DEFAULT_UDP_RECV};
use super::pattern::NamePattern;
use super::rule::{Decision, Use, suggest_grant};

/// The answer to one question, printable as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Whether the use is allowed.
    pub allowed: bool,
    /// The use asked about.
    pub use_: Use,
    /// The address or name asked about, as given.
    pub target: String,
    /// The rule that allowed it (its source as written, or a `default: ...`).
    pub rule: Option<String>,
    /// What else would still be allowed although no rule matched (UDP replies).
    pub note: Option<&'static str>,
}

/// Answers whether `policy` allows `use_` of `target` (an address, or a name for `dns`), and
/// by which rule: what `sockbox policy explain` prints.
pub fn explain(policy: &Policy, use_: Use, target: &str) -> Result<Explanation> {
    let target = target.trim();
    let (decision, note) = if use_ == Use::Dns {
        // Validate like a rule would, so a typo is an error rather than a quiet deny.
        NamePattern::parse(target).map_err(|e| anyhow!("{e} (dns takes a name, e.g. db.test)"))?;
        (policy.decide_name(target), None)
    } else {
        let addr: SocketAddr = target.parse().map_err(|_| {
            anyhow!("{use_} takes ip:port (e.g. 127.0.0.1:5432 or [::1]:7000), got {target:?}")
        })?;
        explain_addr(policy, use_, addr)
    };
    Ok(Explanation {
        allowed: decision.allowed,
        use_,
        target: target.to_string(),
        rule: decision.rule,
        note: if decision.allowed { None } else { note },
    })
}

fn explain_addr(p: &Policy, use_: Use, addr: SocketAddr) -> (Decision, Option<&'static str>) {
    match use_ {
        // A listen on a concrete port is held to the bind check, where port 0 means port 0.
        Use::TcpListen | Use::TcpConnect | Use::UdpBind => (p.decide(use_, addr), None),
        Use::TcpAccept if !p.has_rule(Use::TcpAccept) => (Decision::allow(DEFAULT_ACCEPT), None),
        Use::TcpAccept => (p.decide(use_, addr), None),
        Use::UdpSend => (
            p.decide(use_, addr),
            Some("a reply to a peer that sent the guest a datagram would still pass"),
        ),
        Use::UdpRecv if p.has_rule(Use::UdpRecv) => (
            p.decide(use_, addr),
            Some("a reply from a peer the guest sent to would still pass"),
        ),
        Use::UdpRecv if p.has_rule(Use::UdpBind) => (Decision::allow(DEFAULT_UDP_RECV), None),
        Use::UdpRecv => (
            Decision::deny(),
            Some("only replies from peers the guest sent to are received"),
        ),
        Use::Dns => unreachable!("dns is judged by name"),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (use_, target) = (self.use_, &self.target);
        match (&self.rule, self.allowed) {
            (Some(rule), true) => write!(f, "allow {use_} {target} by {rule}"),
            _ => {
                write!(f, "deny {use_} {target} (no rule allows it; ")?;
                if let Some(note) = self.note {
                    write!(f, "{note}; ")?;
                }
                write!(f, "add {})", suggest_grant(use_, target))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listen: &[&str], udp: &[&str], allow: &[&str]) -> Policy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Policy::from_flags(&s(listen), &s(udp), &s(allow)).unwrap()
    }

    fn line(p: &Policy, use_: Use, target: &str) -> String {
        explain(p, use_, target).unwrap().to_string()
    }

    #[test]
    fn explanations_read_as_one_line() {
        let p = policy(
            &["127.0.0.1:7000"],
            &[],
            &["tcp-connect=127.0.0.1:5432", "dns=*.test"],
        );
        let table = [
            (
                Use::TcpConnect,
                "127.0.0.1:5432",
                "allow tcp-connect 127.0.0.1:5432 by --allow tcp-connect=127.0.0.1:5432",
            ),
            (
                Use::TcpConnect,
                "127.0.0.1:5433",
                "deny tcp-connect 127.0.0.1:5433 (no rule allows it; add --allow \
                 tcp-connect=127.0.0.1:5433)",
            ),
            (
                Use::UdpSend,
                "127.0.0.1:9",
                "deny udp-send 127.0.0.1:9 (no rule allows it; a reply to a peer that sent \
                 the guest a datagram would still pass; add --allow udp-send=127.0.0.1:9)",
            ),
            (
                Use::TcpListen,
                "127.0.0.1:7000",
                "allow tcp-listen 127.0.0.1:7000 by --listen 127.0.0.1:7000",
            ),
            (
                Use::TcpListen,
                "127.0.0.1:7001",
                "deny tcp-listen 127.0.0.1:7001 (no rule allows it; add --listen \
                 127.0.0.1:7001)",
            ),
            (
                Use::TcpAccept,
                "192.0.2.1:50000",
                "allow tcp-accept 192.0.2.1:50000 by default: any client may connect to a \
                 granted listener",
            ),
            (
                Use::UdpRecv,
                "192.0.2.1:53",
                "deny udp-recv 192.0.2.1:53 (no rule allows it; only replies from peers the \
                 guest sent to are received; add --allow udp-recv=192.0.2.1)",
            ),
            (
                Use::Dns,
                "DB.test.",
                "allow dns DB.test. by --allow dns=*.test",
            ),
            (
                Use::Dns,
                "db.prod",
                "deny dns db.prod (no rule allows it; add --allow dns=db.prod)",
            ),
        ];
        for (use_, target, want) in table {
            assert_eq!(line(&p, use_, target), want);
        }
        assert!(
            explain(&p, Use::TcpConnect, "127.0.0.1:5432")
                .unwrap()
                .allowed
        );
        assert!(
            !explain(&p, Use::TcpConnect, "127.0.0.1:5433")
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn udp_defaults_follow_the_gate() {
        let server = policy(&[], &["127.0.0.1:9000"], &[]);
        assert_eq!(
            line(&server, Use::UdpRecv, "192.0.2.1:5000"),
            "allow udp-recv 192.0.2.1:5000 by default: anyone may send to a granted udp-bind"
        );
        let narrowed = policy(&[], &["127.0.0.1:9000"], &["udp-recv=127.0.0.0/8"]);
        assert!(
            explain(&narrowed, Use::UdpRecv, "127.0.0.7:1")
                .unwrap()
                .allowed
        );
        let e = explain(&narrowed, Use::UdpRecv, "192.0.2.1:5000").unwrap();
        assert!(!e.allowed);
        assert!(
            e.to_string()
                .contains("a reply from a peer the guest sent to"),
            "{e}"
        );
    }

    #[test]
    fn accept_rules_replace_the_default() {
        let p = policy(&["127.0.0.1:7000"], &[], &["tcp-accept=127.0.0.1"]);
        assert!(explain(&p, Use::TcpAccept, "127.0.0.1:1").unwrap().allowed);
        assert_eq!(
            line(&p, Use::TcpAccept, "[::1]:5"),
            "deny tcp-accept [::1]:5 (no rule allows it; add --allow tcp-accept=::1)"
        );
    }

    #[test]
    fn bad_targets_are_errors() {
        let p = Policy::default();
        let err = explain(&p, Use::TcpConnect, "db.test")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tcp-connect takes ip:port (e.g. 127.0.0.1:5432 or [::1]:7000), got \"db.test\""
        );
        assert!(explain(&p, Use::TcpConnect, "::1:80").is_err());
        let err = explain(&p, Use::Dns, "bad name").unwrap_err().to_string();
        assert!(err.ends_with("(dns takes a name, e.g. db.test)"), "{err}");
    }
}
