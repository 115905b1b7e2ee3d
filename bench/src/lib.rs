//! sockbox-bench: the measurements behind `sockbox bench`, how a guest compares with the same
//! server written natively, as ratios. The `sockbox` binary parses the flags and calls [`run`]
//! (or [`serve`] for a native baseline); the bench starts its servers as child processes of
//! that same binary (`sockbox run`, `sockbox bench --serve`), so it runs only inside it.
//!
//! A sandbox is only worth its cost if that cost is known, so every figure is measured twice
//! on this machine, guest and native, with the same client, and reported as a ratio in which
//! ≥ 1 always means "the guest is as good as native or better" (`stats::ratio`).
//!
//! - `figures`: what is measured, as one table.
//! - `options`: what a run measures and for how long, checked before anything runs.
//! - `server`: each server in a child process of its own (descriptors, RSS).
//! - `native`: the native baselines, an event loop and a thread per connection.
//! - `load`: the one load generator, closed loops with bounded time.
//! - `report` and `chart`: table, JSON, markdown and the concurrency chart.
//!
//! Rounds interleave: each round runs every figure's native then guest servers, in the reverse
//! order every other round, so drift on the machine hits both sides; the report gives the
//! median of the rounds and their spread (min–max), never one lucky run.

mod chart;
mod figures;
mod load;
mod machine;
mod native;
mod options;
mod report;
mod server;
mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use load::Phases;
pub use machine::Machine;
pub use native::{NativeKind, Protocol, serve};
pub use options::{BenchOptions, IDLE_CONNECTIONS, QUICK_CONNECTIONS};
pub use report::{FigureReport, Report, Skipped};
pub use stats::Better;

use figures::{JOBS, Job, Per, Server, Workload};
use server::{ServerProcess, ServerSpec};

/// Descriptors beyond the connections themselves (listeners, pipes, the runtime).
const SPARE_DESCRIPTORS: usize = 256;

/// Everything one measurement needs to know.
struct Bench<'a> {
    options: &'a BenchOptions,
    exe: PathBuf,
    progress: ProgressBar,
}

/// One job's result on one server in one round.
#[derive(Debug, Default)]
struct Sample {
    /// One per figure of the job; `None` when it could not be measured.
    values: Vec<Option<f64>>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    failures: u64,
    note: Option<String>,
}

/// All rounds of one figure on one server.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) values: Vec<f64>,
    pub(crate) p50_us: Vec<f64>,
    pub(crate) p99_us: Vec<f64>,
    pub(crate) failures: u64,
    pub(crate) notes: Vec<String>,
}

/// Runs the selected figures and reports them. The servers are children of this process and
/// are gone when this returns (or is dropped).
pub async fn run(options: &BenchOptions) -> Result<Report> {
    options.check()?;
    let machine = Machine::here();
    let exe = std::env::current_exe().context("find the sockbox binary to start servers")?;
    let (jobs, skipped) = select(options);
    let steps: usize = jobs.iter().map(|job| job.servers().len()).sum::<usize>() * options.rounds;
    let bench = Bench {
        options,
        exe,
        progress: progress_bar(options.progress, steps as u64),
    };
    bench.prepare(&jobs).await?;
    let mut tallies = bench.rounds(&jobs).await;
    bench.progress.finish_and_clear();

    let mut reports = Vec::new();
    for job in &jobs {
        let component = bench.component_label(job);
        let clients = match job.workload {
            Workload::OpenIdle => Some(options.connections),
            _ => job.clients(),
        };
        for figure in job.figures.iter().filter(|f| options.wants(f.name)) {
            let mut take = |server| tallies.remove(&(figure.name, server));
            reports.push(FigureReport::new(
                figure,
                job,
                &component,
                clients,
                take(Server::Guest),
                take(Server::Native(job.baseline)),
                take(Server::Native(NativeKind::Threads)),
            ));
        }
    }
    Ok(Report::new(machine, options, reports, skipped))
}

