//! Security (issue 14): what one guest may hold of the host. Memory is counted over all of a
//! guest's memories, tables and their elements are capped, a lingering close still counts as
//! a socket, name lookups in flight are bounded and over-long names are refused before
//! anything records them, and empty writes do not grow the host (GHSA-5m8g-xhq4-4h93).
//!
//! The CLI tests read the sockbox process's own descriptors and peak RSS from `/proc`.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sockbox::{GuestExit, Policy, Sandbox};

use crate::escape::{Attempted, hostile_results};
use crate::limits::hostile;
use crate::support::{Cli, PATIENCE, component_file, policy, temp_dir, test_guest};

/// Runs `wat` as a component under `policy` to its end.
async fn run_wat(name: &str, wat: &str, policy: Policy) -> anyhow::Result<GuestExit> {
    let mut guest = Sandbox::builder(component_file(name, wat))
        .policy(policy)
        .capture_output(true)
        .start()
        .await?;
    Ok(guest.finish(PATIENCE).await)
}

/// A component around core module `$m`, whose export `run` (returning 0 for success) is the
/// component's `wasi:cli/run`.
fn command(core_module: &str) -> String {
    format!(
        r#"(component
    {core_module}
    (core instance $i (instantiate $m))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $cli (export "run" (func $run)))
    (export "wasi:cli/run@0.2.12" (instance $cli)))"#
    )
}

/// A core module with four memories of one page; `run` grows each by 300 MiB in turn and executes `unreachable` in `$fail_memory_N` at the first growth refused, so the
/// trap's backtrace names the memory.
const FOUR_MEMORIES: &str = r#"(core module $m
        (memory $m0 1) (memory $m1 1) (memory $m2 1) (memory $m3 1)
        (func $fail_memory_0 unreachable)
        (func $fail_memory_1 unreachable)
        (func $fail_memory_2 unreachable)
        (func $fail_memory_3 unreachable)
        (func (export "run") (result i32)
            (if (i32.eq (memory.grow $m0 (i32.const 4800)) (i32.const -1)) (then call $fail_memory_0))
            (if (i32.eq (memory.grow $m1 (i32.const 4800)) (i32.const -1)) (then call $fail_memory_1))
            (if (i32.eq (memory.grow $m2 (i32.const 4800)) (i32.const -1)) (then call $fail_memory_2))
            (if (i32.eq (memory.grow $m3 (i32.const 4800)) (i32.const -1)) (then call $fail_memory_3))
            i32.const 0))"#;

#[tokio::test]
async fn max_memory_is_the_sum_of_all_memories_of_a_guest() {
    // 3 x 300 MiB fit under the default 1 GiB, the fourth does not.
    let exit = run_wat("four-memories", &command(FOUR_MEMORIES), Policy::default())
        .await
        .expect("the component loads");
    let GuestExit::Trapped(err) = exit else {
        panic!("four memories of 300 MiB under 1 GiB must not all grow; the guest {exit}");
    };
    let message = format!("{err:?}");
    assert!(message.contains("fail_memory_3"), "{message}");
    assert!(!message.contains("fail_memory_2"), "{message}");

    // Under 2 GiB all four fit: the limit is the sum, not a fixed share per memory.
    let mut roomy = Policy::default();
    roomy.limits.max_memory = Some(2 << 30);
    let exit = run_wat("four-memories-roomy", &command(FOUR_MEMORIES), roomy)
        .await
        .expect("the component loads");
    assert!(exit.is_clean(), "{exit}");
}

