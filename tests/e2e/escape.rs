//! The sandbox holds: the `hostile` guest, granted only `--listen 127.0.0.1:0`, tries to listen,
//! connect, send, resolve, touch files and read the environment where it was not granted.
//!
//! Each attempt must fail on three counts: the guest sees an error, the host records a denial
//! for the right use and address (where the attempt reaches a policy check), and nothing
//! arrives at the native socket or file the attempt aimed at. Positive controls make the same
//! attempts under a grant and see them arrive, so the negative cases cannot pass merely
//! because the guest's attempts were broken.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sockbox::{AuditEvent, Policy, Sandbox};
use tokio::io::AsyncReadExt;

use crate::support::{PATIENCE, policy, test_guest};

/// The one grant of every escape case: a server's own listen address.
const GRANTED: &str = "127.0.0.1:0";

/// How long a native socket waits to prove nothing arrived. The guest has already exited when
/// the wait starts, so anything it sent is queued by then; this is only scheduling slack.
const QUIET: Duration = Duration::from_millis(300);

/// What `hostile` sends over anything it manages to open (guests/hostile/src/main.rs).
pub const MARKER: &[u8] = b"hostile was here\n";

/// One `RESULT <attempt> ok|err <detail>` line of the hostile guest.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub attempt: String,
    pub ok: bool,
    pub detail: String,
}

impl fmt::Display for Attempted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.ok { "ok" } else { "err" };
        write!(f, "{} {outcome} {}", self.attempt, self.detail)
    }
}

/// The RESULT lines in `stdout`, in order.
pub fn hostile_results(stdout: &str) -> Vec<Attempted> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.strip_prefix("RESULT ")?.splitn(3, ' ');
            let attempt = fields.next()?.to_string();
            let ok = match fields.next()? {
                "ok" => true,
                "err" => false,
                _ => return None,
            };
            let detail = fields.next().unwrap_or("").to_string();
            Some(Attempted {
                attempt,
                ok,
                detail,
            })
        })
        .collect()
}

/// A loopback port nothing listens on right now (bound by the OS, then freed).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a loopback port")
        .port()
}

/// A path under the temp dir no other test uses.
pub fn unique_temp_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!(
        "sockbox-{tag}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What one run of the hostile guest printed and what the host decided.
struct HostileRun {
    results: Vec<Attempted>,
    decisions: Vec<AuditEvent>,
    stdout: String,
}

impl HostileRun {
    /// The one result of `attempt`.
    fn result(&self, attempt: &str) -> &Attempted {
        let found: Vec<_> = self
            .results
            .iter()
            .filter(|r| r.attempt == attempt)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one RESULT line for {attempt}; stdout:\n{}",
            self.stdout
        );
        found[0]
    }

    fn decision_log(&self) -> String {
        self.decisions
            .iter()
            .map(|e| format!("    {}\n", e.to_json_line()))
            .collect()
    }
}

/// The hostile guest of each WASI world: every escape attempt is made through both.
pub const HOSTILES: [&str; 2] = ["hostile", "hostile_p3"];

/// Runs `hostile` (one of [`HOSTILES`]) to its end under `policy`; it exits 0 whatever was
/// denied.
async fn run_hostile_as(hostile: &str, policy: Policy, attempts: &[&str]) -> HostileRun {
    let mut guest = Sandbox::builder(test_guest(hostile))
        .policy(policy)
        .args(attempts.iter().copied())
        .capture_output(true)
        .start()
        .await
        .expect("hostile starts");
    let exit = guest.finish(PATIENCE).await;
    let stdout = guest.stdout();
    assert!(
        exit.is_clean(),
        "hostile {exit}\nstdout:\n{stdout}\nstderr:\n{}",
        guest.stderr()
    );
    HostileRun {
        results: hostile_results(&stdout),
        decisions: guest.decisions(),
        stdout,
    }
}

/// A native loopback socket an attempt aims at.
enum Trap {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
}

impl Trap {
    async fn tcp(ip: &str) -> Trap {
        Trap::Tcp(tokio::net::TcpListener::bind((ip, 0)).await.unwrap())
    }

