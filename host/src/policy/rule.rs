//! Rules: the vocabulary of a grant (`tcp-connect=127.0.0.1:5432`, `dns=*.test`) and the pure
//! question of which addresses and names a rule covers.
//!
//! Everything here is plain data and functions so the matcher can be table-tested without a
//! socket in sight; the stateful parts (implicit binds, UDP replies) live in `gate`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};
use ipnet::IpNet;

use super::Policy;

/// What a guest wants to do with a socket address or a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Use {
    TcpListen,
    TcpAccept,
    TcpConnect,
    UdpBind,
    UdpSend,
    UdpRecv,
    Dns,
}

impl Use {
    pub const ALL: [Use; 7] = [
        Use::TcpListen,
        Use::TcpAccept,
        Use::TcpConnect,
        Use::UdpBind,
        Use::UdpSend,
        Use::UdpRecv,
        Use::Dns,
    ];

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

/// An inclusive port range; `0..=65535` is "any port". Port 0 on its own is the OS-chosen
/// ephemeral port, which is why it is kept as a real value instead of meaning "any".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    pub fn is_any(self) -> bool {
        self == PortRange::ANY
    }

    fn parse(s: &str) -> Result<PortRange> {
        if s == "*" {
            return Ok(PortRange::ANY);
        }
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
            None => {
                let p = parse_port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            bail!("port range {lo}-{hi} is empty");
        }
        Ok(PortRange { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

fn parse_port(s: &str) -> Result<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("`{s}` is not a port (expected a number, lo-hi or *)");
    }
    s.parse::<u16>()
        .map_err(|_| anyhow!("port {s} is out of range (0-65535)"))
}

/// An address pattern: a network (a single address is a /32 or /128) and a port range.
///
/// The network is stored normalised: IPv4-mapped IPv6 networks become IPv4 ones, so that
/// `::ffff:10.0.0.0/104` and `10.0.0.0/8` are the same pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrPattern {
    net: IpNet,
    ports: PortRange,
}

impl AddrPattern {
    /// The pattern granting exactly one socket address (what `--listen` and `--udp` grant).
    pub fn exact(addr: SocketAddr) -> AddrPattern {
        let ip = addr.ip().to_canonical();
        AddrPattern {
            net: IpNet::from(ip),
            ports: PortRange::single(addr.port()),
        }
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    pub fn ports(&self) -> PortRange {
        self.ports
    }

    /// A pattern that includes port 0 grants an OS-chosen port; see `matches_listening`.
    pub fn grants_ephemeral(&self) -> bool {
        self.ports.contains(0)
    }

    /// Whether the pattern names the unspecified address (0.0.0.0 or ::), the only way to
    /// grant binding to every interface.
    pub fn names_unspecified(&self) -> bool {
        self.net.addr().is_unspecified()
    }

    /// Whether the IP is covered, with mapped IPv6 judged as IPv4 and unspecified addresses
    /// covered only by a pattern that names them.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_unspecified() && !self.names_unspecified() {
            return false;
        }
        // IpNet::contains is false across families, which is the rule we want.
        self.net.contains(&ip)
    }

    /// Exact matching: port 0 is matched only by a pattern that includes port 0.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        self.matches_ip(addr.ip()) && self.ports.contains(addr.port())
    }

    /// Matching for an address a socket is already bound to (a TCP listen): a pattern that
    /// grants port 0 matches any port, because the bind check let such a socket bind only
    /// port 0, so the port it now carries was chosen by the OS.
    pub fn matches_listening(&self, addr: SocketAddr) -> bool {
        self.matches_ip(addr.ip()) && (self.grants_ephemeral() || self.ports.contains(addr.port()))
    }

    pub fn parse(s: &str) -> Result<AddrPattern> {
        let s = s.trim();
        if s.is_empty() {
            bail!("empty address pattern");
        }
        let (ip_part, port_part) = if let Some(rest) = s.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                bail!("missing `]` in `{s}`");
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => bail!("expected `:port` after `]` in `{s}`, got `{after}`"),
                },
            };
            (inside, port)
        } else if s.matches(':').count() == 1 {
            // One colon: IPv4 with a port. More colons: a bare IPv6 address without one.
            let (ip, port) = s.split_once(':').expect("one colon");
            (ip, Some(port))
        } else {
            (s, None)
        };
        let net = parse_net(ip_part)?;
        let ports = match port_part {
            Some(p) => PortRange::parse(p)?,
            None => PortRange::ANY,
        };
        Ok(AddrPattern { net, ports })
    }
}

