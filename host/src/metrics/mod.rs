//! What an operator watches: Prometheus metrics per guest and for the process, and the health
//! a probe asks for (`--metrics ADDR`, served by [`serve`]).
//!
//! Counting must cost nothing a client could notice, so every guest gets its handles once
//! ([`Metrics::guest`]) and each event is one atomic add on them: no label lookup, no lock.
//! The hooks sit where decisions already pass: the socket ledger (connections), the decision
//! record (denials, DNS, refusals by a limit), the stream hooks (bytes, datagrams), the memory
//! limiter, the busy watch and the supervisor (restarts). A guest started without metrics
//! counts into handles nobody reads ([`GuestMetrics::detached`]), so the hooks never branch.
//! Labels are the guest's name and the use of a denial; never a peer's address, which a
//! stranger could use to grow the series without bound.

mod http;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::audit::AuditEvent;

pub use http::{MetricsServer, serve};

/// A metric's labels: `guest`, and `use` for denials.
type Labels = Vec<(&'static str, String)>;

/// The uses a denial can name (`tcp-create`/`udp-create`: a socket refused outside any
/// address rule); each guest's series exist from its start, at 0.
pub const DENIAL_USES: [&str; 9] = [
    "tcp-listen",
    "tcp-accept",
    "tcp-connect",
    "udp-bind",
    "udp-send",
    "udp-recv",
    "dns",
    "tcp-create",
    "udp-create",
];

/// Every metric of one process (`sockbox run` or `sockbox up`), and its guests' handles.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    families: Families,
    process: ProcessGauges,
    guests: Mutex<BTreeMap<String, GuestMetrics>>,
    started: Instant,
}

/// One family per per-guest metric; a guest's handles are taken from them once.
#[derive(Default)]
struct Families {
    connections_active: Family<Labels, Gauge>,
    connections: Family<Labels, Counter>,
    connections_refused: Family<Labels, Counter>,
    received_bytes: Family<Labels, Counter>,
    sent_bytes: Family<Labels, Counter>,
    datagrams_received: Family<Labels, Counter>,
    datagrams_sent: Family<Labels, Counter>,
    denials: Family<Labels, Counter>,
    dns_lookups: Family<Labels, Counter>,
    restarts: Family<Labels, Counter>,
    busy_kills: Family<Labels, Counter>,
    memory_kills: Family<Labels, Counter>,
    memory_bytes: Family<Labels, Gauge>,
    instances_ready: Family<Labels, Gauge>,
    ready: Family<Labels, Gauge>,
}

