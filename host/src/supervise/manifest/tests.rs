//! Tests of the manifest: the contract example, lines in errors, paths, settings, and which
//! addresses two guests may share.

use super::*;

fn parse(text: &str) -> Result<Manifest> {
    Manifest::parse(text, "up.toml", Path::new("/nowhere"))
}

fn error(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("the manifest must not load"))
}

#[test]
fn the_contract_example_loads() {
    let manifest = parse(
        r#"
[guests.echo]
component = "echo"
listen = ["127.0.0.1:7000"]
[guests.clock]
component = "time"
udp = ["127.0.0.1:9000"]
restart = "on-failure"
instances = 2
[guests.clock.limits]
max-memory = "32MiB"
"#,
    )
    .unwrap();
    let names: Vec<_> = manifest.guests.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["echo", "clock"], "file order, not alphabetical");
    let clock = &manifest.guests[1];
    assert_eq!(clock.restart, Restart::OnFailure);
    assert_eq!(clock.instances, 2);
    assert_eq!(clock.policy.limits.max_memory, Some(32 << 20));
    assert_eq!(clock.policy.udp, ["127.0.0.1:9000".parse().unwrap()]);
    assert_eq!(manifest.guests[0].restart, Restart::Never);
    assert_eq!(manifest.settings, RestartSettings::default());
    assert_eq!(
        clock.summary(),
        "clock component=time udp=127.0.0.1:9000 restart=on-failure instances=2"
    );
}

#[test]
fn rules_name_the_manifest_line() {
    let manifest = parse("[guests.p]\ncomponent = \"proxy\"\nallow = [\"dns=*.test\"]\n").unwrap();
    assert_eq!(
        manifest.guests[0].policy.rules[0].source,
        "up.toml:3: allow \"dns=*.test\""
    );
}

