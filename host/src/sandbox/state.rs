//! What a running guest's store holds, and what the host side shares with it.
//!
//! [`HostState`] composes the pieces each concern keeps (limiter, socket ledger, port claims,
//! UDP states, busy count), none of which knows of it; the hooks that take it are in `link`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast, watch};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::busy::Busy;
use super::ledger::SocketLedger;
use super::limiter::GuestLimiter;
use super::output;
use super::ports::PortClaims;
use super::types::{ReadySocket, Transport};
use super::udp_sockets::UdpSockets;
use crate::audit::{
    AuditEvent, AuditLog, DenialBudget, denial_message, suppressed_event, suppressed_message,
};
use crate::metrics::GuestMetrics;
use crate::policy::{Gate, Verdict};

/// Decisions kept in memory for [`crate::sandbox::RunningGuest::decisions`]; older ones fall off.
const DECISIONS_KEPT: usize = 10_000;
/// ... and at most about this many bytes of them (each guest-controlled text is already cut
/// to [`crate::audit::LOG_TEXT_MAX`]).
const DECISIONS_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The store's data: WASI state, resource table, limits and the link to the host.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: GuestLimiter,
    pub(crate) gate: Arc<Gate>,
    pub(crate) shared: Arc<Shared>,
    /// Other instances bind the same addresses (`SO_REUSEPORT` on every new socket).
    pub(crate) share_ports: bool,
    /// The guest's sockets, against its caps.
    pub(crate) ledger: SocketLedger,
    /// Each UDP socket's conversation state.
    pub(crate) udp: UdpSockets,
    /// The shared addresses this instance holds for its port group.
    pub(crate) ports: PortClaims,
    /// How long the guest has computed without calling the host.
    pub(crate) busy: Busy,
    /// Name lookups in flight, at most `MAX_LOOKUPS` (see `link/dns.rs`).
    pub(crate) lookups: Arc<Semaphore>,
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
    /// What the kept decisions weigh (changed only with `decisions` locked).
    decision_bytes: AtomicUsize,
    pub(crate) denials: AtomicU64,
    /// Denials printed and audited one by one, at most so many a second; the rest counted.
    budget: Mutex<DenialBudget>,
    /// A summary of suppressed denials is due within a second.
    summary_scheduled: AtomicBool,
    me: Weak<Shared>,
    /// The second the last refusal by a limit was printed: at most one such line a second.
    last_limit_notice: AtomicU64,
    /// Every log the decisions are appended to (`--audit`, and a guest's own under `up`).
    pub(crate) audit_logs: Vec<Arc<AuditLog>>,
    pub(crate) print_denials: bool,
    /// Where the guest's decisions and traffic are counted.
    pub(crate) metrics: GuestMetrics,
}

impl Shared {
    pub(crate) fn new(
        guest: String,
        audit_logs: Vec<Arc<AuditLog>>,
        print_denials: bool,
        metrics: GuestMetrics,
    ) -> Arc<Shared> {
        Arc::new_cyclic(|me| Shared {
            guest,
            readiness: watch::Sender::new(Readiness::default()),
            shutdown: watch::Sender::new(false),
            events: broadcast::channel(1024).0,
            decisions: Mutex::new(VecDeque::new()),
            decision_bytes: AtomicUsize::new(0),
            denials: AtomicU64::new(0),
            budget: Mutex::new(DenialBudget::default()),
            summary_scheduled: AtomicBool::new(false),
            me: me.clone(),
            last_limit_notice: AtomicU64::new(0),
            audit_logs,
            print_denials,
            metrics,
        })
    }

    /// Records one capability decision: audit file, stderr line for a denial, subscribers.
    pub(crate) fn record(&self, verdict: &Verdict) {
        self.record_event(AuditEvent::from_verdict(&self.guest, verdict));
    }

