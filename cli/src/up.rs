//! `sockbox up`: the guests of a manifest side by side, supervised (see `sockbox::supervise`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::Failure;
use super::run::{StopSignals, compile_cache};
use sockbox::Metrics;
use sockbox::audit::{AuditLog, DEFAULT_AUDIT_MAX_SIZE};
use sockbox::supervise::{Event, Manifest, Supervisor};

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    /// The manifest: one `[guests.NAME]` table per guest (see docs/up.md).
    manifest: PathBuf,
    /// Validate the manifest and every component, print one line per guest, run nothing.
    #[arg(long)]
    check: bool,
    /// Append every guest's capability decisions to FILE as one JSON object per line.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Past SIZE bytes the audit log is renamed to FILE.1 (replacing it) and begun afresh
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = super::run::parse_size, requires = "audit")]
    audit_max_size: Option<u64>,
    /// Do not read or write the on-disk cache of compiled components.
    #[arg(long)]
    no_cache: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, and /healthz and /readyz for
    /// probes (overrides the manifest's `[metrics] address`).
    #[arg(long, value_name = "ADDR", value_parser = super::metrics::parse_addr)]
    metrics: Option<std::net::SocketAddr>,
}

pub(crate) async fn up(args: UpArgs) -> Result<u8, Failure> {
    let manifest = Manifest::load(&args.manifest).map_err(Failure::usage)?;
    let mut supervisor = Supervisor::new(manifest)
        .compile_cache(compile_cache(args.no_cache))
        .print_denials(true);
    if args.check {
        supervisor.validate().map_err(Failure::usage)?;
        let mut out = std::io::stdout().lock();
        for guest in &supervisor.manifest().guests {
            let _ = writeln!(out, "{}", guest.summary());
        }
        return Ok(0);
    }
    if let Some(path) = &args.audit {
        let max = args.audit_max_size.unwrap_or(DEFAULT_AUDIT_MAX_SIZE);
        let log = AuditLog::open_bounded(path, max)
            .with_context(|| format!("cannot open the audit log {}", path.display()))
            .map_err(Failure::usage)?;
        supervisor = supervisor.audit_log(Arc::new(log));
    }
    let _metrics_server = match args.metrics.or(supervisor.manifest().metrics) {
        Some(addr) => {
            let metrics = Metrics::new();
            let server = super::metrics::start(addr, &metrics).await?;
            supervisor = supervisor.metrics(metrics);
            Some(server)
        }
        None => None,
    };
    // Before any guest starts, so a signal right after the first ready line is caught.
    let mut signals = StopSignals::install().map_err(Failure::usage)?;
    let stop = async {
        let signal = signals.next().await;
        eprintln!("sockbox: {signal}");
    };
    let outcome = supervisor
        .run(stop, Arc::new(print_event))
        .await
        .map_err(Failure::usage)?;
    let failed: Vec<String> = (outcome.endings.iter())
        .filter(|(_, ending)| ending.is_failure())
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    // The guests' last lines and events before the verdict.
    sockbox::sandbox::drain_output(std::time::Duration::from_secs(2));
    if failed.is_empty() {
        Ok(0)
    } else {
        eprintln!("sockbox: failed for good: {}", failed.join(", "));
        Ok(1)
    }
}

/// Ready lines on stdout, flushed at once (scripts wait for them); everything else on stderr.
fn print_event(event: Event) {
    match event.ready_line() {
        Some(line) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        // Through the bounded stderr queue the denial lines use: a stderr nobody reads does
        // not stall the supervisor.
        None => match event.instance() {
            Some(guest) => sockbox::sandbox::guest_line(guest, &format!("sockbox: {event}")),
            None => sockbox::sandbox::host_line(&format!("sockbox: {event}")),
        },
    }
}
