//! Security of the compile cache and of the Python build (issue 14, items 9 and 10): whoever
//! can write the cache, restore it or plant a link in it does not get code loaded, and a Python
//! guest's top-level code, which componentize-py runs at build time, writes nothing of the host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{Cli, PATIENCE};

/// A path of this test's own under the target dir: removed, not created.
fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("security-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// sockbox with `cache` as its compile cache and `key` as its cache key file.
fn sockbox_with(cache: &Path, key: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sockbox"));
    command
        .env("SOCKBOX_CACHE_DIR", cache)
        .env("SOCKBOX_CACHE_KEY_FILE", key)
        .env("SOCKBOX_LOG", "sockbox=debug");
    command
}

/// Runs the built-in `guest` with `cache` and `key`, asks it once with `ask`, stops it;
/// returns the answer and sockbox's stderr.
fn run_builtin(
    guest: &str,
    cache: &Path,
    key: &Path,
    ask: fn(SocketAddr) -> Vec<u8>,
) -> (Vec<u8>, String) {
    let mut command = sockbox_with(cache, key);
    command.args(["run", guest, "--listen", "127.0.0.1:0"]);
    let mut cli = Cli::from_command(command);
    let (_, addr) = cli.ready();
    let answer = ask(addr);
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    (answer, stderr)
}

/// Sends a line, half-closes, reads to the end.
fn ask_echo(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"which guest?\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    back
}

/// Runs echo and asserts it is echo that answers (not a planted guest); returns stderr.
fn run_echo(cache: &Path, key: &Path) -> String {
    let (answer, stderr) = run_builtin("echo", cache, key, ask_echo);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "which guest?\n",
        "echo must answer, not a planted guest\n{stderr}"
    );
    stderr
}

/// The single cache entry under `cache` (`engine-…/<sha>.cwasm`).
fn only_entry(cache: &Path) -> PathBuf {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(cache).unwrap().flatten() {
        if dir.file_name().to_string_lossy().starts_with("engine-") {
            for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
                found.push(entry.path());
            }
        }
    }
    assert_eq!(found.len(), 1, "one entry: {found:?}");
    found.pop().unwrap()
}

/// The compiled artifact of the built-in `time` guest (wasmtime's serialization, valid for
/// this engine), taken from a cache of its own: what an attacker who can run sockbox once
/// has. Both entry layouts put it after an 8-byte magic and a 32-byte sum or tag.
fn time_artifact() -> Vec<u8> {
    let cache = fresh("time-source");
    let key = fresh("time-source-key").join("cache.key");
    let (answer, stderr) = run_builtin("time", &cache, &key, |addr| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = Vec::new();
        stream.read_to_end(&mut line).unwrap();
        line
    });
    assert!(
        answer.ends_with(b"\n"),
        "time answered: {answer:?}\n{stderr}"
    );
    std::fs::read(only_entry(&cache)).unwrap()[40..].to_vec()
}

