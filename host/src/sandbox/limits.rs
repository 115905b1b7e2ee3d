//! What a guest may hold and how long it may compute: sockets, accepted connections, busy time;
//! and the process's descriptor limit, which no guest may exhaust.
//!
//! Sockets are counted where they are born and die: the host replaces wasmtime-wasi's
//! `create-tcp-socket`, `create-udp-socket` and `accept`, and the destructors of both socket
//! resources (the constructors also set `SO_REUSEPORT` when instances share ports). A guest with no TCP (UDP) rule at all gets `access-denied` before any socket
//! reaches the OS; at its own cap, or when the guests of this process together reach the
//! process's budget, creating fails with `new-socket-limit` and a client it would have accepted
//! is accepted by the host and closed at once, so the guest never spins on a full backlog.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::Semaphore;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Host as _, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{SocketError, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::reuseport;
use super::state::HostState;
use crate::audit::{AuditEvent, LIMIT_PREFIX};
use crate::compile::EPOCH_TICK;
use crate::policy::Limits;

/// Linear memory a guest may grow to unless told otherwise: far more than a socket server
/// needs, far less than a host can lose to one runaway guest.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// Accepted connections a guest may hold at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Sockets of any kind a guest may hold at once unless told otherwise (less if the process's
/// descriptor budget is smaller, see [`default_max_sockets`]).
pub const DEFAULT_MAX_SOCKETS: u32 = 4096;
/// How long a guest may compute without calling the host unless told otherwise.
pub const DEFAULT_MAX_BUSY: Duration = Duration::from_millis(1000);

/// Core instances, linear memories and tables one guest may create, and table elements in all
/// its tables together. A component's counts are fixed when it is built, so these only refuse
/// components built to exhaust the host (each memory reserves gigabytes of address space, each
/// element a pointer). Far above what real guests use: the Rust guests have 3 core modules,
/// 1 memory and 2 tables of about 200 elements; the componentize-py echo guest (21 MB) has 14
/// core modules, 1 memory, 2 tables and 6 000 elements.
pub const MAX_INSTANCES: usize = 1000;
pub const MAX_MEMORIES: usize = 32;
pub const MAX_TABLES: usize = 100;
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Name lookups one guest may have in flight at once (see `dns.rs`).
pub const MAX_LOOKUPS: usize = 16;

const TCP: &str = "wasi:sockets/tcp@0.2.12";
const UDP: &str = "wasi:sockets/udp@0.2.12";
const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";

/// The process's descriptor limit and the part of it guests may use together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` after raising it (or what it was, if it could not be raised).
    pub limit: u64,
    /// Sockets all guests of this process may hold together; the rest is the host's own
    /// (listeners of other guests, audit files, the compile cache, lingering closes).
    pub guests: u64,
}

/// Raises this process's soft descriptor limit to its hard limit (once) and returns the budget
/// guests share. The CLI calls it at start; the sandbox calls it before the first guest.
pub fn fd_budget() -> FdBudget {
    static BUDGET: OnceLock<FdBudget> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let limit = raise_nofile();
        // A tenth (at least 256) stays with the host, so a guest at the budget still leaves
        // room for every other guest's listener and the host's own files.
        let reserve = (limit / 10).max(256);
        FdBudget {
            limit,
            guests: limit.saturating_sub(reserve).max(16),
        }
    })
}

#[cfg(unix)]
fn raise_nofile() -> u64 {
    use rustix::process::{Resource as Rlimit, getrlimit, setrlimit};
    let mut rlimit = getrlimit(Rlimit::Nofile);
    if let Some(hard) = rlimit.maximum
        && rlimit.current != Some(hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Rlimit::Nofile, raised) {
            Ok(()) => rlimit.current = Some(hard),
            Err(err) => tracing::warn!("cannot raise the descriptor limit to {hard}: {err}"),
        }
    }
    // An unlimited limit is taken as a large finite one; budgets only need an order.
    rlimit.current.unwrap_or(1 << 20)
}

#[cfg(not(unix))]
fn raise_nofile() -> u64 {
    1 << 14
}