/// The jobs yielding the figures asked for, and the figures that cannot run here, with why.
fn select(options: &BenchOptions) -> (Vec<&'static Job>, Vec<Skipped>) {
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    for job in JOBS {
        let wanted: Vec<_> = job
            .figures
            .iter()
            .filter(|f| options.wants(f.name))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let need = options.connections + SPARE_DESCRIPTORS;
        // Raised to the hard limit, for this process and the servers it starts.
        let limit = sockbox::sandbox::fd_budget().limit;
        let reason =
            (matches!(job.workload, Workload::OpenIdle) && limit < need as u64).then(|| {
                format!(
                    "needs {need} open descriptors per process; the limit is {limit} \
                 (raise it with `ulimit -n {need}`)"
                )
            });
        match reason {
            Some(reason) => skipped.extend(wanted.iter().map(|figure| Skipped {
                name: figure.name.to_string(),
                reason: reason.clone(),
            })),
            None => jobs.push(job),
        }
    }
    (jobs, skipped)
}

impl Bench<'_> {
    /// Every round: each job's servers in turn, native first in even rounds and guest first
    /// in odd ones.
    async fn rounds(&self, jobs: &[&Job]) -> HashMap<(&'static str, Server), Tally> {
        let rounds = self.options.rounds;
        let mut tallies: HashMap<(&'static str, Server), Tally> = HashMap::new();
        for round in 1..=rounds {
            for job in jobs {
                let mut servers = job.servers();
                if round % 2 == 0 {
                    servers.reverse();
                }
                for server in servers {
                    let figure = job.figures[0].name;
                    self.progress.set_message(format!(
                        "round {round}/{rounds} · {figure} · {}",
                        server.name()
                    ));
                    let sample = match self.measure(job, server).await {
                        Ok(sample) => sample,
                        Err(err) => Sample {
                            values: vec![None; job.figures.len()],
                            failures: 1,
                            note: Some(format!("{err:#}")),
                            ..Sample::default()
                        },
                    };
                    if let Some(note) = &sample.note {
                        self.progress.suspend(|| {
                            eprintln!(
                                "sockbox bench: {figure}, round {round}, {}: {note}",
                                server.name()
                            )
                        });
                    }
                    for (figure, value) in job.figures.iter().zip(&sample.values) {
                        let tally = tallies.entry((figure.name, server)).or_default();
                        tally.values.extend(*value);
                        tally.p50_us.extend(sample.p50_us);
                        tally.p99_us.extend(sample.p99_us);
                        tally.failures += sample.failures;
                        if let Some(note) = &sample.note {
                            tally.notes.push(format!("round {round}: {note}"));
                        }
                    }
                    self.progress.inc(1);
                }
            }
        }
        tallies
    }

    /// Starts each guest once before measuring: compiles it into the cache so the first round
    /// is no slower than the others, and stops a bench whose guest cannot start at all.
    async fn prepare(&self, jobs: &[&Job]) -> Result<()> {
        let mut seen = Vec::new();
        for job in jobs {
            let spec = self.spec(job, Server::Guest, false);
            if seen.contains(&spec) {
                continue;
            }
            self.progress
                .set_message(format!("preparing: {}", spec.label()));
            ServerProcess::start(&self.exe, &spec)
                .await
                .context("the guest does not start, so nothing can be compared")?;
            seen.push(spec);
        }
        Ok(())
    }

    fn component(&self, proto: Protocol) -> String {
        match self.options.components.get(proto.guest()) {
            Some(path) => path.display().to_string(),
            None => proto.guest().to_string(),
        }
    }

    fn component_label(&self, job: &Job) -> String {
        let mut label = self.component(job.proto);
        for arg in job.guest_args {
            label.push(' ');
            label.push_str(arg);
        }
        label
    }

    fn spec(&self, job: &Job, server: Server, cold: bool) -> ServerSpec {
        match server {
            Server::Guest => {
                let mut args: Vec<String> = job.guest_args.iter().map(|a| a.to_string()).collect();
                if self.options.guest_metrics {
                    args.extend(["--metrics".into(), "127.0.0.1:0".into()]);
                }
                ServerSpec::Guest {
                    component: self.component(job.proto),
                    proto: job.proto,
                    args,
                    cold,
                }
            }
            Server::Native(kind) => ServerSpec::Native {
                kind,
                proto: job.proto,
            },
        }
    }

    /// Starts a fresh server and runs the job's workload against it once.
    async fn measure(&self, job: &Job, server: Server) -> Result<Sample> {
        let cold = matches!(job.workload, Workload::StartToReady { cold: true });
        let process = ServerProcess::start(&self.exe, &self.spec(job, server, cold)).await?;
        let addr = process.addr();
        let phases = self.options.phases;
        let sample = match job.workload {
            Workload::Bulk { chunk } => {
                let stats = load::bulk(addr, chunk, phases).await;
                Sample {
                    values: vec![Some(stats.per_sec() / 1e9)],
                    ..from_load(&stats)
                }
            }
            Workload::Exchange {
                clients,
                message,
                per,
            } => {
                let stats = load::exchange(addr, clients, message, phases).await;
                let value = match (per, message) {
                    (Per::RoundTrip, _) => stats.per_sec(),
                    (Per::PayloadMegabyte, load::Message::Raw(n) | load::Message::Frame(n)) => {
                        stats.per_sec() * n as f64 / 1e6
                    }
                };
                Sample {
                    values: vec![Some(value)],
                    ..from_load(&stats)
                }
            }
            Workload::Udp { sockets, size } => {
                let stats = load::udp_echo(addr, sockets, size, phases).await;
                Sample {
                    values: vec![Some(stats.per_sec())],
                    ..from_load(&stats)
                }
            }
            Workload::StartToReady { .. } => Sample {
                values: vec![Some(process.start_to_ready().as_secs_f64() * 1e3)],
                ..Sample::default()
            },
            Workload::OpenIdle => return self.open_idle(process).await,
        };
        Ok(sample)
    }

    /// `open-10k-s` and `idle-conn-kib` from one set of connections, then the check that
    /// every one of them still echoes.
    async fn open_idle(&self, process: ServerProcess) -> Result<Sample> {
        let patience = if self.options.quick {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(300)
        };
        let before = process.rss_kib()?;
        let wanted = self.options.connections;
        let mut opened = load::open_one_by_one(process.addr(), wanted, patience).await;
        // Let the server finish whatever the last connection started before reading its RSS.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = process.rss_kib()?;
        let (check_failures, check_error) = load::echo_each(&mut opened.streams).await;
        let open = opened.streams.len();
        // Kill the server before dropping the clients: it need not handle 10 000 resets.
        drop(process);
        drop(opened.streams);

        let mut problems = Vec::new();
        if opened.failures > 0 {
            problems.push(format!(
                "{} of {wanted} connections could not be opened ({})",
                opened.failures,
                opened.first_error.unwrap_or_default()
            ));
        }
        if check_failures > 0 {
            problems.push(format!(
                "{check_failures} of {open} idle connections no longer echoed ({})",
                check_error.unwrap_or_default()
            ));
        }
        let per_connection = (open > 0).then(|| after.saturating_sub(before) as f64 / open as f64);
        Ok(Sample {
            values: vec![
                (open > 0).then_some(opened.elapsed.as_secs_f64()),
                per_connection,
            ],
            failures: opened.failures + check_failures,
            note: (!problems.is_empty()).then(|| problems.join("; ")),
            ..Sample::default()
        })
    }
}

