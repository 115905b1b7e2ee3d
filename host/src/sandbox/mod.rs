//! Instantiate, run and stop a guest: the one place where a sandbox is put together.
//!
//! [`SandboxBuilder`] gathers the guest, its [`Policy`] and where decisions go;
//! [`SandboxBuilder::start`] takes the compiled [`Guest`] (resolved once by [`crate::guest`],
//! which owns files, built-ins and Python), type-checks it once, instantiates it (load errors
//! surface here, before anything runs) and starts `wasi:cli/run` on the tokio runtime;
//! [`RunningGuest`] waits for readiness, exposes decisions, asks the guest to stop and
//! reports how it ended.

mod control;
mod dns;
mod errors;
mod inspect;
mod limits;
mod linger;
mod network;
mod output;
mod readiness;
mod reuseport;
mod state;
mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{CallHook, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::audit::{AuditEvent, AuditLog};
use crate::compile;
pub use crate::compile::CompileCache;
pub use crate::guest::{Guest, GuestSource};
use crate::policy::{Gate, Policy};
pub use inspect::{Inspection, inspect};
pub use limits::{
    DEFAULT_MAX_BUSY, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MEMORY, DEFAULT_MAX_SOCKETS, FdBudget,
    default_max_sockets, fd_budget,
};
pub use output::{
    BUFFER_BOUND as OUTPUT_BUFFER_BOUND, GUEST_READY_PREFIX, drain_output, host_line,
};
pub(crate) use reuseport::overlaps;
use state::{HostState, Readiness, Shared};

/// Most resources (sockets, streams, pollables...) one guest may hold at once; a guest that
/// leaks handles fails on its own instead of growing the host's memory without bound.
const MAX_RESOURCES: usize = 100_000;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// A socket the guest serves on, with its actual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadySocket {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl fmt::Display for ReadySocket {
    /// The contract's `ready` line body: `tcp 127.0.0.1:7000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)
    }
}

/// How a guest's run ended.
#[derive(Debug)]
pub enum GuestExit {
    /// `run` returned success (or the guest exited with status 0).
    Clean,
    /// The guest exited with a non-zero status.
    Status(i32),
    /// A trap, a panic or a host error; the message carries the wasm backtrace.
    Trapped(anyhow::Error),
    /// It did not stop within the grace period and was killed.
    Killed,
}

impl GuestExit {
    pub fn is_clean(&self) -> bool {
        matches!(self, GuestExit::Clean)
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestExit::Clean => f.write_str("exited cleanly"),
            GuestExit::Status(code) => write!(f, "exited with status {code}"),
            // `{:#}`: the message and its causes, never the host's backtrace (see `errors`).
            GuestExit::Trapped(err) => write!(f, "failed: {err:#}"),
            GuestExit::Killed => f.write_str("did not stop within the grace period and was killed"),
        }
    }
}

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

/// The guest a builder starts: its reference, and once resolved and type-checked against the
/// sandbox, the result, shared by the builder's clones (instances, restarts).
#[derive(Clone)]
struct GuestSlot {
    source: GuestSource,
    resolved: Arc<OnceLock<Guest>>,
    prepared: Arc<OnceLock<Prepared>>,
}

/// A guest checked against the sandbox's linker, ready to instantiate.
#[derive(Clone)]
struct Prepared {
    pre: CommandPre<HostState>,
    uses_control: bool,
}

impl GuestSlot {
    fn new(source: GuestSource, guest: Option<Guest>) -> Self {
        let resolved = OnceLock::new();
        if let Some(guest) = guest {
            let _ = resolved.set(guest);
        }
        GuestSlot {
            source,
            resolved: Arc::new(resolved),
            prepared: Default::default(),
        }
    }

    /// Resolves once; a failure is not kept, so it is reported again at the next try.
    fn guest(&self, cache: &CompileCache) -> Result<Guest> {
        if let Some(guest) = self.resolved.get() {
            return Ok(guest.clone());
        }
        let guest = crate::guest::resolve(&self.source, cache)?;
        Ok(self.resolved.get_or_init(|| guest).clone())
    }

    /// Resolves and type-checks once; `name` names the guest in a link error.
    fn prepared(&self, cache: &CompileCache, name: &str) -> Result<Prepared> {
        if let Some(prepared) = self.prepared.get() {
            return Ok(prepared.clone());
        }
        let guest = self.guest(cache)?;
        let prepared = Prepared {
            pre: prepare(guest.component(), name)?,
            uses_control: imports_control(guest.component()),
        };
        Ok(self.prepared.get_or_init(|| prepared).clone())
    }
}

