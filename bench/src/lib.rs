//! sockbox-bench: the measurements behind `sockbox bench`, how a guest compares with the same
//! server written natively, as ratios. The `sockbox` binary parses the flags and calls [`run`]
//! (or [`serve`] for a native baseline); the bench starts its servers as child processes of
//! that same binary (`sockbox run`, `sockbox bench --serve`), so it runs only inside it.
//!
//! A sandbox is only worth its cost if that cost is known, so every figure is measured on this
//! machine for the guest and for two native servers, with the same client, and reported as a
//! ratio against the native that did better in each round, in which ≥ 1 always means "the
//! guest is as good as native or better" (`stats::ratio`). With `--world p3` or `both` the
//! guest is (also) the WASI 0.3 build of the same guest.
//!
//! - `figures`: what is measured, as one table.
//! - `world`: which guest serves a figure in WASI 0.2 and in WASI 0.3.
//! - `options`: what a run measures and for how long, checked before anything runs.
//! - `server`: each server in a child process of its own (descriptors, RSS).
//! - `native`: the native baselines, an event loop and a thread per connection.
//! - `load`: the one load generator, closed loops with bounded time.
//! - `report` and `chart`: table, JSON, markdown and the concurrency chart.
//!
//! Rounds interleave: each round runs every figure's natives then guests (p2, p3), in the
//! reverse order every other round, so drift on the machine hits every side; the report gives
//! the median of the rounds and their spread (min–max), never one lucky run.

mod chart;
mod figures;
mod load;
mod machine;
mod native;
mod options;
mod report;
mod server;
mod stats;
mod world;

use std::collections::{BTreeMap, HashMap};
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
pub use world::{World, Worlds};

use figures::{JOBS, Job, Per, Quantity, Server, Workload};
use server::{ServerProcess, ServerSpec};

/// Descriptors beyond the connections themselves (listeners, pipes, the runtime).
const SPARE_DESCRIPTORS: usize = 256;

/// Everything one measurement needs to know.
struct Bench<'a> {
    options: &'a BenchOptions,
    exe: PathBuf,
    progress: ProgressBar,
}

/// A job as this run runs it: the guest serving it in each world benched.
#[derive(Debug)]
struct Planned {
    job: &'static Job,
    guests: Vec<GuestSlot>,
}

/// The guest of one world for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GuestSlot {
    world: World,
    /// A built-in name or a component file.
    component: String,
}

impl Planned {
    fn servers(&self) -> Vec<Server> {
        let worlds: Vec<World> = self.guests.iter().map(|g| g.world).collect();
        self.job.servers(&worlds)
    }

    fn guest(&self, world: World) -> Option<&GuestSlot> {
        self.guests.iter().find(|g| g.world == world)
    }
}

/// One job's result on one server in one round.
#[derive(Debug, Default)]
struct Sample {
    /// [`Quantity::Main`]: the workload's rate, time or RSS.
    main: Option<f64>,
    fairness: Option<f64>,
    idle_kib: Option<f64>,
    idle_round_trips: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// The figure whose exchanges `p50_us` and `p99_us` time.
    latency_of: Quantity,
    failures: u64,
    note: Option<String>,
}

impl Sample {
    fn value(&self, quantity: Quantity) -> Option<f64> {
        match quantity {
            Quantity::Main => self.main,
            Quantity::P99Us => self.p99_us,
            Quantity::Fairness => self.fairness,
            Quantity::IdleKib => self.idle_kib,
            Quantity::IdleRoundTrips => self.idle_round_trips,
        }
    }

    /// What one figure takes from this sample in round `round`.
    fn result(&self, quantity: Quantity, round: usize) -> RoundResult {
        let timed = quantity == self.latency_of;
        RoundResult {
            round,
            value: self.value(quantity),
            p50_us: self.p50_us.filter(|_| timed),
            p99_us: self.p99_us.filter(|_| timed),
        }
    }
}

/// One figure on one server in one round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RoundResult {
    pub(crate) round: usize,
    pub(crate) value: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
}

/// All rounds of one figure on one server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    /// In round order, one per round the server ran.
    pub(crate) rounds: Vec<RoundResult>,
    pub(crate) failures: u64,
    pub(crate) notes: Vec<String>,
}

impl Tally {
    /// The rounds' values, where a round produced one.
    pub(crate) fn values(&self) -> Vec<f64> {
        self.rounds.iter().filter_map(|r| r.value).collect()
    }

    pub(crate) fn p50_us(&self) -> Vec<f64> {
        self.rounds.iter().filter_map(|r| r.p50_us).collect()
    }