/// `ip` or `ip/prefix`, normalised (mapped IPv6 → IPv4), host bits rejected.
fn parse_net(s: &str) -> Result<IpNet> {
    let (ip_s, prefix_s) = match s.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (s, None),
    };
    let ip: IpAddr = ip_s
        .parse()
        .map_err(|_| anyhow!("`{ip_s}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_s {
        None => max,
        Some(p) => {
            let n: u8 = p
                .parse()
                .map_err(|_| anyhow!("`/{p}` is not a prefix length"))?;
            if n > max {
                let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                bail!("prefix /{n} is too long for {family} (at most /{max})");
            }
            n
        }
    };
    let net = IpNet::new(ip, prefix).expect("prefix checked");
    if net.addr() != net.network() {
        bail!("`{s}` has host bits set; the network is {}", net.trunc());
    }
    Ok(normalise_net(net))
}

/// An IPv6 network inside `::ffff:0:0/96` is an IPv4 network written the long way.
fn normalise_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        return IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("prefix in range");
    }
    net
}

impl fmt::Display for AddrPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let single = self.net.prefix_len() == self.net.max_prefix_len();
        let ip = if single {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        match (self.ports.is_any(), self.net) {
            (true, _) => f.write_str(&ip),
            (false, IpNet::V4(_)) => write!(f, "{ip}:{}", self.ports),
            (false, IpNet::V6(_)) => write!(f, "[{ip}]:{}", self.ports),
        }
    }
}

/// A DNS name pattern: one name, or every name strictly below a suffix (`*.test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Below(String),
}

impl NamePattern {
    pub fn parse(s: &str) -> Result<NamePattern> {
        let s = s.trim();
        if let Some(suffix) = s.strip_prefix("*.") {
            return Ok(NamePattern::Below(normalise_name(suffix)?));
        }
        if s == "*" {
            bail!("`*` alone is not a name pattern; name a suffix, e.g. `*.example.com`");
        }
        Ok(NamePattern::Exact(normalise_name(s)?))
    }

    pub fn matches(&self, name: &str) -> bool {
        let name = fold_name(name);
        match self {
            NamePattern::Exact(n) => name == *n,
            NamePattern::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Below(s) => write!(f, "*.{s}"),
        }
    }
}

/// Case and one trailing dot do not make a different name: the form names are compared in.
pub(crate) fn fold_name(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Validates a DNS name and returns its folded form (lowercase, no trailing dot).
pub fn normalise_name(name: &str) -> Result<String> {
    let folded = fold_name(name);
    if folded.is_empty() {
        bail!("empty name");
    }
    if folded.len() > 253 {
        bail!("name `{name}` is longer than 253 characters");
    }
    for label in folded.split('.') {
        if label.is_empty() {
            bail!("name `{name}` has an empty label");
        }
        if label.len() > 63 {
            bail!("name `{name}` has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("`{name}` is not a DNS name (letters, digits, `-` and `_` only)");
        }
    }
    // A name whose last label is all digits reads as an address, and no top-level domain is.
    let last = folded.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        bail!("`{name}` looks like an address, not a DNS name");
    }
    Ok(folded)
}

/// What a rule covers: addresses for socket uses, names for `dns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Addr(AddrPattern),
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
    pub use_: Use,
    pub pattern: Pattern,
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

    pub fn matches_addr(&self, use_: Use, addr: SocketAddr) -> bool {
        self.use_ == use_ && matches!(&self.pattern, Pattern::Addr(p) if p.matches(addr))
    }

    pub fn matches_name(&self, name: &str) -> bool {
        self.use_ == Use::Dns && matches!(&self.pattern, Pattern::Name(p) if p.matches(name))
    }

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
    pub allowed: bool,
    /// The source of the rule that decided, `None` when nothing allowed it.
    pub rule: Option<String>,
}