    async fn udp(ip: &str) -> Trap {
        Trap::Udp(tokio::net::UdpSocket::bind((ip, 0)).await.unwrap())
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Trap::Tcp(l) => l.local_addr().unwrap(),
            Trap::Udp(s) => s.local_addr().unwrap(),
        }
    }

    /// What reached this socket within `wait`: a connection's bytes or one datagram.
    async fn heard(&self, wait: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        match self {
            Trap::Tcp(listener) => {
                let (mut stream, peer) = tokio::time::timeout(wait, listener.accept())
                    .await
                    .ok()?
                    .unwrap();
                let mut bytes = Vec::new();
                // The guest closed its end before it exited: this ends at once.
                let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes)).await;
                Some((peer, bytes))
            }
            Trap::Udp(socket) => {
                let mut buf = vec![0; 65536];
                let (n, peer) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
                    .await
                    .ok()?
                    .unwrap();
                buf.truncate(n);
                Some((peer, buf))
            }
        }
    }
}

/// An address a decision may name; IPs are compared canonically (`::ffff:a.b.c.d` is
/// `a.b.c.d`), as the policy judges them.
#[derive(Clone, Debug)]
enum Target {
    Addr(SocketAddr),
    /// Any port of this IP (a port chosen by the OS, or unknown in advance).
    Ip(IpAddr),
    Name(String),
}

impl Target {
    fn addr(s: &str) -> Target {
        Target::Addr(s.parse().expect("socket address"))
    }

    fn ip(s: &str) -> Target {
        Target::Ip(s.parse().expect("IP address"))
    }

    fn matches(&self, addr: &str) -> bool {
        match self {
            Target::Name(name) => name == addr,
            Target::Addr(want) => addr.parse::<SocketAddr>().is_ok_and(|got| {
                got.ip().to_canonical() == want.ip().to_canonical() && got.port() == want.port()
            }),
            Target::Ip(want) => addr
                .parse::<SocketAddr>()
                .is_ok_and(|got| got.ip().to_canonical() == want.to_canonical()),
        }
    }
}

/// Decisions about one of `uses` at `target`.
#[derive(Clone, Debug)]
struct Judged {
    uses: &'static [&'static str],
    target: Target,
}

impl Judged {
    fn matches(&self, ev: &AuditEvent) -> bool {
        self.uses.contains(&ev.use_.as_str()) && self.target.matches(&ev.addr)
    }
}

fn judged(uses: &'static [&'static str], target: Target) -> Judged {
    Judged { uses, target }
}

const LISTEN: &[&str] = &["tcp-listen"];
const CONNECT: &[&str] = &["tcp-connect"];
const UDP_SEND: &[&str] = &["udp-send"];
const UDP_BIND: &[&str] = &["udp-bind"];
const DNS: &[&str] = &["dns"];
/// A socket of a protocol the policy grants no use of is refused at creation.
const UDP_CREATE: &[&str] = &["udp-create"];
/// A UDP bind to `0.0.0.0:0` is exactly the check wasmtime-wasi makes before a send from an
/// unbound socket, so the host cannot tell them apart and reports it under the use the policy
/// would grant it for (docs/policy.md, "Default answers").
const UDP_BIND_OR_IMPLICIT: &[&str] = &["udp-bind", "udp-send"];

/// One escape attempt and the evidence that it failed.
struct Case {
    attempt: String,
    /// Grants beside the listen grant that get the attempt past an earlier check, so the
    /// check under test is the one that refuses it (e.g. a connect grant for another port).
    allow: Vec<String>,
    /// A policy file instead of `--listen 127.0.0.1:0` plus `allow`.
    policy_toml: Option<String>,
    /// The denial the host must record; None where the runtime refuses the attempt before
    /// any policy check (an IPv4-mapped address on an IPv6 socket is an invalid argument).
    denied: Option<Judged>,
    /// An allowed decision matching this is an escape whatever the guest printed.
    never_allowed: Option<Judged>,
    /// The native socket the attempt aims at; it must hear nothing.
    trap: Option<Trap>,
    /// A host file the attempt tries to create; it must not exist afterwards.
    file: Option<PathBuf>,
}

