//! Rules: the vocabulary of a grant (`tcp-connect=127.0.0.1:5432`, `dns=*.test`), and the pure
//! decision of a policy's rules for one use of one address or name (first match wins).
//!
//! Everything here is plain data and functions so the matcher can be table-tested without a
//! socket in sight; which addresses and names one pattern covers is in `pattern`; the stateful
//! parts (implicit binds, UDP replies) live in `gate`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};

use super::Policy;
use super::pattern::{AddrPattern, NamePattern};

/// What a guest wants to do with a socket address or a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Use {
    /// `tcp-listen`: listen on an address.
    TcpListen,
    /// `tcp-accept`: accept a client from an address.
    TcpAccept,
    /// `tcp-connect`: connect to an address.
    TcpConnect,
    /// `udp-bind`: bind a UDP socket to serve on an address.
    UdpBind,
    /// `udp-send`: send a datagram to an address.
    UdpSend,
    /// `udp-recv`: receive a datagram from an address.
    UdpRecv,
    /// `dns`: look up a name.
    Dns,
}

impl Use {
    /// Every use, in the order help and errors list them.
    pub const ALL: [Use; 7] = [
        Use::TcpListen,
        Use::TcpAccept,
        Use::TcpConnect,
        Use::UdpBind,
        Use::UdpSend,
        Use::UdpRecv,
        Use::Dns,
    ];

    /// The use as the policy language writes it (`tcp-connect`).
    pub fn as_str(self) -> &'static str {
        match self {
            Use::TcpListen => "tcp-listen",
            Use::TcpAccept => "tcp-accept",
            Use::TcpConnect => "tcp-connect",
            Use::UdpBind => "udp-bind",
            Use::UdpSend => "udp-send",
            Use::UdpRecv => "udp-recv",
            Use::Dns => "dns",
        }
    }

    /// Whether the use is judged by a socket address (every use but `dns`, which takes a name).
    pub fn takes_address(self) -> bool {
        self != Use::Dns
    }
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Use {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Use> {
        Use::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Use::ALL.iter().map(|u| u.as_str()).collect();
                anyhow!("unknown use {s:?} (expected one of {})", names.join(", "))
            })
    }
}

/// What a rule covers: addresses for socket uses, names for `dns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// An address pattern, for the socket uses.
    Addr(AddrPattern),
    /// A name pattern, for `dns`.
    Name(NamePattern),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Addr(a) => a.fmt(f),
            Pattern::Name(n) => n.fmt(f),
        }
    }
}

/// One grant, with the text the user wrote for it (`source`), which is what audit lines and
/// explanations quote back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What the rule grants.
    pub use_: Use,
    /// Which addresses or names it grants it for.
    pub pattern: Pattern,
    /// The text the rule came from (`--allow ...`, `policy.toml:3: allow "..."`).
    pub source: String,
}

impl Rule {
    /// A rule from a use and its pattern text; the pattern kind must suit the use.
    pub fn new(use_: Use, pattern: &str, source: impl Into<String>) -> Result<Rule> {
        let pattern = pattern.trim();
        let pattern = if use_.takes_address() {
            match AddrPattern::parse(pattern) {
                Ok(p) => Pattern::Addr(p),
                Err(_) if NamePattern::parse(pattern).is_ok() => {
                    bail!("`{use_}` needs an address pattern, got `{pattern}`")
                }
                Err(e) => return Err(e),
            }
        } else {
            match NamePattern::parse(pattern) {
                Ok(p) => Pattern::Name(p),
                Err(_) if AddrPattern::parse(pattern).is_ok() => {
                    bail!("`dns` needs a name pattern, got the address `{pattern}`")
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Rule {
            use_,
            pattern,
            source: source.into(),
        })
    }

    /// A rule from `USE=PATTERN`, the form of `--allow` and of the file's `allow` entries.
    pub fn parse_grant(grant: &str, source: impl Into<String>) -> Result<Rule> {
        let Some((use_, pattern)) = grant.split_once('=') else {
            bail!("expected USE=PATTERN (e.g. tcp-connect=127.0.0.1:5432), got `{grant}`");
        };
        let use_: Use = use_.trim().parse()?;
        Rule::new(use_, pattern, source)
    }

    /// Whether this rule grants `use_` of `addr`.
    pub fn matches_addr(&self, use_: Use, addr: SocketAddr) -> bool {
        self.use_ == use_ && matches!(&self.pattern, Pattern::Addr(p) if p.matches(addr))
    }

    /// Whether this is a `dns` rule covering `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        self.use_ == Use::Dns && matches!(&self.pattern, Pattern::Name(p) if p.matches(name))
    }

    /// The address pattern, unless this is a `dns` rule.
    pub fn addr_pattern(&self) -> Option<&AddrPattern> {
        match &self.pattern {
            Pattern::Addr(p) => Some(p),
            Pattern::Name(_) => None,
        }
    }
}

/// The answer for one use of one address or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the use is allowed.
    pub allowed: bool,
    /// The source of the rule that decided, `None` when nothing allowed it.
    pub rule: Option<String>,
}

