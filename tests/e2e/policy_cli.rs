//! The policy as a user meets it on the command line: the audit file, `--fail-on-denial`,
//! policy-file errors, and the one stderr line per denial.

use std::fmt;
use std::path::Path;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::escape::{hostile_results, unique_temp_path, unused_port};
use crate::support::{sockbox, test_guest};

/// The contract's audit keys, in their order.
const AUDIT_KEYS: [&str; 6] = ["ts", "guest", "use", "addr", "decision", "rule"];

fn hostile() -> String {
    test_guest("hostile").to_str().unwrap().to_string()
}

/// Runs `sockbox run hostile FLAGS -- ATTEMPTS` to its end: (status, stdout, stderr).
fn run_hostile(flags: &[&str], attempts: &[&str]) -> (Option<i32>, String, String) {
    let guest = hostile();
    let mut args = vec!["run", guest.as_str()];
    args.extend(flags);
    args.push("--");
    args.extend(attempts);
    sockbox(&args)
}

/// The keys of a JSON object in the order written (`serde_json::Value` sorts them).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// The audit file's lines, each checked against the contract's shape.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("the audit file exists");
    assert!(text.ends_with('\n'), "every line is complete: {text:?}");
    text.lines()
        .map(|line| {
            let Keys(keys) = serde_json::from_str(line).expect("a JSON object per line");
            assert_eq!(keys, AUDIT_KEYS, "{line}");
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let ts = event["ts"].as_str().expect("ts is a string");
            chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap_or_else(|e| panic!("ts {ts:?} is not RFC 3339: {e}"));
            assert_eq!(event["guest"], "hostile", "{line}");
            assert!(
                event["decision"] == "allow" || event["decision"] == "deny",
                "{line}"
            );
            event
        })
        .collect()
}

