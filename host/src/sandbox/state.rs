//! What a running guest's store holds, and what the host side shares with it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::SocketLedger;
use super::{ReadySocket, Transport};
use crate::audit::{AuditEvent, AuditLog, denial_message};
use crate::policy::{Gate, Verdict};

/// Decisions kept in memory for [`super::RunningGuest::decisions`]; older ones fall off.
const DECISIONS_KEPT: usize = 10_000;

/// The store's data: WASI state, resource table, limits and the link to the host.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) gate: Arc<Gate>,
    pub(crate) shared: Arc<Shared>,
    /// Other instances bind the same addresses (`SO_REUSEPORT` on every new socket).
    pub(crate) share_ports: bool,
    /// The guest's sockets, against its caps.
    pub(crate) ledger: SocketLedger,
    /// Each UDP socket's conversation state.
    pub(crate) udp: super::udp::UdpSockets,
    /// The shared addresses this instance holds for its port group.
    pub(crate) ports: super::reuseport::PortClaims,
    /// How long the guest has computed without calling the host.
    pub(crate) busy: Busy,
}

/// Epoch ticks the guest has computed through since it last returned from a host call.
#[derive(Default)]
pub(crate) struct Busy {
    pub(crate) ticks: u32,
    /// Inside the epoch check, which wasmtime runs as a host call of its own.
    pub(crate) in_epoch_check: bool,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Readiness as the host sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Readiness {
    /// Sockets that finished listening (TCP) or binding (UDP), in order.
    pub(crate) sockets: Vec<ReadySocket>,
    /// The guest called `control.ready`.
    pub(crate) announced: bool,
}

/// State shared between the store (host functions, the address check) and the host API.
pub(crate) struct Shared {
    pub(crate) guest: String,
    pub(crate) readiness: watch::Sender<Readiness>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<AuditEvent>,
    pub(crate) decisions: Mutex<VecDeque<AuditEvent>>,
    pub(crate) denials: AtomicU64,
    /// The second the last refusal by a limit was printed: at most one such line a second.
    last_limit_notice: AtomicU64,
    /// Every log the decisions are appended to (`--audit`, and a guest's own under `up`).
    pub(crate) audit_logs: Vec<Arc<AuditLog>>,
    pub(crate) print_denials: bool,
}

impl Shared {
    pub(crate) fn new(
        guest: String,
        audit_logs: Vec<Arc<AuditLog>>,
        print_denials: bool,
    ) -> Shared {
        Shared {
            guest,
            readiness: watch::Sender::new(Readiness::default()),
            shutdown: watch::Sender::new(false),
            events: broadcast::channel(1024).0,
            decisions: Mutex::new(VecDeque::new()),
            denials: AtomicU64::new(0),
            last_limit_notice: AtomicU64::new(0),
            audit_logs,
            print_denials,
        }
    }

    /// Records one capability decision: audit file, stderr line for a denial, subscribers.
    pub(crate) fn record(&self, verdict: &Verdict) {
        self.record_event(AuditEvent::from_verdict(&self.guest, verdict));
    }

    pub(crate) fn record_event(&self, event: AuditEvent) {
        if !event.allowed() {
            self.denials.fetch_add(1, Ordering::Relaxed);
            // A full guest refuses every new client: print the first refusal of each second,
            // not thousands (the audit log and `decisions()` keep every one).
            if self.print_denials && (event.limit().is_none() || self.limit_notice_due()) {
                eprintln!("{}", denial_message(&event));
            }
        }
        tracing::debug!(guest = %self.guest, use_ = %event.use_, addr = %event.addr, decision = ?event.decision, "capability decision");
        for log in &self.audit_logs {
            if let Err(err) = log.write(&event) {
                tracing::error!("cannot write the audit log: {err}");
            }
        }
        let mut kept = self.decisions.lock().unwrap();
        if kept.len() == DECISIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back(event.clone());
        drop(kept);
        let _ = self.events.send(event);
    }

    fn limit_notice_due(&self) -> bool {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_limit_notice.swap(second, Ordering::Relaxed) != second
    }

    pub(crate) fn socket_ready(&self, transport: Transport, addr: SocketAddr) {
        tracing::info!(guest = %self.guest, "{transport} socket ready on {addr}");
        self.readiness
            .send_modify(|r| r.sockets.push(ReadySocket { transport, addr }));
    }

    pub(crate) fn announce_ready(&self) {
        self.readiness
            .send_if_modified(|r| !std::mem::replace(&mut r.announced, true));
    }
}