/// Everything a guest is given, gathered before it starts.
#[derive(Clone)]
pub struct SandboxBuilder {
    guest: GuestSlot,
    name: Option<String>,
    policy: Policy,
    args: Vec<String>,
    env: Vec<(String, String)>,
    audit_logs: Vec<Arc<AuditLog>>,
    print_denials: bool,
    capture_output: bool,
    stdout_to_stderr: bool,
    compile_cache: CompileCache,
    share_ports: bool,
    /// The guest whose instances may share its addresses; clones (instances, restarts) keep it.
    port_group: u64,
    /// How many guests share this process's descriptor budget, for the default socket cap.
    process_share: usize,
}

/// What a guest printed, when captured (see [`SandboxBuilder::capture_output`]).
#[derive(Clone)]
struct CapturedOutput {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

/// Captured output beyond this fails the guest's write; it is meant for tests and tools.
const CAPTURE_CAPACITY: usize = 64 * 1024 * 1024;

impl SandboxBuilder {
    fn new(guest: GuestSlot) -> Self {
        SandboxBuilder {
            guest,
            name: None,
            policy: Policy::default(),
            args: Vec::new(),
            env: Vec::new(),
            audit_logs: Vec::new(),
            print_denials: false,
            capture_output: false,
            stdout_to_stderr: false,
            compile_cache: CompileCache::Off,
            share_ports: false,
            port_group: reuseport::new_group(),
            process_share: 1,
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
        self.capture_output = yes;
        self
    }

    /// Send the guest's stdout to the host's stderr, for a host whose own stdout carries
    /// something else (`sockbox learn` prints the policy there).
    pub fn stdout_to_stderr(mut self, yes: bool) -> Self {
        self.stdout_to_stderr = yes;
        self
    }

    /// The name used in logs and audit lines (default: the built-in name or file stem).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// What the guest may do. Without one, nothing is allowed.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Arguments after the program name (`sockbox run g -- ARGS`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable for the guest. The host's own environment is never passed.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Append every decision to this JSONL audit log.
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.audit_logs = vec![Arc::new(log)];
        self
    }

    /// Also append every decision to `log`, which other guests may share (`sockbox up`
    /// writes all guests to `--audit` and each to its own `audit` file).
    pub fn also_audit_to(mut self, log: Arc<AuditLog>) -> Self {
        self.audit_logs.push(log);
        self
    }

    /// Set `SO_REUSEPORT` on every socket so other instances can bind the same addresses
    /// (what [`SandboxBuilder::start_instances`] does); a supervisor restarting one of several
    /// instances needs it on each start.
    pub fn share_ports(mut self, yes: bool) -> Self {
        self.share_ports = yes;
        self
    }

    /// Print one stderr line per denial, naming the grant to add (the CLI does).
    pub fn print_denials(mut self, yes: bool) -> Self {
        self.print_denials = yes;
        self
    }

    /// How many guests (instances included) this process will run side by side: without an
    /// explicit `max-sockets`, each gets an equal share of the process's descriptor budget
    /// (at most [`DEFAULT_MAX_SOCKETS`]), so together they cannot exhaust it. Default 1.
    pub fn sharing_process_with(mut self, guests: usize) -> Self {
        self.process_share = guests.max(1);
        self
    }

    /// Resolves and type-checks the guest (once per builder and its clones), instantiates it,
    /// then starts its `run` in a tokio task.
    /// Errors here are load errors: nothing of the guest has run.
    pub async fn start(self) -> Result<RunningGuest> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.guest.source.name());
        let Prepared {
            pre, uses_control, ..
        } = self.guest.prepared(&self.compile_cache, &name)?;
        let engine = compile::engine();