#[test]
fn the_cli_says_which_limit_refused_the_memory() {
    let path = component_file("four-memories-cli", &command(FOUR_MEMORIES));
    let (code, _, stderr) = crate::support::sockbox(&["run", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "refused to grow a memory to 314638336 bytes: its memories together \
             would hold 1258553344 bytes, over max-memory (1073741824 bytes)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("fail_memory_3"), "{stderr}");
}

/// Memories declared with their initial size count too: four of 300 MiB cannot even start.
#[tokio::test]
async fn initial_memories_count_against_max_memory() {
    let wat = FOUR_MEMORIES.replace("(memory $m3 1)", "(memory $m3 4800)");
    let wat = wat.replace("(memory $m2 1)", "(memory $m2 4800)");
    let wat = wat.replace("(memory $m1 1)", "(memory $m1 4800)");
    let wat = command(&wat.replace("(memory $m0 1)", "(memory $m0 4800)"));
    let mut tight = Policy::default();
    tight.limits.max_memory = Some(1000 << 20);
    let err = run_wat("initial-memories", &wat, tight)
        .await
        .expect_err("1 200 MiB of initial memory under 1 000 MiB must not instantiate");
    assert!(
        format!("{err:#}").contains("exceeds memory limits"),
        "{err:#}"
    );
}

/// A core module with two tables grown by 700 000 elements each: the host allows 2^20
/// elements in all.
const TWO_TABLES: &str = r#"(core module $m
        (table $t0 0 funcref) (table $t1 0 funcref)
        (func $fail_table_0 unreachable)
        (func $fail_table_1 unreachable)
        (func (export "run") (result i32)
            (if (i32.eq (table.grow $t0 (ref.null func) (i32.const 700000)) (i32.const -1))
                (then call $fail_table_0))
            (if (i32.eq (table.grow $t1 (ref.null func) (i32.const 700000)) (i32.const -1))
                (then call $fail_table_1))
            i32.const 0))"#;

#[tokio::test]
async fn table_elements_are_capped_over_all_tables() {
    let exit = run_wat("two-tables", &command(TWO_TABLES), Policy::default())
        .await
        .expect("the component loads");
    let GuestExit::Trapped(err) = exit else {
        panic!("1.4 million table elements must not all be granted; the guest {exit}");
    };
    let message = format!("{err:?}");
    assert!(message.contains("fail_table_1"), "{message}");
    assert!(!message.contains("fail_table_0"), "{message}");
}

#[tokio::test]
async fn memories_and_tables_per_guest_are_capped() {
    let module = |decl: &str| {
        command(&format!(
            r#"(core module $m {decl} (func (export "run") (result i32) i32.const 0))"#
        ))
    };
    let memories = module(&"(memory 0)".repeat(40));
    let err = run_wat("forty-memories", &memories, Policy::default())
        .await
        .expect_err("40 memories must not instantiate");
    assert!(format!("{err:#}").contains("memor"), "{err:#}");
    let tables = module(&"(table 0 funcref)".repeat(120));
    let err = run_wat("many-tables", &tables, Policy::default())
        .await
        .expect_err("120 tables must not instantiate");
    assert!(format!("{err:#}").contains("table"), "{err:#}");
}

/// A peer that accepts and never reads, with a small receive buffer so a sender fills it fast.
struct Decoy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Decoy {
    fn start() -> Decoy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let deadline = Instant::now() + 4 * PATIENCE;
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        });
        Decoy {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting; returns how many connections it accepted.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads the CLI's stdout up to `count` RESULT lines (the guest then holds, still running).
/// Its stderr is drained meanwhile (a full pipe would stall the host); past `2 * PATIENCE` the
/// process is killed, so a read never hangs the test.
fn results(cli: &mut Cli, count: usize) -> (Vec<Attempted>, StderrSink) {
    let stderr = StderrSink::drain(cli);
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let pid = cli.child.id().to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + 2 * PATIENCE;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid])
                        .status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut stdout = String::new();
    while hostile_results(&stdout).len() < count {
        let mut line = String::new();
        let n = cli.stdout.read_line(&mut line).expect("read stdout");
        if n == 0 {
            done.store(true, Ordering::Relaxed);
            let (code, _) = cli.finish();
            let (_, stderr) = stderr.finish();
            panic!("sockbox ended ({code:?}) before its results: {stdout}\n{stderr}");
        }
        stdout.push_str(&line);
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    (hostile_results(&stdout), stderr)
}

/// The CLI's stderr read in the background: its size, and its first 4 KiB.
struct StderrSink(std::thread::JoinHandle<(usize, String)>);

impl StderrSink {
    fn drain(cli: &mut Cli) -> StderrSink {
        use std::io::Read;
        let mut pipe = cli.child.stderr.take().expect("stderr not taken yet");
        StderrSink(std::thread::spawn(move || {
            let (mut len, mut head) = (0, Vec::new());
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                len += n;
                let room = 4096usize.saturating_sub(head.len()).min(n);
                head.extend_from_slice(&buf[..room]);
            }
            (len, String::from_utf8_lossy(&head).into_owned())
        }))
    }

    /// Once the process has ended: its size and head.
    fn finish(self) -> (usize, String) {
        self.0.join().unwrap()
    }
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Peak resident memory of `pid` so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