/// The default per-guest socket cap when `guests` guests (instances included) share this
/// process: [`DEFAULT_MAX_SOCKETS`], or an equal share of the budget if that is smaller, so
/// that the guests of one process together never exhaust its descriptors.
pub fn default_max_sockets(guests: usize) -> u32 {
    let share = fd_budget().guests / guests.max(1) as u64;
    share.clamp(1, u64::from(DEFAULT_MAX_SOCKETS)) as u32
}

/// Sockets held by all guests of this process.
static HELD: AtomicU64 = AtomicU64::new(0);

/// The limits a guest runs under, defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Enforced {
    pub(crate) max_sockets: u32,
    pub(crate) max_connections: u32,
    pub(crate) max_busy: Duration,
}

impl Enforced {
    pub(crate) fn new(limits: &Limits, default_sockets: u32) -> Enforced {
        Enforced {
            max_sockets: limits.max_sockets.unwrap_or(default_sockets),
            max_connections: limits.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_busy: limits.max_busy.unwrap_or(DEFAULT_MAX_BUSY),
        }
    }
}

/// One guest's sockets, counted against its caps and the process's budget.
pub(crate) struct SocketLedger {
    tcp_granted: bool,
    udp_granted: bool,
    max_sockets: u32,
    max_connections: u32,
    /// Sockets in the guest's table.
    held: u32,
    /// Closes of this guest still finishing in the background (see `linger.rs`): each holds
    /// a descriptor, so it counts against `max_sockets` and the process's budget until done.
    lingering: Arc<AtomicU32>,
    /// The output stream of each connected socket (stream rep to socket rep), so the close of
    /// a stream that lingers is charged to its socket.
    outputs: HashMap<u32, u32>,
    /// Sockets whose output stream was dropped with a write still in flight.
    closing: HashMap<u32, Arc<Linger>>,
    /// The accepted sockets (by resource rep), counted against `max_connections`.
    accepted: HashSet<u32>,
    /// Name lookups in flight, at most [`MAX_LOOKUPS`] (see `dns.rs`).
    pub(crate) lookups: Arc<Semaphore>,
}

/// One dropped output stream whose last write goes on in the background.
pub(crate) struct Linger {
    state: AtomicU8,
    lingering: Arc<AtomicU32>,
}

/// The stream lingers, its socket is still the guest's (and counted as such).
const PENDING: u8 = 0;
/// The guest dropped the socket too: the close counts as lingering until it is done.
const CHARGED: u8 = 1;
/// The last write ended (or was abandoned); the descriptor is the socket's to close.
const DONE: u8 = 2;

