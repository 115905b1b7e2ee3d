//! The figures, as data: what each one measures, against which native server, in which unit.
//!
//! A figure is added by adding a [`Job`] here; the runner, the report and the chart read this
//! table and nothing else.

use super::load::Message;
use super::native::{NativeKind, Protocol};
use super::stats::Better;

/// One reported number.
#[derive(Clone, Copy, Debug)]
pub struct FigureDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
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
    /// then the server's RSS growth per idle connection (KiB), then check every one still
    /// echoes.
    OpenIdle,
}

/// What an [`Workload::Exchange`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    RoundTrip,
    PayloadMegabyte,
}

/// A workload, the server it runs against, and the figures it yields (in order).
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub figures: &'static [FigureDef],
    pub workload: Workload,
    pub proto: Protocol,
    /// Extra `sockbox run` options for the guest.
    pub guest_args: &'static [&'static str],
    /// The native server the ratio is taken against.
    pub baseline: NativeKind,
    /// Also measure native-threads (shown beside the ratio, not in it).
    pub with_threads: bool,
}

const fn fig(name: &'static str, unit: &'static str, better: Better) -> FigureDef {
    FigureDef { name, unit, better }
}

const fn job(figures: &'static [FigureDef], workload: Workload, proto: Protocol) -> Job {
    Job {
        figures,
        workload,
        proto,
        guest_args: &[],
        baseline: NativeKind::Evloop,
        with_threads: false,
    }
}

const fn rr(figures: &'static [FigureDef], clients: usize) -> Job {
    Job {
        with_threads: true,
        ..job(
            figures,
            Workload::Exchange {
                clients,
                message: Message::Raw(32),
                per: Per::RoundTrip,
            },
            Protocol::Echo,
        )
    }
}

const RTS: &str = "round trips/s";

/// Every figure, in report order.
pub const JOBS: &[Job] = &[
    job(
        &[fig("tcp-bulk", "GB/s", Better::Higher)],
        Workload::Bulk { chunk: 64 * 1024 },
        Protocol::Echo,
    ),
    rr(&[fig("tcp-rr-1", RTS, Better::Higher)], 1),
    rr(&[fig("tcp-rr-64", RTS, Better::Higher)], 64),
    rr(&[fig("tcp-rr-256", RTS, Better::Higher)], 256),
    rr(&[fig("tcp-rr-1024", RTS, Better::Higher)], 1024),
    // Two guest instances on one address against a thread per connection: both use every core.
    Job {
        guest_args: &["--instances", "2"],
        baseline: NativeKind::Threads,
        with_threads: false,
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
            fig("idle-conn-kib", "KiB/conn", Better::Lower),
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
    /// Who serves, in the order of an even round; odd rounds go in reverse.
    pub fn servers(&self) -> Vec<Server> {
        let mut servers = vec![Server::Native(self.baseline)];
        if self.with_threads && self.baseline != NativeKind::Threads {
            servers.push(Server::Native(NativeKind::Threads));
        }
        servers.push(Server::Guest);
        servers
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
    Guest,
    Native(NativeKind),
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Guest => "guest",
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

    #[test]
    fn rr_compares_with_the_event_loop_and_shows_threads() {
        let rr64 = JOBS
            .iter()
            .find(|j| j.figures[0].name == "tcp-rr-64")
            .unwrap();
        assert_eq!(
            rr64.servers(),
            [
                Server::Native(NativeKind::Evloop),
                Server::Native(NativeKind::Threads),
                Server::Guest
            ]
        );
        let x2 = JOBS
            .iter()
            .find(|j| j.figures[0].name == "tcp-rr-64-x2")
            .unwrap();
        assert_eq!(
            x2.servers(),
            [Server::Native(NativeKind::Threads), Server::Guest]
        );
        assert_eq!(guests(), ["echo", "framing", "udp-echo"]);
    }
}