impl Case {
    fn new(attempt: impl Into<String>) -> Case {
        Case {
            attempt: attempt.into(),
            allow: Vec::new(),
            policy_toml: None,
            denied: None,
            never_allowed: None,
            trap: None,
            file: None,
        }
    }

    fn allow(mut self, grant: impl Into<String>) -> Case {
        self.allow.push(grant.into());
        self
    }

    /// The host must deny exactly this, and never allow it.
    fn denied(mut self, judged: Judged) -> Case {
        self.never_allowed.get_or_insert_with(|| judged.clone());
        self.denied = Some(judged);
        self
    }

    fn never_allowed(mut self, judged: Judged) -> Case {
        self.never_allowed = Some(judged);
        self
    }

    fn trap(mut self, trap: Trap) -> Case {
        self.trap = Some(trap);
        self
    }

    fn policy(&self) -> Policy {
        match &self.policy_toml {
            Some(text) => Policy::parse_toml(text, "escape.toml").expect("valid test policy"),
            None => {
                let allow: Vec<&str> = self.allow.iter().map(String::as_str).collect();
                policy(&[GRANTED], &[], &allow)
            }
        }
    }
}

/// A policy file granting the listen address, `dns=db.test` answered with 127.0.0.1, and
/// `extra_allow`.
fn dns_policy(extra_allow: &[String]) -> String {
    let mut allow = vec!["\"dns=db.test\"".to_string()];
    allow.extend(extra_allow.iter().map(|a| format!("{a:?}")));
    format!(
        "listen = [\"{GRANTED}\"]\nallow = [{}]\n[dns-map]\n\"db.test\" = [\"127.0.0.1\"]\n",
        allow.join(", ")
    )
}