impl Linger {
    /// The background write is over: a close that was charged stops counting.
    pub(crate) fn finished(&self) {
        if self.state.swap(DONE, Ordering::AcqRel) == CHARGED {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves the socket's count to the lingering close, unless the close already ended.
    fn charge(&self) -> bool {
        // Counted first, so `finished` never sees CHARGED before the count exists.
        self.lingering.fetch_add(1, Ordering::AcqRel);
        let charged = self
            .state
            .compare_exchange(PENDING, CHARGED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !charged {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
        }
        charged
    }
}

/// Why a socket was refused.
enum Refusal {
    NoGrant,
    MaxSockets(u32),
    MaxConnections(u32),
    Budget(u64),
}

impl Refusal {
    fn rule(&self) -> Option<String> {
        match self {
            Refusal::NoGrant => None,
            Refusal::MaxSockets(n) => Some(format!("{LIMIT_PREFIX}max-sockets {n}")),
            Refusal::MaxConnections(n) => Some(format!("{LIMIT_PREFIX}max-connections {n}")),
            Refusal::Budget(n) => Some(format!(
                "{LIMIT_PREFIX}the descriptor budget of this process's guests ({n})"
            )),
        }
    }
}

impl SocketLedger {
    pub(crate) fn new(tcp_granted: bool, udp_granted: bool, limits: &Enforced) -> SocketLedger {
        SocketLedger {
            tcp_granted,
            udp_granted,
            max_sockets: limits.max_sockets,
            max_connections: limits.max_connections,
            held: 0,
            lingering: Arc::default(),
            outputs: HashMap::new(),
            closing: HashMap::new(),
            accepted: HashSet::new(),
            lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        }
    }

    /// Counts one more socket, or says why it may not be.
    fn take(&mut self) -> Result<(), Refusal> {
        let lingering = self.lingering.load(Ordering::Acquire);
        if self.held.saturating_add(lingering) >= self.max_sockets {
            return Err(Refusal::MaxSockets(self.max_sockets));
        }
        let budget = fd_budget().guests;
        if HELD.fetch_add(1, Ordering::Relaxed) >= budget {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Budget(budget));
        }
        self.held += 1;
        Ok(())
    }

    fn release(&mut self, rep: u32) {
        self.accepted.remove(&rep);
        if self.held == 0 {
            return;
        }
        self.held -= 1;
        // A socket whose last write still lingers keeps its descriptor: the count moves to the
        // lingering close, which gives it back when it is done.
        let lingers = self
            .closing
            .remove(&rep)
            .is_some_and(|linger| linger.charge());
        if !lingers {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Remembers which socket a connection's output stream belongs to.
    fn connected(&mut self, socket: u32, output: u32) {
        self.outputs.insert(output, socket);
    }

    /// An output stream was dropped. If it belongs to a socket and `pending` (its last write is
    /// still in flight), returns the [`Linger`] the background write must finish.
    pub(crate) fn output_dropped(&mut self, stream: u32, pending: bool) -> Option<Arc<Linger>> {
        let socket = self.outputs.remove(&stream)?;
        if !pending {
            return None;
        }
        let linger = Arc::new(Linger {
            state: AtomicU8::new(PENDING),
            lingering: self.lingering.clone(),
        });
        self.closing.insert(socket, linger.clone());
        Some(linger)
    }
}

impl Drop for SocketLedger {
    /// The store is gone and its sockets with it, except those whose last write lingers.
    fn drop(&mut self) {
        let lingering = self.closing.values().filter(|l| l.charge()).count() as u64;
        HELD.fetch_sub(
            u64::from(self.held).saturating_sub(lingering),
            Ordering::Relaxed,
        );
    }
}

/// Replaces socket creation, accept and the socket destructors with counting versions. Must run
/// after wasmtime-wasi's own `add_to_linker`.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TCP_CREATE)?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            let granted = state.ledger.tcp_granted;
            if let Err(refusal) = admit(state, family, granted, "tcp-create") {
                return Ok((Err(refusal),));
            }
            let share = state.share_ports;
            let mut view = state.sockets();
            let result = tcp_create_socket::Host::create_tcp_socket(&mut view, family);
            let mut result = settle(&mut view, result)?;
            if share && let Ok(socket) = &result {
                let rep = socket.rep();
                if let Err(err) = reuseport::share_tcp(&mut view, rep) {
                    tracing::error!("cannot share the port of a TCP socket: {err:#}");
                    drop(view.table.delete(Resource::<TcpSocket>::new_own(rep))?);
                    result = Err(ErrorCode::Unknown);
                }
            }
            if result.is_err() {
                state.ledger.release(u32::MAX);
            }
            Ok((result,))
        },
    )?;
    linker.instance(UDP_CREATE)?.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                let granted = state.ledger.udp_granted;
                if let Err(refusal) = admit(state, family, granted, "udp-create") {
                    return Ok((Err(refusal),));
                }
                let share = state.share_ports;
                let result = super::udp::create_socket(state, family).await;
                let mut view = state.sockets();
                let mut result = settle(&mut view, result)?;
                if share && let Ok(socket) = &result {
                    let rep = socket.rep();
                    if let Err(err) = reuseport::share_udp(&mut view, rep) {
                        tracing::error!("cannot share the port of a UDP socket: {err:#}");
                        drop(view.table.delete(Resource::<UdpSocket>::new_own(rep))?);
                        result = Err(ErrorCode::Unknown);
                    }
                }
                if result.is_err() {
                    state.ledger.release(u32::MAX);
                }
                Ok((result,))
            })
        },
    )?;
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: StoreContextMut<'_, HostState>, (listener,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let mut view = state.sockets();
            let accepted = match HostTcpSocket::accept(&mut view, listener) {
                Ok(accepted) => accepted,
                Err(err) => return Ok((Err(view.convert_error_code(err)?),)),
            };
            let refusal = if state.ledger.accepted.len() >= state.ledger.max_connections as usize {
                Err(Refusal::MaxConnections(state.ledger.max_connections))
            } else {
                state.ledger.take()
            };
            match refusal {
                Ok(()) => {
                    state.ledger.accepted.insert(accepted.0.rep());
                    state.ledger.connected(accepted.0.rep(), accepted.2.rep());
                    Ok((Ok(accepted),))
                }
                Err(refusal) => {
                    let peer = close_accepted(state, accepted)?;
                    let event = AuditEvent::refused(
                        &state.shared.guest,
                        "tcp-accept",
                        peer,
                        refusal.rule(),
                    );
                    state.shared.record_event(event);
                    // Over max-connections the guest is not told: the host refused the client
                    // itself, and the guest goes on waiting for the next one.
                    let code = match refusal {
                        Refusal::MaxConnections(_) => ErrorCode::WouldBlock,
                        _ => ErrorCode::NewSocketLimit,
                    };
                    Ok((Err(code),))
                }
            }
        },
    )?;
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            let rep = socket.rep();
            let state = store.data_mut();
            let mut view = state.sockets();
            let result = HostTcpSocket::finish_connect(&mut view, socket);
            let result = settle(&mut view, result)?;
            if let Ok((_, output)) = &result {
                state.ledger.connected(rep, output.rep());
            }
            Ok((result,))
        },
    )?;
    linker.instance(TCP)?.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.ledger.release(rep);
            Ok(())
        },
    )?;
    linker.instance(UDP)?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store: StoreContextMut<'_, HostState>, rep: u32| {
            let state = store.data_mut();
            HostUdpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
            state.ledger.release(rep);
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Decides whether the guest may create one more socket; records a refusal.
fn admit(
    state: &mut HostState,
    family: IpAddressFamily,
    granted: bool,
    use_: &str,
) -> Result<(), ErrorCode> {
    let result = if granted {
        state.ledger.take()
    } else {
        Err(Refusal::NoGrant)
    };
    result.map_err(|refusal| {
        let family = match family {
            IpAddressFamily::Ipv4 => "ipv4",
            IpAddressFamily::Ipv6 => "ipv6",
        };
        let event = AuditEvent::refused(&state.shared.guest, use_, family, refusal.rule());
        state.shared.record_event(event);
        match refusal {
            Refusal::NoGrant => ErrorCode::AccessDenied,
            _ => ErrorCode::NewSocketLimit,
        }
    })
}

