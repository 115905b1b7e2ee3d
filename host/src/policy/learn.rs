//! `sockbox learn`: from what a guest did under permissive loopback grants, the smallest
//! policy that would have allowed exactly that.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use super::pattern::normalise_name;
use super::rule::is_implicit_bind_addr;
use super::{Policy, Use};
use crate::audit::AuditEvent;

/// Rule source of the permissive grants, as audit lines show it while learning.
pub(crate) const LEARN_SOURCE: &str = "learn: loopback";

/// The permissive loopback grants a guest runs under while sockbox learns: any loopback
/// address and port for listening, connecting, binding and sending; nothing else.
pub fn permissive_loopback() -> Policy {
    let mut allow = Vec::new();
    for use_ in ["tcp-listen", "tcp-connect", "udp-bind", "udp-send"] {
        for net in ["127.0.0.0/8:*", "[::1]:*"] {
            allow.push(format!("{use_}={net}"));
        }
    }
    let mut policy = Policy::from_flags(&[], &[], &allow).expect("valid built-in grants");
    for rule in &mut policy.rules {
        rule.source = format!("{LEARN_SOURCE} ({}={})", rule.use_, rule.pattern);
    }
    policy
}

/// The policy a run needed, ready to print as TOML.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LearnedPolicy {
    /// Addresses to grant with `listen`.
    pub listen: Vec<String>,
    /// Addresses to grant with `udp`.
    pub udp: Vec<String>,
    /// Every other grant, as `USE=PATTERN`.
    pub allow: Vec<String>,
    /// Operations that were denied even under the learning grants (outside loopback, names).
    pub denied: Vec<String>,
    /// Denied or looked-up names that are not DNS names, left out of the policy and of
    /// `denied` (a guest chooses them, and they could be anything).
    pub not_names: usize,
}

/// Derives the minimal policy from the decisions of a learning run, in the order they were
/// made. `listen` and `udp` are the addresses given as `--listen`/`--udp` (they stay flags).
pub fn minimal_policy(
    events: &[AuditEvent],
    listen: &[SocketAddr],
    udp: &[SocketAddr],
) -> LearnedPolicy {
    let mut tcp_listen = BTreeSet::new();
    let mut udp_bind = BTreeSet::new();
    let mut allow = BTreeSet::new();
    let mut heard_from = HashSet::new();
    let mut denied = BTreeSet::new();
    let mut not_names = 0;
    for event in events {
        let Ok(use_) = event.use_.parse::<Use>() else {
            continue;
        };
        // A name is whatever the guest asked for: only a valid DNS name is learned or shown.
        let name = (use_ == Use::Dns).then(|| normalise_name(&event.addr).ok());
        if name == Some(None) {
            not_names += 1;
            continue;
        }
        if !event.allowed() {
            match &name {
                Some(Some(name)) => denied.insert(format!("{use_}={name}")),
                _ => denied.insert(format!("{use_}={}", event.addr)),
            };
            continue;
        }
        let addr = event.addr.parse::<SocketAddr>().ok();
        match (use_, addr) {
            (Use::Dns, _) => {
                if let Some(Some(name)) = name {
                    allow.insert(format!("dns={name}"));
                }
            }
            // Implicit binds before a connect or send come with the connect/send grant.
            (_, Some(addr)) if is_implicit_bind_addr(addr) => {}
            (Use::TcpListen, Some(addr)) => {
                tcp_listen.insert(addr);
            }
            (Use::UdpBind, Some(addr)) => {
                udp_bind.insert(addr);
            }
            (Use::TcpConnect, Some(addr)) => {
                allow.insert(format!("tcp-connect={}", fmt_addr(addr)));
            }
            (Use::UdpRecv, Some(addr)) => {
                heard_from.insert(addr);
            }
            // A reply to a peer that sent first needs no grant (see docs/policy.md).
            (Use::UdpSend, Some(addr)) if !heard_from.contains(&addr) => {
                allow.insert(format!("udp-send={}", fmt_addr(addr)));
            }
            // tcp-accept and udp-recv are allowed by default on granted sockets.
            _ => {}
        }
    }
    // A port-0 bind is followed by a listen on the port the OS chose: the port-0 grant covers it.
    let ephemeral: HashSet<_> = tcp_listen
        .iter()
        .filter(|a| a.port() == 0)
        .map(|a| a.ip())
        .collect();
    tcp_listen.retain(|a| a.port() == 0 || !ephemeral.contains(&a.ip()));

    let mut learned = LearnedPolicy::default();
    for addr in tcp_listen {
        if listen.contains(&addr) {
            learned.listen.push(fmt_addr(addr));
        } else {
            allow.insert(format!("tcp-listen={}", fmt_addr(addr)));
        }
    }
    for addr in udp_bind {
        if udp.contains(&addr) {
            learned.udp.push(fmt_addr(addr));
        } else {
            allow.insert(format!("udp-bind={}", fmt_addr(addr)));
        }
    }
    learned.allow = allow.into_iter().collect();
    learned.denied = denied.into_iter().collect();
    learned.not_names = not_names;
    learned
}

fn fmt_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

/// The keys of a policy file `learn` writes, in its order.
#[derive(Serialize)]
struct PolicyFile<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    listen: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    udp: &'a [String],
    allow: &'a [String],
}