/// Every escape attempt, each with the sockets it aims at.
async fn escape_cases() -> Vec<Case> {
    let p = unused_port();
    let decoy = unused_port();
    let decoy_connect = format!("tcp-connect=127.0.0.1:{decoy}");
    let decoy_send = format!("udp-send=127.0.0.1:{decoy}");
    let mut cases = vec![
        // Listening anywhere but the granted address.
        // The wildcard bind passes (it is also the step before a connect and opens nothing);
        // the listen on whatever port it got is refused.
        Case::new("listen:0.0.0.0:0")
            .denied(judged(LISTEN, Target::ip("0.0.0.0")))
            .never_allowed(judged(LISTEN, Target::ip("0.0.0.0"))),
        Case::new(format!("listen:0.0.0.0:{p}"))
            .denied(judged(LISTEN, Target::addr(&format!("0.0.0.0:{p}")))),
        Case::new("listen:[::]:0")
            .denied(judged(LISTEN, Target::ip("::")))
            .never_allowed(judged(LISTEN, Target::ip("::"))),
        Case::new(format!("listen:[::]:{p}"))
            .denied(judged(LISTEN, Target::addr(&format!("[::]:{p}")))),
        Case::new("listen:127.0.0.2:0").denied(judged(LISTEN, Target::addr("127.0.0.2:0"))),
        Case::new("listen:[::1]:0").denied(judged(LISTEN, Target::addr("[::1]:0"))),
        Case::new(format!("listen:127.0.0.1:{p}"))
            .denied(judged(LISTEN, Target::addr(&format!("127.0.0.1:{p}")))),
        // The granted address, another port, written as IPv4-mapped IPv6: through wasi-libc
        // and as raw wasi:sockets calls, so the host sees the address exactly as written.
        Case::new(format!("listen:[::ffff:127.0.0.1]:{p}"))
            .never_allowed(judged(LISTEN, Target::addr(&format!("127.0.0.1:{p}")))),
        Case::new(format!("wasi-listen:[::ffff:127.0.0.1]:{p}"))
            .never_allowed(judged(LISTEN, Target::addr(&format!("127.0.0.1:{p}")))),
        // The same with a connect grant, and through raw wasi:sockets calls.
        Case::new("listen:0.0.0.0:0")
            .allow(&decoy_connect)
            .denied(judged(LISTEN, Target::ip("0.0.0.0"))),
        Case::new("wasi-listen:0.0.0.0:0")
            .allow(&decoy_connect)
            .denied(judged(LISTEN, Target::ip("0.0.0.0"))),
        Case::new("wasi-listen:[::]:0")
            .allow(format!("tcp-connect=[::1]:{decoy}"))
            .denied(judged(LISTEN, Target::ip("::"))),
        // UDP without any UDP grant: not even a socket is created.
        Case::new("udp-bind:127.0.0.1:0")
            .denied(judged(UDP_CREATE, Target::Name("ipv4".into())))
            .never_allowed(judged(UDP_BIND, Target::ip("127.0.0.1"))),
        Case::new("udp-bind:0.0.0.0:0")
            .denied(judged(UDP_CREATE, Target::Name("ipv4".into())))
            .never_allowed(judged(UDP_BIND_OR_IMPLICIT, Target::ip("0.0.0.0"))),
        // With a UDP grant elsewhere, the bind itself is judged.
        Case::new("udp-bind:127.0.0.1:0")
            .allow(&decoy_send)
            .denied(judged(UDP_BIND, Target::addr("127.0.0.1:0"))),
        // Name lookups without a dns grant; `localhost` is one the system would answer.
        Case::new("dns:localhost").denied(judged(DNS, Target::Name("localhost".into()))),
        Case::new("dns:example.test").denied(judged(DNS, Target::Name("example.test".into()))),
        // No preopened directories: no file of the host, by absolute or relative path.
        Case::new("fs:/etc/passwd"),
        Case::new("fs:Cargo.toml"),
        Case::new("fs-list:/"),
        Case::new("fs-list:."),
    ];

    let file = unique_temp_path("hostile-write");
    let mut write = Case::new(format!("fs-write:{}", file.display()));
    write.file = Some(file);
    cases.push(write);

    // Connecting and sending to loopback ports nobody granted, each at a native socket.
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    // No connect grant at all: refused at the connect, naming the destination.
    cases.push(
        Case::new(format!("connect:{to}"))
            .trap(trap)
            .denied(judged(CONNECT, Target::Addr(to)))
            .never_allowed(judged(CONNECT, Target::Addr(to))),
    );
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("connect:{to}"))
            .allow(&decoy_connect)
            .trap(trap)
            .denied(judged(CONNECT, Target::Addr(to))),
    );
    // The listen grant's bind does not carry a connect elsewhere.
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("bound-connect:{to}"))
            .trap(trap)
            .denied(judged(CONNECT, Target::Addr(to))),
    );
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("connect:[::ffff:127.0.0.1]:{}", to.port()))
            .allow(&decoy_connect)
            .trap(trap)
            .never_allowed(judged(CONNECT, Target::Addr(to))),
    );
    let trap = Trap::tcp("::1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("connect:{to}"))
            .allow(format!("tcp-connect=[::1]:{decoy}"))
            .trap(trap)
            .denied(judged(CONNECT, Target::Addr(to))),
    );
    // A dns grant lets the guest resolve a name, not connect to the answer.
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    let mut by_name = Case::new(format!("connect:db.test:{}", to.port()))
        .trap(trap)
        .denied(judged(CONNECT, Target::Addr(to)));
    by_name.policy_toml = Some(dns_policy(std::slice::from_ref(&decoy_connect)));
    cases.push(by_name);

    let trap = Trap::udp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("udp-send:{to}"))
            .trap(trap)
            .denied(judged(UDP_CREATE, Target::Name("ipv4".into())))
            .never_allowed(judged(UDP_SEND, Target::Addr(to))),
    );
    let trap = Trap::udp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("udp-send:{to}"))
            .allow(&decoy_send)
            .trap(trap)
            .denied(judged(UDP_SEND, Target::Addr(to))),
    );
    let trap = Trap::udp("127.0.0.1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("udp-connect:{to}"))
            .allow(&decoy_send)
            .trap(trap)
            .denied(judged(UDP_SEND, Target::Addr(to))),
    );
    let trap = Trap::udp("::1").await;
    let to = trap.addr();
    cases.push(
        Case::new(format!("udp-send:{to}"))
            .allow(format!("udp-send=[::1]:{decoy}"))
            .trap(trap)
            .denied(judged(UDP_SEND, Target::Addr(to))),
    );
    cases
}

/// What one case showed: its result line, and every way it got out.
struct Outcome {
    line: String,
    escapes: Vec<String>,
    decision_log: String,
}