/// A forged entry: `magic`, the plain SHA-256 of the artifact, the artifact. `sockbx01` is
/// f74a5f3's layout, which trusted exactly that; `sockbx02` is today's magic with a sum in
/// place of the tag, which the attacker cannot compute without the key.
fn forged(magic: &[u8; 8], artifact: &[u8]) -> Vec<u8> {
    let mut file = magic.to_vec();
    file.extend_from_slice(&Sha256::digest(artifact));
    file.extend_from_slice(artifact);
    file
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_planted_entry_of_another_guest_is_compiled_again_not_loaded() {
    let cache = fresh("planted");
    let key = fresh("planted-key").join("cache.key");
    let first = run_echo(&cache, &key);
    assert!(first.contains("origin=Compiled"), "{first}");
    let entry = only_entry(&cache);
    let genuine = std::fs::read(&entry).unwrap();
    let second = run_echo(&cache, &key);
    assert!(
        second.contains("origin=Cached"),
        "the cache works: {second}"
    );

    let artifact = time_artifact();
    for magic in [b"sockbx01", b"sockbx02"] {
        let planted = forged(magic, &artifact);
        std::fs::write(&entry, &planted).unwrap();
        // run_echo asserts that echo, not time, answers.
        let stderr = run_echo(&cache, &key);
        assert!(stderr.contains("origin=Compiled"), "{stderr}");
        assert_ne!(
            std::fs::read(&entry).unwrap(),
            planted,
            "the entry was rewritten"
        );
    }
    // A genuine entry of this user, restored (e.g. by CI) under another key: compiled again.
    std::fs::write(&entry, &genuine).unwrap();
    let other_key = fresh("planted-other-key").join("cache.key");
    let stderr = run_echo(&cache, &other_key);
    assert!(stderr.contains("origin=Compiled"), "{stderr}");
    assert!(
        stderr.contains("authentication tag does not match"),
        "{stderr}"
    );
}

#[test]
fn a_cache_dir_others_can_write_or_own_is_not_used() {
    let cache = fresh("open");
    let key = fresh("open-key").join("cache.key");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    for _ in 0..2 {
        let stderr = run_echo(&cache, &key);
        assert_eq!(
            stderr.matches("not using the compile cache").count(),
            1,
            "one warning: {stderr}"
        );
        assert!(stderr.contains("writable by group or others"), "{stderr}");
        assert!(stderr.contains("origin=Compiled"), "{stderr}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "nothing written"
        );
    }
    assert_eq!(mode(&cache), 0o777, "left as it was");

    // A key kept inside the cache would travel with it: refused too.
    let private = fresh("key-inside");
    let stderr = run_echo(&private, &private.join("cache.key"));
    assert!(stderr.contains("is inside it"), "{stderr}");
    assert!(stderr.contains("origin=Compiled"), "{stderr}");

    // Owned by another user (root can make one here): refused as well.
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        let stderr = run_echo(&cache, &key);
        assert!(stderr.contains("not using the compile cache"), "{stderr}");
        assert!(stderr.contains("belongs to user 65534"), "{stderr}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "nothing written"
        );
    }
}

#[test]
fn created_cache_dirs_and_files_are_private() {
    let base = fresh("modes");
    let cache = base.join("nested/cache");
    let key = fresh("modes-key").join("sub/cache.key");
    run_echo(&cache, &key);
    let entry = only_entry(&cache);
    assert_eq!(mode(&cache), 0o700, "cache dir");
    assert_eq!(mode(&base.join("nested")), 0o700, "a parent it created");
    assert_eq!(mode(entry.parent().unwrap()), 0o700, "engine dir");
    assert_eq!(mode(&entry), 0o600, "entry");
    assert_eq!(mode(&key), 0o600, "key file");
    assert_eq!(mode(key.parent().unwrap()), 0o700, "key dir");
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 32);
    assert!(
        !key.starts_with(&cache),
        "the key is kept outside the cache"
    );

    // A key others could read is replaced (which costs one compile), never used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let old = std::fs::read(&key).unwrap();
    let stderr = run_echo(&cache, &key);
    assert!(stderr.contains("making a new one"), "{stderr}");
    assert!(stderr.contains("origin=Compiled"), "{stderr}");
    assert_eq!(mode(&key), 0o600);
    assert_ne!(std::fs::read(&key).unwrap(), old);
}

