//! `sockbox bench`: guest against native figures, as ratios. Argument parsing only; the bench
//! itself is the `sockbox-bench` crate.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use super::Failure;
use super::run::StopSignals;
use sockbox_bench::{self as bench, BenchOptions, NativeKind, Protocol, Worlds};

/// How the figures are made and read, after the options in `--help`.
const ABOUT_FIGURES: &str = "\
Each figure runs on a fresh guest (`sockbox run`) and a fresh native server of the same
protocol, each in its own process, driven by one loopback load generator; rounds interleave
native and guest runs, and the report gives medians and their spread (min-max).

ratio = guest/native when higher is better (throughputs, fairness), native/guest when lower
is better (times, latency, memory): ratio >= 1 always means the guest is as good as native or
better. Two native servers run, a single-threaded tokio event loop (native-evloop) and a
thread per connection (native-threads); each round's ratio is against the one that did better
in that round, and the report says which (`baseline`, `vs`).

--world p3 runs each figure's WASI 0.3 built-in (`echo-p3` for `echo`); --world both runs
both, interleaved within each round, and reports each figure per world.

Figures: tcp-bulk, tcp-rr-1, tcp-rr-64, tcp-rr-64-p99-us, tcp-rr-64-fair, tcp-rr-256,
tcp-rr-256-p99-us, tcp-rr-256-fair, tcp-rr-1024, tcp-rr-64-x2 (only when `sockbox run` has
--instances), udp-echo, framing-small, framing-large, start-to-ready-ms,
start-to-ready-cold-ms, open-10k-s, idle-conn-kib, idle-10k-rr-1.

A full run takes minutes: most of it is a WASI 0.2 guest accepting 10 000 connections one by
one in each round (--quick opens 2 000).

Exit status 1 if any connection, client or server failed; the figures are printed anyway.";

#[derive(Args, Debug)]
#[command(after_help = ABOUT_FIGURES)]
pub(crate) struct BenchArgs {
    /// 3 rounds of 50 ms warm-up + 200 ms measured per figure and server, and 2 000
    /// connections instead of 10 000 for open-10k-s, idle-conn-kib and idle-10k-rr-1 (a WASI
    /// 0.2 guest takes minutes to accept 10 000 one by one).
    #[arg(long)]
    quick: bool,
    /// Print only the JSON document on stdout:
    /// {"figures":[{"name","unit","guest","native","ratio",...}],...}.
    #[arg(long)]
    json: bool,
    /// Also write DIR/bench.md, DIR/bench.json and DIR/concurrency.svg (round trips/s
    /// against clients).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run only these figures (comma-separated or repeated).
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',')]
    only: Vec<String>,
    /// The guests' WASI: p2 (the built-ins, as before), p3 (their WASI 0.3 builds,
    /// NAME-p3), or both, each figure reported per world.
    #[arg(long, value_name = "p2|p3|both", default_value = "p2")]
    world: Worlds,
    /// Bench the component at PATH in place of the built-in guest NAME (echo, udp-echo,
    /// framing), in PATH's own world whatever --world says; repeatable, e.g. to compare an
    /// old and a new build of a guest.
    #[arg(long = "component", value_name = "NAME=PATH", value_parser = parse_component)]
    components: Vec<(String, PathBuf)>,
    /// Rounds (default 5, 3 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Measured time per figure and server in ms (warm-up is a quarter of it).
    #[arg(long, value_name = "MS")]
    duration_ms: Option<u64>,
    /// Connections opened for open-10k-s, idle-conn-kib and idle-10k-rr-1 (default 10 000,
    /// 2 000 with --quick); the figures keep their names and the report says how many.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// Start every guest with `--metrics 127.0.0.1:0` (its counters served), to compare
    /// against a run without.
    #[arg(long)]
    guest_metrics: bool,
    /// Serve as a native baseline (the bench starts these itself).
    #[arg(long, hide = true, value_name = "KIND")]
    serve: Option<NativeKind>,
    #[arg(long, hide = true, value_name = "PROTO", default_value = "echo")]
    proto: Protocol,
    #[arg(long, hide = true, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

pub(crate) async fn bench(args: BenchArgs) -> Result<u8, Failure> {
    if let Some(kind) = args.serve {
        let (proto, listen) = (args.proto, args.listen);
        return tokio::task::spawn_blocking(move || bench::serve(kind, proto, listen))
            .await
            .map_err(|err| Failure::usage(anyhow!("the native server panicked: {err}")))?
            .map(|()| 0)
            .map_err(Failure::usage);
    }

    let mut options = if args.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::standard()
    };
    if let Some(rounds) = args.rounds {
        options.rounds = rounds;
    }
    if let Some(ms) = args.duration_ms {
        options = options.measuring(Duration::from_millis(ms));
    }
    if let Some(connections) = args.connections {
        options.connections = connections;
    }
    options.only = args.only;
    options.worlds = args.world;
    options.components = args.components.into_iter().collect::<BTreeMap<_, _>>();
    options.progress = std::io::stderr().is_terminal();
    options.guest_metrics = args.guest_metrics;
    options.check().map_err(Failure::usage)?;

    // Stopping the bench drops the run, and with it every server it started.
    let mut signals = StopSignals::install().map_err(|error| Failure { status: 1, error })?;
    let report = tokio::select! {
        report = bench::run(&options) => report.map_err(|error| Failure { status: 1, error })?,
        signal = signals.next() => {
            return Err(Failure { status: 1, error: anyhow!("{signal}: bench stopped") });
        }
    };

    if args.json {
        print!("{}", report.json());
    } else {
        println!("{}", report.table());
    }
    if let Some(dir) = &args.out {
        let written =
            bench::write_out(&report, dir).map_err(|error| Failure { status: 1, error })?;
        for path in written {
            eprintln!("sockbox bench: wrote {}", path.display());
        }
    }
    let failures = report.failure_lines();
    for line in &failures {
        eprintln!("sockbox bench: {line}");
    }
    Ok(if failures.is_empty() { 0 } else { 1 })
}

fn parse_component(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!(
            "`{text}` is not NAME=PATH (e.g. echo=old/echo.wasm)"
        )),
    }
}
