//! The smallest host that runs a WASI 0.3 command component on wasmtime 50.0.1: what sockbox's
//! 0.3 path will grow from (docs/design/wasi-p3.md). It is a spike, not sockbox: no policy
//! file, no audit; just the three hooks the design needs, each shown working:
//!
//! - the address check (`socket_addr_check`), which wasmtime-wasi applies to 0.3 sockets too;
//!   it allows loopback only and counts each use it was asked about;
//! - a shadowed 0.3 import (`[static]tcp-socket.create`) that enforces `P3_MAX_SOCKETS`, the
//!   way sockbox shadows 0.2 imports today;
//! - epoch interruption (`P3_EPOCH_MS`) to see how a busy-loop budget meets async tasks, and
//!   sockbox's `max-busy` watch (`P3_MAX_BUSY_TICKS`, reset on return from a host call as
//!   sockbox does; `P3_BUSY_RESET_ON_ENTRY=1` also resets whenever the host enters the guest);
//! - a `ResourceLimiter` that records the guest's peak linear memory (what `max-memory` caps),
//!   to see what idle connections cost.
//!
//! Usage: `p3-runner <component.wasm> [guest args...]`. Ctrl-C (SIGINT) prints the counts and
//! the memory peak, and exits; the guest's own output (its `listening <addr>` lines) goes to stdout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{CallHook, Config, Engine, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p3::bindings::Command;
use wasmtime_wasi::p3::bindings::sockets::types::{
    ErrorCode, HostTcpSocket, IpAddressFamily, TcpSocket,
};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The 0.3 sockets interface as wasmtime-wasi 50 names it; a guest built on wasip3 0.10
/// imports `@0.3.2`, which the linker's semver matching resolves to this.
const SOCKETS: &str = "wasi:sockets/types@0.3.0";

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
    tcp_sockets: u32,
    max_sockets: u32,
    memory_peak: Arc<AtomicUsize>,
    busy_ticks: u64,
    in_epoch_check: bool,
}

impl wasmtime::ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.memory_peak.fetch_max(desired, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// How often the address check was asked about each use: bind, listen, accept, connect, ...
#[derive(Default)]
struct Checks([AtomicU64; 8]);

impl Checks {
    const NAMES: [&str; 8] = [
        "tcp-bind",
        "tcp-listen",
        "tcp-accept",
        "tcp-connect",
        "udp-bind",
        "udp-send",
        "udp-receive",
        "denied",
    ];

    fn slot(use_: SocketAddrUse) -> usize {
        match use_ {
            SocketAddrUse::TcpBind => 0,
            SocketAddrUse::TcpListen => 1,
            SocketAddrUse::TcpAccept => 2,
            SocketAddrUse::TcpConnect => 3,
            SocketAddrUse::UdpBind => 4,
            SocketAddrUse::UdpSend => 5,
            SocketAddrUse::UdpReceive => 6,
        }
    }

    fn summary(&self) -> String {
        let counts = self.0.iter().map(|c| c.load(Ordering::Relaxed));
        Self::NAMES
            .iter()
            .zip(counts)
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn env_u64(name: &str) -> Result<Option<u64>> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().with_context(|| format!("{name}={v}")))
        .transpose()
}

/// `P3_CURRENT_THREAD=1` runs the store on a current-thread runtime, where the thread that runs
/// the guest also waits in epoll; by default (`#[tokio::main]`'s multi-thread runtime) the
/// store runs in `block_on` on the main thread and a worker thread owns epoll, so every socket
/// event is a cross-thread wake-up (docs/design/wasi-p3.md, "Per-round-trip cost").
/// `P3_SPAWN_WORKERS=n` is sockbox's layout instead: the store runs in a task spawned on a
/// multi-thread runtime with n workers (`host/src/sandbox/instance.rs`, `cli/src/main.rs`).
fn main() -> Result<()> {
    let workers = env_u64("P3_SPAWN_WORKERS")?;
    let mut runtime = if std::env::var_os("P3_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = workers {
        runtime.worker_threads(n as usize);
    }
    let runtime = runtime.enable_all().build()?;
    match workers {
        Some(_) => runtime.block_on(async { tokio::spawn(run()).await? }),
        None => runtime.block_on(run()),
    }
}

async fn run() -> Result<()> {
    // Collected so the future holds no `Args` (not `Send`) across an await (`P3_SPAWN_WORKERS`).
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    let Some(path) = args.next() else {
        bail!("usage: p3-runner <component.wasm> [guest args...]")
    };
    let guest_args: Vec<String> = std::iter::once(path.clone()).chain(args).collect();
    let epoch_ms = env_u64("P3_EPOCH_MS")?;

    let mut config = Config::new();
    config.wasm_component_model_async(true);
    config.epoch_interruption(epoch_ms.is_some());
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, &path)?;
    describe_world(&engine, &component);

    let mut linker = Linker::<State>::new(&engine);
    // A 0.3 guest built for wasm32-wasip2 imports 0.2 as well: Rust's std (println!, env,
    // std::net) still goes through WASI 0.2. Both share one WasiCtx, so one address check.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    shadow_tcp_create(&mut linker)?;

    let checks = Arc::new(Checks::default());
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdout()
        .inherit_stderr()
        .args(&guest_args)
        .allow_tcp(true)
        .allow_udp(true);
    let seen = checks.clone();
    wasi.socket_addr_check(move |addr: SocketAddr, use_| {
        let allowed = addr.ip().is_loopback();
        seen.0[Checks::slot(use_)].fetch_add(1, Ordering::Relaxed);
        if !allowed {
            seen.0[7].fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async move { allowed })
    });
    let max_sockets = env_u64("P3_MAX_SOCKETS")?.map_or(u32::MAX, |n| n as u32);
    let memory_peak = Arc::new(AtomicUsize::new(0));
    let state = State {
        ctx: wasi.build(),
        table: ResourceTable::new(),
        tcp_sockets: 0,
        max_sockets,
        memory_peak: memory_peak.clone(),
        busy_ticks: 0,
        in_epoch_check: false,
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|state| state);

    if let Some(ms) = epoch_ms {
        watch_busy(&mut store, env_u64("P3_MAX_BUSY_TICKS")?);
        let engine = engine.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(ms));
                engine.increment_epoch();
            }
        });
    }

    let stop = checks.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("checks: {}", stop.summary());
        eprintln!(
            "linear memory peak: {} KiB",
            memory_peak.load(Ordering::Relaxed) / 1024
        );
        std::process::exit(0);
    });

    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    let outcome = store
        .run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await)
        .await??;
    eprintln!("checks: {}", checks.summary());
    eprintln!("tcp sockets created: {}", store.data().tcp_sockets);
    if outcome.is_err() {
        std::process::exit(1);
    }
    Ok(())
}