        let shared = Shared::new(name.clone(), self.audit_logs, self.print_denials);
        let gate = Arc::new(Gate::new(self.policy.clone()));
        let mut wasi = WasiCtxBuilder::new();
        let captured = self.capture_output.then(|| CapturedOutput {
            stdout: MemoryOutputPipe::new(CAPTURE_CAPACITY),
            stderr: MemoryOutputPipe::new(CAPTURE_CAPACITY),
        });
        // Passed through, the guest's output goes through bounded buffers that never block it
        // (see `output`).
        let passed = captured.is_none().then(|| {
            let stdout_fd = if self.stdout_to_stderr {
                output::Fd::Stderr
            } else {
                output::Fd::Stdout
            };
            [
                output::GuestOutput::new(&name, "stdout", stdout_fd),
                output::GuestOutput::new(&name, "stderr", output::Fd::Stderr),
            ]
        });
        match (&captured, &passed) {
            (Some(out), _) => wasi.stdout(out.stdout.clone()).stderr(out.stderr.clone()),
            (None, Some([stdout, stderr])) => wasi.stdout(stdout.clone()).stderr(stderr.clone()),
            (None, None) => unreachable!("output is captured or passed through"),
        };
        wasi.arg(&name).args(&self.args).envs(&self.env);
        network::grant(&mut wasi, gate.clone(), shared.clone());

        let max_memory = (self.policy.limits.max_memory).unwrap_or(limits::DEFAULT_MAX_MEMORY);
        // All memories together, not each on its own (wasmtime's `StoreLimits`).
        let limits = limits::GuestLimiter::new(&name, max_memory);
        let enforced = limits::Enforced::new(
            &self.policy.limits,
            limits::default_max_sockets(self.process_share),
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = HostState {
            wasi: wasi.build(),
            table,
            limits,
            ledger: limits::SocketLedger::new(
                self.policy.grants_tcp(),
                self.policy.grants_udp(),
                &enforced,
            ),
            gate,
            shared: shared.clone(),
            share_ports: self.share_ports,
            udp: Default::default(),
            ports: reuseport::PortClaims::new(self.port_group),
            busy: Default::default(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        watch_busy(&mut store, &name, enforced.max_busy);

        let command = pre.instantiate_async(&mut store).await.map_err(|err| {
            anyhow::Error::from(err).context(format!("cannot instantiate guest `{name}`"))
        })?;

        // Unconstrained: one `poll` of wasi:io checks every pollable the guest waits on within a
        // single task poll; under tokio's cooperative budget (128 resource polls a turn) the
        // pollables past the budget would read as pending and their clients starve. The guest
        // still yields at every epoch tick, so it cannot hold a worker thread.
        let task = tokio::spawn(tokio::task::unconstrained(async move {
            let result = command.wasi_cli_run().call_run(&mut store).await;
            classify(result)
        }));

        let expected = (self.policy.listen.len() + self.policy.udp.len()).max(1);
        Ok(RunningGuest {
            name,
            shared,
            task: Some(task),
            exit: None,
            uses_control,
            expected_sockets: expected,
            captured,
            passed,
        })
    }
}

impl SandboxBuilder {
    /// Resolves and type-checks the guest against the sandbox without running anything: the
    /// load errors [`SandboxBuilder::start`] would report.
    pub fn validate(&self) -> Result<()> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.guest.source.name());
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
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.guest.source.name());
        let instance = |i: usize, policy: Policy| {
            let mut builder = self.clone().policy(policy).name(format!("{name}#{i}"));
            builder.share_ports = true;
            builder.process_share = self.process_share * count;
            builder
        };
        let mut first = instance(0, self.policy.clone()).start().await?;
        let sockets = first.ready().await?;
        let addrs = |t: Transport| -> Vec<SocketAddr> {
            sockets
                .iter()
                .filter(|s| s.transport == t)
                .map(|s| s.addr)
                .collect()
        };
        let pinned = self
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
}

/// The one check that several instances can run here (`--instances`, a manifest's
/// `instances`): they share addresses with `SO_REUSEPORT`.
pub(crate) fn check_instances(count: usize) -> Result<()> {
    if count > 1 && !cfg!(target_os = "linux") {
        bail!("instances above 1 need SO_REUSEPORT, which sockbox supports on Linux only");
    }
    Ok(())
}