/// Takes an accepted connection out of the guest's table and closes it; returns its peer.
fn close_accepted(
    state: &mut HostState,
    (socket, input, output): (
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    ),
) -> wasmtime::Result<String> {
    let peer =
        HostTcpSocket::remote_address(&mut state.sockets(), Resource::new_borrow(socket.rep()))
            .map(|addr| SocketAddr::from(addr).to_string())
            .unwrap_or_else(|_| "unknown".into());
    // Children first: the table refuses to delete a socket whose streams are alive.
    drop(state.table.delete(output)?);
    drop(state.table.delete(input)?);
    drop(state.table.delete(socket)?);
    Ok(peer)
}

/// Splits a socket result into the guest's error code or a trap, as the generated bindings do.
fn settle<T>(
    view: &mut WasiSocketsCtxView<'_>,
    result: Result<T, SocketError>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(err) => Ok(Err(view.convert_error_code(err)?)),
    }
}

/// Epoch ticks a guest may compute through without calling the host.
pub(crate) fn busy_ticks(max_busy: Duration) -> u32 {
    max_busy
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .clamp(1, u128::from(u32::MAX)) as u32
}

/// Limits what a guest's wasm may allocate: the sum of all its linear memories against
/// `max-memory`, the sum of all its tables' elements, and how many instances, memories and
/// tables it may create. wasmtime's own `StoreLimits` applies the memory limit to each memory
/// on its own, so a component with four memories could hold four times `max-memory`.
pub(crate) struct GuestLimiter {
    guest: String,
    max_memory: usize,
    /// Bytes of all memories together: the sum of every size the limiter allowed (an allowed
    /// growth the OS then failed stays counted, erring on the safe side; memories never
    /// shrink and are freed only with the store).
    memory: usize,
    table_elements: usize,
    /// A refused growth was reported.
    warned: bool,
}