    pub(crate) fn p99_us(&self) -> Vec<f64> {
        self.rounds.iter().filter_map(|r| r.p99_us).collect()
    }

    /// This tally's result in `round`, if the server ran then.
    pub(crate) fn round(&self, round: usize) -> Option<&RoundResult> {
        self.rounds.iter().find(|r| r.round == round)
    }
}

/// Runs the selected figures and reports them. The servers are children of this process and
/// are gone when this returns (or is dropped).
pub async fn run(options: &BenchOptions) -> Result<Report> {
    options.check()?;
    let machine = Machine::here();
    let exe = std::env::current_exe().context("find the sockbox binary to start servers")?;
    let files = file_worlds(options).await?;
    let (plan, skipped) = select(options, &files, World::builtin);
    let steps: usize = plan.iter().map(|p| p.servers().len()).sum::<usize>() * options.rounds;
    let bench = Bench {
        options,
        exe,
        progress: progress_bar(options.progress, steps as u64),
    };
    bench.prepare(&plan).await?;
    let tallies = bench.rounds(&plan).await;
    bench.progress.finish_and_clear();

    let mut reports = Vec::new();
    for planned in &plan {
        let job = planned.job;
        let clients = match job.workload {
            Workload::OpenIdle => Some(options.connections),
            _ => job.clients(),
        };
        for figure in job.figures.iter().filter(|f| options.wants(f.name)) {
            let tally = |server| tallies.get(&(figure.name, server));
            for slot in &planned.guests {
                reports.push(FigureReport::new(
                    figure,
                    job,
                    slot.world,
                    &bench.component_label(job, slot),
                    clients,
                    tally(Server::Guest(slot.world)),
                    tally(Server::Native(NativeKind::Evloop)),
                    tally(Server::Native(NativeKind::Threads)),
                ));
            }
        }
    }
    Ok(Report::new(machine, options, reports, skipped))
}

/// The world of each `--component` file (it decides its own, whatever `--world` says).
async fn file_worlds(options: &BenchOptions) -> Result<BTreeMap<String, World>> {
    let mut worlds = BTreeMap::new();
    for (guest, path) in &options.components {
        let path = path.clone();
        let world = tokio::task::spawn_blocking(move || World::of_file(&path))
            .await
            .context("reading a component's world")??;
        worlds.insert(guest.clone(), world);
    }
    Ok(worlds)
}

/// The jobs yielding the figures asked for, each with its guest per world (`builtin` names the
/// built-in of a guest in a world, if there is one), and the figures that cannot run here (in
/// a world or at all), with why.
fn select(
    options: &BenchOptions,
    files: &BTreeMap<String, World>,
    builtin: impl Fn(World, &str) -> Option<String>,
) -> (Vec<Planned>, Vec<Skipped>) {
    let mut plan = Vec::new();
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
        let mut skip = |world: Option<World>, reason: &str| {
            skipped.extend(wanted.iter().map(|figure| Skipped {
                name: figure.name.to_string(),
                world,
                reason: reason.to_string(),
            }))
        };
        let need = options.connections + SPARE_DESCRIPTORS;
        // Raised to the hard limit, for this process and the servers it starts.
        let limit = sockbox::sandbox::fd_budget().limit;
        if matches!(job.workload, Workload::OpenIdle) && limit < need as u64 {
            skip(
                None,
                &format!(
                    "needs {need} open descriptors per process; the limit is {limit} \
                     (raise it with `ulimit -n {need}`)"
                ),
            );
            continue;
        }
        let guest = job.proto.guest();
        let mut guests = Vec::new();
        match (options.components.get(guest), files.get(guest)) {
            (Some(path), Some(&world)) => guests.push(GuestSlot {
                world,
                component: path.display().to_string(),
            }),
            _ => {
                for &world in options.worlds.list() {
                    match builtin(world, guest) {
                        Some(component) => guests.push(GuestSlot { world, component }),
                        None => skip(
                            Some(world),
                            &format!(
                                "this sockbox has no {world} build of the `{guest}` guest \
                                 (`{}`); give one with --component {guest}=FILE",
                                world.builtin_name(guest)
                            ),
                        ),
                    }
                }
            }
        }
        if !guests.is_empty() {
            plan.push(Planned { job, guests });
        }
    }
    (plan, skipped)
}

