//! The entry point: [`Sandbox::builder`] names a guest, [`SandboxBuilder`] gathers what it is
//! given (policy, arguments, where decisions go), and [`SandboxBuilder::start`] starts it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::instance::{self, GuestSlot, Settings};
use super::ports;
use super::running::RunningGuest;
use super::types::{ReadySocket, Transport};
use crate::audit::AuditLog;
use crate::compile::CompileCache;
use crate::guest::{Guest, GuestSource};
use crate::metrics::GuestMetrics;
use crate::policy::Policy;

/// Entry point: `Sandbox::builder("echo")`.
pub struct Sandbox;

impl Sandbox {
    /// A guest by reference (a built-in name, a `.wasm` or `.py` path, or bytes), resolved
    /// (see [`crate::guest::resolve`]) once, at the first `validate` or `start`, and shared by
    /// every clone of the builder after that.
    pub fn builder(guest: impl Into<GuestSource>) -> SandboxBuilder {
        SandboxBuilder::new(GuestSlot::new(guest.into(), None))
    }

    /// An already resolved guest: nothing is loaded or compiled again.
    pub fn from_guest(guest: Guest) -> SandboxBuilder {
        SandboxBuilder::new(GuestSlot::new(guest.source().clone(), Some(guest)))
    }
}

/// Everything a guest is given, gathered before it starts.
#[derive(Clone)]
pub struct SandboxBuilder {
    guest: GuestSlot,
    name: Option<String>,
    compile_cache: CompileCache,
    settings: Settings,
}

impl SandboxBuilder {
    fn new(guest: GuestSlot) -> Self {
        SandboxBuilder {
            guest,
            name: None,
            compile_cache: CompileCache::Off,
            settings: Settings {
                policy: Policy::default(),
                args: Vec::new(),
                env: Vec::new(),
                audit_logs: Vec::new(),
                print_denials: false,
                capture_output: false,
                stdout_to_stderr: false,
                share_ports: false,
                port_group: ports::new_group(),
                process_share: 1,
                metrics: GuestMetrics::detached(),
            },
        }
    }

    /// Keep the compiled component on disk between runs (default: off, compiled in memory once
    /// per process). [`CompileCache::user_default`] is what the CLI uses.
    pub fn compile_cache(mut self, cache: CompileCache) -> Self {
        self.compile_cache = cache;
        // A guest given already resolved stays as it is; a reference resolves through this.
        if self.guest.resolved.get().is_none() {
            self.guest = GuestSlot::new(self.guest.source.clone(), None);
        }
        self
    }

    /// Keep the guest's stdout and stderr in memory ([`RunningGuest::stdout`]) instead of
    /// passing them through to the host's.
    pub fn capture_output(mut self, yes: bool) -> Self {
        self.settings.capture_output = yes;
        self
    }

    /// Send the guest's stdout to the host's stderr, for a host whose own stdout carries
    /// something else (`sockbox learn` prints the policy there).
    pub fn stdout_to_stderr(mut self, yes: bool) -> Self {
        self.settings.stdout_to_stderr = yes;
        self
    }