async fn try_to_escape(hostile: &str, case: Case) -> Outcome {
    let run = run_hostile_as(hostile, case.policy(), &[&case.attempt]).await;
    let result = run.result(&case.attempt).clone();
    let mut escapes = Vec::new();
    if result.ok {
        escapes.push(format!("the guest succeeded: {}", result.detail));
    }
    if let Some(denied) = &case.denied {
        let detail = result.detail.to_lowercase();
        if !result.ok && !detail.contains("denied") {
            escapes.push(format!(
                "the guest's error is not access-denied: {}",
                result.detail
            ));
        }
        if !run
            .decisions
            .iter()
            .any(|e| !e.allowed() && denied.matches(e))
        {
            escapes.push(format!(
                "the host recorded no denial of {:?} at {:?}",
                denied.uses, denied.target
            ));
        }
    }
    if let Some(never) = &case.never_allowed {
        for ev in run
            .decisions
            .iter()
            .filter(|e| e.allowed() && never.matches(e))
        {
            escapes.push(format!("the host allowed it: {}", ev.to_json_line()));
        }
    }
    if let Some(trap) = &case.trap
        && let Some((peer, bytes)) = trap.heard(QUIET).await
    {
        escapes.push(format!(
            "{} got {} bytes from {peer}: {:?}",
            trap.addr(),
            bytes.len(),
            String::from_utf8_lossy(&bytes)
        ));
    }
    if let Some(file) = &case.file
        && file.exists()
    {
        escapes.push(format!("{} was created on the host", file.display()));
        let _ = std::fs::remove_file(file);
    }
    let grants = match &case.policy_toml {
        Some(_) => "dns policy file".to_string(),
        None if case.allow.is_empty() => "--listen 127.0.0.1:0".to_string(),
        None => format!(
            "--listen 127.0.0.1:0 --allow {}",
            case.allow.join(" --allow ")
        ),
    };
    Outcome {
        line: format!("{hostile}: {result}   [{grants}]"),
        escapes,
        decision_log: run.decision_log(),
    }
}

#[tokio::test]
async fn no_attempt_escapes() {
    let started = Instant::now();
    let mut runs = Vec::new();
    for hostile in HOSTILES {
        for case in escape_cases().await {
            runs.push(try_to_escape(hostile, case));
        }
    }
    let count = runs.len();
    let outcomes = futures::future::join_all(runs).await;
    let mut report = String::new();
    let mut escaped = String::new();
    for outcome in &outcomes {
        report += &format!("  {}\n", outcome.line);
        if !outcome.escapes.is_empty() {
            escaped += &format!(
                "  {}\n{}    decisions:\n{}",
                outcome.line,
                outcome
                    .escapes
                    .iter()
                    .map(|e| format!("    ESCAPE: {e}\n"))
                    .collect::<String>(),
                outcome.decision_log
            );
        }
    }
    println!(
        "{count} escape attempts in {:?}:\n{report}",
        started.elapsed()
    );
    assert!(escaped.is_empty(), "escapes:\n{escaped}");
}

/// The controls: the same attempts, granted, get through, so the guest can do what the
/// escape cases prove it may not.
#[tokio::test]
async fn granted_attempts_get_through() {
    for hostile in HOSTILES {
        granted_attempts_of(hostile).await;
    }
}