/// Process-wide values, read at each scrape.
#[derive(Default)]
struct ProcessGauges {
    descriptors_used: Gauge,
    descriptors_budget: Gauge,
    uptime: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty set: the process's metrics, and no guest yet.
    pub fn new() -> Metrics {
        let families = Families::default();
        let process = ProcessGauges::default();
        let mut registry = Registry::with_prefix("sockbox");
        let f = &families;
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {
                registry.register($name, $help, $metric.clone())
            };
            ($name:literal, $help:literal, $unit:expr, $metric:expr) => {
                registry.register_with_unit($name, $help, $unit, $metric.clone())
            };
        }
        register!(
            "connections_active",
            "Connections the guest holds now (accepted, not yet dropped)",
            f.connections_active
        );
        register!(
            "connections",
            "Connections the guest accepted",
            f.connections
        );
        register!(
            "connections_refused",
            "Clients the host accepted and closed at once because a limit was met (max-connections, max-sockets, the descriptor budget)",
            f.connections_refused
        );
        register!(
            "received",
            "Bytes the guest read from its TCP connections and UDP datagrams it was given",
            Unit::Bytes,
            f.received_bytes
        );
        register!(
            "sent",
            "Bytes the guest wrote to its TCP connections and sent in UDP datagrams",
            Unit::Bytes,
            f.sent_bytes
        );
        register!(
            "datagrams_received",
            "UDP datagrams the guest was given (allowed by the policy)",
            f.datagrams_received
        );
        register!(
            "datagrams_sent",
            "UDP datagrams the guest sent",
            f.datagrams_sent
        );
        register!(
            "denials",
            "Uses the host denied, by use (refusals by a limit included)",
            f.denials
        );
        register!(
            "dns_lookups",
            "Names the guest asked to look up (allowed or denied)",
            f.dns_lookups
        );
        register!(
            "restarts",
            "Times `sockbox up` started an instance of the guest again",
            f.restarts
        );
        register!(
            "busy_kills",
            "Runs stopped for computing longer than max-busy without yielding",
            f.busy_kills
        );
        register!(
            "memory_kills",
            "Runs that ended after a memory growth was refused at max-memory (a failed allocation aborts the guest)",
            f.memory_kills
        );
        register!(
            "memory",
            "Wasm memory the guest's running instances hold",
            Unit::Bytes,
            f.memory_bytes
        );
        register!(
            "instances_ready",
            "Instances of the guest serving on every socket they were granted",
            f.instances_ready
        );
        register!(
            "ready",
            "1 when every instance of the guest is ready, else 0",
            f.ready
        );
        register!(
            "descriptors_used",
            "Descriptors the guests of this process hold against their budget (sockets, lingering closes)",
            process.descriptors_used
        );
        register!(
            "descriptors_budget",
            "Descriptors the guests of this process may hold together",
            process.descriptors_budget
        );
        register!(
            "uptime",
            "Time since this process set up its metrics",
            Unit::Seconds,
            process.uptime
        );
        registry.register(
            "build",
            "The sockbox build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                families,
                process,
                guests: Mutex::new(BTreeMap::new()),
                started: Instant::now(),
            }),
        }
    }

    /// The handles of guest `name`, of which `instances` should be ready; created at the
    /// first call, the same handles after it (instances and restarts count together).
    pub fn guest(&self, name: &str, instances: usize) -> GuestMetrics {
        let mut guests = self.inner.guests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(guest) = guests.get(name) {
            guest
                .series
                .instances
                .store(instances as u64, Ordering::Relaxed);
            return guest.clone();
        }
        let f = &self.inner.families;
        let labels: Labels = vec![("guest", name.to_string())];
        let denials = DENIAL_USES.map(|use_| {
            f.denials.get_or_create_owned(&vec![
                ("guest", name.to_string()),
                ("use", use_.to_string()),
            ])
        });
        let series = GuestSeries {
            connections_active: f.connections_active.get_or_create_owned(&labels),
            connections: f.connections.get_or_create_owned(&labels),
            connections_refused: f.connections_refused.get_or_create_owned(&labels),
            received_bytes: f.received_bytes.get_or_create_owned(&labels),
            sent_bytes: f.sent_bytes.get_or_create_owned(&labels),
            datagrams_received: f.datagrams_received.get_or_create_owned(&labels),
            datagrams_sent: f.datagrams_sent.get_or_create_owned(&labels),
            denials,
            dns_lookups: f.dns_lookups.get_or_create_owned(&labels),
            restarts: f.restarts.get_or_create_owned(&labels),
            busy_kills: f.busy_kills.get_or_create_owned(&labels),
            memory_kills: f.memory_kills.get_or_create_owned(&labels),
            memory_bytes: f.memory_bytes.get_or_create_owned(&labels),
            instances_ready: f.instances_ready.get_or_create_owned(&labels),
            ready: f.ready.get_or_create_owned(&labels),
            instances: AtomicU64::new(instances as u64),
            name: name.to_string(),
        };
        let guest = GuestMetrics {
            series: Arc::new(series),
        };
        guests.insert(name.to_string(), guest.clone());
        guest
    }

    /// The text exposition (OpenMetrics, which Prometheus reads), values as of now.
    pub fn encode(&self) -> String {
        let inner = &self.inner;
        let sockets = crate::sandbox::guest_sockets();
        inner.process.descriptors_used.set(to_i64(sockets.held));
        inner.process.descriptors_budget.set(to_i64(sockets.budget));
        inner
            .process
            .uptime
            .set(inner.started.elapsed().as_secs_f64());
        for guest in self.guests() {
            let series = &guest.series;
            series.ready.set(i64::from(guest.is_ready()));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &inner.registry);
        text
    }

    /// The guests that should be ready and are not (`/readyz`), by name.
    pub fn not_ready(&self) -> Vec<String> {
        self.guests()
            .into_iter()
            .filter(|g| !g.is_ready())
            .map(|g| g.series.name.clone())
            .collect()
    }

    fn guests(&self) -> Vec<GuestMetrics> {
        let guests = self.inner.guests.lock().unwrap_or_else(|e| e.into_inner());
        guests.values().cloned().collect()
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One guest's handles: what its hooks count into. Cloning shares them.
#[derive(Clone)]
pub struct GuestMetrics {
    series: Arc<GuestSeries>,
}

struct GuestSeries {
    connections_active: Gauge,
    connections: Counter,
    connections_refused: Counter,
    received_bytes: Counter,
    sent_bytes: Counter,
    datagrams_received: Counter,
    datagrams_sent: Counter,
    /// By the index of the use in [`DENIAL_USES`].
    denials: [Counter; DENIAL_USES.len()],
    dns_lookups: Counter,
    restarts: Counter,
    busy_kills: Counter,
    memory_kills: Counter,
    memory_bytes: Gauge,
    instances_ready: Gauge,
    ready: Gauge,
    /// How many instances should be ready.
    instances: AtomicU64,
    name: String,
}

impl Default for GuestMetrics {
    fn default() -> Self {
        GuestMetrics::detached()
    }
}

impl GuestMetrics {
    /// Handles registered nowhere: a guest run without `--metrics` counts into them.
    pub fn detached() -> GuestMetrics {
        GuestMetrics {
            series: Arc::new(GuestSeries {
                connections_active: Gauge::default(),
                connections: Counter::default(),
                connections_refused: Counter::default(),
                received_bytes: Counter::default(),
                sent_bytes: Counter::default(),
                datagrams_received: Counter::default(),
                datagrams_sent: Counter::default(),
                denials: Default::default(),
                dns_lookups: Counter::default(),
                restarts: Counter::default(),
                busy_kills: Counter::default(),
                memory_kills: Counter::default(),
                memory_bytes: Gauge::default(),
                instances_ready: Gauge::default(),
                ready: Gauge::default(),
                instances: AtomicU64::new(1),
                name: String::new(),
            }),
        }
    }

    fn is_ready(&self) -> bool {
        let s = &self.series;
        s.instances_ready.get() >= to_i64(s.instances.load(Ordering::Relaxed))
    }

    /// A capability decision was recorded: denials by use, DNS lookups, refusals by a limit.
    pub(crate) fn decided(&self, event: &AuditEvent) {
        let s = &self.series;
        if event.use_ == "dns" {
            s.dns_lookups.inc();
        }
        if event.allowed() {
            return;
        }
        if let Some(index) = DENIAL_USES.iter().position(|u| *u == event.use_) {
            s.denials[index].inc();
        }
        if event.use_ == "tcp-accept" && event.limit().is_some() {
            s.connections_refused.inc();
        }
    }

    /// The guest holds one more accepted connection.
    pub(crate) fn connection_opened(&self) {
        self.series.connections.inc();
        self.series.connections_active.inc();
    }

    /// `count` accepted connections are gone.
    pub(crate) fn connections_closed(&self, count: usize) {
        self.series.connections_active.dec_by(to_i64(count as u64));
    }

    /// The guest read `bytes` from a connection.
    pub(crate) fn received(&self, bytes: usize) {
        self.series.received_bytes.inc_by(bytes as u64);
    }

    /// The guest wrote `bytes` to a connection.
    pub(crate) fn sent(&self, bytes: usize) {
        self.series.sent_bytes.inc_by(bytes as u64);
    }

    /// The guest was given `datagrams` holding `bytes`.
    pub(crate) fn datagrams_received(&self, datagrams: usize, bytes: usize) {
        self.series.datagrams_received.inc_by(datagrams as u64);
        self.received(bytes);
    }

    /// The guest sent `datagrams` holding `bytes`.
    pub(crate) fn datagrams_sent(&self, datagrams: usize, bytes: usize) {
        self.series.datagrams_sent.inc_by(datagrams as u64);
        self.sent(bytes);
    }

    /// An instance's memories grew (or, negative, were freed) by `bytes`.
    pub(crate) fn memory_changed(&self, bytes: i64) {
        self.series.memory_bytes.inc_by(bytes);
    }

    /// A run was stopped by the busy watch.
    pub(crate) fn busy_killed(&self) {
        self.series.busy_kills.inc();
    }

    /// A run ended after the limiter refused it memory.
    pub(crate) fn memory_killed(&self) {
        self.series.memory_kills.inc();
    }

    /// An instance is started again (`sockbox up`).
    pub(crate) fn restarted(&self) {
        self.series.restarts.inc();
    }

    /// An instance became ready (true) or stopped being ready (false).
    pub(crate) fn instance_ready(&self, ready: bool) {
        if ready {
            self.series.instances_ready.inc();
        } else {
            self.series.instances_ready.dec();
        }
    }
}
