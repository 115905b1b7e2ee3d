//! The guest source resolver: a guest reference is loaded and compiled once per process, and
//! every instance (`--instances`) and every restart (`sockbox up`) starts from that. Counted
//! on the one step a user waits for most: componentize-py, run through a wrapper that logs
//! each of its runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::python::componentize_py;
use crate::support::{Cli, PATIENCE, sockbox_command, temp_dir};

/// A componentize-py that appends its arguments to `dir/runs`, one line per run, then runs
/// the real one.
fn counting_componentize_py(dir: &Path) -> (PathBuf, PathBuf) {
    let runs = dir.join("runs");
    let wrapper = dir.join("componentize-py");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            runs.display(),
            componentize_py().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, runs)
}

/// (version checks, builds) the wrapper saw.
fn count_runs(runs: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let versions = text.lines().filter(|l| l.trim() == "--version").count();
    (versions, text.lines().count() - versions)
}

fn echo_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/python/echo.py")
}

#[test]
fn four_instances_of_a_py_guest_without_the_cache_build_it_once() {
    let dir = temp_dir("resolver-instances");
    let (wrapper, runs) = counting_componentize_py(&dir);
    let mut command = sockbox_command();
    command
        .env("SOCKBOX_COMPONENTIZE_PY", &wrapper)
        .arg("run")
        .arg(echo_py())
        .args(["--no-cache", "--instances", "4", "--listen", "127.0.0.1:0"]);
    let mut run = Cli::from_command(command);
    let (_, addr) = run.ready();
    // Every instance serves (the kernel spreads clients over them): the guest works.
    for _ in 0..8 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"once").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"once");
    }
    run.signal("TERM");
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(0), "{stderr}");
    // Before the resolver: five builds and five version checks (validate, then each instance).
    assert_eq!(count_runs(&runs), (1, 1), "componentize-py runs: {runs:?}");
}

#[test]
fn up_restarts_of_a_py_guest_do_not_resolve_it_again() {
    let dir = temp_dir("resolver-restarts");
    let (wrapper, runs) = counting_componentize_py(&dir);
    // No address granted: echo.py raises at once, so it ends at every start and is started
    // again (3 times) until it is given up; its build comes from the test's cache.
    let manifest = dir.join("up.toml");
    std::fs::write(
        &manifest,
        format!(
            "[supervisor]\nrestart-delay = 10\nmax-restarts = 3\n\n\
             [guests.py]\ncomponent = '{}'\nrestart = \"always\"\n",
            echo_py().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sockbox"))
        .env("SOCKBOX_CACHE_DIR", crate::support::compile_cache_dir())
        .env("SOCKBOX_COMPONENTIZE_PY", &wrapper)
        .arg("up")
        .arg(&manifest)
        .output()
        .expect("run sockbox up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("guest `py` started (run 4)"), "{stderr}");
    assert!(stderr.contains("guest `py` given up"), "{stderr}");
    // One resolve for validation and all four starts: one version check, at most one build
    // (none when the cache already holds echo.py). Before: one version check per start too.
    let (versions, builds) = count_runs(&runs);
    assert_eq!(versions, 1, "componentize-py runs: {runs:?}\n{stderr}");
    assert!(builds <= 1, "componentize-py runs: {runs:?}\n{stderr}");
}
