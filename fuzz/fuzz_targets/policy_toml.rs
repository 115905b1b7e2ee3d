//! `Policy::parse_toml` on any text, and on policy-shaped TOML built from parts: it returns
//! Ok or Err and never panics, every error names the file, and a policy that loads is
//! self-consistent (see `check_policy`).

#![no_main]

use std::fmt::Write as _;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sockbox::Policy;
use sockbox::policy::{Rule, Use, explain};

const FILE: &str = "fuzz.toml";

#[derive(Arbitrary, Debug)]
enum Input {
    /// Whatever text.
    Text(String),
    /// A policy file put together from keys the parser knows.
    Shaped(Shaped),
}

#[derive(Arbitrary, Debug)]
struct Shaped {
    listen: Option<Vec<Value>>,
    udp: Option<Vec<Value>>,
    allow: Option<Vec<Value>>,
    dns_map: Vec<(Value, Vec<Value>)>,
    limits: Option<Vec<(LimitKey, Value)>>,
    /// Appended as is, to reach the parser's errors at the end of a good file.
    tail: String,
}

#[derive(Arbitrary, Debug)]
enum LimitKey {
    MaxMemory,
    MaxConnections,
    MaxBusy,
    Other(String),
}

/// A TOML value, mostly strings that look like what the keys take.
#[derive(Arbitrary, Debug)]
enum Value {
    Addr(std::net::SocketAddr),
    Ip(std::net::IpAddr),
    /// A `USE=PATTERN` grant, the use picked from `Use::ALL`.
    Grant(u8, GrantPattern),
    Name(Vec<String>),
    Size(u64, u8),
    Int(i64),
    Bool(bool),
    Str(String),
}

#[derive(Arbitrary, Debug)]
enum GrantPattern {
    Net(std::net::IpAddr, Option<u8>, Option<(u16, Option<u16>)>),
    Name(bool, Vec<String>),
    Any(String),
}

const UNITS: &[&str] = &["", "B", "KiB", "MiB", "gib", "k", "M", "TB", "ms", "s", "x"];

impl Value {
    fn toml(&self) -> String {
        match self {
            Value::Addr(a) => quote(&a.to_string()),
            Value::Ip(ip) => quote(&ip.to_string()),
            Value::Grant(use_, p) => {
                let use_ = Use::ALL[usize::from(*use_) % Use::ALL.len()];
                quote(&format!("{use_}={}", p.text()))
            }
            Value::Name(labels) => quote(&labels.join(".")),
            Value::Size(n, unit) => {
                quote(&format!("{n}{}", UNITS[usize::from(*unit) % UNITS.len()]))
            }
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => quote(s),
        }
    }
}

impl GrantPattern {
    fn text(&self) -> String {
        match self {
            GrantPattern::Net(ip, prefix, ports) => {
                let mut s = ip.to_string();
                if let Some(p) = prefix {
                    write!(s, "/{p}").unwrap();
                }
                if ip.is_ipv6() && ports.is_some() {
                    s = format!("[{s}]");
                }
                match ports {
                    Some((lo, Some(hi))) => write!(s, ":{lo}-{hi}").unwrap(),
                    Some((lo, None)) => write!(s, ":{lo}").unwrap(),
                    None => {}
                }
                s
            }
            GrantPattern::Name(below, labels) => {
                let name = labels.join(".");
                if *below { format!("*.{name}") } else { name }
            }
            GrantPattern::Any(s) => s.clone(),
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04X}", u32::from(c) & 0xFFFF).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(values: &[Value]) -> String {
    let items: Vec<String> = values.iter().map(Value::toml).collect();
    format!("[{}]", items.join(", "))
}

impl Shaped {
    fn toml(&self) -> String {
        let mut doc = String::new();
        for (key, values) in [
            ("listen", &self.listen),
            ("udp", &self.udp),
            ("allow", &self.allow),
        ] {
            if let Some(values) = values {
                writeln!(doc, "{key} = {}", list(values)).unwrap();
            }
        }
        if !self.dns_map.is_empty() {
            doc.push_str("[dns-map]\n");
            for (name, answers) in &self.dns_map {
                let value = match answers.as_slice() {
                    [one] => one.toml(),
                    many => list(many),
                };
                writeln!(doc, "{} = {value}", name.toml()).unwrap();
            }
        }
        if let Some(limits) = &self.limits {
            doc.push_str("[limits]\n");
            for (key, value) in limits {
                let key = match key {
                    LimitKey::MaxMemory => "max-memory".to_string(),
                    LimitKey::MaxConnections => "max-connections".to_string(),
                    LimitKey::MaxBusy => "max-busy".to_string(),
                    LimitKey::Other(k) => quote(k),
                };
                writeln!(doc, "{key} = {}", value.toml()).unwrap();
            }
        }
        doc.push_str(&self.tail);
        doc
    }
}

fuzz_target!(|input: Input| {
    let text = match input {
        Input::Text(text) => text,
        Input::Shaped(shaped) => shaped.toml(),
    };
    match Policy::parse_toml(&text, FILE) {
        Ok(policy) => check_policy(&policy),
        Err(e) => {
            let message = format!("{e:#}");
            assert!(
                message.starts_with(FILE),
                "error does not name the file: {message}"
            );
        }
    }
});

/// What any policy that loads must satisfy.
fn check_policy(policy: &Policy) {
    for rule in &policy.rules {
        // A rule's pattern, printed, reads back as the same pattern.
        let printed = rule.pattern.to_string();
        let again = Rule::new(rule.use_, &printed, "again")
            .unwrap_or_else(|e| panic!("{rule:?} prints as {printed:?}, which fails: {e:#}"));
        assert_eq!(
            again.pattern, rule.pattern,
            "{printed:?} reads back differently"
        );
    }
    for &addr in &policy.listen {
        assert!(
            policy.decide(Use::TcpListen, addr).allowed,
            "listen {addr} is denied"
        );
        assert!(policy.decide_listening(addr).allowed);
    }
    for &addr in &policy.udp {
        assert!(
            policy.decide(Use::UdpBind, addr).allowed,
            "udp {addr} is denied"
        );
    }
    for (name, answers) in &policy.dns_map {
        assert!(!answers.is_empty());
        assert_eq!(policy.mapped_addrs(name), Some(answers.as_slice()));
        let answer = explain(policy, Use::Dns, name).expect("a dns-map name is a name");
        assert_eq!(answer.allowed, policy.decide_name(name).allowed);
        let _ = answer.to_string();
    }
    // Every use asked about every address the policy names: an answer, never a panic.
    for addr in policy.listen.iter().chain(&policy.udp) {
        for use_ in Use::ALL.into_iter().filter(|u| u.takes_address()) {
            let answer = explain(policy, use_, &addr.to_string()).expect("an address");
            let _ = answer.to_string();
        }
    }
    let _ = policy.warnings();
    let pinned = policy.pinned_to(&policy.listen, &policy.udp);
    assert_eq!(pinned.rules.len(), policy.rules.len());
    let merged = policy.clone().merge(policy.clone());
    assert_eq!(merged.rules.len(), 2 * policy.rules.len());
    assert_eq!(
        merged.listen, policy.listen,
        "merging a policy with itself adds no address"
    );
    assert_eq!(merged.limits, policy.limits);
}