#[test]
fn links_planted_in_the_cache_are_not_followed() {
    let cache = fresh("links");
    let key = fresh("links-key").join("cache.key");
    let elsewhere = fresh("links-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    run_echo(&cache, &key);
    let entry = only_entry(&cache);
    let planted = forged(b"sockbx01", &time_artifact());

    // A link at the entry's path, to a file outside holding another guest: not read, not
    // written through; the link is replaced by a real entry.
    let victim = elsewhere.join("victim.cwasm");
    std::fs::write(&victim, &planted).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&victim, &entry).unwrap();
    let stderr = run_echo(&cache, &key);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(stderr.contains("origin=Compiled"), "{stderr}");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        planted,
        "not written through"
    );
    assert!(std::fs::symlink_metadata(&entry).unwrap().is_file());

    // A link in place of the engine directory: the same.
    let engine_dir = entry.parent().unwrap();
    let outside_dir = elsewhere.join("engine");
    std::fs::create_dir(&outside_dir).unwrap();
    let outside_entry = outside_dir.join(entry.file_name().unwrap());
    std::fs::write(&outside_entry, &planted).unwrap();
    std::fs::remove_dir_all(engine_dir).unwrap();
    std::os::unix::fs::symlink(&outside_dir, engine_dir).unwrap();
    let stderr = run_echo(&cache, &key);
    assert!(stderr.contains("origin=Compiled"), "{stderr}");
    assert_eq!(
        std::fs::read(&outside_entry).unwrap(),
        planted,
        "not written through"
    );
    assert_eq!(std::fs::read_dir(&outside_dir).unwrap().count(), 1);
    assert!(std::fs::symlink_metadata(engine_dir).unwrap().is_dir());
    assert_eq!(mode(engine_dir), 0o700);
}

/// A Python guest whose top-level code, run by componentize-py at build time, tries to write
/// next to itself, at every directory it can see and at `targets` (host paths), tries to
/// connect to `port`, and keeps what it saw; at run time it tells every client.
fn hostile_app(targets: &[&Path], port: u16) -> String {
    let targets: Vec<String> = targets.iter().map(|p| p.display().to_string()).collect();
    let targets = serde_json::to_string(&targets).unwrap();
    format!(
        r#""""Hostile at build time (test): see security_cache.rs."""
import json
import os

from sockbox_guest import Guest, serve_tcp

SEEN = {{"env": sorted(os.environ), "root": [], "wrote": [], "connect": None}}


def attempt(path):
    try:
        with open(os.path.join(path, "pwned.txt"), "w") as f:
            f.write("written by a guest at build time\n")
        SEEN["wrote"].append(path)
    except Exception:
        pass


attempt(os.path.dirname(os.path.abspath(__file__)))
try:
    SEEN["root"] = sorted(os.listdir("/"))
except Exception as e:
    SEEN["root"] = repr(e)
for name in SEEN["root"] if isinstance(SEEN["root"], list) else []:
    attempt("/" + name)
# The preopens componentize-py gives the build: its standard library and helpers, and one per
# `--python-path` (and site-packages) directory, named by their index.
SEEN["pythonpath"] = os.environ.get("PYTHONPATH")
SEEN["preopens"] = {{}}
for path in ["/python", "/bundled"] + ["/%d" % i for i in range(8)]:
    try:
        SEEN["preopens"][path] = sorted(os.listdir(path))[:20]
        attempt(path)
    except Exception:
        pass
for path in json.loads({targets:?}):
    attempt(path)
try:
    import socket

    s = socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", {port}))
    SEEN["connect"] = "connected"
except Exception as e:
    SEEN["connect"] = repr(e)

REPORT = json.dumps(SEEN).encode() + b"\n"


async def tell(reader, writer):
    writer.write(REPORT)
    await writer.drain()


class Run(Guest):
    async def main(self):
        await serve_tcp(tell)
"#
    )
}

/// Runs `command` to its end, within `limit`; returns (status, stderr).
fn run_bounded(mut command: Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockbox");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().unwrap())
}

