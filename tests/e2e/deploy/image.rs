//! The static binary and the image, run for real: echo served from a `chroot` holding only the
//! binary, and from the image under podman. Both need root and the musl build (minutes the
//! first time), podman also Debian's podman and runc: `#[ignore]`d, run by hand with
//! `cargo test --test e2e deploy -- --ignored`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use super::{deploy, repo, run, text};
use crate::support::{Cli, PATIENCE, temp_dir};

/// `command` runs echo: it reports ready, echoes a line, and stops cleanly on SIGTERM.
fn serves_echo_then_stops(command: Command) {
    let mut cli = Cli::from_command(command);
    let (transport, addr) = cli.ready();
    assert_eq!(transport, "tcp");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"hello from outside\n").unwrap();
    let mut reply = [0; 19];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello from outside\n");
    cli.signal("TERM");
    let (code, stderr) = cli.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

/// The static binary, built by deploy/build-static (incremental after the first, ~10 min).
fn static_sockbox() -> PathBuf {
    let out = run(Command::new(deploy("build-static")).env_remove("CARGO_TARGET_DIR"));
    assert!(out.status.success(), "{}", text(&out));
    repo().join("target/x86_64-unknown-linux-musl/release/sockbox")
}

#[test]
#[ignore = "needs root (chroot) and a musl release build of several minutes"]
fn the_static_binary_serves_echo_in_an_empty_root() {
    let binary = static_sockbox();
    let root = temp_dir("deploy-empty-root");
    std::fs::copy(&binary, root.join("sockbox")).unwrap();
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        1,
        "only the binary"
    );

    let mut command = Command::new("chroot");
    command
        .arg(&root)
        .args([
            "/sockbox",
            "run",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--no-cache",
        ])
        // No HOME, no XDG dirs: nothing points outside the empty root (PATH finds chroot).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    serves_echo_then_stops(command);
}

#[test]
#[ignore = "needs root, podman and runc (Debian's packages) and the static build"]
fn the_image_serves_echo_under_podman() {
    static_sockbox();
    let tag = "localhost/sockbox:deploy-test";
    let out = run(Command::new("podman")
        .args([
            "build",
            "--quiet",
            "-f",
            "deploy/Containerfile",
            "-t",
            tag,
            ".",
        ])
        .current_dir(repo()));
    assert!(out.status.success(), "{}", text(&out));

    // The image's own manifest listens on 0.0.0.0:7000; the test's on a free loopback port
    // of the host's network, mounted where the ConfigMap would be.
    let dir = temp_dir("deploy-podman");
    std::fs::write(
        dir.join("up.toml"),
        "[guests.echo]\ncomponent = \"echo\"\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    // podman asks for more descriptors and processes than a caller without CAP_SYS_RESOURCE
    // (this sandbox) may grant, and runc fails: the caller's own hard limits it can set. crun
    // fails on this machine's hybrid cgroups whatever the limits.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(65536);
    let mut command = Command::new("podman");
    command
        .args(["run", "--rm", "--runtime", "runc", "--network", "host"])
        .args([
            "--read-only",
            "--tmpfs",
            "/var/cache/sockbox",
            "--cap-drop",
            "all",
        ])
        .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
        .arg("--ulimit=nproc=4096:4096")
        .arg(format!("--volume={}:/etc/sockbox:ro", dir.display()))
        .arg(tag);
    serves_echo_then_stops(command);
}