impl Decision {
    pub fn allow(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            rule: Some(rule.into()),
        }
    }

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
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn use_round_trips_and_rejects_typos() {
        for u in Use::ALL {
            assert_eq!(u.to_string().parse::<Use>().unwrap(), u);
        }
        let err = "tcp-conect".parse::<Use>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown use \"tcp-conect\" (expected one of tcp-listen, tcp-accept, tcp-connect, \
             udp-bind, udp-send, udp-recv, dns)"
        );
    }

    /// (pattern, address, matches exactly)
    const ADDR_TABLE: &[(&str, &str, bool)] = &[
        // single IPv4, any port
        ("127.0.0.1", "127.0.0.1:1", true),
        ("127.0.0.1", "127.0.0.1:65535", true),
        ("127.0.0.1", "127.0.0.1:0", true),
        ("127.0.0.1", "127.0.0.2:80", false),
        // single port
        ("127.0.0.1:7000", "127.0.0.1:7000", true),
        ("127.0.0.1:7000", "127.0.0.1:7001", false),
        ("127.0.0.1:7000", "127.0.0.1:0", false),
        // port ranges are inclusive
        ("127.0.0.1:1-100", "127.0.0.1:1", true),
        ("127.0.0.1:1-100", "127.0.0.1:100", true),
        ("127.0.0.1:1-100", "127.0.0.1:101", false),
        ("127.0.0.1:1-100", "127.0.0.1:0", false),
        ("127.0.0.1:*", "127.0.0.1:0", true),
        ("127.0.0.1:*", "127.0.0.1:65535", true),
        // port 0 is only port 0 when judged exactly
        ("127.0.0.1:0", "127.0.0.1:0", true),
        ("127.0.0.1:0", "127.0.0.1:40000", false),
        // CIDR edges
        ("10.0.0.0/8", "10.0.0.0:1", true),
        ("10.0.0.0/8", "10.255.255.255:1", true),
        ("10.0.0.0/8", "11.0.0.0:1", false),
        ("10.0.0.0/8", "9.255.255.255:1", false),
        ("192.0.2.128/25:53", "192.0.2.128:53", true),
        ("192.0.2.128/25:53", "192.0.2.127:53", false),
        ("192.0.2.128/25:53", "192.0.2.255:54", false),
        ("192.0.2.1/32", "192.0.2.1:9", true),
        ("0.0.0.0/0", "203.0.113.9:9", true),
        // IPv6
        ("::1", "[::1]:7000", true),
        ("[::1]:7000", "[::1]:7000", true),
        ("[::1]:7000", "[::1]:7001", false),
        ("[::1/128]:*", "[::1]:1", true),
        ("[fd00::/8]:1-100", "[fd12::5]:100", true),
        ("[fd00::/8]:1-100", "[fd12::5]:101", false),
        ("[fd00::/8]:1-100", "[fe00::5]:50", false),
        ("fd00::/8", "[fdff:ffff::1]:9", true),
        ("2001:db8::/32", "[2001:db8:ffff::1]:9", true),
        ("2001:db8::/32", "[2001:db9::1]:9", false),
        // families never cross
        ("127.0.0.1", "[::1]:80", false),
        ("::1", "127.0.0.1:80", false),
        ("::/0", "127.0.0.1:80", false),
        ("0.0.0.0/0", "[::1]:80", false),
        // IPv4-mapped IPv6 is IPv4, on both sides
        ("127.0.0.1:80", "[::ffff:127.0.0.1]:80", true),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1:80", true),
        ("[::ffff:10.0.0.0/104]:*", "10.1.2.3:80", true),
        ("[::ffff:10.0.0.0/104]:*", "11.1.2.3:80", false),
        ("::/0", "[::ffff:127.0.0.1]:80", false),
        // unspecified addresses only by a pattern naming them
        ("0.0.0.0", "0.0.0.0:7000", true),
        ("0.0.0.0:7000", "0.0.0.0:7000", true),
        ("0.0.0.0:7000", "0.0.0.0:7001", false),
        ("0.0.0.0/0", "0.0.0.0:7000", true),
        ("[::]:*", "[::]:7000", true),
        ("::/0", "[::]:7000", true),
        ("0.0.0.0/0", "[::]:7000", false),
        ("[::ffff:0.0.0.0]:7000", "0.0.0.0:7000", true),
        ("0.0.0.0:7000", "[::ffff:0.0.0.0]:7000", true),
        ("127.0.0.1", "0.0.0.0:7000", false),
        ("::1", "[::]:7000", false),
    ];

    #[test]
    fn address_patterns_match_as_the_table_says() {
        for &(pat, addr, want) in ADDR_TABLE {
            let p = AddrPattern::parse(pat).unwrap_or_else(|e| panic!("{pat}: {e}"));
            assert_eq!(p.matches(sa(addr)), want, "pattern {pat} vs {addr}");
        }
    }

    #[test]
    fn every_address_use_uses_the_same_matcher() {
        for u in Use::ALL.into_iter().filter(|u| u.takes_address()) {
            for &(pat, addr, want) in ADDR_TABLE {
                let policy = Policy {
                    rules: vec![Rule::new(u, pat, format!("r {pat}")).unwrap()],
                    ..Policy::default()
                };
                let d = policy.decide(u, sa(addr));
                assert_eq!(d.allowed, want, "{u} {pat} vs {addr}");
                assert_eq!(d.rule.is_some(), want);
                // A rule for one use never answers for another.
                for other in Use::ALL.into_iter().filter(|o| *o != u) {
                    assert!(!policy.decide(other, sa(addr)).allowed, "{other} via {u}");
                }
            }
        }
    }

    #[test]
    fn listening_matches_any_port_only_for_ephemeral_grants() {
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.1:0", "127.0.0.1:40000", true),
            ("127.0.0.1:0", "127.0.0.1:0", true),
            ("127.0.0.1:0", "127.0.0.2:40000", false),
            ("127.0.0.1:0-10", "127.0.0.1:40000", true),
            ("127.0.0.1:7000", "127.0.0.1:7000", true),
            ("127.0.0.1:7000", "127.0.0.1:40000", false),
            ("127.0.0.1:1-10", "127.0.0.1:11", false),
            ("[::1]:0", "[::1]:40000", true),
            ("[::1]:0", "127.0.0.1:40000", false),
            ("0.0.0.0:0", "0.0.0.0:40000", true),
            ("127.0.0.1:0", "0.0.0.0:40000", false),
        ];
        for &(pat, addr, want) in table {
            let p = AddrPattern::parse(pat).unwrap();
            assert_eq!(p.matches_listening(sa(addr)), want, "{pat} vs {addr}");
        }
    }

    #[test]
    fn patterns_display_in_canonical_form() {
        let table = [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:*", "127.0.0.1"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("10.0.0.0/8:1-100", "10.0.0.0/8:1-100"),
            ("[::1]:7000", "[::1]:7000"),
            ("[fd00::/8]:1-100", "[fd00::/8]:1-100"),
            ("[::ffff:127.0.0.1]:80", "127.0.0.1:80"),
            ("fd00::/8", "fd00::/8"),
        ];
        for (pat, want) in table {
            assert_eq!(AddrPattern::parse(pat).unwrap().to_string(), want);
        }
    }

    #[test]
    fn bad_address_patterns_say_what_is_wrong() {
        let table = [
            ("127.0.0.1:9-3", "port range 9-3 is empty"),
            ("127.0.0.1:70000", "port 70000 is out of range (0-65535)"),
            (
                "127.0.0.1:",
                "`` is not a port (expected a number, lo-hi or *)",
            ),
            (
                "127.0.0.1:http",
                "`http` is not a port (expected a number, lo-hi or *)",
            ),
            ("10.0.0.256:80", "`10.0.0.256` is not an IP address"),
            (
                "10.0.0.0/33",
                "prefix /33 is too long for IPv4 (at most /32)",
            ),
            (
                "[::1/129]:1",
                "prefix /129 is too long for IPv6 (at most /128)",
            ),
            ("10.0.0.0/x", "`/x` is not a prefix length"),
            (
                "10.0.0.5/8",
                "`10.0.0.5/8` has host bits set; the network is 10.0.0.0/8",
            ),
            ("[::1:80", "missing `]` in `[::1:80`"),
            (
                "[::1]80",
                "expected `:port` after `]` in `[::1]80`, got `80`",
            ),
            ("", "empty address pattern"),
        ];
        for (pat, want) in table {
            let err = AddrPattern::parse(pat).unwrap_err().to_string();
            assert_eq!(err, want, "pattern {pat:?}");
        }
    }

    #[test]
    fn rules_need_the_right_kind_of_pattern() {
        let err = Rule::parse_grant("tcp-listen=db.test", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`tcp-listen` needs an address pattern, got `db.test`"
        );
        let err = Rule::parse_grant("dns=127.0.0.1", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`dns` needs a name pattern, got the address `127.0.0.1`"
        );
        let err = Rule::parse_grant("tcp-connect", "x").unwrap_err();
        assert!(err.to_string().starts_with("expected USE=PATTERN"), "{err}");
        let err = Rule::parse_grant("tcp-conect=127.0.0.1:80", "x").unwrap_err();
        assert!(
            err.to_string().starts_with("unknown use \"tcp-conect\""),
            "{err}"
        );
        let err = Rule::parse_grant("dns=*", "x").unwrap_err();
        assert!(err.to_string().contains("name a suffix"), "{err}");
        let rule = Rule::parse_grant(" tcp-connect = 127.0.0.1:5432 ", "src").unwrap();
        assert_eq!(rule.use_, Use::TcpConnect);
        assert_eq!(rule.pattern.to_string(), "127.0.0.1:5432");
        assert_eq!(rule.source, "src");
    }

    #[test]
    fn dns_patterns_match_as_the_table_says() {
        let table: &[(&str, &str, bool)] = &[
            ("db.test", "db.test", true),
            ("db.test", "DB.Test", true),
            ("db.test", "db.test.", true),
            ("DB.TEST.", "db.test", true),
            ("db.test", "x.db.test", false),
            ("db.test", "test", false),
            ("*.test", "db.test", true),
            ("*.test", "a.b.test", true),
            ("*.test", "DB.TEST.", true),
            ("*.test", "test", false),
            ("*.test", "test.", false),
            ("*.test", ".test", false),
            ("*.test", "latest", false),
            ("*.test", "db.test.evil", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "example.com", false),
        ];
        for &(pat, name, want) in table {
            let p = NamePattern::parse(pat).unwrap();
            assert_eq!(p.matches(name), want, "{pat} vs {name}");
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a..b", "bad name", "x/y", "1.2.3.4", "*.", "*"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalise_name("Db.Test.").unwrap(), "db.test");
    }

    #[test]
    fn first_matching_rule_is_reported() {
        let policy = Policy {
            rules: vec![
                Rule::new(
                    Use::TcpConnect,
                    "10.0.0.0/8",
                    "--allow tcp-connect=10.0.0.0/8",
                )
                .unwrap(),
                Rule::new(Use::TcpConnect, "10.0.0.5:80", "policy.toml:2: allow").unwrap(),
                Rule::new(Use::Dns, "*.test", "first dns").unwrap(),
                Rule::new(Use::Dns, "db.test", "second dns").unwrap(),
            ],
            ..Policy::default()
        };
        assert_eq!(
            policy.decide(Use::TcpConnect, sa("10.0.0.5:80")),
            Decision::allow("--allow tcp-connect=10.0.0.0/8")
        );
        assert_eq!(
            policy.decide(Use::TcpConnect, sa("11.0.0.5:80")),
            Decision::deny()
        );
        assert_eq!(policy.decide_name("db.test"), Decision::allow("first dns"));
        assert_eq!(policy.decide_name("db.prod"), Decision::deny());
        assert_eq!(Policy::default().decide_name("db.test"), Decision::deny());
    }

    #[test]
    fn suggestions_name_the_flag_to_add() {
        let table = [
            (Use::TcpListen, "127.0.0.1:7000", "--listen 127.0.0.1:7000"),
            (Use::UdpBind, "[::1]:9000", "--udp [::1]:9000"),
            (
                Use::TcpConnect,
                "127.0.0.1:5432",
                "--allow tcp-connect=127.0.0.1:5432",
            ),
            (Use::UdpSend, "127.0.0.1:9", "--allow udp-send=127.0.0.1:9"),
            (
                Use::TcpAccept,
                "192.0.2.7:51234",
                "--allow tcp-accept=192.0.2.7",
            ),
            (
                Use::UdpRecv,
                "[::ffff:192.0.2.7]:53",
                "--allow udp-recv=192.0.2.7",
            ),
            (Use::Dns, "db.test", "--allow dns=db.test"),
            (
                Use::TcpConnect,
                "0.0.0.0:0",
                "--allow tcp-connect=<ip:port>",
            ),
            (Use::UdpSend, "[::]:0", "--allow udp-send=<ip:port>"),
        ];
        for (u, target, want) in table {
            assert_eq!(suggest_grant(u, target), want);
        }
    }
}

