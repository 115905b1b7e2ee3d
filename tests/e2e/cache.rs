//! The on-disk cache of compiled components: a second start loads what the first compiled, and
//! a damaged entry is compiled again, never used.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use crate::support::{Cli, sockbox_command};

/// A fresh, empty cache directory for one test.
fn fresh_cache(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cache-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs echo with `cache` (or `--no-cache`), checks it echoes, stops it; returns its stderr.
fn run_echo(cache: &Path, extra: &[&str]) -> String {
    let mut command = sockbox_command();
    command
        .env("SOCKBOX_CACHE_DIR", cache)
        .env("SOCKBOX_LOG", "sockbox=debug")
        .args(["run", "echo", "--listen", "127.0.0.1:0"])
        .args(extra);
    let mut cli = Cli::from_command(command);
    let (_, addr) = cli.ready();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(b"cached?").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"cached?");
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
    stderr
}

/// Every cache entry under `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for engine_dir in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(engine_dir.path()).into_iter().flatten() {
            found.push(entry.unwrap().path());
        }
    }
    found
}

#[test]
fn the_second_start_loads_the_compiled_component_from_disk() {
    let cache = fresh_cache("reuse");
    let first = run_echo(&cache, &[]);
    assert!(first.contains("origin=Compiled"), "{first}");
    let stored = entries(&cache);
    assert_eq!(stored.len(), 1, "one entry for echo: {stored:?}");
    assert_eq!(stored[0].extension().unwrap(), "cwasm");

    let second = run_echo(&cache, &[]);
    assert!(second.contains("origin=Cached"), "{second}");
}

#[test]
fn a_corrupt_entry_is_compiled_again_and_rewritten() {
    let cache = fresh_cache("corrupt");
    run_echo(&cache, &[]);
    let entry = entries(&cache).pop().expect("an entry");
    let whole = std::fs::read(&entry).unwrap();

    // Truncated, then one flipped byte in the code: both refused, both repaired.
    for damaged in [whole[..whole.len() / 2].to_vec(), {
        let mut flipped = whole.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        flipped
    }] {
        std::fs::write(&entry, &damaged).unwrap();
        let stderr = run_echo(&cache, &[]);
        assert!(stderr.contains("ignoring the cached component"), "{stderr}");
        assert!(stderr.contains("origin=Compiled"), "{stderr}");
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            whole,
            "the entry was rewritten"
        );
    }
}

#[test]
fn no_cache_neither_reads_nor_writes() {
    let cache = fresh_cache("off");
    let stderr = run_echo(&cache, &["--no-cache"]);
    assert!(stderr.contains("origin=Compiled"), "{stderr}");
    assert!(
        entries(&cache).is_empty(),
        "nothing written with --no-cache"
    );
}
