//! `sockbox run`: one guest, its grants, its `ready` lines, its exit status.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Failure;
use sockbox::audit::{AuditLog, DEFAULT_AUDIT_MAX_SIZE};
use sockbox::policy::Limits;
use sockbox::{
    CompileCache, GuestExit, GuestSource, Metrics, Policy, ReadySocket, RunningGuest, Sandbox,
    SandboxBuilder,
};

/// How long a guest gets to return after it was asked to stop.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// A built-in guest (echo, udp-echo, time, framing, chat, rcmd, proxy), a .wasm component,
    /// or a Python guest (.py, built with componentize-py on first use).
    guest: String,
    /// Grant TCP listen on ADDR and tell the guest to listen there (repeatable).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Grant UDP bind on ADDR and tell the guest to bind there (repeatable).
    #[arg(long, value_name = "ADDR")]
    udp: Vec<String>,
    /// Extra grant USE=PATTERN; USE is tcp-listen, tcp-accept, tcp-connect, udp-bind,
    /// udp-send, udp-recv or dns (repeatable).
    #[arg(long, value_name = "USE=PAT")]
    allow: Vec<String>,
    /// A TOML policy file, merged with the flags.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Append every capability decision to FILE as one JSON object per line.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Past SIZE bytes the audit log is renamed to FILE.1 (replacing it) and begun afresh
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "audit")]
    audit_max_size: Option<u64>,
    /// Exit with status 3 if any operation was denied during the run.
    #[arg(long)]
    fail_on_denial: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// Run N instances of the guest sharing each granted address, the kernel spreading clients
    /// over them (SO_REUSEPORT); `auto` is one per core.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_instances)]
    instances: usize,
    /// Do not read or write the on-disk cache of compiled components (by default in the
    /// user's cache dir, or SOCKBOX_CACHE_DIR).
    #[arg(long)]
    no_cache: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, and /healthz and /readyz for
    /// probes (`127.0.0.1:0` picks a port; stderr says which).
    #[arg(long, value_name = "ADDR", value_parser = super::metrics::parse_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// Arguments passed to the guest.
    #[arg(last = true, value_name = "GUEST_ARGS")]
    guest_args: Vec<String>,
}

impl RunArgs {
    /// How many instances of the guest will run.
    pub(crate) fn instances(&self) -> usize {
        self.instances
    }
}

pub(crate) async fn run(args: RunArgs) -> Result<u8, Failure> {
    let mut policy =
        Policy::from_flags(&args.listen, &args.udp, &args.allow).map_err(Failure::usage)?;
    if let Some(file) = &args.policy {
        policy = policy.merge(Policy::load(file).map_err(Failure::usage)?);
    }
    policy.limits = args.limits.to_limits().merge(policy.limits);
    let mut signals = StopSignals::install().map_err(Failure::usage)?;
    let source = GuestSource::parse(&args.guest);
    let guest_name = source.name();
    let mut builder = Sandbox::builder(source)
        .policy(policy)
        .args(args.guest_args.iter().cloned())
        .compile_cache(compile_cache(args.no_cache))
        .sharing_process_with(args.instances)
        .print_denials(true);
    if let Some(path) = &args.audit {
        let max = args.audit_max_size.unwrap_or(DEFAULT_AUDIT_MAX_SIZE);
        let log = AuditLog::open_bounded(path, max)
            .with_context(|| format!("cannot open the audit log {}", path.display()))
            .map_err(Failure::usage)?;
        builder = builder.audit_log(log);
    }
    // Held until the guest has ended: /readyz answers 503 then, until the process exits.
    let _metrics_server = match args.metrics {
        Some(addr) => {
            let metrics = Metrics::new();
            let server = super::metrics::start(addr, &metrics).await?;
            builder = builder.metrics(metrics.guest(&guest_name, args.instances));
            Some(server)
        }
        None => None,
    };
    if args.instances > 1 {
        return run_instances(builder, args.instances, &mut signals, args.fail_on_denial).await;
    }
    let mut guest = builder.start().await.map_err(Failure::usage)?;

    let exit = supervise(&mut guest, &mut signals, ReadyLines::Stdout).await;
    Ok(exit_status(&guest, exit, args.fail_on_denial))
}

/// `--instances N`: the ready lines once every instance serves, then all stop together; the
/// status is the worst of theirs.
async fn run_instances(
    builder: SandboxBuilder,
    count: usize,
    signals: &mut StopSignals,
    fail_on_denial: bool,
) -> Result<u8, Failure> {
    builder.validate().map_err(Failure::usage)?;
    let (mut guests, sockets) = builder
        .start_instances(count)
        .await
        .map_err(|error| Failure { status: 1, error })?;
    {
        let mut out = std::io::stdout().lock();
        for socket in &sockets {
            let _ = writeln!(out, "ready {socket}");
        }
        let _ = out.flush();
    }
    let signal = tokio::select! {
        _ = futures::future::join_all(guests.iter_mut().map(|g| g.wait())) => None,
        signal = signals.next() => Some(signal),
    };
    if let Some(signal) = signal {
        tracing::info!("{signal}: asking {count} instances to stop");
        for guest in &guests {
            guest.request_shutdown();
        }
    }
    let grace = if guests.iter().all(|g| g.uses_control()) || signal.is_none() {
        GRACE
    } else {
        Duration::ZERO
    };
    let exits = futures::future::join_all(guests.iter_mut().map(|g| g.finish(grace))).await;
    let status = guests
        .iter()
        .zip(exits)
        .map(|(guest, exit)| match exit {
            // Stopping a guest without `control` is what the signal asked for.
            GuestExit::Killed if signal.is_some() && !guest.uses_control() => 0,
            exit => exit_status(guest, exit, fail_on_denial),
        })
        .max()
        .unwrap_or(0);
    Ok(status)
}