fn hostile_cli(flags: &[&str], attempts: &[&str]) -> Cli {
    let guest = test_guest("hostile");
    let mut args = vec!["run", guest.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(attempts);
    Cli::spawn(&args)
}

#[test]
fn lingering_closes_count_against_max_sockets_and_the_host_descriptors() {
    let decoy = Decoy::start();
    let grant = format!("tcp-connect={}", decoy.addr);
    let attack = format!("linger:{}:100", decoy.addr);
    let mut cli = hostile_cli(
        &["--max-sockets", "8", "--allow", &grant],
        &[&attack, "hold"],
    );
    let (results, _stderr) = results(&mut cli, 1);
    let result = &results[0];
    // Each connection dropped with its write pending lingers (30 s): the ninth socket is
    // refused inside the guest, by the cap, while the eight closes are still under way.
    assert!(!result.ok, "{result}");
    assert!(
        result
            .detail
            .starts_with("lingered 8, then new-socket-limit"),
        "{result}"
    );
    let held = descriptors(cli.child.id());
    assert!(held < 40, "sockbox holds {held} descriptors");
    drop(cli);
    assert_eq!(decoy.finish(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_lookups_in_flight_are_bounded_and_dropped_ones_give_their_slot_back() {
    // `localhost` comes from /etc/hosts: the system resolver, and no network.
    let granted = policy(&[], &[], &["dns=localhost"]);
    let (results, decisions) = hostile(
        granted,
        &[
            "dns-hold:localhost:17",
            "dns-churn:localhost:5000",
            "dns-settle:localhost:16",
            "dns:localhost",
        ],
    )
    .await;
    let [held, churn, settled, resolved] = &results[..] else {
        panic!("{results:?}");
    };
    assert!(!held.ok, "{held}");
    assert!(
        held.detail
            .starts_with("held 16, then temporary-resolver-failure"),
        "{held}"
    );
    assert!(churn.ok, "{churn}");
    assert!(
        churn.detail.starts_with("started 5000, refused "),
        "{churn}"
    );
    // Every slot of the churn came back: the guest holds 16 again, and resolves.
    assert!(settled.ok, "{settled}");
    assert!(
        resolved.ok && resolved.detail.contains("127.0.0.1"),
        "{resolved}"
    );
    // Each refusal by the cap is recorded as one, naming it.
    let refused: Vec<_> = decisions.iter().filter(|e| !e.allowed()).collect();
    assert!(!refused.is_empty());
    for event in refused {
        assert_eq!(event.use_, "dns");
        assert_eq!(
            event.rule.as_deref(),
            Some("limit: 16 name lookups in flight")
        );
    }
}

#[tokio::test]
async fn a_name_longer_than_dns_allows_is_invalid_and_not_recorded() {
    // WASI 0.2's lookup resource and 0.3's one async call: the same bound before anything.
    for hostile in ["hostile", "hostile_p3"] {
        long_names_are_invalid(hostile).await;
    }
}

async fn long_names_are_invalid(hostile: &str) {
    let granted = policy(&[], &[], &["dns=*.test"]);
    let mut guest = Sandbox::builder(test_guest(hostile))
        .policy(granted)
        .args(["dns-long:254:3", "dns-long:300:3", "dns-long:65536:3"])
        .capture_output(true)
        .start()
        .await
        .expect("hostile starts");
    let exit = guest.finish(PATIENCE).await;
    assert!(exit.is_clean(), "{exit}");
    let results = hostile_results(&guest.stdout());
    assert_eq!(results.len(), 3, "{hostile}: {}", guest.stdout());
    for result in results {
        assert!(result.ok, "{hostile}: {result}");
        assert!(result.detail.contains("invalid-argument"), "{result}");
    }
    assert_eq!(guest.decisions().len(), 0, "{:?}", guest.decisions());
}

/// Peak RSS of sockbox running hostile's `attempts` (then holding), their results, and the
/// size and head of its stderr.
fn peak_rss_of(flags: &[&str], attempts: &[&str]) -> (u64, Vec<Attempted>, (usize, String)) {
    let mut all: Vec<&str> = attempts.to_vec();
    all.push("hold");
    let mut cli = hostile_cli(flags, &all);
    let (results, stderr) = results(&mut cli, attempts.len());
    let peak = peak_rss(cli.child.id());
    cli.signal("KILL");
    cli.finish();
    (peak, results, stderr.finish())
}

#[test]
fn three_hundred_lookups_of_a_1_mib_name_leave_no_trace_and_no_memory() {
    let dir = temp_dir("long-names");
    let (control_audit, audit) = (dir.join("control.jsonl"), dir.join("audit.jsonl"));
    // The same lookups of a short name: denied, so each is recorded and printed.
    let (control, _, _) = peak_rss_of(
        &["--audit", control_audit.to_str().unwrap()],
        &["dns-long:10:300"],
    );
    let (peak, results, (stderr_len, stderr)) = peak_rss_of(
        &["--audit", audit.to_str().unwrap()],
        &["dns-long:1048576:300"],
    );
    assert!(results[0].ok, "{}", results[0]);
    assert!(
        results[0]
            .detail
            .starts_with("300 refused with invalid-argument"),
        "{}",
        results[0]
    );
    let audit_len = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    assert!(audit_len < 64 * 1024, "audit log of {audit_len} bytes");
    assert!(
        stderr_len < 64 * 1024,
        "stderr of {stderr_len} bytes: {stderr}"
    );
    assert!(
        peak < control + (64 << 20),
        "peak RSS {} MiB, {} MiB with short names",
        peak >> 20,
        control >> 20
    );
}

#[test]
fn one_and_a_half_million_empty_writes_keep_host_memory_flat() {
    let decoy = Decoy::start();
    let grant = format!("tcp-connect={}", decoy.addr);
    let tcp = format!("empty-writes:tcp={}:500000", decoy.addr);
    let (control, _, _) = peak_rss_of(
        &["--allow", &grant],
        &["empty-writes:stdout:1000", "empty-writes:stderr:1000"],
    );
    let attempts = [
        "empty-writes:stdout:500000",
        "empty-writes:stderr:500000",
        tcp.as_str(),
    ];
    let (peak, results, _) = peak_rss_of(&["--allow", &grant], &attempts);
    for result in &results {
        assert!(result.ok, "{result}");
        assert_eq!(result.detail, "wrote nothing 500000 times");
    }
    assert!(
        peak < control + (32 << 20),
        "peak RSS {} MiB, {} MiB after a thousand writes",
        peak >> 20,
        control >> 20
    );
}