impl Bench<'_> {
    /// Every round: each job's servers in turn (both natives, then the guest of each world),
    /// in that order in even rounds and in reverse in odd ones.
    async fn rounds(&self, plan: &[Planned]) -> HashMap<(&'static str, Server), Tally> {
        let rounds = self.options.rounds;
        let mut tallies: HashMap<(&'static str, Server), Tally> = HashMap::new();
        for round in 1..=rounds {
            for planned in plan {
                let job = planned.job;
                let mut servers = planned.servers();
                if round % 2 == 0 {
                    servers.reverse();
                }
                for server in servers {
                    let figure = job.name();
                    self.progress.set_message(format!(
                        "round {round}/{rounds} · {figure} · {}",
                        server.name()
                    ));
                    let sample = match self.measure(planned, server).await {
                        Ok(sample) => sample,
                        Err(err) => Sample {
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
                    for figure in job.figures {
                        let tally = tallies.entry((figure.name, server)).or_default();
                        tally.rounds.push(sample.result(figure.quantity, round));
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
    async fn prepare(&self, plan: &[Planned]) -> Result<()> {
        let mut seen = Vec::new();
        for planned in plan {
            for slot in &planned.guests {
                let spec = self.spec(planned, Server::Guest(slot.world), false);
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
        }
        Ok(())
    }

    fn component_label(&self, job: &Job, slot: &GuestSlot) -> String {
        let mut label = slot.component.clone();
        for arg in job.guest_args {
            label.push(' ');
            label.push_str(arg);
        }
        label
    }

    fn spec(&self, planned: &Planned, server: Server, cold: bool) -> ServerSpec {
        let job = planned.job;
        match server {
            Server::Guest(world) => {
                let mut args: Vec<String> = job.guest_args.iter().map(|a| a.to_string()).collect();
                if self.options.guest_metrics {
                    args.extend(["--metrics".into(), "127.0.0.1:0".into()]);
                }
                ServerSpec::Guest {
                    component: planned
                        .guest(world)
                        .map(|slot| slot.component.clone())
                        .unwrap_or_else(|| job.proto.guest().to_string()),
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
    async fn measure(&self, planned: &Planned, server: Server) -> Result<Sample> {
        let job = planned.job;
        let cold = matches!(job.workload, Workload::StartToReady { cold: true });
        let process = ServerProcess::start(&self.exe, &self.spec(planned, server, cold)).await?;
        let addr = process.addr();
        let phases = self.options.phases;
        let sample = match job.workload {
            Workload::Bulk { chunk } => {
                let stats = load::bulk(addr, chunk, phases).await;
                Sample {
                    main: Some(stats.per_sec() / 1e9),
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
                    main: Some(value),
                    fairness: stats.fairness(),
                    ..from_load(&stats)
                }
            }
            Workload::Udp { sockets, size } => {
                let stats = load::udp_echo(addr, sockets, size, phases).await;
                Sample {
                    main: Some(stats.per_sec()),
                    ..from_load(&stats)
                }
            }
            Workload::StartToReady { .. } => Sample {
                main: Some(process.start_to_ready().as_secs_f64() * 1e3),
                ..Sample::default()
            },
            Workload::OpenIdle => return self.open_idle(process).await,
        };
        Ok(sample)
    }

    /// `open-10k-s`, `idle-conn-kib` and `idle-10k-rr-1` from one set of connections, then
    /// the check that every one of them still echoes.
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
        // One more client, busy while the others sit idle on the same server.
        let busy = load::exchange(
            process.addr(),
            1,
            load::Message::Raw(32),
            self.options.phases,
        )
        .await;
        let (check_failures, check_error) = load::echo_each(&mut opened.streams).await;
        let open = opened.streams.len();
        // Kill the server before dropping the clients: it need not handle 10 000 resets.
        drop(process);
        drop(opened.streams);

        let busy = from_load(&busy);
        let mut problems = Vec::new();
        if opened.failures > 0 {
            problems.push(format!(
                "{} of {wanted} connections could not be opened ({})",
                opened.failures,
                opened.first_error.unwrap_or_default()
            ));
        }
        if let Some(note) = &busy.note {
            problems.push(format!("the busy client among the idle ones: {note}"));
        }
        if check_failures > 0 {
            problems.push(format!(
                "{check_failures} of {open} idle connections no longer echoed ({})",
                check_error.unwrap_or_default()
            ));
        }
        let per_connection = (open > 0).then(|| after.saturating_sub(before) as f64 / open as f64);
        Ok(Sample {
            main: (open > 0).then_some(opened.elapsed.as_secs_f64()),
            idle_kib: per_connection,
            idle_round_trips: busy.main,
            p50_us: busy.p50_us,
            p99_us: busy.p99_us,
            latency_of: Quantity::IdleRoundTrips,
            failures: opened.failures + busy.failures + check_failures,
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
        main: Some(stats.per_sec()),
        p50_us: stats.p50_us(),
        p99_us: stats.p99_us(),
        failures: stats.failures,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        ..Sample::default()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Built-ins as on a binary with WASI 0.3 builds of echo and udp-echo only.
    fn builtin(world: World, guest: &str) -> Option<String> {
        match world {
            World::P2 => Some(guest.to_string()),
            World::P3 => (guest != "framing").then(|| format!("{guest}-p3")),
        }
    }

    fn options(only: &[&str], worlds: Worlds) -> BenchOptions {
        BenchOptions {
            only: only.iter().map(|s| s.to_string()).collect(),
            worlds,
            ..BenchOptions::quick()
        }
    }

    fn slots(plan: &[Planned]) -> Vec<(&str, World, &str)> {
        plan.iter()
            .flat_map(|p| {
                p.guests
                    .iter()
                    .map(|g| (p.job.name(), g.world, g.component.as_str()))
            })
            .collect()
    }

    #[test]
    fn p3_runs_each_guests_p3_twin_and_says_which_have_none() {
        let only = ["tcp-rr-1", "framing-small"];
        let (plan, skipped) = select(&options(&only, Worlds::P3), &BTreeMap::new(), builtin);
        assert_eq!(slots(&plan), [("tcp-rr-1", World::P3, "echo-p3")]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].name, "framing-small");
        assert_eq!(skipped[0].world, Some(World::P3));
        assert!(skipped[0].reason.contains("`framing-p3`"), "{skipped:?}");

        let (plan, skipped) = select(&options(&only, Worlds::Both), &BTreeMap::new(), builtin);
        assert_eq!(
            slots(&plan),
            [
                ("tcp-rr-1", World::P2, "echo"),
                ("tcp-rr-1", World::P3, "echo-p3"),
                ("framing-small", World::P2, "framing"),
            ]
        );
        assert_eq!(skipped.len(), 1, "framing still skipped for p3 only");
        assert_eq!(
            plan[0].servers(),
            [
                Server::Native(NativeKind::Evloop),
                Server::Native(NativeKind::Threads),
                Server::Guest(World::P2),
                Server::Guest(World::P3),
            ]
        );

        let (plan, skipped) = select(&options(&only, Worlds::P2), &BTreeMap::new(), builtin);
        assert_eq!(slots(&plan).len(), 2);
        assert!(skipped.is_empty(), "p2, the default, is today's bench");
    }

    #[test]
    fn a_component_file_runs_once_in_its_own_world() {
        let mut options = options(&["tcp-rr-1", "udp-echo"], Worlds::Both);
        options
            .components
            .insert("echo".into(), PathBuf::from("new/echo.wasm"));
        let files = BTreeMap::from([("echo".to_string(), World::P3)]);
        let (plan, skipped) = select(&options, &files, builtin);
        assert_eq!(
            slots(&plan),
            [
                ("tcp-rr-1", World::P3, "new/echo.wasm"),
                ("udp-echo", World::P2, "udp-echo"),
                ("udp-echo", World::P3, "udp-echo-p3"),
            ]
        );
        assert!(skipped.is_empty());
        // Even when --world does not name its world.
        options.worlds = Worlds::P2;
        let (plan, _) = select(&options, &files, builtin);
        assert_eq!(slots(&plan)[0], ("tcp-rr-1", World::P3, "new/echo.wasm"));
    }

    #[test]
    fn latencies_go_to_the_figure_whose_exchanges_they_time() {
        let sample = Sample {
            main: Some(1.5),
            idle_kib: Some(2.0),
            idle_round_trips: Some(900.0),
            p50_us: Some(40.0),
            p99_us: Some(90.0),
            latency_of: Quantity::IdleRoundTrips,
            ..Sample::default()
        };
        let open = sample.result(Quantity::Main, 2);
        assert_eq!((open.round, open.value, open.p50_us), (2, Some(1.5), None));
        let busy = sample.result(Quantity::IdleRoundTrips, 2);
        assert_eq!(
            (busy.value, busy.p50_us, busy.p99_us),
            (Some(900.0), Some(40.0), Some(90.0))
        );
        let rr = Sample {
            main: Some(5000.0),
            fairness: Some(0.9),
            p99_us: Some(300.0),
            ..Sample::default()
        };
        assert_eq!(rr.result(Quantity::P99Us, 1).value, Some(300.0));
        assert_eq!(rr.result(Quantity::Fairness, 1).value, Some(0.9));
        assert_eq!(rr.result(Quantity::Fairness, 1).p99_us, None);
        assert_eq!(rr.result(Quantity::Main, 1).p99_us, Some(300.0));
    }
}