fn parse_instances(text: &str) -> Result<usize, String> {
    if text == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match text.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number from 1 to 256 or `auto`, got {text:?}"
        )),
    }
}

/// The contract's exit status for how the guest ended, saying why on stderr when not 0.
pub(crate) fn exit_status(guest: &RunningGuest, exit: GuestExit, fail_on_denial: bool) -> u8 {
    // The denial lines before the verdict on them.
    sockbox::sandbox::drain_output(Duration::from_secs(2));
    let denials = guest.denials();
    match exit {
        GuestExit::Clean if fail_on_denial && denials > 0 => {
            eprintln!("sockbox: {denials} operation(s) were denied (--fail-on-denial)");
            3
        }
        GuestExit::Clean => 0,
        other => {
            eprintln!("sockbox: guest `{}` {other}", guest.name());
            1
        }
    }
}

/// The CLI keeps compiled components on disk unless told not to.
pub(crate) fn compile_cache(no_cache: bool) -> CompileCache {
    if no_cache {
        CompileCache::Off
    } else {
        CompileCache::user_default()
    }
}

/// The limit flags `run` and `learn` share; each overrides the policy file's `[limits]`.
#[derive(Args, Debug, Default)]
pub(crate) struct LimitArgs {
    /// Cap the guest's linear memory (e.g. 64MiB); growing past it fails inside the guest
    /// [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// Accepted TCP connections open at once; past it the host refuses new clients itself
    /// (accepts and closes them) and the guest keeps serving the others [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Longest the guest may compute without calling the host, in ms (or 2s); past it the
    /// guest is stopped with an error naming this limit [default: 1000].
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    max_busy: Option<Duration>,
    /// Sockets of any kind the guest may hold at once; at the cap creating or accepting one
    /// fails inside the guest [default: 4096, less if the descriptor limit is low].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_sockets: Option<u32>,
}

impl LimitArgs {
    pub(crate) fn to_limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory,
            max_connections: self.max_connections,
            max_busy: self.max_busy,
            max_sockets: self.max_sockets,
        }
    }
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    sockbox::policy::parse_size(text).map_err(|e| format!("{e:#}"))
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    sockbox::policy::parse_millis(text).map_err(|e| format!("{e:#}"))
}

/// Where `supervise` prints the `ready` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadyLines {
    /// The contract's place for them.
    Stdout,
    /// When stdout carries something else (`learn`'s policy).
    Stderr,
}

/// Prints the guest's `ready` lines, stops it on SIGINT/SIGTERM, and returns how it ended.
pub(crate) async fn supervise(
    guest: &mut RunningGuest,
    signals: &mut StopSignals,
    ready_lines: ReadyLines,
) -> GuestExit {
    let mut sockets = guest.socket_watch();
    let (stop_printer, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let printer = tokio::spawn(async move {
        let print = |socket: ReadySocket| {
            // One line per socket, flushed at once: scripts wait for it.
            let line = format!("ready {socket}");
            if ready_lines == ReadyLines::Stdout {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            } else {
                eprintln!("{line}");
            }
        };
        loop {
            tokio::select! {
                biased;
                Some(socket) = sockets.next() => print(socket),
                _ = &mut stopped => break,
            }
        }
        // A guest that exits right after listening was still ready: its line is owed.
        sockets.ready_now().into_iter().for_each(print);
    });

    let signal = tokio::select! {
        _ = guest.wait() => None,
        signal = signals.next() => Some(signal),
    };
    let exit = match signal {
        // Without `control` there is no way to ask: stopping it is what the user wanted.
        Some(signal) if !guest.uses_control() => {
            tracing::info!(
                "{signal}: stopping guest `{}` (it does not import control)",
                guest.name()
            );
            guest.finish(Duration::ZERO).await;
            GuestExit::Clean
        }
        Some(signal) => {
            tracing::info!("{signal}: asking guest `{}` to stop", guest.name());
            guest.request_shutdown();
            guest.finish(GRACE).await
        }
        None => guest.finish(GRACE).await,
    };
    // The printer prints what is left and ends.
    let _ = stop_printer.send(());
    let _ = printer.await;

    exit
}

/// SIGINT and SIGTERM, caught from the moment this exists: install it before starting a
/// guest, or a signal sent right after the first `ready` line would kill the process.
pub(crate) struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub(crate) fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    pub(crate) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
