//! The figures, as data: what each one measures, against which native server, in which unit.
//!
//! A figure is added by adding a [`Job`] here; the runner, the report and the chart read this
//! table and nothing else.

use super::load::Message;
use super::native::{NativeKind, Protocol};
use super::stats::Better;
use super::world::World;

/// One reported number.
#[derive(Clone, Copy, Debug)]
pub struct FigureDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// Which of the job's results it reports.
    pub quantity: Quantity,
}

/// What a figure reads off one run of its job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quantity {
    /// The workload's own result: its rate, time to ready, or time to open the connections.
    #[default]
    Main,
    /// The 99th percentile of the round trips' latency, in µs.
    P99Us,
    /// Round trips of the slowest tenth of connections over the median connection's
    /// ([`super::stats::fairness`]).
    Fairness,
    /// [`Workload::OpenIdle`]: the server's RSS growth per idle connection, KiB.
    IdleKib,
    /// [`Workload::OpenIdle`]: round trips/s of one more client while the rest sit idle.
    IdleRoundTrips,
}

/// What a [`Job`] does to a server in one round.
#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// One client writing `chunk`-byte blocks through an echo server; bytes echoed per second.
    Bulk { chunk: usize },
    /// `clients` closed loops of `message` → the same bytes back; per second, of round trips
    /// or of payload megabytes.
    Exchange {
        clients: usize,
        message: Message,
        per: Per,
    },
    /// `sockets` UDP closed loops of `size`-byte datagrams; echoes per second.
    Udp { sockets: usize, size: usize },
    /// Spawning the server process until its `ready` line, in ms; `cold`: with no compiled
    /// component cache.
    StartToReady { cold: bool },
    /// Open [`super::IDLE_CONNECTIONS`] (fewer with `--quick`) one after another (seconds),
    /// then the server's RSS growth per idle connection (KiB), then one more client's round
    /// trips/s while they sit idle, then check every one still echoes.
    OpenIdle,
}

/// What an [`Workload::Exchange`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    RoundTrip,
    PayloadMegabyte,
}

/// A workload, the protocol its servers speak, and the figures it yields. Every job runs on
/// both native servers, and each ratio is taken against the one that did better in that round.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub figures: &'static [FigureDef],
    pub workload: Workload,
    pub proto: Protocol,
    /// Extra `sockbox run` options for the guest.
    pub guest_args: &'static [&'static str],
}

/// The native servers every job runs, in the order of an even round.
pub const NATIVES: [NativeKind; 2] = [NativeKind::Evloop, NativeKind::Threads];

const fn fig(name: &'static str, unit: &'static str, better: Better) -> FigureDef {
    FigureDef {
        name,
        unit,
        better,
        quantity: Quantity::Main,
    }
}

const fn also(
    name: &'static str,
    unit: &'static str,
    better: Better,
    quantity: Quantity,
) -> FigureDef {
    FigureDef {
        name,
        unit,
        better,
        quantity,
    }
}

const fn job(figures: &'static [FigureDef], workload: Workload, proto: Protocol) -> Job {
    Job {
        figures,
        workload,
        proto,
        guest_args: &[],
    }
}

const fn rr(figures: &'static [FigureDef], clients: usize) -> Job {
    job(
        figures,
        Workload::Exchange {
            clients,
            message: Message::Raw(32),
            per: Per::RoundTrip,
        },
        Protocol::Echo,
    )
}

const RTS: &str = "round trips/s";
const P99: &str = "µs";
const FAIR: &str = "slowest tenth / median";

/// Every figure, in report order.
pub const JOBS: &[Job] = &[
    job(
        &[fig("tcp-bulk", "GB/s", Better::Higher)],
        Workload::Bulk { chunk: 64 * 1024 },
        Protocol::Echo,
    ),
    rr(&[fig("tcp-rr-1", RTS, Better::Higher)], 1),
    rr(
        &[
            fig("tcp-rr-64", RTS, Better::Higher),
            also("tcp-rr-64-p99-us", P99, Better::Lower, Quantity::P99Us),
            also("tcp-rr-64-fair", FAIR, Better::Higher, Quantity::Fairness),
        ],
        64,
    ),
    rr(
        &[
            fig("tcp-rr-256", RTS, Better::Higher),
            also("tcp-rr-256-p99-us", P99, Better::Lower, Quantity::P99Us),
            also("tcp-rr-256-fair", FAIR, Better::Higher, Quantity::Fairness),
        ],
        256,
    ),
    rr(&[fig("tcp-rr-1024", RTS, Better::Higher)], 1024),
    // Two guest instances on one address: with a thread per connection, native uses every
    // core too.
    Job {
        guest_args: &["--instances", "2"],
        ..rr(&[fig("tcp-rr-64-x2", RTS, Better::Higher)], 64)
    },
    job(
        &[fig("udp-echo", "datagrams/s", Better::Higher)],
        Workload::Udp {
            sockets: 8,
            size: 64,
        },
        Protocol::UdpEcho,
    ),
    job(
        &[fig("framing-small", "frames/s", Better::Higher)],
        Workload::Exchange {
            clients: 16,
            message: Message::Frame(16),
            per: Per::RoundTrip,
        },
        Protocol::Framing,
    ),
    job(
        &[fig("framing-large", "MB/s", Better::Higher)],
        Workload::Exchange {
            clients: 1,
            message: Message::Frame(64 * 1024),
            per: Per::PayloadMegabyte,
        },
        Protocol::Framing,
    ),
    job(
        &[fig("start-to-ready-ms", "ms", Better::Lower)],
        Workload::StartToReady { cold: false },
        Protocol::Echo,
    ),
    job(
        &[fig("start-to-ready-cold-ms", "ms", Better::Lower)],
        Workload::StartToReady { cold: true },
        Protocol::Echo,
    ),
    job(
        &[
            fig("open-10k-s", "s", Better::Lower),
            also(
                "idle-conn-kib",
                "KiB/conn",
                Better::Lower,
                Quantity::IdleKib,
            ),
            also(
                "idle-10k-rr-1",
                RTS,
                Better::Higher,
                Quantity::IdleRoundTrips,
            ),
        ],
        Workload::OpenIdle,
        Protocol::Echo,
    ),
];

