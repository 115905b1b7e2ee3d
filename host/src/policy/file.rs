//! Building a `Policy` from what the user wrote: the command-line flags and the TOML policy
//! file, merged into one.
//!
//! Every rule keeps the text it came from (`--allow ...`, `policy.toml:3: allow "..."`), and
//! every mistake in a file is reported with the file name and line, because a policy that
//! silently means something else than intended is worse than one that does not load.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use toml::Spanned;

use super::pattern::{AddrPattern, fold_name, normalise_name};
use super::rule::{Pattern, Rule, Use};
use super::values::{
    line_of, parse_dns_answers, parse_millis, parse_size, parse_socket_addr, toml_error,
};

/// Everything a guest is granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// In order: the first matching rule decides and is the one reported.
    pub rules: Vec<Rule>,
    /// Where the guest is told to listen for TCP (each is also a `tcp-listen` rule).
    pub listen: Vec<SocketAddr>,
    /// Where the guest is told to bind UDP (each is also a `udp-bind` rule).
    pub udp: Vec<SocketAddr>,
    /// Names the sandbox answers itself, folded (lowercase, no trailing dot).
    pub dns_map: BTreeMap<String, Vec<IpAddr>>,
    /// Resource limits (memory, connections, busy time, sockets).
    pub limits: Limits,
}

/// Resource limits; `None` means the host's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory, all of the guest's memories together (unset: 1 GiB).
    pub max_memory: Option<u64>,
    /// Accepted TCP connections open at once (unset: 1024).
    pub max_connections: Option<u32>,
    /// Longest stretch of guest computation without yielding (unset: 1 s).
    pub max_busy: Option<Duration>,
    /// Sockets of any kind (created or accepted) the guest holds at once (unset: 4096, or an
    /// equal share of the process's descriptor budget if that is smaller).
    pub max_sockets: Option<u32>,
}

impl Limits {
    /// `self`'s values win; `other` fills what `self` leaves unset.
    pub fn merge(self, other: Limits) -> Limits {
        Limits {
            max_memory: self.max_memory.or(other.max_memory),
            max_connections: self.max_connections.or(other.max_connections),
            max_busy: self.max_busy.or(other.max_busy),
            max_sockets: self.max_sockets.or(other.max_sockets),
        }
    }
}

impl Policy {
    /// The policy of the `--listen`, `--udp` and `--allow` flags.
    pub fn from_flags(listen: &[String], udp: &[String], allow: &[String]) -> Result<Policy> {
        let mut policy = Policy::default();
        for value in listen {
            let addr = parse_socket_addr(value).with_context(|| format!("--listen {value}"))?;
            policy.add_listen(addr, format!("--listen {value}"));
        }
        for value in udp {
            let addr = parse_socket_addr(value).with_context(|| format!("--udp {value}"))?;
            policy.add_udp(addr, format!("--udp {value}"));
        }
        for value in allow {
            let source = format!("--allow {value}");
            let rule = Rule::parse_grant(value, source.clone()).context(source)?;
            policy.rules.push(rule);
        }
        Ok(policy)
    }