/// Yields to the runtime at every epoch tick so a busy guest cannot monopolise a thread, and
/// stops a guest that computes through more than `max_busy` of ticks without calling the host
/// (a runaway loop): every return from a host call, `poll` included, starts the count again.
fn watch_busy(store: &mut Store<HostState>, name: &str, max_busy: Duration) {
    store.call_hook(|mut state, hook| {
        if matches!(hook, CallHook::ReturningFromHost) {
            let state = state.data_mut();
            // The epoch check is itself a call into the host: returning from it is no yield.
            if !std::mem::take(&mut state.busy.in_epoch_check) {
                state.busy.ticks = 0;
            }
        }
        Ok(())
    });
    let allowed = limits::busy_ticks(max_busy);
    let name = name.to_string();
    store.epoch_deadline_callback(move |mut state| {
        // Counted per tick the guest ran into, so time spent waiting for a worker thread
        // after a yield is not held against it.
        let busy = &mut state.data_mut().busy;
        busy.ticks += 1;
        busy.in_epoch_check = true;
        if busy.ticks > allowed {
            return Err(wasmtime::format_err!(
                "guest `{name}` computed for more than {} ms without yielding to the host and \
                 was stopped (max-busy; raise it with --max-busy MS or `max-busy` in [limits])",
                max_busy.as_millis()
            ));
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Everything a guest may import: WASI 0.2 with sockbox's readiness hooks and name lookup,
/// plus `control`.
fn linker() -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(compile::engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    readiness::add_hooks(&mut linker)?;
    errors::add_hooks(&mut linker)?;
    linger::add_hooks(&mut linker)?;
    limits::add_hooks(&mut linker)?;
    udp::add_hooks(&mut linker)?;
    reuseport::add_hooks(&mut linker)?;
    dns::add_to_linker(&mut linker)?;
    control::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Type-checks `component` against the sandbox: every import provided, `wasi:cli/run` exported.
fn prepare(component: &Component, guest: &str) -> Result<CommandPre<HostState>> {
    // Imports first, so a forbidden import is named even if exports are wrong too.
    let pre = linker()?
        .instantiate_pre(component)
        .map_err(|err| describe_link_error(err.into(), guest))?;
    CommandPre::new(pre).map_err(|err| {
        anyhow::Error::from(err).context(format!(
            "guest `{guest}` is not a WASI 0.2 command: it must export wasi:cli/run"
        ))
    })
}

/// Whether the component speaks `sockbox:guest/control`.
fn imports_control(component: &Component) -> bool {
    component
        .component_type()
        .imports(compile::engine())
        .any(|(import, _)| import.starts_with(control::INTERFACE))
}

/// Turns wasmtime's "no implementation for import X" into a message about the sandbox.
fn describe_link_error(err: anyhow::Error, guest: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("matching implementation was not found in the linker") {
        err.context(format!(
            "guest `{guest}` imports something the sockbox:guest/server world does not provide \
             (only WASI 0.2 cli, clocks, random, io, sockets, filesystem types and \
             sockbox:guest/control are available)"
        ))
    } else {
        err.context(format!("cannot link guest `{guest}`"))
    }
}

fn classify(result: wasmtime::Result<Result<(), ()>>) -> GuestExit {
    match result {
        Ok(Ok(())) => GuestExit::Clean,
        Ok(Err(())) => GuestExit::Status(1),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => GuestExit::Clean,
            Some(I32Exit(code)) => GuestExit::Status(*code),
            // The whole chain and the wasm backtrace, without the host's stack.
            None => GuestExit::Trapped(anyhow!("{}", errors::describe_trap(&err))),
        },
    }
}

/// Yields each socket the guest gets ready, in order (see [`RunningGuest::socket_watch`]).
pub struct SocketWatch {
    readiness: tokio::sync::watch::Receiver<Readiness>,
    seen: usize,
}

impl SocketWatch {
    /// The next ready socket; `None` once the guest is gone.
    pub async fn next(&mut self) -> Option<ReadySocket> {
        let seen = self.seen;
        let readiness = self
            .readiness
            .wait_for(|r| r.sockets.len() > seen)
            .await
            .ok()?;
        self.seen += 1;
        Some(readiness.sockets[seen])
    }
}

/// A guest that has started. Dropping it kills the guest.
pub struct RunningGuest {
    name: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<GuestExit>>,
    exit: Option<GuestExit>,
    uses_control: bool,
    expected_sockets: usize,
    captured: Option<CapturedOutput>,
    /// Stdout and stderr passed through to the host's, when not captured.
    passed: Option<[output::GuestOutput; 2]>,
}

/// How long [`RunningGuest::finish`] waits for a guest's last output to be written.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

impl RunningGuest {
    /// What the guest wrote to stdout so far (empty unless output is captured).
    pub fn stdout(&self) -> String {
        self.captured
            .as_ref()
            .map(|c| String::from_utf8_lossy(&c.stdout.contents()).into_owned())
            .unwrap_or_default()
    }

    /// What the guest wrote to stderr so far (empty unless output is captured).
    pub fn stderr(&self) -> String {
        self.captured
            .as_ref()
            .map(|c| String::from_utf8_lossy(&c.stderr.contents()).into_owned())
            .unwrap_or_default()
    }

    /// The guest's name in logs and audit lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the component imports `sockbox:guest/control`.
    pub fn uses_control(&self) -> bool {
        self.uses_control
    }

    /// Waits until the guest is serving and returns its sockets with their actual addresses;
    /// a connection made after this returns succeeds. A guest using `control` is ready when it
    /// says so; any other component once it has as many sockets listening or bound as it was
    /// granted with `--listen`/`--udp` (at least one). Fails if the guest ends first.
    pub async fn ready(&mut self) -> Result<Vec<ReadySocket>> {
        let mut readiness = self.shared.readiness.subscribe();
        let uses_control = self.uses_control;
        let expected = self.expected_sockets;
        let is_ready = |r: &Readiness| {
            if uses_control {
                r.announced
            } else {
                r.sockets.len() >= expected
            }
        };
        let Some(task) = self.task.as_mut() else {
            bail!("guest `{}` is not running", self.name);
        };
        tokio::select! {
            ready = readiness.wait_for(is_ready) => {
                let ready = ready.map_err(|_| anyhow!("guest `{}` went away", self.name))?;
                Ok(ready.sockets.clone())
            }
            exit = task => {
                self.task = None;
                let exit = exit.unwrap_or_else(|err| GuestExit::Trapped(err.into()));
                let message = format!("guest `{}` {exit} before it was ready", self.name);
                self.exit = Some(exit);
                Err(anyhow!(message))
            }
        }
    }

    /// Every socket the guest gets ready, from the first one on, as it happens.
    pub fn socket_watch(&self) -> SocketWatch {
        SocketWatch {
            readiness: self.shared.readiness.subscribe(),
            seen: 0,
        }
    }

    /// A stream of capability decisions from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.shared.events.subscribe()
    }

    /// The decisions made so far (the most recent 10 000, and at most about 4 MiB of them;
    /// denials past 100 a second are counted in a `denials-suppressed` event instead).
    pub fn decisions(&self) -> Vec<AuditEvent> {
        self.shared
            .decisions
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// How many operations were denied so far.
    pub fn denials(&self) -> u64 {
        self.shared.denials.load(Ordering::Relaxed)
    }

    /// Asks the guest to stop (its `control.shutdown` pollable becomes ready).
    pub fn request_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Waits for the guest to end by itself; [`RunningGuest::finish`] then returns how.
    /// Cancel-safe: dropping this future leaves the guest running.
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let exit = task
                .await
                .unwrap_or_else(|err| GuestExit::Trapped(err.into()));
            self.task = None;
            self.exit = Some(exit);
        }
    }

    /// Asks the guest to stop and waits up to `grace` for it; kills it after that.
    pub async fn stop(mut self, grace: Duration) -> GuestExit {
        self.request_shutdown();
        self.finish(grace).await
    }

    /// How the guest ended: waits up to `grace` for it (asked to stop or not), then kills it.
    pub async fn finish(&mut self, grace: Duration) -> GuestExit {
        if let Some(task) = self.task.as_mut() {
            match tokio::time::timeout(grace, &mut *task).await {
                Ok(exit) => {
                    self.task = None;
                    self.exit = Some(exit.unwrap_or_else(|err| GuestExit::Trapped(err.into())));
                }
                Err(_) => {
                    task.abort();
                    self.task = None;
                    self.exit = Some(GuestExit::Killed);
                }
            }
        }
        self.drain_output().await;
        self.exit.take().unwrap_or(GuestExit::Killed)
    }
}

impl RunningGuest {
    /// Waits (a bounded time, off the event loop) until what the guest printed is written.
    async fn drain_output(&self) {
        let Some(outputs) = self.passed.clone() else {
            return;
        };
        let deadline = std::time::Instant::now() + OUTPUT_DRAIN;
        let _ = tokio::task::spawn_blocking(move || {
            outputs.iter().all(|out| out.wait_drained(deadline))
        })
        .await;
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
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
}