    /// The name used in logs and audit lines (default: the built-in name or file stem).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// What the guest may do. Without one, nothing is allowed.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Arguments after the program name (`sockbox run g -- ARGS`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable for the guest. The host's own environment is never passed.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.env.push((key.into(), value.into()));
        self
    }

    /// Append every decision to this JSONL audit log, as well as to every log given before
    /// (with this or [`also_audit_to`](Self::also_audit_to)): no log is ever dropped.
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.settings.audit_logs.push(Arc::new(log));
        self
    }

    /// Also append every decision to `log`, which other guests may share (`sockbox up`
    /// writes all guests to `--audit` and each to its own `audit` file).
    pub fn also_audit_to(mut self, log: Arc<AuditLog>) -> Self {
        self.settings.audit_logs.push(log);
        self
    }

    /// Set `SO_REUSEPORT` on every socket so other instances can bind the same addresses
    /// (what [`SandboxBuilder::start_instances`] does); a supervisor restarting one of several
    /// instances needs it on each start.
    pub fn share_ports(mut self, yes: bool) -> Self {
        self.settings.share_ports = yes;
        self
    }

    /// Count the guest's connections, traffic, denials and readiness into `metrics` (from
    /// [`crate::Metrics::guest`]; instances and restarts share them). Default: counted
    /// where nobody reads.
    pub fn metrics(mut self, metrics: GuestMetrics) -> Self {
        self.settings.metrics = metrics;
        self
    }

    /// Print one stderr line per denial, naming the grant to add (the CLI does).
    pub fn print_denials(mut self, yes: bool) -> Self {
        self.settings.print_denials = yes;
        self
    }

    /// How many guests (instances included) this process will run side by side: without an
    /// explicit `max-sockets`, each gets an equal share of the process's descriptor budget
    /// (at most 4096), so together they cannot
    /// exhaust it. Default 1.
    pub fn sharing_process_with(mut self, guests: usize) -> Self {
        self.settings.process_share = guests.max(1);
        self
    }

    /// Resolves and type-checks the guest (once per builder and its clones), instantiates it,
    /// then starts its `run` in a tokio task.
    /// Errors here are load errors: nothing of the guest has run.
    pub async fn start(self) -> Result<RunningGuest> {
        let name = self.guest_name();
        let guest = self.guest.prepared(&self.compile_cache, &name)?;
        instance::start(guest, name, self.settings).await
    }

    /// Resolves and type-checks the guest against the sandbox without running anything: the
    /// load errors [`SandboxBuilder::start`] would report.
    pub fn validate(&self) -> Result<()> {
        let name = self.guest_name();
        self.guest.prepared(&self.compile_cache, &name).map(drop)
    }

    /// Resolves the guest (once; later starts and clones reuse it) without type-checking it.
    pub fn resolve(&self) -> Result<Guest> {
        self.guest.guest(&self.compile_cache)
    }

    /// Starts `count` instances of the guest that share each granted address (`SO_REUSEPORT`):
    /// the kernel spreads clients over them, so a guest uses as many cores as it has instances.
    /// The first instance takes any port-0 address's port and the others are granted exactly
    /// that port. Returns once every instance is ready, with the sockets they share; each
    /// instance keeps its own store, limits and audit events (named `NAME#i`).
    pub async fn start_instances(
        self,
        count: usize,
    ) -> Result<(Vec<RunningGuest>, Vec<ReadySocket>)> {
        anyhow::ensure!(count >= 1, "at least one instance is needed");
        if count == 1 {
            let mut guest = self.start().await?;
            let sockets = guest.ready().await?;
            return Ok((vec![guest], sockets));
        }
        check_instances(count)?;
        let name = self.guest_name();
        let instance = |i: usize, policy: Policy| {
            let mut builder = self.clone().policy(policy).name(format!("{name}#{i}"));
            builder.settings.share_ports = true;
            builder.settings.process_share = self.settings.process_share * count;
            builder
        };
        let mut first = instance(0, self.settings.policy.clone()).start().await?;
        let sockets = first.ready().await?;
        let addrs = |t: Transport| -> Vec<SocketAddr> {
            sockets
                .iter()
                .filter(|s| s.transport == t)
                .map(|s| s.addr)
                .collect()
        };
        let pinned = self
            .settings
            .policy
            .pinned_to(&addrs(Transport::Tcp), &addrs(Transport::Udp));
        let mut guests = vec![first];
        for i in 1..count {
            let mut guest = instance(i, pinned.clone()).start().await?;
            guest.ready().await?;
            guests.push(guest);
        }
        Ok((guests, sockets))
    }

    /// The name given, or the guest's own.
    fn guest_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.guest.source.name())
    }
}

/// The one check that several instances can run here (`--instances`, a manifest's
/// `instances`): they share addresses with `SO_REUSEPORT`.
pub(crate) fn check_instances(count: usize) -> Result<()> {
    if count > 1 && !cfg!(target_os = "linux") {
        bail!("instances above 1 need SO_REUSEPORT, which sockbox supports on Linux only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_and_its_clones_resolve_and_type_check_the_guest_once() {
        let builder = Sandbox::builder("echo");
        builder.validate().unwrap();
        let instance = builder.clone().name("echo#1");
        let (first, second) = (&builder.guest, &instance.guest);
        assert!(Arc::ptr_eq(&first.prepared, &second.prepared));
        assert!(second.prepared.get().is_some(), "the clone starts prepared");
        // A resolved guest handed over is not resolved again, whatever the cache setting.
        let guest = builder.resolve().unwrap();
        let given = Sandbox::from_guest(guest.clone()).compile_cache(CompileCache::Off);
        let again = given.resolve().unwrap();
        assert!(guest.is(&again), "the guest given is the guest started");
    }

    #[tokio::test]
    async fn every_audit_log_given_gets_every_decision() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, own) = (
            dir.path().join("shared.jsonl"),
            dir.path().join("own.jsonl"),
        );
        let policy = Policy::from_flags(&["127.0.0.1:0".into()], &[], &[]).unwrap();
        let mut guest = Sandbox::builder("echo")
            .policy(policy)
            .also_audit_to(Arc::new(AuditLog::open(&shared).unwrap()))
            .audit_log(AuditLog::open(&own).unwrap())
            .start()
            .await
            .unwrap();
        let ready = guest.ready().await.unwrap();
        assert!(
            guest
                .stop(std::time::Duration::from_secs(5))
                .await
                .is_clean()
        );
        let listen = format!("\"addr\":\"{}\"", ready[0].addr);
        for log in [&shared, &own] {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(
                text.lines()
                    .any(|l| l.contains("tcp-listen") && l.contains(&listen)),
                "{}: {text}",
                log.display()
            );
        }
    }
}