/// Every epoch tick the guest yields back to the event loop, so a busy guest cannot hold the
/// thread. With a budget, it is sockbox's `max-busy` (`host/src/sandbox/mod.rs`, `watch_busy`):
/// ticks count up while the guest computes and reset when it returns from a host call; over the
/// budget the guest is stopped.
fn watch_busy(store: &mut Store<State>, budget: Option<u64>) {
    let reset_on_entry = std::env::var_os("P3_BUSY_RESET_ON_ENTRY").is_some();
    store.call_hook(move |mut store, hook| {
        let state = store.data_mut();
        match hook {
            // The epoch check is itself a call into the host: returning from it is no yield.
            CallHook::ReturningFromHost if !std::mem::take(&mut state.in_epoch_check) => {
                state.busy_ticks = 0
            }
            // A 0.3 guest on the callback ABI is re-entered for every event.
            CallHook::CallingWasm if reset_on_entry => state.busy_ticks = 0,
            _ => {}
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut store| {
        let state = store.data_mut();
        state.busy_ticks += 1;
        state.in_epoch_check = true;
        if budget.is_some_and(|budget| state.busy_ticks > budget) {
            let busy = state.busy_ticks;
            return Err(wasmtime::format_err!(
                "max-busy: {busy} ticks without a host call"
            ));
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Replaces `[static]tcp-socket.create` with one that counts and caps sockets, then calls
/// wasmtime-wasi's own: the 0.3 form of sockbox's 0.2 shadows. `create` is a plain (not
/// async-lowered) import in 0.3, so `func_wrap` works as it does for 0.2.
fn shadow_tcp_create(linker: &mut Linker<State>) -> Result<()> {
    linker.allow_shadowing(true);
    linker.instance(SOCKETS)?.func_wrap(
        "[static]tcp-socket.create",
        |mut store: StoreContextMut<'_, State>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            if state.tcp_sockets >= state.max_sockets {
                let denied: Result<Resource<TcpSocket>, ErrorCode> = Err(ErrorCode::AccessDenied);
                return Ok((denied,));
            }
            state.tcp_sockets += 1;
            let created = match HostTcpSocket::create(&mut state.sockets(), family) {
                Ok(socket) => Ok(socket),
                Err(e) => Err(e.downcast()?), // a trap stays a trap
            };
            Ok((created,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Prints which WASI world the component targets, from its imports and exports alone: a 0.3
/// command exports `wasi:cli/run@0.3.*`, a 0.2 one `wasi:cli/run@0.2.*`.
fn describe_world(engine: &Engine, component: &Component) {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    eprintln!("world: exports {exports:?}, imports {imports:?}");
}
