//! `sockbox up`: several guests in one process, each with its own policy, limits, store and
//! audit stream, started again when they fail and given up when they keep failing.
//!
//! Every guest instance is supervised by its own tokio task around its own [`RunningGuest`],
//! so a guest that traps, exits, runs out of memory or spins ends only its own task; the
//! others keep serving. The supervisor reports what happens as [`Event`]s (the CLI prints
//! `ready` lines on stdout and the rest on stderr) and returns how each instance ended.
//!
//! - `manifest`: the TOML manifest, checked before anything runs.
//! - `backoff`: restart waits, the stable-run reset and the restart cap.

mod backoff;
mod manifest;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::FutureExt;
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::guest::Guest;
use crate::policy::Policy;
use crate::sandbox::{
    CompileCache, GuestExit, ReadySocket, RunningGuest, Sandbox, SandboxBuilder, Transport,
};
pub use backoff::{Backoff, Next, RestartSettings};
pub use manifest::{GuestSpec, MAX_INSTANCES, Manifest, Restart};

/// What the supervisor reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A socket of guest `guest` is ready: the contract's `ready tcp 127.0.0.1:7000 echo`.
    Ready { guest: String, socket: ReadySocket },
    /// An instance started (`run` counts its starts from 1).
    Started { instance: String, run: u32 },
    /// An instance's run ended by itself; `how` says how.
    Ended {
        instance: String,
        how: String,
        failed: bool,
    },
    /// It is started again after `after`; `restart` of at most `max` within the window.
    Restarting {
        instance: String,
        after: Duration,
        restart: u32,
        max: u32,
    },
    /// It failed too often within the window and stays down.
    GaveUp {
        instance: String,
        restarts: u32,
        window: Duration,
    },
    /// Every guest is being asked to stop.
    Stopping,
}

impl Event {
    /// The `ready` line for stdout, if this is one.
    pub fn ready_line(&self) -> Option<String> {
        match self {
            Event::Ready { guest, socket } => Some(format!("ready {socket} {guest}")),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    /// The log line (without a `sockbox:` prefix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Ready { guest, socket } => write!(f, "guest `{guest}` ready on {socket}"),
            Event::Started { instance, run: 1 } => write!(f, "guest `{instance}` started"),
            Event::Started { instance, run } => {
                write!(f, "guest `{instance}` started (run {run})")
            }
            Event::Ended { instance, how, .. } => write!(f, "guest `{instance}` {how}"),
            Event::Restarting {
                instance,
                after,
                restart,
                max,
            } => write!(
                f,
                "guest `{instance}` restarting in {after:?} (restart {restart} of at most {max} \
                 within the window)"
            ),
            Event::GaveUp {
                instance,
                restarts,
                window,
            } => write!(
                f,
                "guest `{instance}` given up: it ended again after {restarts} restarts within \
                 {window:?}; the other guests keep running"
            ),
            Event::Stopping => f.write_str("asking every guest to stop"),
        }
    }
}

/// How one instance ended for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It returned cleanly and is not restarted.
    Clean,
    /// It was stopped by [`Supervisor::run`]'s stop signal (cleanly, or killed because it
    /// does not import `control`).
    Stopped,
    /// It failed and its restart rule does not start it again (or it failed while stopping).
    Failed(String),
    /// It failed too often and was given up.
    GaveUp(String),
}

impl Ending {
    pub fn is_failure(&self) -> bool {
        matches!(self, Ending::Failed(_) | Ending::GaveUp(_))
    }
}

/// How every instance ended, in manifest order.
#[derive(Debug)]
pub struct Outcome {
    pub endings: Vec<(String, Ending)>,
}

impl Outcome {
    /// No instance failed for good.
    pub fn succeeded(&self) -> bool {
        !self.endings.iter().any(|(_, ending)| ending.is_failure())
    }
}

/// Where events go: called from the instances' tasks.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Runs a [`Manifest`]'s guests.
pub struct Supervisor {
    manifest: Manifest,
    audit_log: Option<Arc<AuditLog>>,
    compile_cache: CompileCache,
    print_denials: bool,
    capture_output: bool,
    /// Each guest's resolved component (manifest order), resolved once: validation, every
    /// instance and every restart start from it.
    guests: Vec<OnceLock<Guest>>,
}

