//! `sockbox learn`: from what a guest did under permissive loopback grants, the smallest
//! policy that would have allowed exactly that.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;

use super::rule::is_implicit_bind_addr;
use super::{Policy, Use};
use crate::audit::AuditEvent;

/// Rule source of the permissive grants, as audit lines show it while learning.
pub const LEARN_SOURCE: &str = "learn: loopback";

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
    pub listen: Vec<String>,
    pub udp: Vec<String>,
    pub allow: Vec<String>,
    /// Operations that were denied even under the learning grants (outside loopback, names).
    pub denied: Vec<String>,
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
    for event in events {
        let Ok(use_) = event.use_.parse::<Use>() else {
            continue;
        };
        if !event.allowed() {
            denied.insert(format!("{use_}={}", event.addr));
            continue;
        }
        let addr = event.addr.parse::<SocketAddr>().ok();
        match (use_, addr) {
            (Use::Dns, _) => {
                allow.insert(format!("dns={}", event.addr));
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
    learned
}

fn fmt_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

impl fmt::Display for LearnedPolicy {
    /// TOML in the policy file format, loadable with `--policy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        writeln!(
            f,
            "# The smallest policy that allows what the guest did in this run."
        )?;
        writeln!(
            f,
            "# Clients may connect to granted listeners and send to granted UDP sockets by default."
        )?;
        if !self.listen.is_empty() {
            writeln!(f, "listen = {}", list(&self.listen))?;
        }
        if !self.udp.is_empty() {
            writeln!(f, "udp = {}", list(&self.udp))?;
        }
        writeln!(f, "allow = {}", list(&self.allow))?;
        for denied in &self.denied {
            writeln!(
                f,
                "# denied even while learning (not loopback, or a name): {denied}"
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
