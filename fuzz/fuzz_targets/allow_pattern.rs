//! `Policy::from_flags` with any `--listen`, `--udp` and `--allow` values, and the rule parser
//! under it (`Rule::parse_grant`, `AddrPattern::parse`, `NamePattern::parse`): Ok or Err,
//! never a panic; an error names the flag; a pattern that parses prints as text that parses
//! back to it, and matches what it says it matches.

#![no_main]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sockbox::Policy;
use sockbox::policy::{AddrPattern, NamePattern, Pattern, Rule, Use};

#[derive(Arbitrary, Debug)]
struct Input {
    listen: Vec<Text>,
    udp: Vec<Text>,
    allow: Vec<Text>,
    /// Addresses and names to ask the parsed patterns about.
    probes: Vec<(IpAddr, u16)>,
    names: Vec<String>,
}

/// A flag value: any string, or one put together from the pieces patterns are made of.
#[derive(Arbitrary, Debug)]
enum Text {
    Raw(String),
    Pieces(Vec<Piece>),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Use(u8),
    Eq,
    Ip(IpAddr),
    Prefix(u8),
    Colon,
    Port(u16),
    Dash,
    Star,
    Open,
    Close,
    Dot,
    Label(String),
    Space,
    Raw(String),
}

impl Text {
    fn text(&self) -> String {
        let pieces = match self {
            Text::Raw(s) => return s.clone(),
            Text::Pieces(pieces) => pieces,
        };
        let mut s = String::new();
        for piece in pieces {
            match piece {
                Piece::Use(n) => s.push_str(Use::ALL[usize::from(*n) % Use::ALL.len()].as_str()),
                Piece::Eq => s.push('='),
                Piece::Ip(ip) => write!(s, "{ip}").unwrap(),
                Piece::Prefix(n) => write!(s, "/{n}").unwrap(),
                Piece::Colon => s.push(':'),
                Piece::Port(p) => write!(s, "{p}").unwrap(),
                Piece::Dash => s.push('-'),
                Piece::Star => s.push('*'),
                Piece::Open => s.push('['),
                Piece::Close => s.push(']'),
                Piece::Dot => s.push('.'),
                Piece::Label(l) => s.push_str(l),
                Piece::Space => s.push(' '),
                Piece::Raw(r) => s.push_str(r),
            }
        }
        s
    }
}

fuzz_target!(|input: Input| {
    let texts = |v: &[Text]| v.iter().map(Text::text).collect::<Vec<_>>();
    let (listen, udp, allow) = (texts(&input.listen), texts(&input.udp), texts(&input.allow));
    let probes: Vec<SocketAddr> = input
        .probes
        .iter()
        .map(|&(ip, port)| SocketAddr::new(ip, port))
        .collect();

    match Policy::from_flags(&listen, &udp, &allow) {
        Ok(policy) => {
            assert_eq!(policy.rules.len(), listen.len() + udp.len() + allow.len());
            for &addr in &policy.listen {
                assert!(policy.decide(Use::TcpListen, addr).allowed);
            }
            for &addr in &policy.udp {
                assert!(policy.decide(Use::UdpBind, addr).allowed);
            }
            for rule in &policy.rules {
                check_rule(rule, &probes, &input.names);
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            assert!(
                ["--listen ", "--udp ", "--allow "]
                    .iter()
                    .any(|flag| message.starts_with(flag)),
                "error does not name the flag: {message}"
            );
        }
    }

    // The parts on their own, on every text, whatever from_flags made of it.
    for text in listen.iter().chain(&udp).chain(&allow) {
        if let Ok(rule) = Rule::parse_grant(text, "fuzz") {
            check_rule(&rule, &probes, &input.names);
        }
        if let Ok(p) = AddrPattern::parse(text) {
            check_addr(&p, &probes);
        }
        if let Ok(p) = NamePattern::parse(text) {
            check_name(&p, &input.names);
        }
    }
});

fn check_rule(rule: &Rule, probes: &[SocketAddr], names: &[String]) {
    let printed = rule.pattern.to_string();
    let again = Rule::new(rule.use_, &printed, "again")
        .unwrap_or_else(|e| panic!("{rule:?} prints as {printed:?}, which fails: {e:#}"));
    assert_eq!(
        again.pattern, rule.pattern,
        "{printed:?} reads back differently"
    );
    match &rule.pattern {
        Pattern::Addr(p) => {
            assert!(rule.use_.takes_address());
            check_addr(p, probes);
            for &addr in probes {
                assert_eq!(rule.matches_addr(rule.use_, addr), p.matches(addr));
            }
        }
        Pattern::Name(p) => {
            assert_eq!(rule.use_, Use::Dns);
            check_name(p, names);
        }
    }
}

fn check_addr(p: &AddrPattern, probes: &[SocketAddr]) {
    let printed = p.to_string();
    assert_eq!(
        AddrPattern::parse(&printed).ok(),
        Some(*p),
        "{p:?} prints as {printed:?}"
    );
    // The network's own address, on the lowest port of the range, is covered.
    let first = SocketAddr::new(p.net().network(), p.ports().lo);
    assert!(
        p.matches(first) || first.ip().is_unspecified(),
        "{p} misses {first}"
    );
    for &addr in probes {
        let matches = p.matches(addr);
        // A listening socket is judged no more strictly than a bind.
        if matches {
            assert!(p.matches_listening(addr));
        }
        // An IPv4 address written as mapped IPv6 is the same address.
        if let IpAddr::V4(v4) = addr.ip() {
            let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port());
            assert_eq!(
                p.matches(mapped),
                matches,
                "{p} judges {addr} and {mapped} apart"
            );
        }
        assert_eq!(
            matches,
            p.matches_ip(addr.ip()) && p.ports().contains(addr.port())
        );
    }
    if p.names_unspecified() {
        let any = SocketAddr::new(p.net().addr(), p.ports().lo);
        assert!(p.matches(any));
    }
}

fn check_name(p: &NamePattern, names: &[String]) {
    let printed = p.to_string();
    assert_eq!(
        NamePattern::parse(&printed).ok().as_ref(),
        Some(p),
        "{p:?} prints as {printed:?}"
    );
    match p {
        NamePattern::Exact(name) => {
            assert!(p.matches(name));
            assert!(p.matches(&name.to_ascii_uppercase()));
            assert!(p.matches(&format!("{name}.")));
            assert!(!p.matches(&format!("x.{name}")));
        }
        NamePattern::Below(suffix) => {
            assert!(!p.matches(suffix), "*.{suffix} covers {suffix} itself");
            assert!(p.matches(&format!("a.{suffix}")));
            assert!(p.matches(&format!("A.B.{suffix}.")));
        }
    }
    for name in names {
        // Case and one trailing dot do not make a different name.
        assert_eq!(p.matches(name), p.matches(&name.to_ascii_uppercase()));
    }
}