#[test]
fn relative_component_paths_are_taken_from_the_manifest_directory() {
    let dir = std::env::temp_dir().join(format!("sockbox-manifest-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("g")).unwrap();
    std::fs::write(dir.join("g/x.wasm"), b"").unwrap();
    let manifest = Manifest::parse(
        "[guests.x]\ncomponent = \"g/x.wasm\"\naudit = \"x.jsonl\"\n",
        "up.toml",
        &dir,
    )
    .unwrap();
    assert!(
        matches!(&manifest.guests[0].source, GuestSource::File(p) if *p == dir.join("g/x.wasm"))
    );
    assert_eq!(manifest.guests[0].audit, Some(dir.join("x.jsonl")));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn supervisor_settings_override_the_defaults() {
    let manifest = parse(
        "[supervisor]\nrestart-delay = 20\nmax-restart-delay = \"1s\"\nmax-restarts = 0\n\
             stable-after = \"2s\"\nrestart-window = \"30s\"\nstop-grace = \"500ms\"\n\
             [guests.e]\ncomponent = \"echo\"\n",
    )
    .unwrap();
    let s = manifest.settings;
    assert_eq!(s.first_delay, Duration::from_millis(20));
    assert_eq!(s.max_delay, Duration::from_secs(1));
    assert_eq!(s.max_restarts, 0);
    assert_eq!(s.stable_after, Duration::from_secs(2));
    assert_eq!(s.window, Duration::from_secs(30));
    assert_eq!(s.grace, Duration::from_millis(500));
}

#[test]
fn a_metrics_table_names_the_listener_address() {
    let guest = "[guests.e]\ncomponent = \"echo\"\n";
    assert_eq!(parse(guest).unwrap().metrics, None);
    let manifest = parse(&format!("[metrics]\naddress = \"0.0.0.0:9100\"\n{guest}")).unwrap();
    assert_eq!(manifest.metrics, Some("0.0.0.0:9100".parse().unwrap()));
    let bad = error(&format!("[metrics]\naddress = \"localhost\"\n{guest}"));
    assert!(
        bad.starts_with("up.toml:2: [metrics] address must be IP:PORT"),
        "{bad}"
    );
    let unknown = error(&format!("[metrics]\nport = 9100\n{guest}"));
    assert!(unknown.contains("unknown field `port`"), "{unknown}");
}

#[test]
fn mistakes_are_load_errors_naming_the_line() {
    let cases = [
        (
            "[guests.e]\ncomponent = \"echo\"\nbogus = 1\n",
            "up.toml:3: unknown field `bogus`",
        ),
        (
            "[guests.e]\nlisten = [\"127.0.0.1:0\"]\n",
            "up.toml:1: guest `e` has no component",
        ),
        (
            "[guests.e]\ncomponent = \"echo\"\nrestart = \"often\"\n",
            "up.toml:3: guest `e`: restart must be",
        ),
        ("# empty\n", "up.toml: no guests"),
        (
            "[guests.e]\ncomponent = \"nope\"\n",
            "up.toml:2: guest `e`: no built-in guest named `nope`",
        ),
        (
            "[guests.e]\ncomponent = \"g/nope.wasm\"\n",
            "up.toml:2: guest `e`: component /nowhere/g/nope.wasm does not exist",
        ),
        (
            "[guests.e]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1\"]\n",
            "up.toml:3: listen: expected ip:port",
        ),
        (
            "[guests.e]\ncomponent = \"echo\"\ninstances = 0\n",
            "up.toml:3: guest `e`: instances must be",
        ),
        (
            "[guests.\"a b\"]\ncomponent = \"echo\"\n",
            "up.toml:1: guest name \"a b\"",
        ),
        (
            "[supervisor]\nrestart-delay = \"soon\"\n[guests.e]\ncomponent = \"echo\"\n",
            "up.toml:2: restart-delay",
        ),
        (
            "[guest.e]\ncomponent = \"echo\"\n",
            "up.toml:1: unknown field `guest`",
        ),
        (
            "[guests.a]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:7000\"]\n\
                 [guests.b]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:7001\",\n  \"0.0.0.0:7000\"]\n",
            "up.toml:7: guest `b` wants tcp 0.0.0.0:7000, which guest `a` already has",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(
            message.starts_with(expected),
            "{text:?}\n  gave: {message}\n  want: {expected}"
        );
    }
}

#[test]
fn a_range_another_guest_may_bind_in_cannot_cover_an_address() {
    // Issue 14, item 11: b's range covered a's port, so b's instances could join a's group.
    let cases = [
        (
            "tcp-listen=127.0.0.1:7000-7010",
            "listen",
            "tcp 127.0.0.1:7005",
        ),
        (
            "tcp-listen=127.0.0.0/8:7005",
            "listen",
            "tcp 127.0.0.1:7005",
        ),
        ("tcp-listen=0.0.0.0:7005", "listen", "tcp 127.0.0.1:7005"),
        ("udp-bind=127.0.0.1:7000-7010", "udp", "udp 127.0.0.1:7005"),
    ];
    for (grant, key, named) in cases {
        let text = format!(
            "[guests.a]\ncomponent = \"echo\"\n{key} = [\"127.0.0.1:7005\"]\n\
                 [guests.b]\ncomponent = \"echo\"\ninstances = 2\nallow = [\"{grant}\"]\n"
        );
        let message = error(&text);
        let want = format!("up.toml:4: guest `b` may bind {named} by up.toml:7: allow");
        assert!(message.starts_with(&want), "{grant}: {message}");
    }
    // Another port, transport or family is fine.
    for grant in [
        "tcp-listen=127.0.0.1:7006-7010",
        "udp-bind=127.0.0.1:7005",
        "tcp-listen=[::]:7005",
    ] {
        parse(&format!(
            "[guests.a]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:7005\"]\n\
                 [guests.b]\ncomponent = \"echo\"\nallow = [\"{grant}\"]\n"
        ))
        .unwrap();
    }
}

#[test]
fn the_same_port_on_both_transports_or_port_zero_twice_is_fine() {
    parse(
            "[guests.a]\ncomponent = \"time\"\nlisten = [\"127.0.0.1:7000\", \"127.0.0.1:0\"]\n\
             [guests.b]\ncomponent = \"time\"\nudp = [\"127.0.0.1:7000\"]\nlisten = [\"127.0.0.1:0\"]\n",
        )
        .unwrap();
}
