//! The CI job in docs/examples runs as written: it passes when the guest stays within its
//! policy and fails with status 3 when the guest overreaches.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// A native echo server on an OS-chosen loopback port, serving one client at a time.
fn native_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut data = Vec::new();
            let _ = stream.read_to_end(&mut data);
            let _ = stream.write_all(&data);
        }
    });
    addr
}

fn ci_job(upstream: SocketAddr, policy: Option<&PathBuf>) -> (Option<i32>, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(examples().join("ci-job.sh"))
        .arg(upstream.to_string())
        .env("SOCKBOX", env!("CARGO_BIN_EXE_sockbox"))
        .env("SOCKBOX_CACHE_DIR", crate::support::compile_cache_dir());
    if let Some(policy) = policy {
        cmd.arg(policy);
    }
    let out = cmd.output().expect("run the CI example");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_ci_job_fails_when_the_guest_overreaches() {
    // The documented policy grants only 127.0.0.1:5432; this upstream is elsewhere.
    let upstream = native_echo();
    let (code, stderr) = ci_job(upstream, None);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("denied tcp-connect to {upstream}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"decision\":\"deny\""),
        "the audit line is shown: {stderr}"
    );
}

#[test]
fn the_ci_job_passes_within_its_policy() {
    let upstream = native_echo();
    let documented = std::fs::read_to_string(examples().join("ci-policy.toml")).unwrap();
    let policy =
        std::env::temp_dir().join(format!("sockbox-ci-policy-{}.toml", std::process::id()));
    std::fs::write(
        &policy,
        documented.replace("127.0.0.1:5432", &upstream.to_string()),
    )
    .unwrap();
    let (code, stderr) = ci_job(upstream, Some(&policy));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("denied"), "{stderr}");
}