impl Supervisor {
    pub fn new(manifest: Manifest) -> Supervisor {
        Supervisor {
            audit_log: None,
            compile_cache: CompileCache::Off,
            print_denials: false,
            capture_output: false,
            guests: manifest.guests.iter().map(|_| OnceLock::new()).collect(),
            manifest,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every guest's decisions are also appended here (`--audit`).
    pub fn audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

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

/// The ports a guest's first instance got for its port-0 grants, which every later start
/// (restarts, further instances) is pinned to.
#[derive(Clone, Debug)]
enum PortPin {
    Waiting,
    Pinned(Policy),
    /// The first instance ended for good without serving.
    Never,
}

/// One instance of one guest and everything needed to start it again.
struct Slot {
    guest: String,
    instance: String,
    index: usize,
    builder: SandboxBuilder,
    policy: Policy,
    restart: Restart,
    settings: RestartSettings,
    pin: Arc<watch::Sender<PortPin>>,
    events: EventSink,
}

impl Slot {
    fn has_port_zero(&self) -> bool {
        let zero = |a: &std::net::SocketAddr| a.port() == 0;
        self.policy.listen.iter().any(zero) || self.policy.udp.iter().any(zero)
    }

    /// Runs the instance, restarting it as its rule says, until it ends for good or
    /// `stopping` turns true.
    async fn supervise(self, mut stopping: watch::Receiver<bool>) -> Ending {
        // Further instances share the first one's ports, so they wait until it has them.
        if self.index > 0 && self.has_port_zero() {
            let mut pin = self.pin.subscribe();
            tokio::select! {
                pinned = pin.wait_for(|p| !matches!(p, PortPin::Waiting)) => {
                    if matches!(pinned.as_deref(), Ok(PortPin::Never) | Err(_)) {
                        return Ending::Failed(
                            "not started: the first instance never got its ports".into(),
                        );
                    }
                }
                _ = stopping.wait_for(|s| *s) => return Ending::Stopped,
            }
        }
        let ending = self.run_until_final(&mut stopping).await;
        if self.index == 0 {
            self.pin.send_if_modified(|p| {
                let waiting = matches!(p, PortPin::Waiting);
                if waiting {
                    *p = PortPin::Never;
                }
                waiting
            });
        }
        ending
    }

    async fn run_until_final(&self, stopping: &mut watch::Receiver<bool>) -> Ending {
        let mut backoff = Backoff::new(self.settings);
        let mut run = 0;
        loop {
            run += 1;
            let policy = match &*self.pin.borrow() {
                PortPin::Pinned(policy) => policy.clone(),
                _ => self.policy.clone(),
            };
            let started = Instant::now();
            let builder = self.builder.clone().policy(policy).name(&self.instance);
            let exit = match builder.start().await {
                Ok(mut guest) => {
                    (self.events)(Event::Started {
                        instance: self.instance.clone(),
                        run,
                    });
                    if self.serve(&mut guest, run, stopping).await {
                        return self.stop(guest).await;
                    }
                    guest.finish(Duration::ZERO).await
                }
                Err(err) => GuestExit::Trapped(err.context("cannot start it")),
            };
            let failed = !exit.is_clean();
            let how = exit.to_string();
            (self.events)(Event::Ended {
                instance: self.instance.clone(),
                how: how.clone(),
                failed,
            });
            let again = match self.restart {
                Restart::Never => false,
                Restart::OnFailure => failed,
                Restart::Always => true,
            };
            if !again {
                return if failed {
                    Ending::Failed(how)
                } else {
                    Ending::Clean
                };
            }
            match backoff.after_run(Instant::now(), started.elapsed()) {
                Next::GiveUp => {
                    (self.events)(Event::GaveUp {
                        instance: self.instance.clone(),
                        restarts: self.settings.max_restarts,
                        window: self.settings.window,
                    });
                    return Ending::GaveUp(how);
                }
                Next::Restart { after, restart } => {
                    (self.events)(Event::Restarting {
                        instance: self.instance.clone(),
                        after,
                        restart,
                        max: self.settings.max_restarts,
                    });
                    tokio::select! {
                        () = tokio::time::sleep(after) => {}
                        _ = stopping.wait_for(|s| *s) => return Ending::Stopped,
                    }
                }
            }
        }
    }

    /// Reports the guest's sockets until it ends (false) or the supervisor stops (true).
    async fn serve(
        &self,
        guest: &mut RunningGuest,
        run: u32,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut sockets = guest.socket_watch();
        let mut seen = Vec::new();
        let stopped = loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break true,
                () = guest.wait() => break false,
                Some(socket) = sockets.next() => self.socket_ready(socket, run, &mut seen),
            }
        };
        // A socket readied just before the end is still reported (and pins its port).
        while let Some(Some(socket)) = sockets.next().now_or_never() {
            self.socket_ready(socket, run, &mut seen);
        }
        if self.index == 0 && !seen.is_empty() {
            self.pin_ports(&seen);
        }
        stopped
    }

    fn socket_ready(&self, socket: ReadySocket, run: u32, seen: &mut Vec<ReadySocket>) {
        // Further instances share the first one's sockets; their first ready lines would
        // only repeat its lines.
        if self.index == 0 || run > 1 {
            (self.events)(Event::Ready {
                guest: self.guest.clone(),
                socket,
            });
        }
        seen.push(socket);
        if self.index == 0 && seen.len() == self.policy.listen.len() + self.policy.udp.len() {
            self.pin_ports(seen);
        }
    }

    /// Pins the port-0 grants to the ports this first run got, once.
    fn pin_ports(&self, sockets: &[ReadySocket]) {
        let addrs = |t: Transport| -> Vec<_> {
            (sockets.iter().filter(|s| s.transport == t))
                .map(|s| s.addr)
                .collect()
        };
        let pinned = self
            .policy
            .pinned_to(&addrs(Transport::Tcp), &addrs(Transport::Udp));
        self.pin.send_if_modified(|p| {
            let waiting = matches!(p, PortPin::Waiting);
            if waiting {
                *p = PortPin::Pinned(pinned);
            }
            waiting
        });
    }

    /// Asks the guest to stop; one without `control` cannot be asked and is killed, which is
    /// what stopping it meant.
    async fn stop(&self, mut guest: RunningGuest) -> Ending {
        guest.request_shutdown();
        let grace = if guest.uses_control() {
            self.settings.grace
        } else {
            Duration::ZERO
        };
        match guest.finish(grace).await {
            GuestExit::Clean => Ending::Stopped,
            GuestExit::Killed if !guest.uses_control() => Ending::Stopped,
            other => {
                let how = other.to_string();
                (self.events)(Event::Ended {
                    instance: self.instance.clone(),
                    how: how.clone(),
                    failed: true,
                });
                Ending::Failed(how)
            }
        }
    }
}