async fn granted_attempts_of(hostile: &str) {
    struct Control {
        attempt: String,
        policy: Policy,
        trap: Option<Trap>,
    }
    let control = |attempt: String, grant: Option<String>, trap: Option<Trap>| Control {
        attempt,
        policy: policy(
            &[GRANTED],
            &[],
            &grant.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        trap,
    };
    let mut controls = vec![
        control("listen:127.0.0.1:0".into(), None, None),
        control("wasi-listen:127.0.0.1:0".into(), None, None),
    ];
    for kind in ["connect", "bound-connect"] {
        let trap = Trap::tcp("127.0.0.1").await;
        let to = trap.addr();
        controls.push(control(
            format!("{kind}:{to}"),
            Some(format!("tcp-connect={to}")),
            Some(trap),
        ));
    }
    let trap = Trap::tcp("::1").await;
    let to = trap.addr();
    controls.push(control(
        format!("connect:{to}"),
        Some(format!("tcp-connect={to}")),
        Some(trap),
    ));
    for kind in ["udp-send", "udp-connect"] {
        let trap = Trap::udp("127.0.0.1").await;
        let to = trap.addr();
        controls.push(control(
            format!("{kind}:{to}"),
            Some(format!("udp-send={to}")),
            Some(trap),
        ));
    }
    controls.push(Control {
        attempt: "dns:db.test".into(),
        policy: Policy::parse_toml(&dns_policy(&[]), "escape.toml").unwrap(),
        trap: None,
    });
    let trap = Trap::tcp("127.0.0.1").await;
    let to = trap.addr();
    controls.push(Control {
        attempt: format!("connect:db.test:{}", to.port()),
        policy: Policy::parse_toml(&dns_policy(&[format!("tcp-connect={to}")]), "escape.toml")
            .unwrap(),
        trap: Some(trap),
    });

    let started = Instant::now();
    let outcomes = futures::future::join_all(controls.into_iter().map(|c| async move {
        let run = run_hostile_as(hostile, c.policy, &[&c.attempt]).await;
        let result = run.result(&c.attempt).clone();
        let mut failures = Vec::new();
        if !result.ok {
            failures.push(format!("the guest failed: {}", result.detail));
        }
        if let Some(ev) = run.decisions.iter().find(|e| !e.allowed()) {
            failures.push(format!("the host denied {}", ev.to_json_line()));
        }
        if let Some(trap) = &c.trap {
            match trap.heard(PATIENCE).await {
                Some((_, bytes)) if bytes == MARKER => {}
                Some((peer, bytes)) => failures.push(format!(
                    "{} got {:?} from {peer}, not the marker",
                    trap.addr(),
                    String::from_utf8_lossy(&bytes)
                )),
                None => failures.push(format!("nothing arrived at {}", trap.addr())),
            }
        }
        (result, failures, run.decision_log())
    }))
    .await;
    let report: String = outcomes
        .iter()
        .map(|(r, _, _)| format!("  {r}\n"))
        .collect();
    println!("{hostile} controls in {:?}:\n{report}", started.elapsed());
    let failed: String = outcomes
        .iter()
        .filter(|(_, failures, _)| !failures.is_empty())
        .map(|(result, failures, log)| format!("  {result}\n    {failures:?}\n{log}"))
        .collect();
    assert!(failed.is_empty(), "granted attempts that failed:\n{failed}");
}

#[tokio::test]
async fn the_guest_sees_only_the_args_and_env_it_is_given() {
    // The test process has an environment to leak; the guest must see none of it.
    assert!(std::env::var_os("PATH").is_some());
    for hostile in HOSTILES {
        let run = run_hostile_as(hostile, policy(&[GRANTED], &[], &[]), &["env", "args"]).await;
        let env = run.result("env");
        assert!(env.ok && env.detail == "[]", "{env}");
        let args = run.result("args");
        assert_eq!(
            args.detail,
            format!(r#"["{hostile}", "env", "args"]"#),
            "{args}"
        );
        assert!(run.decisions.is_empty(), "{}", run.decision_log());
    }
}

#[test]
fn the_host_environment_does_not_leak_through_the_cli() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let key = format!("SOCKBOX_SECRET_{}_{nanos}", std::process::id());
    let value = format!("hunter2-{nanos:x}");
    // Set on the sockbox process only: setting it in this multi-threaded test process would
    // race with the other tests reading the environment.
    let out = crate::support::sockbox_command()
        .args(["run", test_guest("hostile").to_str().unwrap(), "--", "env"])
        .env(&key, &value)
        .env("HOME", "/home/sockbox-test")
        .stdin(Stdio::null())
        .output()
        .expect("run sockbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let results = hostile_results(&stdout);
    assert_eq!(results.len(), 1, "{stdout}");
    assert!(results[0].ok && results[0].detail == "[]", "{}", results[0]);
    for leak in [key.as_str(), value.as_str(), "PATH", "HOME", "sockbox-test"] {
        assert!(!stdout.contains(leak), "{leak} leaked: {stdout}");
    }
}