/// Every file under `dir` (links not followed), relative.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_python_guest_s_build_time_code_writes_nothing_of_the_host() {
    let base = fresh("py-build");
    let guest = base.join("home/guest");
    let home = base.join("home");
    let config = base.join("home/.config");
    // A virtual environment the user has active: componentize-py preopened its site-packages
    // read-write, where a `.pth` file runs at every start of that Python.
    let site = base.join("venv/lib/python3.12/site-packages");
    let tmp = base.join("tmp");
    let cache = base.join("cache");
    let key = base.join("keys/cache.key");
    for dir in [&guest, &config, &site, &tmp] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // Nobody should connect here: the build has no network.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = guest.join("app.py");
    std::fs::write(
        &script,
        hostile_app(
            &[&guest, &home, &config, &site, &tmp, Path::new("/tmp")],
            port,
        ),
    )
    .unwrap();
    let before: Vec<String> = tree(&base)
        .into_iter()
        .filter(|p| !p.starts_with("cache") && !p.starts_with("keys"))
        .collect();
    let with_env = |mut command: Command| {
        command
            .env("SOCKBOX_COMPONENTIZE_PY", crate::python::componentize_py())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", &config)
            .env("VIRTUAL_ENV", base.join("venv"))
            .env("TMPDIR", &tmp)
            .env("SOCKBOX_TEST_CANARY", "host-environment");
        command
    };

    let out = base.join("out/app.wasm");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut build = with_env(sockbox_with(&cache, &key));
    build.arg("build").arg(&script).arg("--output").arg(&out);
    let (code, stderr) = run_bounded(build, Duration::from_secs(600));
    assert_eq!(code, Some(0), "{stderr}");
    let after: Vec<String> = tree(&base)
        .into_iter()
        .filter(|p| !p.starts_with("cache") && !p.starts_with("keys") && !p.starts_with("out"))
        .collect();
    assert_eq!(
        after, before,
        "the build left something behind (or wrote beside the guest)"
    );
    assert!(
        listener.accept().is_err(),
        "the build connected to the host"
    );

    // A build planted in the Python build cache (another component at the right name, as
    // f74a5f3 stored it: the bare component) is built again, not used.
    let entries: Vec<_> = std::fs::read_dir(cache.join("python"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let planted = sockbox::builtin::get("time").unwrap();
    std::fs::write(entries[0].path(), planted).unwrap();
    let mut run = with_env(sockbox_with(&cache, &key));
    run.arg("run")
        .arg(&script)
        .args(["--listen", "127.0.0.1:0"]);
    let mut cli = Cli::from_command(run);
    let (_, addr) = cli.ready();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut report = String::new();
    stream.read_to_string(&mut report).unwrap();
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        report.starts_with('{'),
        "the guest's own component answers, not the planted one: {report:?}\n{stderr}"
    );
    assert!(stderr.contains("ignoring the cached build"), "{stderr}");
    assert_ne!(std::fs::read(entries[0].path()).unwrap(), planted);

    // What the build-time code saw (for docs/security.md), and that it saw nothing of ours.
    eprintln!("build-time view of the guest: {report}");
    let seen: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    let env: Vec<&str> = seen["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !env.contains(&"SOCKBOX_TEST_CANARY"),
        "host environment: {env:?}"
    );
    assert!(!env.contains(&"HOME"), "host environment: {env:?}");
    assert_ne!(seen["connect"], "connected");
    let after: Vec<String> = tree(&base)
        .into_iter()
        .filter(|p| !p.starts_with("cache") && !p.starts_with("keys") && !p.starts_with("out"))
        .collect();
    assert_eq!(after, before, "the second build left something behind");
    assert!(
        listener.accept().is_err(),
        "the build connected to the host"
    );
}

#[test]
fn a_python_guest_whose_build_time_code_loops_is_stopped() {
    let base = fresh("py-loop");
    let tmp = base.join("tmp");
    std::fs::create_dir_all(base.join("guest")).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let script = base.join("guest/spin.py");
    std::fs::write(&script, "while True:\n    pass\n").unwrap();
    let mut build = sockbox_with(&base.join("cache"), &base.join("keys/cache.key"));
    build
        .env("SOCKBOX_COMPONENTIZE_PY", crate::python::componentize_py())
        .env("SOCKBOX_BUILD_TIMEOUT", "5")
        .env("TMPDIR", &tmp)
        .arg("build")
        .arg(&script)
        .arg("--output")
        .arg(base.join("spin.wasm"));
    let started = Instant::now();
    let (code, stderr) = run_bounded(build, Duration::from_secs(120));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did not finish within 5 s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(!base.join("spin.wasm").exists());
    assert_eq!(
        tree(&tmp),
        Vec::<String>::new(),
        "the build directory was removed"
    );
}