impl GuestLimiter {
    pub(crate) fn new(guest: &str, max_memory: u64) -> GuestLimiter {
        GuestLimiter {
            guest: guest.to_string(),
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            memory: 0,
            table_elements: 0,
            warned: false,
        }
    }

    /// Says (once per guest: a guest may retry in a loop) why a growth was refused.
    fn refuse(&mut self, why: impl FnOnce() -> String) -> bool {
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                "guest `{}`: {}; the growth fails inside the guest",
                self.guest,
                why()
            );
        }
        false
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past its own declared maximum wasmtime fails the growth after asking: refused here,
        // so every growth allowed below is one that happens.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.memory.saturating_add(desired.saturating_sub(current));
        if total > self.max_memory {
            let max = self.max_memory;
            return Ok(self.refuse(|| {
                format!(
                    "refused to grow a memory to {desired} bytes: its memories together would \
                     hold {total} bytes, over max-memory ({max} bytes)"
                )
            }));
        }
        self.memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(self.refuse(|| {
                format!(
                    "refused to grow a table to {desired} elements: its tables together would \
                     hold {total}, over the host's limit of {MAX_TABLE_ELEMENTS}"
                )
            }));
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        tracing::debug!(
            guest = %self.guest,
            memory = self.memory,
            table_elements = self.table_elements,
            "the guest's wasm allocations at its end"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(max_sockets: u32) -> SocketLedger {
        let limits = Enforced {
            max_sockets,
            max_connections: 10,
            max_busy: DEFAULT_MAX_BUSY,
        };
        SocketLedger::new(true, true, &limits)
    }

    #[test]
    fn memory_is_counted_over_all_memories() {
        let mut limiter = GuestLimiter::new("g", 100);
        // Two memories created with 40 bytes each, then each grown by 10.
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(40, 50, None).unwrap());
        assert!(limiter.memory_growing(40, 50, None).unwrap());
        // A third memory would take the sum past 100, even though it alone is small.
        assert!(!limiter.memory_growing(0, 10, None).unwrap());
        assert_eq!(limiter.memory, 100);
        // Past a memory's own maximum: refused, and not counted.
        let mut limiter = GuestLimiter::new("g", 100);
        assert!(!limiter.memory_growing(0, 20, Some(10)).unwrap());
        assert_eq!(limiter.memory, 0);
    }

    #[test]
    fn table_elements_are_counted_over_all_tables() {
        let mut limiter = GuestLimiter::new("g", 100);
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }

    #[test]
    fn a_lingering_close_counts_until_it_is_done() {
        let mut ledger = ledger(2);
        ledger.take().ok().unwrap();
        ledger.connected(1, 100);
        // The output stream is dropped with a write in flight, then the socket.
        let linger = ledger
            .output_dropped(100, true)
            .expect("a socket's stream lingers");
        ledger.release(1);
        assert_eq!(ledger.held, 0);
        assert_eq!(ledger.lingering.load(Ordering::Acquire), 1);
        ledger.take().ok().unwrap();
        assert!(matches!(ledger.take(), Err(Refusal::MaxSockets(2))));
        linger.finished();
        assert_eq!(ledger.lingering.load(Ordering::Acquire), 0);
        ledger.take().ok().unwrap();
    }

    #[test]
    fn a_close_that_ends_before_its_socket_is_dropped_counts_once() {
        let mut ledger = ledger(1);
        ledger.take().ok().unwrap();
        ledger.connected(1, 100);
        let linger = ledger.output_dropped(100, true).unwrap();
        linger.finished();
        ledger.release(1);
        assert_eq!(ledger.lingering.load(Ordering::Acquire), 0);
        ledger.take().ok().unwrap();
    }

    #[test]
    fn streams_with_nothing_in_flight_or_no_socket_do_not_linger() {
        let mut ledger = ledger(1);
        ledger.connected(1, 100);
        assert!(ledger.output_dropped(100, false).is_none());
        assert!(ledger.output_dropped(7, true).is_none());
        assert!(ledger.closing.is_empty() && ledger.outputs.is_empty());
    }
}
