//! The Kubernetes resources (deploy/kubernetes): valid for the API offline, and in step with
//! the manifest their ConfigMap holds: memory, CPU, ports, grace period, probes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sockbox::Transport;
use sockbox::supervise::Manifest;

use super::{checkers, deploy, run, text};
use crate::support::{sockbox, temp_dir};

/// What the host itself needs besides its guests' memories (about 32 MiB resident at rest with
/// two echo instances: wasmtime, the compiled guests, buffers), with room to grow under load.
const HOST_MEMORY: u64 = 64 << 20;

/// The Kubernetes versions the resources must be valid for: the oldest and newest schemas
/// kubernetes-validate ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.25.0", "1.37.0"];

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

/// The resources, the pod's one container, and the manifest the ConfigMap holds (checked by
/// `sockbox up --check` as it is read).
struct Cluster {
    deployment: Value,
    service: Value,
    config: Value,
    manifest: Manifest,
}

impl Cluster {
    fn load() -> Cluster {
        let resources = resources();
        let config = resource(&resources, "ConfigMap").clone();
        let text = config["data"]["up.toml"].as_str().expect("data.up.toml");
        let dir = temp_dir("deploy-configmap");
        std::fs::write(dir.join("up.toml"), text).unwrap();
        let (code, stdout, stderr) =
            sockbox(&["up", "--check", dir.join("up.toml").to_str().unwrap()]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        Cluster {
            deployment: resource(&resources, "Deployment").clone(),
            service: resource(&resources, "Service").clone(),
            manifest: Manifest::parse(text, "up.toml", &dir).unwrap(),
            config,
        }
    }

    fn pod(&self) -> &Value {
        &self.deployment["spec"]["template"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    /// The container's ports: (name, number, protocol).
    fn ports(&self) -> HashSet<(String, u64, String)> {
        self.container()["ports"]
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
            .collect()
    }
}

#[test]
fn the_replicas_mount_the_configmap_and_the_service_selects_them() {
    let cluster = Cluster::load();
    let spec = &cluster.deployment["spec"];
    let labels = &cluster.pod()["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    assert_eq!(&cluster.service["spec"]["selector"], labels);
    assert!(spec["replicas"].as_u64().unwrap() >= 2);
    let mounts_config = cluster.pod()["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["configMap"]["name"] == cluster.config["metadata"]["name"]);
    assert!(mounts_config, "the pod mounts the ConfigMap");
}

#[test]
fn the_pod_s_memory_and_cpu_cover_every_guest_instance() {
    let cluster = Cluster::load();
    // Memory: every guest's linear memories, times its instances, and the host's own.
    let mut guests_memory = 0;
    for guest in &cluster.manifest.guests {
        let max_memory = guest.policy.limits.max_memory.unwrap_or_else(|| {
            panic!(
                "guest `{}` has no max-memory: the default (1 GiB an instance) sizes no pod",
                guest.name
            )
        });
        guests_memory += max_memory * guest.instances as u64;
    }
    let resources = &cluster.container()["resources"];
    let limit = quantity(resources["limits"]["memory"].as_str().unwrap());
    assert!(
        guests_memory + HOST_MEMORY <= limit,
        "the guests may take {guests_memory} bytes and the host {HOST_MEMORY}: over the \
         memory limit {limit}"
    );
    let request = quantity(resources["requests"]["memory"].as_str().unwrap());
    assert_eq!(request, limit, "request = limit: never overcommitted");

    // CPU: an instance computes on one core at a time; the pod may use as many as the
    // widest guest has instances.
    let cpu = resources["limits"]["cpu"].as_str().unwrap();
    let millicores = match cpu.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap(),
        None => cpu.parse::<u64>().unwrap() * 1000,
    };
    let widest = cluster
        .manifest
        .guests
        .iter()
        .map(|g| g.instances)
        .max()
        .unwrap();
    assert!(
        millicores >= widest as u64 * 1000,
        "cpu limit {cpu} < {widest} instances"
    );
}

#[test]
fn kubernetes_waits_past_the_stop_grace() {
    let cluster = Cluster::load();
    let grace = cluster.pod()["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let stop_grace = cluster.manifest.settings.grace;
    assert!(
        Duration::from_secs(grace) >= stop_grace + Duration::from_secs(5),
        "terminationGracePeriodSeconds {grace} is not well above stop-grace {stop_grace:?}"
    );
}

#[test]
fn every_granted_address_is_a_pod_port_the_service_reaches() {
    let cluster = Cluster::load();
    let ports = cluster.ports();
    for guest in &cluster.manifest.guests {
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
    for port in cluster.service["spec"]["ports"].as_array().unwrap() {
        let target = port["targetPort"].as_str().unwrap();
        assert!(
            ports
                .iter()
                .any(|(name, _, p)| name == target && *p == port["protocol"]),
            "the Service sends to {target}, which the pod does not have"
        );
    }
}

/// Both probes ask the manifest's `[metrics]` listener: `/healthz` (alive) and `/readyz`
/// (every guest serves) on a container port that is the manifest's metrics port, which the
/// scrape annotations name too.
#[test]
fn the_probes_and_the_scrape_ask_the_manifest_s_metrics_listener() {
    let cluster = Cluster::load();
    let container = cluster.container();
    let ports = cluster.ports();
    let metrics = cluster
        .manifest
        .metrics
        .expect("the manifest has a [metrics] address");
    assert!(
        metrics.ip().is_unspecified(),
        "{metrics} is unreachable from outside the pod"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let target = get["port"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} is not an httpGet probe on a named port"));
        let (_, port, _) = ports
            .iter()
            .find(|(name, _, protocol)| name == target && protocol == "TCP")
            .unwrap_or_else(|| panic!("{probe}: the pod has no TCP port {target}: {ports:?}"));
        assert_eq!(*port, u64::from(metrics.port()), "{probe}");
    }
    let annotations = &cluster.pod()["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics.port().to_string()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn the_pod_runs_unprivileged_on_a_read_only_root() {
    let cluster = Cluster::load();
    assert_eq!(
        cluster.pod()["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let security = &cluster.container()["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
}
