//! Patterns: which addresses (`127.0.0.0/8:8000-8100`, `[::1]:*`) and names (`*.test`) one
//! grant covers, parsed and matched as pure functions over values.
//!
//! Port 0 is kept as a real port (the OS-chosen one), names are compared folded (lower case,
//! no trailing dot), and IPv4-mapped IPv6 addresses match as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, anyhow, bail};
use ipnet::IpNet;

/// An inclusive port range; `0..=65535` is "any port". Port 0 on its own is the OS-chosen
/// ephemeral port, which is why it is kept as a real value instead of meaning "any".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port covered.
    pub lo: u16,
    /// The highest port covered.
    pub hi: u16,
}

impl PortRange {
    /// Every port, port 0 included (`*`, or no port written).
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// Just `port` (port 0: only the OS-chosen port).
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Whether this is every port.
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

    /// The network the pattern covers.
    pub fn net(&self) -> IpNet {
        self.net
    }

    /// The ports the pattern covers.
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

    /// Parses `ip:port`, `[v6]:port`, `net/prefix:ports`, with ports `N`, `N-M` or `*` (or none:
    /// every port); says what is wrong otherwise.
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
    /// Exactly this name (folded).
    Exact(String),
    /// Every name strictly below this suffix (`*.test` covers `db.test`, not `test`).
    Below(String),
}

impl NamePattern {
    /// Parses `name` or `*.suffix`; a lone `*` and address-like names are refused.
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

    /// Whether `name` (compared folded: lower case, no trailing dot) is covered.
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

#[cfg(test)]
mod prop;
