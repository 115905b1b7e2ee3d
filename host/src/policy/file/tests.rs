//! Tests of building a policy from flags and files: parsing, values, errors with lines, merging.

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
        format!("{err:#}").starts_with("cannot read policy file /nonexistent/sockbox-policy.toml"),
        "{err:#}"
    );
}