/// The concurrency sweep drawn in the chart: round trips/s against clients.
pub const SWEEP: &[&str] = &["tcp-rr-1", "tcp-rr-64", "tcp-rr-256", "tcp-rr-1024"];

/// Every figure name, in report order.
pub fn names() -> impl Iterator<Item = &'static str> {
    JOBS.iter()
        .flat_map(|job| job.figures.iter().map(|f| f.name))
}

/// The built-in guests the figures run (each replaceable with `--component NAME=PATH`).
pub fn guests() -> Vec<&'static str> {
    let mut guests: Vec<_> = JOBS.iter().map(|job| job.proto.guest()).collect();
    guests.dedup();
    guests.sort_unstable();
    guests.dedup();
    guests
}

impl Job {
    /// Who serves, in the order of an even round (odd rounds go in reverse): both natives,
    /// then the guest of each world in `worlds`.
    pub fn servers(&self, worlds: &[World]) -> Vec<Server> {
        let natives = NATIVES.iter().map(|&kind| Server::Native(kind));
        natives
            .chain(worlds.iter().map(|&world| Server::Guest(world)))
            .collect()
    }

    /// The figures' names, for progress and messages.
    pub fn name(&self) -> &'static str {
        self.figures[0].name
    }

    /// Clients the workload runs, when that is a number worth showing.
    pub fn clients(&self) -> Option<usize> {
        match self.workload {
            Workload::Exchange { clients, .. } => Some(clients),
            Workload::Udp { sockets, .. } => Some(sockets),
            Workload::Bulk { .. } => Some(1),
            _ => None,
        }
    }
}

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Server {
    Guest(World),
    Native(NativeKind),
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Guest(World::P2) => "guest p2",
            Server::Guest(World::P3) => "guest p3",
            Server::Native(kind) => kind.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_figures_are_all_there_once() {
        let names: Vec<_> = names().collect();
        for required in [
            "tcp-bulk",
            "tcp-rr-1",
            "tcp-rr-64",
            "tcp-rr-256",
            "tcp-rr-1024",
            "udp-echo",
            "framing-small",
            "framing-large",
            "start-to-ready-ms",
            "idle-conn-kib",
            "open-10k-s",
            "idle-10k-rr-1",
            "tcp-rr-64-p99-us",
            "tcp-rr-64-fair",
            "tcp-rr-256-p99-us",
            "tcp-rr-256-fair",
        ] {
            assert_eq!(
                names.iter().filter(|n| **n == required).count(),
                1,
                "{required}"
            );
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(SWEEP.iter().all(|s| names.contains(s)));
    }

    fn job(name: &str) -> &'static Job {
        JOBS.iter().find(|j| j.name() == name).unwrap()
    }

    #[test]
    fn every_job_runs_both_natives_then_each_world() {
        let evloop = Server::Native(NativeKind::Evloop);
        let threads = Server::Native(NativeKind::Threads);
        for job in JOBS {
            assert_eq!(
                job.servers(&[World::P2]),
                [evloop, threads, Server::Guest(World::P2)]
            );
        }
        assert_eq!(
            job("tcp-rr-64-x2").servers(&[World::P2, World::P3]),
            [
                evloop,
                threads,
                Server::Guest(World::P2),
                Server::Guest(World::P3)
            ]
        );
        assert_eq!(guests(), ["echo", "framing", "udp-echo"]);
    }

    #[test]
    fn latency_and_fairness_come_from_the_busy_round_trip_jobs() {
        let quantities = |name| -> Vec<_> {
            job(name)
                .figures
                .iter()
                .map(|f| (f.name, f.quantity, f.better))
                .collect()
        };
        for clients in [64, 256] {
            let name = format!("tcp-rr-{clients}");
            let name: &'static str = JOBS.iter().map(|j| j.name()).find(|n| *n == name).unwrap();
            let figures = quantities(name);
            assert_eq!(figures[0].1, Quantity::Main);
            assert_eq!(
                (figures[1].1, figures[1].2),
                (Quantity::P99Us, Better::Lower)
            );
            assert_eq!(
                (figures[2].1, figures[2].2),
                (Quantity::Fairness, Better::Higher)
            );
            assert_eq!(figures[1].0, format!("{name}-p99-us"));
            assert_eq!(figures[2].0, format!("{name}-fair"));
        }
        let idle = quantities("open-10k-s");
        assert_eq!(
            idle.iter().map(|f| f.1).collect::<Vec<_>>(),
            [Quantity::Main, Quantity::IdleKib, Quantity::IdleRoundTrips]
        );
        assert_eq!(idle[2].0, "idle-10k-rr-1");
        // Every other job yields its one main figure.
        for job in JOBS.iter().filter(|j| j.figures.len() == 1) {
            assert_eq!(job.figures[0].quantity, Quantity::Main, "{}", job.name());
        }
    }
}
