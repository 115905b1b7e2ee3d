//! `sockbox up`: several guests in one process, each with its own policy, limits, store and
//! audit stream, started again when they fail and given up when they keep failing.
//!
//! Every guest instance is supervised by its own tokio task around its own [`RunningGuest`](crate::RunningGuest),
//! so a guest that traps, exits, runs out of memory or spins ends only its own task; the
//! others keep serving. The supervisor reports what happens as [`Event`]s (the CLI prints
//! `ready` lines on stdout and the rest on stderr) and returns how each instance ended.
//!
//! Here: the group (every guest of the manifest started side by side, stopped together).
//! - `manifest`: the TOML manifest, checked before anything runs.
//! - `instance`: one instance's restart loop, its ready sockets and its stop.
//! - `backoff`: restart waits, the stable-run reset and the restart cap.
//! - `events`: what the supervisor reports, and how each instance ended.

mod backoff;
mod events;
mod instance;
mod manifest;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::guest::Guest;
use crate::metrics::{GuestMetrics, Metrics};
use crate::sandbox::{CompileCache, Sandbox, SandboxBuilder};
pub use backoff::RestartSettings;
pub use events::{Ending, Event, EventSink, Outcome};
use instance::{PortPin, Slot};
pub use manifest::{GuestSpec, Manifest, Restart};

/// Runs a [`Manifest`]'s guests.
pub struct Supervisor {
    manifest: Manifest,
    audit_log: Option<Arc<AuditLog>>,
    compile_cache: CompileCache,
    print_denials: bool,
    capture_output: bool,
    /// Where every guest is counted (`--metrics`), if anywhere.
    metrics: Option<Metrics>,
    /// Each guest's resolved component (manifest order), resolved once: validation, every
    /// instance and every restart start from it.
    guests: Vec<OnceLock<Guest>>,
}

impl Supervisor {
    /// A supervisor of `manifest`'s guests, with no audit log, no compile cache, denials not
    /// printed and output passed through.
    pub fn new(manifest: Manifest) -> Supervisor {
        Supervisor {
            audit_log: None,
            compile_cache: CompileCache::Off,
            print_denials: false,
            capture_output: false,
            metrics: None,
            guests: manifest.guests.iter().map(|_| OnceLock::new()).collect(),
            manifest,
        }
    }

    /// The manifest it runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every guest's decisions are also appended here (`--audit`).
    pub fn audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// Where compiled components are kept between runs (default: compile in memory only).
    pub fn compile_cache(mut self, cache: CompileCache) -> Self {
        self.compile_cache = cache;
        self.guests = self
            .manifest
            .guests
            .iter()
            .map(|_| OnceLock::new())
            .collect();
        self
    }

    /// One stderr line per denial, as `sockbox run` prints.
    pub fn print_denials(mut self, yes: bool) -> Self {
        self.print_denials = yes;
        self
    }

    /// Keep guests' output in memory instead of passing it through (for tests).
    pub fn capture_output(mut self, yes: bool) -> Self {
        self.capture_output = yes;
        self
    }

    /// Count every guest into `metrics`, each under its table's name, ready when all its
    /// instances are.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Compiles and type-checks every guest's component, running nothing; errors name the
    /// guest's table.
    pub fn validate(&self) -> Result<()> {
        for (index, spec) in self.manifest.guests.iter().enumerate() {
            self.base_builder(index)
                .and_then(|builder| builder.validate())
                .with_context(|| format!("{}: guest `{}`", spec.at, spec.name))?;
        }
        Ok(())
    }

    /// The builder of the `index`th guest, from its component resolved once.
    fn base_builder(&self, index: usize) -> Result<SandboxBuilder> {
        let spec = &self.manifest.guests[index];
        let guest = match self.guests[index].get() {
            Some(guest) => guest.clone(),
            None => {
                let guest = Guest::resolve(&spec.source, &self.compile_cache)?;
                self.guests[index].get_or_init(|| guest).clone()
            }
        };
        // Every instance of every guest shares this process's descriptor budget.
        let instances: usize = self.manifest.guests.iter().map(|g| g.instances).sum();
        Ok(Sandbox::from_guest(guest)
            .sharing_process_with(instances)
            .args(spec.args.iter().cloned())
            .compile_cache(self.compile_cache.clone())
            .print_denials(self.print_denials)
            .capture_output(self.capture_output)
            .share_ports(spec.instances > 1))
    }

    /// Checks everything (components, audit files), then runs every guest until each has
    /// ended for good or `stop` resolves; then every guest is asked to stop, gets the grace
    /// period if it imports `control`, and is killed otherwise. An error means nothing ran.
    pub async fn run(self, stop: impl Future<Output = ()>, events: EventSink) -> Result<Outcome> {
        self.validate()?;
        let mut slots = Vec::new();
        for (index, spec) in self.manifest.guests.iter().enumerate() {
            // Resolved by `validate` above: this takes the same guest.
            let mut builder = self
                .base_builder(index)
                .with_context(|| format!("{}: guest `{}`", spec.at, spec.name))?;
            if let Some(log) = &self.audit_log {
                builder = builder.also_audit_to(log.clone());
            }
            if let Some(path) = &spec.audit {
                let log = AuditLog::open(path).with_context(|| {
                    format!(
                        "{}: guest `{}`: audit {}",
                        spec.at,
                        spec.name,
                        path.display()
                    )
                })?;
                builder = builder.also_audit_to(Arc::new(log));
            }
            let metrics = match &self.metrics {
                Some(metrics) => metrics.guest(&spec.name, spec.instances),
                None => GuestMetrics::detached(),
            };
            builder = builder.metrics(metrics.clone());
            let pin = Arc::new(watch::Sender::new(PortPin::Waiting));
            for index in 0..spec.instances {
                slots.push(Slot {
                    guest: spec.name.clone(),
                    instance: if spec.instances == 1 {
                        spec.name.clone()
                    } else {
                        format!("{}#{index}", spec.name)
                    },
                    index,
                    builder: builder.clone(),
                    policy: spec.policy.clone(),
                    restart: spec.restart,
                    settings: self.manifest.settings,
                    pin: pin.clone(),
                    events: events.clone(),
                    metrics: metrics.clone(),
                });
            }
        }

        let (stop_all, stopping) = watch::channel(false);
        let names: Vec<String> = slots.iter().map(|s| s.instance.clone()).collect();
        let handles: Vec<_> = slots
            .into_iter()
            .map(|slot| tokio::spawn(slot.supervise(stopping.clone())))
            .collect();
        let mut all = futures::future::join_all(handles);
        let results = tokio::select! {
            results = &mut all => results,
            () = stop => {
                events(Event::Stopping);
                stop_all.send_replace(true);
                all.await
            }
        };
        let endings = names
            .into_iter()
            .zip(results)
            .map(|(name, result)| {
                let ending = result.unwrap_or_else(|err| {
                    Ending::Failed(format!("its supervisor task ended abnormally: {err}"))
                });
                (name, ending)
            })
            .collect();
        Ok(Outcome { endings })
    }
}