    /// Reads and parses a policy file; errors name the path as given.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read policy file {}", path.display()))?;
        Policy::parse_toml(&text, &path.display().to_string())
    }

    /// Parses policy TOML; `file_name` is used in rule sources and error messages.
    pub fn parse_toml(text: &str, file_name: &str) -> Result<Policy> {
        let section: PolicySection =
            toml::from_str(text).map_err(|e| toml_error(&e, text, file_name))?;
        Policy::from_section(&section, text, file_name)
    }

    /// The policy of a section already deserialized from `text` (the whole file, so spans
    /// turn into line numbers), e.g. one guest's table in a `sockbox up` manifest.
    pub(crate) fn from_section(raw: &PolicySection, text: &str, file_name: &str) -> Result<Policy> {
        let at = |offset: usize| format!("{file_name}:{}", line_of(text, offset));
        let mut policy = Policy::default();
        // Rules are kept in file order, whichever key they came from, so "first match wins"
        // means what a reader of the file expects.
        let mut rules: Vec<(usize, Rule)> = Vec::new();
        for value in &raw.listen {
            let (offset, text) = (value.span().start, value.get_ref());
            let addr =
                parse_socket_addr(text).with_context(|| format!("{}: listen", at(offset)))?;
            let source = format!("{}: listen {text:?}", at(offset));
            policy.listen.push(addr);
            rules.push((offset, listen_rule(Use::TcpListen, addr, source)));
        }
        for value in &raw.udp {
            let (offset, text) = (value.span().start, value.get_ref());
            let addr = parse_socket_addr(text).with_context(|| format!("{}: udp", at(offset)))?;
            let source = format!("{}: udp {text:?}", at(offset));
            policy.udp.push(addr);
            rules.push((offset, listen_rule(Use::UdpBind, addr, source)));
        }
        for value in &raw.allow {
            let (offset, text) = (value.span().start, value.get_ref());
            let source = format!("{}: allow {text:?}", at(offset));
            let rule = Rule::parse_grant(text, source)
                .with_context(|| format!("{}: {text:?}", at(offset)))?;
            rules.push((offset, rule));
        }
        rules.sort_by_key(|(offset, _)| *offset);
        policy.rules = rules.into_iter().map(|(_, r)| r).collect();

        // In file order, so a duplicate is reported at its second appearance.
        let mut entries: Vec<_> = raw.dns_map.iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        for (name, addrs) in entries {
            let key_at = at(name.span().start);
            let folded = normalise_name(name.get_ref())
                .with_context(|| format!("{key_at}: dns-map {:?}", name.get_ref()))?;
            let addrs = parse_dns_answers(addrs).with_context(|| {
                format!("{}: dns-map {:?}", at(addrs.span().start), name.get_ref())
            })?;
            if policy.dns_map.insert(folded.clone(), addrs).is_some() {
                bail!("{key_at}: dns-map names {folded:?} twice");
            }
        }

        if let Some(limits) = &raw.limits {
            policy.limits = parse_limits(limits, &at)?;
        }
        Ok(policy)
    }

    /// Flags and file together: `self`'s rules come first (so they are the ones reported when
    /// both match), listen/udp addresses are joined without duplicates, dns-map answers are
    /// joined per name, and `self`'s limits win where both set one. Call it as
    /// `flags.merge(file)`.
    pub fn merge(mut self, other: Policy) -> Policy {
        self.rules.extend(other.rules);
        for addr in other.listen {
            if !self.listen.contains(&addr) {
                self.listen.push(addr);
            }
        }
        for addr in other.udp {
            if !self.udp.contains(&addr) {
                self.udp.push(addr);
            }
        }
        for (name, addrs) in other.dns_map {
            let entry = self.dns_map.entry(name).or_default();
            for addr in addrs {
                if !entry.contains(&addr) {
                    entry.push(addr);
                }
            }
        }
        self.limits = self.limits.merge(other.limits);
        self
    }

    /// The sandbox's own answer for `name`, if the dns-map has one.
    pub fn mapped_addrs(&self, name: &str) -> Option<&[IpAddr]> {
        self.dns_map.get(&fold_name(name)).map(Vec::as_slice)
    }

    /// Whether any rule names a TCP use: without one the guest may not even create a TCP
    /// socket (as `wasmtime run -S tcp=n`).
    pub fn grants_tcp(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.use_, Use::TcpListen | Use::TcpAccept | Use::TcpConnect))
    }

    /// Whether any rule names a UDP use (see [`Policy::grants_tcp`]).
    pub fn grants_udp(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.use_, Use::UdpBind | Use::UdpSend | Use::UdpRecv))
    }

    /// Things that load but probably do not do what was meant, for the CLI to print.
    pub fn warnings(&self) -> Vec<String> {
        self.dns_map
            .keys()
            .filter(|name| !self.decide_name(name).allowed)
            .map(|name| {
                format!(
                    "dns-map answers {name:?} but no dns rule lets the guest resolve it; \
                     add --allow dns={name}"
                )
            })
            .collect()
    }

    /// This policy for a further instance of a guest whose first instance serves on `tcp` and
    /// `udp`: each port-0 `--listen`/`--udp` address becomes the port the first instance got,
    /// so every instance shares it. The rules keep the user's words for the audit.
    pub fn pinned_to(&self, tcp: &[SocketAddr], udp: &[SocketAddr]) -> Policy {
        let mut pinned = self.clone();
        pin_ports(&mut pinned.listen, &mut pinned.rules, Use::TcpListen, tcp);
        pin_ports(&mut pinned.udp, &mut pinned.rules, Use::UdpBind, udp);
        pinned
    }

    fn add_listen(&mut self, addr: SocketAddr, source: String) {
        self.listen.push(addr);
        self.rules.push(listen_rule(Use::TcpListen, addr, source));
    }

    fn add_udp(&mut self, addr: SocketAddr, source: String) {
        self.udp.push(addr);
        self.rules.push(listen_rule(Use::UdpBind, addr, source));
    }
}

