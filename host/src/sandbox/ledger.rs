//! One guest's sockets, counted against its caps and against the budget the guests of this
//! process share.
//!
//! Sockets are counted where they are born and die (the hooks in `link/sockets.rs`): created,
//! accepted, dropped. A guest with no TCP (UDP) rule at all is refused before any socket
//! reaches the OS; at its own cap, or when the guests of this process together reach the
//! budget, it is refused with the limit named. A connection whose last write lingers after the
//! guest dropped it (see `link/linger.rs`) still holds its descriptor, so it stays counted until
//! that write is done. Pure bookkeeping: no wasmtime types, so every rule is tested here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::limits::{Enforced, fd_budget};
use super::types::Transport;
use crate::audit::LIMIT_PREFIX;
use crate::metrics::GuestMetrics;

/// The sockets all guests of one process hold, against their budget.
#[derive(Debug)]
pub(crate) struct ProcessSockets {
    budget: u64,
    held: AtomicU64,
}

impl ProcessSockets {
    pub(crate) fn new(budget: u64) -> Arc<ProcessSockets> {
        Arc::new(ProcessSockets {
            budget,
            held: AtomicU64::new(0),
        })
    }

    /// This process's: its descriptor budget for guests (see [`fd_budget`]).
    pub(crate) fn global() -> Arc<ProcessSockets> {
        static GLOBAL: OnceLock<Arc<ProcessSockets>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| ProcessSockets::new(fd_budget().guests))
            .clone()
    }

    fn take(&self) -> Result<(), Refusal> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.budget {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Budget(self.budget));
        }
        Ok(())
    }

    fn give_back(&self, sockets: u64) {
        self.held.fetch_sub(sockets, Ordering::Relaxed);
    }
}

/// The descriptors the guests of this process hold, against their budget (for metrics).
pub(crate) struct GuestSockets {
    pub(crate) held: u64,
    pub(crate) budget: u64,
}

/// This process's guests' sockets now.
pub(crate) fn guest_sockets() -> GuestSockets {
    let process = ProcessSockets::global();
    GuestSockets {
        held: process.held.load(Ordering::Relaxed),
        budget: process.budget,
    }
}

/// Why a socket was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The policy has no rule at all for the socket's transport.
    NoGrant,
    MaxSockets(u32),
    MaxConnections(u32),
    /// The guests of this process hold their whole budget.
    Budget(u64),
}