impl Decision {
    /// Allowed by `rule` (its source, or a `default: ...`).
    pub fn allow(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            rule: Some(rule.into()),
        }
    }

    /// Denied: no rule allows it.
    pub fn deny() -> Decision {
        Decision {
            allowed: false,
            rule: None,
        }
    }

    fn from_rule(rule: Option<&Rule>) -> Decision {
        match rule {
            Some(r) => Decision::allow(r.source.clone()),
            None => Decision::deny(),
        }
    }
}

impl Policy {
    /// The rules granting `use_`, in order.
    pub fn rules_for(&self, use_: Use) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.use_ == use_)
    }

    /// Whether any rule grants `use_`.
    pub fn has_rule(&self, use_: Use) -> bool {
        self.rules_for(use_).next().is_some()
    }

    /// The first rule for `use_` whose pattern matches exactly (port 0 only by port 0).
    pub fn decide(&self, use_: Use, addr: SocketAddr) -> Decision {
        Decision::from_rule(self.rules.iter().find(|r| r.matches_addr(use_, addr)))
    }

    /// The first `dns` rule that covers `name`.
    pub fn decide_name(&self, name: &str) -> Decision {
        Decision::from_rule(self.rules.iter().find(|r| r.matches_name(name)))
    }

    /// Like `decide(TcpListen, ..)` for a socket that is already bound: see
    /// `AddrPattern::matches_listening`.
    pub fn decide_listening(&self, addr: SocketAddr) -> Decision {
        Decision::from_rule(
            self.rules_for(Use::TcpListen)
                .find(|r| r.addr_pattern().is_some_and(|p| p.matches_listening(addr))),
        )
    }
}

/// The flag a user would add to allow what was denied.
///
/// Peers that connect or send to the guest use ephemeral ports, so for `tcp-accept` and
/// `udp-recv` the grant names the peer's IP only. For the wildcard bind that precedes a
/// connect or send from an unbound socket, the real destination is not known yet, so the
/// grant shows a placeholder.
pub fn suggest_grant(use_: Use, addr_or_name: &str) -> String {
    let addr: Option<SocketAddr> = addr_or_name.parse().ok();
    match (use_, addr) {
        (Use::TcpListen, _) => format!("--listen {addr_or_name}"),
        (Use::UdpBind, _) => format!("--udp {addr_or_name}"),
        (Use::TcpConnect | Use::UdpSend, Some(a)) if is_implicit_bind_addr(a) => {
            format!("--allow {use_}=<ip:port>")
        }
        (Use::TcpAccept | Use::UdpRecv, Some(a)) => {
            format!("--allow {use_}={}", a.ip().to_canonical())
        }
        _ => format!("--allow {use_}={addr_or_name}"),
    }
}

/// The address wasmtime-wasi checks for the implicit bind of an unbound socket.
pub fn is_implicit_bind_addr(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

#[cfg(test)]
mod tests;
