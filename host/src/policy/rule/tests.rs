//! Table tests of rules and patterns: parsing, matching, decisions, suggested grants.

use super::*;
use crate::policy::pattern::*;

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