#[test]
fn audit_file_records_every_decision_in_the_contract_shape() {
    let path = unique_temp_path("audit.jsonl");
    let audit = path.to_str().unwrap();
    let flags = ["--listen", "127.0.0.1:0", "--audit", audit];
    let attempts = ["listen:127.0.0.1:0", "listen:127.0.0.2:0"];
    let (code, stdout, stderr) = run_hostile(&flags, &attempts);
    assert_eq!(code, Some(0), "{stderr}");
    let results = hostile_results(&stdout);
    assert_eq!(results.len(), 2, "{stdout}");
    assert!(results[0].ok && !results[1].ok, "{stdout}");

    let events = audit_lines(&path);
    let (allowed, denied): (Vec<_>, Vec<_>) = events.iter().partition(|e| e["decision"] == "allow");
    // The bind to port 0, then the listen on the port the OS chose: both by the flag.
    assert!(allowed.len() >= 2, "{events:#?}");
    for e in &allowed {
        assert_eq!(e["use"], "tcp-listen", "{e}");
        assert_eq!(e["rule"], "--listen 127.0.0.1:0", "{e}");
    }
    assert!(
        allowed.iter().any(|e| e["addr"] == "127.0.0.1:0"),
        "{events:#?}"
    );
    assert!(
        allowed.iter().any(|e| {
            let addr: std::net::SocketAddr = e["addr"].as_str().unwrap().parse().unwrap();
            addr.ip().to_string() == "127.0.0.1" && addr.port() != 0
        }),
        "the listen is judged on the port actually taken: {events:#?}"
    );
    assert_eq!(denied.len(), 1, "{events:#?}");
    assert_eq!(denied[0]["use"], "tcp-listen");
    assert_eq!(denied[0]["addr"], "127.0.0.2:0");
    assert!(denied[0]["rule"].is_null(), "{}", denied[0]);

    // A second run appends to the file rather than replacing it.
    let (code, _, stderr) = run_hostile(&flags, &attempts);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(audit_lines(&path).len(), 2 * events.len());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn fail_on_denial_decides_the_exit_status() {
    let listen = ["--listen", "127.0.0.1:0"];
    let strict = ["--listen", "127.0.0.1:0", "--fail-on-denial"];
    // The guest carries on after the denial and exits 0 by itself...
    let (code, stdout, stderr) = run_hostile(&listen, &["listen:127.0.0.2:0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("RESULT listen:127.0.0.2:0 err"), "{stdout}");
    // ...so the 3 is the flag's doing.
    let (code, stdout, stderr) = run_hostile(&strict, &["listen:127.0.0.2:0"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stdout.contains("RESULT listen:127.0.0.2:0 err"), "{stdout}");
    // Without a denial the flag changes nothing.
    let (code, stdout, stderr) = run_hostile(&strict, &["listen:127.0.0.1:0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("RESULT listen:127.0.0.1:0 ok"), "{stdout}");
}

#[test]
fn a_malformed_policy_file_is_exit_2_naming_file_and_line() {
    let cases = [
        (
            "listen = [\"127.0.0.1:0\"]\nlisen = [\"127.0.0.1:7000\"]\n",
            2,
            "lisen",
        ),
        (
            "# a server\nallow = [\"dns=*.test\"]\nlisten = [\"localhost:80\"]\n",
            3,
            "localhost:80",
        ),
        (
            "listen = [\"127.0.0.1:0\"]\nallow = [\"tcp-connect=127.0.0.300:80\"]\n",
            2,
            "127.0.0.300",
        ),
    ];
    for (text, line, named) in cases {
        let path = unique_temp_path("policy.toml");
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let (code, stdout, stderr) = run_hostile(&["--policy", file], &["args"]);
        assert_eq!(code, Some(2), "{text}\n{stderr}");
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
        assert!(
            stderr.contains(&format!("{file}:{line}:")),
            "names {file}:{line}: {stderr}"
        );
        assert!(stderr.contains(named), "names {named}: {stderr}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn each_denial_prints_one_line_naming_the_grant_to_add() {
    let (connect_port, udp_port, decoy) = (unused_port(), unused_port(), unused_port());
    let audit = unique_temp_path("denials.jsonl");
    let allow_connect = format!("tcp-connect=127.0.0.1:{decoy}");
    let allow_send = format!("udp-send=127.0.0.1:{decoy}");
    let connect = format!("connect:127.0.0.1:{connect_port}");
    let send = format!("udp-send:127.0.0.1:{udp_port}");
    let flags = [
        "--listen",
        "127.0.0.1:0",
        "--allow",
        &allow_connect,
        "--allow",
        &allow_send,
        "--audit",
        audit.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = run_hostile(&flags, &[&connect, "listen:127.0.0.2:0", &send]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        hostile_results(&stdout).iter().all(|r| !r.ok),
        "all three denied: {stdout}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("denied")).collect();
    let grants = [
        format!("--allow tcp-connect=127.0.0.1:{connect_port}"),
        "--listen 127.0.0.2:0".to_string(),
        format!("--allow udp-send=127.0.0.1:{udp_port}"),
    ];
    assert_eq!(lines.len(), grants.len(), "one line per denial: {stderr}");
    for grant in &grants {
        let naming: Vec<_> = lines
            .iter()
            .filter(|l| l.ends_with(grant.as_str()))
            .collect();
        assert_eq!(naming.len(), 1, "one line names {grant}: {stderr}");
    }
    let denials = audit_lines(&audit)
        .into_iter()
        .filter(|e| e["decision"] == "deny")
        .count();
    assert_eq!(denials, lines.len(), "as many lines as audited denials");
    std::fs::remove_file(&audit).unwrap();

    // Without any connect grant: still exactly one line, naming the destination's grant.
    let (code, _, stderr) = run_hostile(&["--listen", "127.0.0.1:0"], &[&connect]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("denied")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let target = connect.trim_start_matches("connect:");
    assert!(
        lines[0].contains(&format!("--allow tcp-connect={target}")),
        "{stderr}"
    );
}
