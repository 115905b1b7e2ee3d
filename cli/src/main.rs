//! The `sockbox` command line: parses arguments and hands each subcommand to the library
//! (`sockbox`) or the bench (`sockbox-bench`); see `sockbox --help` and docs/contract.md.
//! Exit status: 0 clean, 1 guest failure, 2 usage/policy/load error (nothing ran),
//! 3 `--fail-on-denial` and a denial happened.

mod bench;
mod build;
mod check;
mod client;
mod learn;
mod metrics;
mod new;
mod policy;
mod run;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// wasi:io `poll` allocates a future and an index list per pollable on every call; under many
// clients glibc's malloc and free were a third of the host's time (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run untrusted socket servers as WebAssembly components, with exactly the network they are granted.
#[derive(Parser, Debug)]
#[command(name = "sockbox", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How sockbox's own log lines on stderr are written: `text` for a person, `json` for
    /// a log shipper (one object a line: timestamp, level, message, guest, fields). The
    /// guests' own output and the audit log are not changed.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a guest with the network it is granted (deny by default).
    Run(run::RunArgs),
    /// Show a component's imports and exports, whether it fits the sandbox, and which
    /// network uses it could attempt.
    Check(check::CheckArgs),
    /// Work with policy files.
    Policy(policy::PolicyArgs),
    /// Run a guest with permissive loopback-only grants and print the minimal policy.
    Learn(learn::LearnArgs),
    /// Scaffold a new guest: a Rust crate on the guest SDK, or a Python script.
    New(new::NewArgs),
    /// Build a Python guest (.py) into a component file with componentize-py.
    Build(build::BuildArgs),
    /// An interactive native client: stdin to the server, replies to stdout.
    Client(client::ClientArgs),
    /// Run the guests of a manifest side by side, each with its own policy and limits,
    /// restarted as the manifest says.
    Up(up::UpArgs),
    /// Guest against native figures (throughput, latency, start, memory) as ratios.
    Bench(bench::BenchArgs),
}

/// A failure with the exit status it maps to.
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    /// Usage, policy or load error: nothing ran.
    pub(crate) fn usage(error: anyhow::Error) -> Failure {
        Failure { status: 2, error }
    }
}

fn main() -> ExitCode {
    // With RUST_BACKTRACE set, every error value (each client reset a guest reads about)
    // captures the host's stack, which sockbox never shows outside SOCKBOX_LOG=debug: turn
    // that capture off for errors; panics keep their backtraces (RUST_BACKTRACE governs them).
    let debug =
        std::env::var("SOCKBOX_LOG").is_ok_and(|f| f.contains("debug") || f.contains("trace"));
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() && !debug {
        // SAFETY: the first thing main does; no other thread exists yet to read the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    // Logs go to stderr; stdout carries only `ready` lines and the guest's own output.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SOCKBOX_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colour codes only for a person at a terminal, not in files and CI logs.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields beside the message, not nested, as the host's own JSON lines are.
        LogFormat::Json => {
            logs.json().flatten_event(true).init();
            sockbox::sandbox::host_lines_as_json(true);
        }
    }

    // Soft descriptor limit up to the hard one, before anything opens a socket; guests share a
    // budget below it, so none of them can take the host's last descriptors.
    let budget = sockbox::sandbox::fd_budget();
    tracing::debug!(?budget, "descriptor limit");

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A guest instance is one task: more workers than instances only take turns polling the
    // I/O driver (an epoll_wait per request under load), so `run` gets one per instance.
    if let Command::Run(args) = &cli.command {
        builder.worker_threads(args.instances());
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("sockbox: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args),
            Command::Policy(args) => policy::policy(args),
            Command::Learn(args) => learn::learn(args).await,
            Command::New(args) => new::new(args),
            Command::Build(args) => build::build(args),
            Command::Client(args) => client::client(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Up(args) => up::up(args).await,
        }
    });
    // Guests blocked in host calls must not keep the process alive once we decided to exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // Guests' output and denial lines are written by their own threads: let them finish.
    sockbox::sandbox::drain_output(std::time::Duration::from_secs(2));
    match result {
        Ok(status) => ExitCode::from(status),
        Err(Failure { status, error }) => {
            eprintln!("sockbox: error: {error:#}");
            ExitCode::from(status)
        }
    }
}