impl Refusal {
    /// The audit line's rule: the limit that refused, or none for a missing grant.
    pub(crate) fn rule(&self) -> Option<String> {
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

/// One guest's sockets, by resource handle.
pub(crate) struct SocketLedger {
    tcp_granted: bool,
    udp_granted: bool,
    max_sockets: u32,
    max_connections: u32,
    process: Arc<ProcessSockets>,
    /// Sockets in the guest's table.
    held: u32,
    /// Closes of this guest still finishing in the background: each holds a descriptor, so it
    /// counts against `max_sockets` and the process's budget until done.
    lingering: Arc<AtomicU32>,
    /// The output stream of each connected socket (stream handle to socket handle), so the
    /// close of a stream that lingers is charged to its socket.
    outputs: HashMap<u32, u32>,
    /// Sockets whose output stream was dropped with a write still in flight.
    closing: HashMap<u32, Arc<Linger>>,
    /// The accepted sockets, counted against `max_connections`.
    accepted: HashSet<u32>,
    /// The input stream of each connected socket (stream to socket, and back), so the bytes
    /// read from connections are told from those read from stdin.
    inputs: HashMap<u32, u32>,
    input_of: HashMap<u32, u32>,
    /// Where connections are counted.
    metrics: GuestMetrics,
}

impl SocketLedger {
    pub(crate) fn new(
        tcp_granted: bool,
        udp_granted: bool,
        limits: &Enforced,
        process: Arc<ProcessSockets>,
        metrics: GuestMetrics,
    ) -> SocketLedger {
        SocketLedger {
            tcp_granted,
            udp_granted,
            max_sockets: limits.max_sockets,
            max_connections: limits.max_connections,
            process,
            held: 0,
            lingering: Arc::default(),
            outputs: HashMap::new(),
            closing: HashMap::new(),
            accepted: HashSet::new(),
            inputs: HashMap::new(),
            input_of: HashMap::new(),
            metrics,
        }
    }

    /// Counts a socket the guest is about to create, or says why it may not.
    pub(crate) fn admit(&mut self, transport: Transport) -> Result<(), Refusal> {
        let granted = match transport {
            Transport::Tcp => self.tcp_granted,
            Transport::Udp => self.udp_granted,
        };
        if !granted {
            return Err(Refusal::NoGrant);
        }
        self.take()
    }

    /// Counts a connection the guest's listener accepted (`socket` and, in WASI 0.2, its
    /// `input` and `output` streams), or says why the guest may not hold it.
    pub(crate) fn accept(
        &mut self,
        socket: u32,
        streams: Option<(u32, u32)>,
    ) -> Result<(), Refusal> {
        if self.accepted.len() >= self.max_connections as usize {
            return Err(Refusal::MaxConnections(self.max_connections));
        }
        self.take()?;
        self.accepted.insert(socket);
        self.metrics.connection_opened();
        if let Some((input, output)) = streams {
            self.connected(socket, input, output);
        }
        Ok(())
    }

    fn take(&mut self) -> Result<(), Refusal> {
        let lingering = self.lingering.load(Ordering::Acquire);
        if self.held.saturating_add(lingering) >= self.max_sockets {
            return Err(Refusal::MaxSockets(self.max_sockets));
        }
        self.process.take()?;
        self.held += 1;
        Ok(())
    }

    /// A socket admitted was not created after all.
    pub(crate) fn refund(&mut self) {
        if self.held > 0 {
            self.held -= 1;
            self.process.give_back(1);
        }
    }

    /// The guest dropped socket `rep`.
    pub(crate) fn release(&mut self, rep: u32) {
        if self.accepted.remove(&rep) {
            self.metrics.connections_closed(1);
        }
        if let Some(input) = self.input_of.remove(&rep) {
            self.inputs.remove(&input);
        }
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
            self.process.give_back(1);
        }
    }

    /// Remembers which socket a connection's streams belong to.
    pub(crate) fn connected(&mut self, socket: u32, input: u32, output: u32) {
        self.outputs.insert(output, socket);
        self.inputs.insert(input, socket);
        self.input_of.insert(socket, input);
    }

    /// Whether stream `rep` is a connection's input (not stdin).
    pub(crate) fn is_connection_input(&self, rep: u32) -> bool {
        self.inputs.contains_key(&rep)
    }

    /// Whether stream `rep` is a connection's output (not stdout or stderr).
    pub(crate) fn is_connection_output(&self, rep: u32) -> bool {
        self.outputs.contains_key(&rep)
    }

    /// Where this guest's connections and traffic are counted.
    pub(crate) fn metrics(&self) -> &GuestMetrics {
        &self.metrics
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
            process: self.process.clone(),
        });
        self.closing.insert(socket, linger.clone());
        Some(linger)
    }
}

impl Drop for SocketLedger {
    /// The store is gone and its sockets with it, except those whose last write lingers.
    fn drop(&mut self) {
        self.metrics.connections_closed(self.accepted.len());
        let lingering = self.closing.values().filter(|l| l.charge()).count() as u64;
        self.process
            .give_back(u64::from(self.held).saturating_sub(lingering));
    }
}

/// One dropped output stream whose last write goes on in the background.
pub(crate) struct Linger {
    state: AtomicU8,
    lingering: Arc<AtomicU32>,
    process: Arc<ProcessSockets>,
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
            self.process.give_back(1);
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

#[cfg(test)]
mod tests;