impl fmt::Display for LearnedPolicy {
    /// TOML in the policy file format, loadable with `--policy`. The keys are written by the
    /// TOML serializer, so no value can end its string or start a line of its own; the
    /// comments hold only addresses and DNS names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# The smallest policy that allows what the guest did in this run."
        )?;
        writeln!(
            f,
            "# Clients may connect to granted listeners and send to granted UDP sockets by default."
        )?;
        let file = PolicyFile {
            listen: &self.listen,
            udp: &self.udp,
            allow: &self.allow,
        };
        f.write_str(&toml::to_string(&file).map_err(|_| fmt::Error)?)?;
        for denied in &self.denied {
            // Addresses and DNS names only (see `minimal_policy`); escaped all the same.
            let denied = crate::audit::log_text(denied);
            writeln!(
                f,
                "# denied even while learning (not loopback, or a name): {denied}"
            )?;
        }
        if self.not_names > 0 {
            writeln!(
                f,
                "# {} name lookups were of something that is not a DNS name (not shown)",
                self.not_names
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(use_: Use, addr: &str, allowed: bool) -> AuditEvent {
        AuditEvent::new("g", use_, addr, allowed, None)
    }

    #[test]
    fn ephemeral_listen_keeps_only_the_port_zero_grant() {
        let events = [
            ev(Use::TcpListen, "127.0.0.1:0", true),
            ev(Use::TcpListen, "127.0.0.1:41234", true),
            ev(Use::TcpAccept, "127.0.0.1:50000", true),
        ];
        let listen = ["127.0.0.1:0".parse().unwrap()];
        let learned = minimal_policy(&events, &listen, &[]);
        assert_eq!(learned.listen, ["127.0.0.1:0"]);
        assert!(learned.allow.is_empty(), "{learned:?}");
    }

    #[test]
    fn connects_and_sends_are_granted_implicit_binds_and_replies_are_not() {
        let events = [
            ev(Use::TcpConnect, "0.0.0.0:0", true),
            ev(Use::TcpConnect, "127.0.0.1:5432", true),
            ev(Use::UdpBind, "127.0.0.1:9000", true),
            ev(Use::UdpRecv, "127.0.0.1:40000", true),
            ev(Use::UdpSend, "127.0.0.1:40000", true),
            ev(Use::UdpSend, "[::1]:53", true),
            ev(Use::TcpListen, "0.0.0.0:80", false),
        ];
        let learned = minimal_policy(&events, &[], &["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(learned.udp, ["127.0.0.1:9000"]);
        assert_eq!(
            learned.allow,
            ["tcp-connect=127.0.0.1:5432", "udp-send=[::1]:53"]
        );
        assert_eq!(learned.denied, ["tcp-listen=0.0.0.0:80"]);
    }

    #[test]
    fn learned_policy_loads_back_and_allows_what_happened() {
        let events = [
            ev(Use::TcpListen, "127.0.0.1:7000", true),
            ev(Use::TcpConnect, "127.0.0.1:5432", true),
        ];
        let learned = minimal_policy(&events, &[], &[]);
        let policy = Policy::parse_toml(&learned.to_string(), "learned.toml").unwrap();
        assert!(
            policy
                .decide(Use::TcpListen, "127.0.0.1:7000".parse().unwrap())
                .allowed
        );
        assert!(
            policy
                .decide(Use::TcpConnect, "127.0.0.1:5432".parse().unwrap())
                .allowed
        );
        assert!(
            !policy
                .decide(Use::TcpConnect, "127.0.0.1:5433".parse().unwrap())
                .allowed
        );
    }

    #[test]
    fn a_name_cannot_add_a_line_to_the_learned_policy() {
        let evil = "x\nudp = [\"0.0.0.0:5353\"]\n[limits]\nmax-memory = \"1TiB\"";
        let events = [
            ev(Use::TcpListen, "127.0.0.1:7000", true),
            ev(Use::Dns, evil, false),
            ev(Use::Dns, evil, true),
            ev(Use::Dns, "DB.test.", true),
            ev(Use::Dns, "other.test", false),
        ];
        let learned = minimal_policy(&events, &["127.0.0.1:7000".parse().unwrap()], &[]);
        assert_eq!(learned.allow, ["dns=db.test"]);
        assert_eq!(learned.denied, ["dns=other.test"]);
        assert_eq!(learned.not_names, 2);
        let text = learned.to_string();
        let policy = Policy::parse_toml(&text, "learned.toml").unwrap();
        assert!(policy.udp.is_empty(), "{text}");
        assert_eq!(policy.limits, Default::default(), "{text}");
        assert_eq!(policy.rules.len(), 2, "{text}");
        assert!(!text.contains("5353"), "{text}");
    }

    #[test]
    fn permissive_grants_stay_on_loopback() {
        let p = permissive_loopback();
        assert!(
            p.decide(Use::TcpListen, "127.0.0.1:0".parse().unwrap())
                .allowed
        );
        assert!(
            p.decide(Use::TcpConnect, "[::1]:80".parse().unwrap())
                .allowed
        );
        assert!(
            !p.decide(Use::TcpListen, "0.0.0.0:80".parse().unwrap())
                .allowed
        );
        assert!(
            !p.decide(Use::TcpConnect, "10.0.0.1:80".parse().unwrap())
                .allowed
        );
    }
}
