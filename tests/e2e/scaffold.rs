//! `sockbox new` gives a crate that builds wherever the binary is: the guest SDK travels inside
//! the binary and is written into the crate, so a copy of the binary outside the repository makes
//! a guest that builds, tests and serves without the checkout (issue 15).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::support::{Cli, PATIENCE, temp_dir};

/// What `cargo test` sets for a test process that a user's shell would not have: the scaffold's
/// cargo must not build with this checkout's settings.
fn users_cargo(scaffold: &Path, target_dir: &Path) -> Command {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_this_build = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_TARGET_")
            || name.starts_with("CARGO_BUILD_")
            || name.starts_with("CARGO_ENCODED_")
            || name.starts_with("RUSTC_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_LLVM_COV",
                "RUSTFLAGS",
                "RUSTDOCFLAGS",
                "LLVM_PROFILE_FILE",
            ]
            .contains(&name.as_ref());
        if from_this_build {
            cargo.env_remove(name.as_ref());
        }
    }
    cargo
        .current_dir(scaffold)
        .env("CARGO_TARGET_DIR", target_dir);
    cargo
}

/// `command` with the checkout moved away for real where the OS lets an unprivileged user
/// (a user and mount namespace, `unshare -rm`, as on most Linux hosts): an empty tmpfs over the
/// checkout. Elsewhere `command` itself; the checks on the scaffold's contents still hold.
fn without_checkout(command: Command, checkout: &Path) -> Command {
    let can_hide = Command::new("unshare")
        .args(["-rm", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !can_hide {
        eprintln!("scaffold: cannot hide the checkout here (no unshare -rm); checks only");
        return command;
    }
    // unshare and sh exec: the process keeps its id, so signals reach sockbox itself.
    let mut hidden = Command::new("unshare");
    hidden
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs moved-away \"$0\" && test ! -e \"$0/Cargo.toml\" && exec \"$@\"",
        ])
        .arg(checkout)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => hidden.env(name, value),
            None => hidden.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        hidden.current_dir(dir);
    }
    hidden
}

fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files_under(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// The versions of `name` a Cargo.lock pins (two where the WASI 0.2 and 0.3 stacks differ).
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let lock: toml::Table = lock.parse().unwrap();
    let versions: Vec<String> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| package["name"].as_str() == Some(name))
        .map(|package| package["version"].as_str().unwrap().to_string())
        .collect();
    assert!(!versions.is_empty(), "{name} is not in the lock");
    versions
}

#[test]
fn a_scaffold_builds_and_serves_without_the_repository() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checkout = manifest_dir.parent().unwrap().canonicalize().unwrap();
    let tmp = temp_dir("scaffold").canonicalize().unwrap();
    assert!(!tmp.starts_with(&checkout), "{}", tmp.display());

    // The binary alone, in a directory of its own: what a user of a release or a container has.
    let bin = tmp.join("bin/sockbox");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_sockbox"), &bin).unwrap();
    let out = Command::new(&bin)
        .args(["new", "greeter"])
        .current_dir(&tmp)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vendor/sockbox"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    succeeded("sockbox new", out);
    let scaffold = tmp.join("greeter");

    // "The repository moved away": no file of the scaffold names the checkout, under its real
    // path or the one cargo gave this test.
    let mut files = Vec::new();
    files_under(&scaffold, &mut files);
    assert!(files.len() > 30, "the SDK, wire and WIT sources: {files:?}");
    let checkout_names = [
        checkout.to_str().unwrap().to_string(),
        manifest_dir.parent().unwrap().to_str().unwrap().to_string(),
    ];
    for file in &files {
        let text = String::from_utf8_lossy(&fs::read(file).unwrap()).into_owned();
        for name in &checkout_names {
            assert!(
                !text.contains(name.as_str()),
                "{} names the checkout {name}",
                file.display()
            );
        }
    }

    let target_dir = tmp.join("target");
    // Every crate the build reads is the scaffold's or a registry's, none the checkout's.
    let metadata: serde_json::Value = serde_json::from_str(&succeeded(
        "cargo metadata",
        users_cargo(&scaffold, &target_dir)
            .args(["metadata", "--format-version", "1"])
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(
        metadata["workspace_members"].as_array().unwrap().len(),
        1,
        "the vendored SDK is a dependency, not a member"
    );
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        assert!(!manifest.starts_with(&checkout), "{}", manifest.display());
        if package["name"] == "sockbox-guest" || package["name"] == "sockbox-wire" {
            assert!(manifest.starts_with(&scaffold), "{}", manifest.display());
        }
    }

    let started = Instant::now();
    let mut build = users_cargo(&scaffold, &target_dir);
    build.args(["build", "--release", "--target", "wasm32-wasip2"]);
    succeeded(
        "cargo build",
        without_checkout(build, &checkout).output().unwrap(),
    );
    let built = started.elapsed();
    let mut test = users_cargo(&scaffold, &target_dir);
    test.arg("test");
    let tests = succeeded(
        "cargo test",
        without_checkout(test, &checkout).output().unwrap(),
    );
    assert!(
        tests.contains("greets_each_line ... ok"),
        "the scaffold's unit test ran:\n{tests}"
    );
    eprintln!(
        "scaffold: cargo build {:.1?}, cargo test {:.1?}",
        built,
        started.elapsed() - built
    );

    // The scaffold started from the versions sockbox's own guests are tested with.
    let lock = fs::read_to_string(scaffold.join("Cargo.lock")).unwrap();
    let guests_lock = fs::read_to_string(checkout.join("guests/Cargo.lock")).unwrap();
    for name in ["wit-bindgen", "wasip2", "futures-lite", "async-task"] {
        let tested = locked_versions(&guests_lock, name);
        for version in locked_versions(&lock, name) {
            assert!(
                tested.contains(&version),
                "{name} {version}, tested: {tested:?}"
            );
        }
    }

    // The guest it built runs under the copied binary and answers.
    let wasm = target_dir.join("wasm32-wasip2/release/greeter.wasm");
    let mut run = Command::new(&bin);
    run.args(["run", wasm.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .current_dir(&tmp)
        .env("SOCKBOX_CACHE_DIR", tmp.join("cache"));
    let mut guest = Cli::from_command(without_checkout(run, &checkout));
    let (transport, addr) = guest.ready();
    assert_eq!(transport, "tcp");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"world\nand you\n").unwrap();
    let mut replies = BufReader::new(stream);
    for expected in ["hello, world\n", "hello, and you\n"] {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line, expected);
    }
    drop(replies);
    guest.signal("TERM");
    let (code, stderr) = guest.finish();
    assert_eq!(code, Some(0), "{stderr}");

    fs::remove_dir_all(&tmp).ok();
}