#[cfg(test)]
mod prop {
    //! The matcher against a naive reference: a u32 mask and a range check.
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn reference(net: u32, prefix: u8, lo: u16, hi: u16, ip: u32, port: u16) -> bool {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let ip_ok = if ip == 0 { net == 0 } else { ip & mask == net };
        ip_ok && lo <= port && port <= hi
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn v4_matcher_agrees_with_reference(
            base in any::<u32>(),
            prefix in 0u8..=32,
            a in any::<u16>(),
            b in any::<u16>(),
            // Half the addresses are near the network so both outcomes are exercised.
            near in any::<bool>(),
            offset in any::<u32>(),
            ip in any::<u32>(),
            port in any::<u16>(),
            mapped in any::<bool>(),
        ) {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let net = base & mask;
            let (lo, hi) = (a.min(b), a.max(b));
            let ip = if near { net.wrapping_add(offset % 512) } else { ip };
            let pat = format!("{}/{}:{}-{}", Ipv4Addr::from(net), prefix, lo, hi);
            let p = AddrPattern::parse(&pat).unwrap();
            let v4 = Ipv4Addr::from(ip);
            let addr_ip = if mapped { IpAddr::V6(v4.to_ipv6_mapped()) } else { IpAddr::V4(v4) };
            let got = p.matches(SocketAddr::new(addr_ip, port));
            prop_assert_eq!(got, reference(net, prefix, lo, hi, ip, port), "{} vs {}:{}", pat, v4, port);
        }

        #[test]
        fn v6_matcher_agrees_with_reference(
            base in any::<u128>(),
            prefix in 0u8..=128,
            mapped_base in any::<bool>(),
            port_spec in prop_oneof![Just(None), any::<u16>().prop_map(Some)],
            near in any::<bool>(),
            offset in any::<u16>(),
            ip in any::<u128>(),
            port in any::<u16>(),
        ) {
            const MAPPED: u128 = 0xffff_0000_0000; // ::ffff:0.0.0.0
            // Some networks inside ::ffff:0:0/96, which are IPv4 networks written long.
            let (base, prefix) = if mapped_base {
                (MAPPED | (base & 0xffff_ffff), 96 + prefix % 33)
            } else {
                (base, prefix)
            };
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            let net = base & mask;
            let ip = if near { net.wrapping_add(offset as u128) } else { ip };
            let pat = match port_spec {
                Some(p) => format!("[{}/{}]:{}", Ipv6Addr::from(net), prefix, p),
                None => format!("{}/{}", Ipv6Addr::from(net), prefix),
            };
            let p = AddrPattern::parse(&pat).unwrap();
            let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port);

            let is_mapped = |x: u128| x >> 32 == 0xffff;
            let net_is_v4 = prefix >= 96 && is_mapped(net);
            let ip_is_v4 = is_mapped(ip);
            let unspecified = |x: u128, v4: bool| if v4 { x == MAPPED } else { x == 0 };
            let want = net_is_v4 == ip_is_v4
                && ip & mask == net
                && (!unspecified(ip, ip_is_v4) || unspecified(net, net_is_v4))
                && port_spec.is_none_or(|p| p == port);
            prop_assert_eq!(p.matches(addr), want, "{} vs {}", pat, addr);
        }

        #[test]
        fn the_first_matching_rule_is_reported(
            specs in proptest::collection::vec((any::<u8>(), 24u8..=32, 0u16..4), 1..8),
            last in 1u8..=255,
            port in 0u16..4,
        ) {
            // Small spaces (10.0.0.x, ports 0-3) so rules overlap often.
            let rules: Vec<Rule> = specs
                .iter()
                .enumerate()
                .map(|(i, (host, prefix, p))| {
                    let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, *host)), *prefix)
                        .unwrap()
                        .trunc();
                    Rule::new(Use::TcpConnect, &format!("{net}:{p}"), format!("rule {i}")).unwrap()
                })
                .collect();
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port);
            let ip = u32::from(Ipv4Addr::new(10, 0, 0, last));
            let want = specs.iter().position(|(host, prefix, p)| {
                let mask = u32::MAX << (32 - prefix);
                let net = u32::from(Ipv4Addr::new(10, 0, 0, *host)) & mask;
                ip & mask == net && port == *p
            });
            let policy = Policy { rules, ..Policy::default() };
            let got = policy.decide(Use::TcpConnect, addr);
            prop_assert_eq!(got.rule, want.map(|i| format!("rule {i}")));
        }
    }
}
