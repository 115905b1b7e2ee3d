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

use super::rule::{AddrPattern, Pattern, Rule, Use, fold_name, normalise_name};

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
    pub limits: Limits,
}

/// Resource limits; `None` means the host's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory.
    pub max_memory: Option<u64>,
    /// Accepted TCP connections open at once.
    pub max_connections: Option<u32>,
    /// Longest stretch of guest computation without yielding.
    pub max_busy: Option<Duration>,
    /// Sockets of any kind (created or accepted) the guest holds at once.
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
        let section: PolicySection = toml::from_str(text).map_err(|e| {
            // serde's word for an array is "sequence"; say it the way TOML users do.
            let message = e
                .message()
                .trim_end()
                .replace("expected a sequence", "expected a list, e.g. [\"...\"]");
            match e.span() {
                Some(span) => anyhow!("{file_name}:{}: {message}", line_of(text, span.start)),
                None => anyhow!("{file_name}: {message}"),
            }
        })?;
        Policy::from_section(&section, text, file_name)
    }

    /// The policy of a section already deserialized from `text` (the whole file, so spans
    /// turn into line numbers), e.g. one guest's table in a `sockbox up` manifest.
    pub fn from_section(raw: &PolicySection, text: &str, file_name: &str) -> Result<Policy> {
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

/// A concrete `ip:port` (`[v6]:port`), as `--listen` and `--udp` take.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("expected ip:port (e.g. 127.0.0.1:7000 or [::1]:7000), got {s:?}"))
}

fn parse_dns_answers(value: &Spanned<toml::Value>) -> Result<Vec<IpAddr>> {
    let strings: Vec<&str> = match value.get_ref() {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| anyhow!("expected IP address strings"))
            })
            .collect::<Result<_>>()?,
        _ => bail!("expected a list of IP addresses, e.g. [\"127.0.0.1\"]"),
    };
    if strings.is_empty() {
        bail!("expected at least one IP address");
    }
    strings
        .into_iter()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| anyhow!("`{s}` is not an IP address"))
        })
        .collect()
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

/// A size in bytes: `1048576`, `512KiB`, `64MiB`, `1GiB` (binary), `64MB` (decimal), `64M`
/// (binary, as ulimit and docker read it). Units are case-insensitive; zero is refused.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    if digits.is_empty() {
        bail!("{s:?} is not a size (expected e.g. 64MiB, 512KiB or a number of bytes)");
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("size {s:?} is too large"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => bail!(
            "unknown size unit {unit:?} in {s:?} (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
        ),
    };
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))?;
    if bytes == 0 {
        bail!("size must be more than 0");
    }
    Ok(bytes)
}