/// Replaces each port-0 address of `addrs` (and the rule it made) with the serving address on
/// the same IP, each serving address used once.
fn pin_ports(addrs: &mut [SocketAddr], rules: &mut [Rule], use_: Use, serving: &[SocketAddr]) {
    let mut taken = vec![false; serving.len()];
    let mut pinned_rules = vec![false; rules.len()];
    for addr in addrs.iter_mut().filter(|a| a.port() == 0) {
        let Some(i) = (0..serving.len()).find(|&i| !taken[i] && serving[i].ip() == addr.ip())
        else {
            continue;
        };
        taken[i] = true;
        let wanted = Pattern::Addr(AddrPattern::exact(*addr));
        if let Some(r) = (0..rules.len())
            .find(|&r| !pinned_rules[r] && rules[r].use_ == use_ && rules[r].pattern == wanted)
        {
            pinned_rules[r] = true;
            rules[r].pattern = Pattern::Addr(AddrPattern::exact(serving[i]));
        }
        *addr = serving[i];
    }
}

fn listen_rule(use_: Use, addr: SocketAddr, source: String) -> Rule {
    Rule {
        use_,
        pattern: Pattern::Addr(AddrPattern::exact(addr)),
        source,
    }
}

fn parse_limits(raw: &LimitsSection, at: &dyn Fn(usize) -> String) -> Result<Limits> {
    let mut limits = Limits::default();
    if let Some(v) = &raw.max_memory {
        let bytes = match v.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
            toml::Value::String(s) => parse_size(s),
            _ => Err(anyhow!(
                "expected a size such as \"64MiB\" or a number of bytes"
            )),
        };
        limits.max_memory =
            Some(bytes.with_context(|| format!("{}: max-memory", at(v.span().start)))?);
    }
    let count = |v: &Spanned<toml::Value>, key: &str| -> Result<u32> {
        let n = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 1 => {
                u32::try_from(*n).map_err(|_| anyhow!("{n} is more than {}", u32::MAX))
            }
            _ => Err(anyhow!("expected a whole number of at least 1")),
        };
        n.with_context(|| format!("{}: {key}", at(v.span().start)))
    };
    if let Some(v) = &raw.max_connections {
        limits.max_connections = Some(count(v, "max-connections")?);
    }
    if let Some(v) = &raw.max_sockets {
        limits.max_sockets = Some(count(v, "max-sockets")?);
    }
    if let Some(v) = &raw.max_busy {
        let d = match v.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Ok(Duration::from_millis(*n as u64)),
            toml::Value::String(s) => parse_millis(s),
            _ => Err(anyhow!("expected milliseconds, e.g. 500")),
        };
        limits.max_busy = Some(d.with_context(|| format!("{}: max-busy", at(v.span().start)))?);
    }
    Ok(limits)
}

/// The policy keys of a TOML table, with spans for error lines. Shared with a file which
/// embeds the policy vocabulary (the `up` manifest) can deserialize the same keys and hand
/// them to `Policy::from_section`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    /// `listen = ["ip:port", ...]`: TCP listen grants.
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    /// `udp = ["ip:port", ...]`: UDP bind grants.
    pub udp: Vec<Spanned<String>>,
    #[serde(default)]
    /// `allow = ["USE=PATTERN", ...]`: every other grant.
    pub allow: Vec<Spanned<String>>,
    #[serde(default, rename = "dns-map")]
    /// `[dns-map]`: names answered with fixed addresses.
    pub dns_map: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    /// `[limits]`.
    pub limits: Option<LimitsSection>,
}

/// The `[limits]` table of a `PolicySection`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsSection {
    /// `max-memory`: a size (`"64MiB"`) or a number of bytes.
    pub max_memory: Option<Spanned<toml::Value>>,
    /// `max-connections`: a whole number.
    pub max_connections: Option<Spanned<toml::Value>>,
    /// `max-busy`: milliseconds, or a duration (`"500ms"`).
    pub max_busy: Option<Spanned<toml::Value>>,
    /// `max-sockets`: a whole number.
    pub max_sockets: Option<Spanned<toml::Value>>,
}

#[cfg(test)]
mod tests;
