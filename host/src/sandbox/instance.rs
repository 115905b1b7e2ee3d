//! Starting one instance of a guest: the guest prepared once per builder (resolved and
//! type-checked against the linker, shared by the builder's clones, instances and restarts),
//! then per start a store of its own, instantiated and run on the tokio runtime.

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use tokio::sync::Semaphore;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtxBuilder;

use super::busy;
use super::ledger::{ProcessSockets, SocketLedger};
use super::limiter::GuestLimiter;
use super::limits::{Enforced, MAX_LOOKUPS, default_max_sockets};
use super::link::{self, CommandPre};
use super::network;
use super::observe;
use super::output::Outputs;
use super::ports::PortClaims;
use super::running::{RunningGuest, classify};
use super::state::{HostState, Shared};
use crate::audit::AuditLog;
use crate::compile::{self, CompileCache};
use crate::guest::{Guest, GuestSource};
use crate::metrics::GuestMetrics;
use crate::policy::{Gate, Policy};

/// Most resources (sockets, streams, pollables...) one guest may hold at once; a guest that
/// leaks handles fails on its own instead of growing the host's memory without bound.
const MAX_RESOURCES: usize = 100_000;

/// The guest a builder starts: its reference, and once resolved and type-checked against the
/// sandbox, the result, shared by the builder's clones (instances, restarts).
#[derive(Clone)]
pub(super) struct GuestSlot {
    pub(super) source: GuestSource,
    pub(super) resolved: Arc<OnceLock<Guest>>,
    pub(super) prepared: Arc<OnceLock<Prepared>>,
}

/// A guest checked against the sandbox's linker, ready to instantiate.
#[derive(Clone)]
pub(super) struct Prepared {
    pre: CommandPre,
    uses_control: bool,
}

impl GuestSlot {
    pub(super) fn new(source: GuestSource, guest: Option<Guest>) -> Self {
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
    pub(super) fn guest(&self, cache: &CompileCache) -> Result<Guest> {
        if let Some(guest) = self.resolved.get() {
            return Ok(guest.clone());
        }
        let guest = crate::guest::resolve(&self.source, cache)?;
        Ok(self.resolved.get_or_init(|| guest).clone())
    }

    /// Resolves and type-checks once; `name` names the guest in a link error.
    pub(super) fn prepared(&self, cache: &CompileCache, name: &str) -> Result<Prepared> {
        if let Some(prepared) = self.prepared.get() {
            return Ok(prepared.clone());
        }
        let guest = self.guest(cache)?;
        let prepared = Prepared {
            pre: link::prepare(guest.component(), name)?,
            uses_control: link::imports_control(guest.component()),
        };
        Ok(self.prepared.get_or_init(|| prepared).clone())
    }
}

/// Everything a guest is given at its start, besides the guest itself.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) policy: Policy,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) audit_logs: Vec<Arc<AuditLog>>,
    pub(super) print_denials: bool,
    pub(super) capture_output: bool,
    pub(super) stdout_to_stderr: bool,
    pub(super) share_ports: bool,
    /// The guest whose instances may share its addresses; clones (instances, restarts) keep it.
    pub(super) port_group: u64,
    /// How many guests share this process's descriptor budget, for the default socket cap.
    pub(super) process_share: usize,
    pub(super) metrics: GuestMetrics,
}

/// Instantiates `guest` as `name` in a store of its own (load errors surface here, before
/// anything runs), then starts its `run` in a tokio task.
pub(super) async fn start(
    guest: Prepared,
    name: String,
    settings: Settings,
) -> Result<RunningGuest> {
    let shared = Shared::new(
        name.clone(),
        settings.audit_logs.clone(),
        settings.print_denials,
        settings.metrics.clone(),
    );
    let outputs = Outputs::new(&name, settings.capture_output, settings.stdout_to_stderr);
    let mut store = store(&name, &settings, &shared, &outputs);
    let cannot = |err: wasmtime::Error| {
        anyhow::Error::from(err).context(format!("cannot instantiate guest `{name}`"))
    };

    // Unconstrained: one `poll` of wasi:io checks every pollable the guest waits on within a
    // single task poll; under tokio's cooperative budget (128 resource polls a turn) the
    // pollables past the budget would read as pending and their clients starve. The guest
    // still yields at every epoch tick (see `busy`), so it cannot hold a worker thread.
    let expected = (settings.policy.listen.len() + settings.policy.udp.len()).max(1);
    let ready = observe::ReadyWatch::new(&shared, guest.uses_control, expected, &settings.metrics);
    let task = match &guest.pre {
        CommandPre::P2(pre) => {
            let command = pre.instantiate_async(&mut store).await.map_err(cannot)?;
            tokio::spawn(tokio::task::unconstrained(ready.around(async move {
                let result = command.wasi_cli_run().call_run(&mut store).await;
                classify(result)
            })))
        }
        CommandPre::P3(pre, indices) => {
            let instance = pre.instantiate_async(&mut store).await.map_err(cannot)?;
            let command = indices.load(&mut store, &instance).map_err(cannot)?;
            // The store runs its guest's tasks inside this task, on the thread that polls the
            // guest's sockets: a socket event never hops threads to reach the guest.
            tokio::spawn(tokio::task::unconstrained(ready.around(async move {
                let result = store
                    .run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await)
                    .await;
                classify(result.and_then(|run| run))
            })))
        }
    };

    Ok(RunningGuest::new(
        name,
        shared,
        task,
        guest.uses_control,
        expected,
        outputs,
    ))
}

/// The guest's store: its WASI context, limits, ledgers and the busy watch.
fn store(
    name: &str,
    settings: &Settings,
    shared: &Arc<Shared>,
    outputs: &Outputs,
) -> Store<HostState> {
    let policy = &settings.policy;
    let gate = Arc::new(Gate::new(policy.clone()));
    let mut wasi = WasiCtxBuilder::new();
    outputs.give_to(&mut wasi);
    wasi.arg(name).args(&settings.args).envs(&settings.env);
    network::grant(&mut wasi, gate.clone(), shared.clone());

    let enforced = Enforced::new(&policy.limits, default_max_sockets(settings.process_share));
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let state = HostState {
        wasi: wasi.build(),
        table,
        // All memories together, not each on its own (wasmtime's `StoreLimits`).
        limiter: GuestLimiter::new(name, enforced.max_memory, settings.metrics.clone()),
        ledger: SocketLedger::new(
            policy.grants_tcp(),
            policy.grants_udp(),
            &enforced,
            ProcessSockets::global(),
            settings.metrics.clone(),
        ),
        gate,
        shared: shared.clone(),
        share_ports: settings.share_ports,
        udp: Default::default(),
        ports: PortClaims::new(settings.port_group),
        busy: Default::default(),
        lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
    };
    let mut store = Store::new(compile::engine(), state);
    store.limiter(|state| &mut state.limiter);
    let metrics = settings.metrics.clone();
    busy::watch(
        &mut store,
        |state| &mut state.busy,
        name,
        enforced.max_busy,
        metrics,
    );
    store
}