/// A duration in milliseconds: `500`, `500ms` or `2s`; zero is refused.
pub fn parse_millis(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (digits, scale) = if let Some(d) = s.strip_suffix("ms") {
        (d.trim(), 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d.trim(), 1000)
    } else {
        (s, 1)
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a duration (expected milliseconds, e.g. 500 or 2s)"))?;
    let ms = n
        .checked_mul(scale)
        .ok_or_else(|| anyhow!("duration {s:?} is too long"))?;
    if ms == 0 {
        bail!("duration must be more than 0");
    }
    Ok(Duration::from_millis(ms))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The policy keys of a TOML table, with spans for error lines. Public so that a file which
/// embeds the policy vocabulary (the `up` manifest) can deserialize the same keys and hand
/// them to `Policy::from_section`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub udp: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default, rename = "dns-map")]
    pub dns_map: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub limits: Option<LimitsSection>,
}

/// The `[limits]` table of a `PolicySection`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsSection {
    pub max_memory: Option<Spanned<toml::Value>>,
    pub max_connections: Option<Spanned<toml::Value>>,
    pub max_busy: Option<Spanned<toml::Value>>,
    pub max_sockets: Option<Spanned<toml::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_gives_port_zero_grants_the_first_instances_ports_only() {
        let policy = Policy::from_flags(
            &strings(&["127.0.0.1:0", "127.0.0.1:7000", "[::1]:0"]),
            &strings(&["127.0.0.1:0"]),
            &[],
        )
        .unwrap();
        let pinned = policy.pinned_to(
            &[
                sa("127.0.0.1:41000"),
                sa("127.0.0.1:7000"),
                sa("[::1]:42000"),
            ],
            &[sa("127.0.0.1:43000")],
        );
        assert_eq!(
            pinned.listen,
            [
                sa("127.0.0.1:41000"),
                sa("127.0.0.1:7000"),
                sa("[::1]:42000")
            ]
        );
        assert_eq!(pinned.udp, [sa("127.0.0.1:43000")]);
        let listen = pinned.decide(Use::TcpListen, sa("127.0.0.1:41000"));
        assert!(listen.allowed);
        assert_eq!(listen.rule.as_deref(), Some("--listen 127.0.0.1:0"));
        assert!(!pinned.decide(Use::TcpListen, sa("127.0.0.1:41001")).allowed);
        assert!(pinned.decide(Use::UdpBind, sa("127.0.0.1:43000")).allowed);
        assert!(!pinned.decide(Use::UdpBind, sa("127.0.0.1:0")).allowed);
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const EXAMPLE: &str = r#"listen = ["127.0.0.1:7000"]
udp    = ["127.0.0.1:9000"]
allow  = ["tcp-connect=127.0.0.1:5432", "dns=*.test"]
[dns-map]
"db.test" = ["127.0.0.1"]
"Cache.Test." = ["127.0.0.2", "::1"]
[limits]
max-memory = "64MiB"
max-connections = 1000
max-busy = 500
max-sockets = 2048
"#;

    #[test]
    fn the_contract_example_loads() {
        let p = Policy::parse_toml(EXAMPLE, "policy.toml").unwrap();
        assert_eq!(p.listen, vec![sa("127.0.0.1:7000")]);
        assert_eq!(p.udp, vec![sa("127.0.0.1:9000")]);
        let sources: Vec<&str> = p.rules.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "policy.toml:1: listen \"127.0.0.1:7000\"",
                "policy.toml:2: udp \"127.0.0.1:9000\"",
                "policy.toml:3: allow \"tcp-connect=127.0.0.1:5432\"",
                "policy.toml:3: allow \"dns=*.test\"",
            ]
        );
        assert_eq!(
            p.dns_map["db.test"],
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(p.mapped_addrs("CACHE.test.").unwrap().len(), 2);
        assert_eq!(p.mapped_addrs("other.test"), None);
        assert_eq!(
            p.limits,
            Limits {
                max_memory: Some(64 << 20),
                max_connections: Some(1000),
                max_busy: Some(Duration::from_millis(500)),
                max_sockets: Some(2048),
            }
        );
        let d = p.decide(Use::TcpConnect, sa("127.0.0.1:5432"));
        assert_eq!(
            d.rule.as_deref(),
            Some("policy.toml:3: allow \"tcp-connect=127.0.0.1:5432\"")
        );
        assert!(p.decide(Use::TcpListen, sa("127.0.0.1:7000")).allowed);
        assert!(p.decide(Use::UdpBind, sa("127.0.0.1:9000")).allowed);
        assert!(!p.decide(Use::TcpListen, sa("127.0.0.1:9000")).allowed);
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let p = Policy::parse_toml("", "empty.toml").unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn rules_keep_file_order_across_keys() {
        let text = "allow = [\"tcp-listen=127.0.0.1\"]\nlisten = [\"127.0.0.1:7000\"]\n";
        let p = Policy::parse_toml(text, "p.toml").unwrap();
        assert_eq!(
            p.decide(Use::TcpListen, sa("127.0.0.1:7000"))
                .rule
                .as_deref(),
            Some("p.toml:1: allow \"tcp-listen=127.0.0.1\"")
        );
    }

    fn load_error(text: &str) -> String {
        format!("{:#}", Policy::parse_toml(text, "policy.toml").unwrap_err())
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let table = [
            (
                "listen = [\"127.0.0.1:7000\"]\nlisen = []\n",
                "policy.toml:2: unknown field `lisen`",
            ),
            (
                "[limits]\nmax-mem = 1\n",
                "policy.toml:2: unknown field `max-mem`",
            ),
            (
                "listen = [\n  \"127.0.0.1:7000\",\n  \"localhost:80\",\n]\n",
                "policy.toml:3: listen: expected ip:port (e.g. 127.0.0.1:7000 or [::1]:7000), \
                 got \"localhost:80\"",
            ),
            (
                "udp = [\"127.0.0.1\"]\n",
                "policy.toml:1: udp: expected ip:port",
            ),
            (
                "\n\n\nallow = [\"tcp-conect=127.0.0.1:80\"]\n",
                "policy.toml:4: \"tcp-conect=127.0.0.1:80\": unknown use \"tcp-conect\" \
                 (expected one of tcp-listen, tcp-accept, tcp-connect, udp-bind, udp-send, \
                 udp-recv, dns)",
            ),
            (
                "allow = [\n\"tcp-connect=127.0.0.1:9-3\"]\n",
                "policy.toml:2: \"tcp-connect=127.0.0.1:9-3\": port range 9-3 is empty",
            ),
            (
                "allow = [\"tcp-listen=db.test\"]\n",
                "policy.toml:1: \"tcp-listen=db.test\": `tcp-listen` needs an address \
                 pattern, got `db.test`",
            ),
            (
                "[dns-map]\n\"db.test\" = [\"127.0.0.300\"]\n",
                "policy.toml:2: dns-map \"db.test\": `127.0.0.300` is not an IP address",
            ),
            (
                "[dns-map]\n\"db.test\" = [\"127.0.0.1\"]\n\"DB.test\" = [\"127.0.0.1\"]\n",
                "policy.toml:3: dns-map names \"db.test\" twice",
            ),
            (
                "[limits]\nmax-memory = \"64XB\"\n",
                "policy.toml:2: max-memory: unknown size unit \"XB\"",
            ),
            (
                "[limits]\n\nmax-connections = 0\n",
                "policy.toml:3: max-connections: expected a whole number of at least 1",
            ),
            (
                "[limits]\nmax-busy = \"soon\"\n",
                "policy.toml:2: max-busy: \"soon\" is not a duration",
            ),
            (
                "listen = \"127.0.0.1:7000\"\n",
                "policy.toml:1: invalid type: string \"127.0.0.1:7000\", expected a list, e.g. \
                 [\"...\"]",
            ),
            ("listen = [\n", "policy.toml:1: unclosed array"),
            ("x = 1\nx = 2\n", "policy.toml:2: duplicate key"),
        ];
        for (text, want) in table {
            let err = load_error(text);
            assert!(
                err.starts_with(want),
                "for {text:?}\n got: {err}\nwant: {want}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn flags_make_rules_with_their_own_sources() {
        let p = Policy::from_flags(
            &strings(&["127.0.0.1:7000", "[::1]:0"]),
            &strings(&["127.0.0.1:9000"]),
            &strings(&["tcp-connect=127.0.0.1:5432"]),
        )
        .unwrap();
        assert_eq!(p.listen, vec![sa("127.0.0.1:7000"), sa("[::1]:0")]);
        let sources: Vec<&str> = p.rules.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "--listen 127.0.0.1:7000",
                "--listen [::1]:0",
                "--udp 127.0.0.1:9000",
                "--allow tcp-connect=127.0.0.1:5432",
            ]
        );
        assert!(p.decide(Use::TcpListen, sa("[::1]:0")).allowed);
        assert!(!p.decide(Use::TcpListen, sa("[::1]:7000")).allowed);
    }

    #[test]
    fn bad_flags_say_which_flag() {
        let err = Policy::from_flags(&strings(&["127.0.0.1"]), &[], &[]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--listen 127.0.0.1: expected ip:port (e.g. 127.0.0.1:7000 or [::1]:7000), got \
             \"127.0.0.1\""
        );
        let err = Policy::from_flags(&[], &[], &strings(&["dns=1.2.3.4"])).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--allow dns=1.2.3.4: `dns` needs a name pattern, got the address `1.2.3.4`"
        );
        let err = Policy::from_flags(&[], &strings(&["127.0.0.1:x"]), &[]).unwrap_err();
        assert!(format!("{err:#}").starts_with("--udp 127.0.0.1:x: expected ip:port"));
    }

    #[test]
    fn flags_merge_with_a_file() {
        let flags = Policy::from_flags(
            &strings(&["127.0.0.1:7000"]),
            &[],
            &strings(&["tcp-connect=127.0.0.0/8"]),
        )
        .unwrap();
        let mut flags = flags;
        flags.limits.max_memory = Some(1 << 20);
        let file = Policy::parse_toml(EXAMPLE, "policy.toml").unwrap();
        let p = flags.merge(file);
        // No duplicate listen address; the flag's rule is reported first.
        assert_eq!(p.listen, vec![sa("127.0.0.1:7000")]);
        assert_eq!(p.udp, vec![sa("127.0.0.1:9000")]);
        assert_eq!(
            p.decide(Use::TcpListen, sa("127.0.0.1:7000"))
                .rule
                .as_deref(),
            Some("--listen 127.0.0.1:7000")
        );
        assert_eq!(
            p.decide(Use::TcpConnect, sa("127.0.0.1:5432"))
                .rule
                .as_deref(),
            Some("--allow tcp-connect=127.0.0.0/8")
        );
        assert_eq!(
            p.decide_name("db.test").rule.as_deref(),
            Some("policy.toml:3: allow \"dns=*.test\"")
        );
        assert_eq!(p.limits.max_memory, Some(1 << 20));
        assert_eq!(p.limits.max_connections, Some(1000));
        assert_eq!(p.rules.len(), 6);
    }

    #[test]
    fn dns_maps_merge_per_name() {
        let a = Policy::parse_toml("[dns-map]\n\"db.test\" = \"127.0.0.1\"\n", "a").unwrap();
        let b = Policy::parse_toml(
            "[dns-map]\n\"db.test\" = [\"127.0.0.1\", \"127.0.0.2\"]\n",
            "b",
        )
        .unwrap();
        let p = a.merge(b);
        assert_eq!(p.mapped_addrs("db.test").unwrap().len(), 2);
        // Mapped but not granted: loads, with a warning.
        assert_eq!(p.warnings().len(), 1);
        assert!(p.warnings()[0].contains("--allow dns=db.test"));
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        let ok = [
            ("1048576", 1_048_576),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1 GiB", 1 << 30),
            ("64MB", 64_000_000),
            ("64M", 64 << 20),
            ("2k", 2048),
            ("10B", 10),
            ("1TiB", 1 << 40),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s).unwrap(), want, "{s}");
        }
        let bad = [
            ("", "is not a size"),
            ("MiB", "is not a size"),
            ("0", "more than 0"),
            ("0MiB", "more than 0"),
            ("1.5GiB", "unknown size unit \".5GiB\""),
            ("64XB", "unknown size unit \"XB\""),
            ("-1", "is not a size"),
            ("99999999999999999999", "too large"),
            ("20000000TiB", "too large"),
        ];
        for (s, want) in bad {
            let err = parse_size(s).unwrap_err().to_string();
            assert!(err.contains(want), "{s:?}: {err}");
        }
    }

    #[test]
    fn durations_parse_as_milliseconds() {
        assert_eq!(parse_millis("500").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_millis("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_millis("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_millis("0").is_err());
        assert!(parse_millis("fast").is_err());
        assert!(parse_millis("-5").is_err());
    }

    #[test]
    fn limits_merge_prefers_self() {
        let a = Limits {
            max_memory: Some(1),
            ..Limits::default()
        };
        let b = Limits {
            max_memory: Some(2),
            max_connections: Some(3),
            max_busy: None,
            max_sockets: Some(4),
        };
        assert_eq!(
            a.merge(b),
            Limits {
                max_memory: Some(1),
                max_connections: Some(3),
                max_busy: None,
                max_sockets: Some(4),
            }
        );
    }

    #[test]
    fn a_section_inside_a_bigger_file_reports_lines_of_that_file() {
        // The shape of a `sockbox up` manifest: policy keys under each guest's table.
        #[derive(Deserialize)]
        struct Manifest {
            guests: BTreeMap<String, PolicySection>,
        }
        let text = "[guests.echo]\nlisten = [\"127.0.0.1:7000\"]\n\n[guests.clock]\n\
                    udp = [\"127.0.0.1:9000\"]\nallow = [\"udp-send=nowhere\"]\n";
        let m: Manifest = toml::from_str(text).unwrap();
        let echo = Policy::from_section(&m.guests["echo"], text, "up.toml").unwrap();
        assert_eq!(echo.rules[0].source, "up.toml:2: listen \"127.0.0.1:7000\"");
        let err = Policy::from_section(&m.guests["clock"], text, "up.toml").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("up.toml:6: \"udp-send=nowhere\""),
            "{err:#}"
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = Policy::load("/nonexistent/sockbox-policy.toml").unwrap_err();
        assert!(
            format!("{err:#}")
                .starts_with("cannot read policy file /nonexistent/sockbox-policy.toml"),
            "{err:#}"
        );
    }
}