/// Latencies, failures and their explanation from a load run.
fn from_load(stats: &load::LoadStats) -> Sample {
    let mut notes = Vec::new();
    if stats.failures > 0 {
        notes.push(format!(
            "{} client(s) failed ({})",
            stats.failures,
            stats.first_error.as_deref().unwrap_or("no detail")
        ));
    }
    if stats.lost > 0 {
        notes.push(format!("{} datagram(s) got no echo in time", stats.lost));
    }
    if stats.completed == 0 && stats.failures == 0 {
        notes.push("nothing completed inside the measurement window".into());
    }
    Sample {
        values: Vec::new(),
        p50_us: stats.p50_us(),
        p99_us: stats.p99_us(),
        failures: stats.failures,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

fn progress_bar(show: bool, steps: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Writes `bench.md`, `bench.json` and the concurrency chart `concurrency.svg` into `dir`.
pub fn write_out(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    let chart = dir.join("concurrency.svg");
    let has_chart = chart::concurrency(report, &chart)?;
    if has_chart {
        written.push(chart);
    }
    let markdown = dir.join("bench.md");
    std::fs::write(
        &markdown,
        report.markdown(has_chart.then_some("concurrency.svg")),
    )
    .with_context(|| format!("write {}", markdown.display()))?;
    written.insert(0, markdown);
    let json = dir.join("bench.json");
    std::fs::write(&json, report.json()).with_context(|| format!("write {}", json.display()))?;
    written.insert(1, json);
    Ok(written)
}