    pub(crate) fn record_event(&self, event: AuditEvent) {
        self.metrics.decided(&event);
        let now = Instant::now();
        let due = {
            let mut budget = self.lock_budget();
            if !event.allowed() {
                self.denials.fetch_add(1, Ordering::Relaxed);
                // A stranger can cause denials as fast as it can send: past the budget they
                // are only counted, and a summary says how many.
                if !budget.take(now) {
                    drop(budget);
                    self.schedule_summary();
                    return;
                }
            }
            budget.summary_due(now)
        };
        // A full guest refuses every new client: print the first refusal of each second, not
        // thousands (the audit log and `decisions()` keep them).
        if !event.allowed()
            && self.print_denials
            && (event.limit().is_none() || self.limit_notice_due())
        {
            output::guest_line(&event.guest, &denial_message(&event));
        }
        if let Some((count, over)) = due {
            self.report_suppressed(count, over);
        }
        self.log(event);
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, DenialBudget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Audit logs, tracing, the decision list and subscribers.
    fn log(&self, event: AuditEvent) {
        tracing::debug!(guest = %event.guest, use_ = %event.use_, addr = %event.addr, decision = ?event.decision, "capability decision");
        for log in &self.audit_logs {
            if let Err(err) = log.write(&event) {
                tracing::error!("cannot write the audit log: {err}");
            }
        }
        let size = event_size(&event);
        let mut kept = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = self.decision_bytes.load(Ordering::Relaxed) + size;
        while kept.len() >= DECISIONS_KEPT || (bytes > DECISIONS_MAX_BYTES && !kept.is_empty()) {
            let Some(old) = kept.pop_front() else { break };
            bytes -= event_size(&old);
        }
        kept.push_back(event.clone());
        self.decision_bytes.store(bytes, Ordering::Relaxed);
        drop(kept);
        let _ = self.events.send(event);
    }

    /// A summary of the suppressed denials a second from now, even if the flood stopped.
    fn schedule_summary(&self) {
        if self.summary_scheduled.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.summary_scheduled.store(false, Ordering::Relaxed);
            return;
        };
        let me = self.me.clone();
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            if let Some(shared) = me.upgrade() {
                shared.summary_scheduled.store(false, Ordering::Relaxed);
                let due = shared.lock_budget().summary_due(Instant::now());
                if let Some((count, over)) = due {
                    shared.report_suppressed(count, over);
                }
            }
        });
    }

    fn report_suppressed(&self, count: u64, over: Duration) {
        if self.print_denials {
            output::guest_line(&self.guest, &suppressed_message(&self.guest, count, over));
        }
        self.log(suppressed_event(&self.guest, count));
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

impl Drop for Shared {
    /// The guest is gone: what was suppressed since the last summary is reported now.
    fn drop(&mut self) {
        let last = self.lock_budget().summary(Instant::now());
        if let Some((count, over)) = last {
            self.report_suppressed(count, over);
        }
    }
}

/// About what one kept decision weighs in memory.
fn event_size(event: &AuditEvent) -> usize {
    std::mem::size_of::<AuditEvent>()
        + event.ts.len()
        + event.guest.len()
        + event.use_.len()
        + event.addr.len()
        + event.rule.as_ref().map_or(0, String::len)
        + event.grant_target.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Use;

    #[test]
    fn the_decision_list_is_bounded_in_bytes_and_entries() {
        let shared = Shared::new("g".into(), Vec::new(), false, GuestMetrics::detached());
        let long = "x".repeat(10_000);
        for i in 0..30_000 {
            let name = format!("{i}{long}");
            shared.record_event(AuditEvent::new("g", Use::Dns, &name, true, None));
        }
        let kept = shared.decisions.lock().unwrap();
        let bytes: usize = kept.iter().map(event_size).sum();
        assert!(kept.len() <= DECISIONS_KEPT, "{}", kept.len());
        assert!(bytes <= DECISIONS_MAX_BYTES, "{bytes}");
        assert_eq!(bytes, shared.decision_bytes.load(Ordering::Relaxed));
        assert!(
            kept.iter()
                .all(|e| e.addr.len() <= crate::audit::LOG_TEXT_MAX + 3)
        );
    }

    #[test]
    fn denials_past_the_budget_are_counted_and_summarised() {
        let shared = Shared::new("g".into(), Vec::new(), false, GuestMetrics::detached());
        let mut events = shared.events.subscribe();
        for port in 0..10_000u16 {
            let from = std::net::SocketAddr::from(([192, 0, 2, 1], port));
            shared.record_event(AuditEvent::new("g", Use::UdpRecv, from, false, None));
        }
        assert_eq!(shared.denials.load(Ordering::Relaxed), 10_000);
        let logged = shared.decisions.lock().unwrap().len();
        // 100 at once, then 100 a second: far fewer than were denied.
        assert!(logged < 500, "{logged}");
        drop(shared);
        let mut suppressed = 0;
        while let Ok(event) = events.try_recv() {
            if event.use_ == crate::audit::SUPPRESSED_USE {
                suppressed += event.addr.parse::<u64>().unwrap();
            }
        }
        assert_eq!(suppressed as usize + logged, 10_000);
    }
}
