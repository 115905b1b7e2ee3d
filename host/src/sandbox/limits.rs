//! The limits a guest runs under, defaults filled in, and the process's descriptor budget,
//! which the guests of one process share and no guest may exhaust.

use std::sync::OnceLock;
use std::time::Duration;

use crate::policy::Limits;

/// Linear memory a guest may grow to unless told otherwise: far more than a socket server
/// needs, far less than a host can lose to one runaway guest.
pub(crate) const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// Accepted connections a guest may hold at once unless told otherwise.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Sockets of any kind a guest may hold at once unless told otherwise (less if the process's
/// descriptor budget is smaller, see [`default_max_sockets`]).
pub(crate) const DEFAULT_MAX_SOCKETS: u32 = 4096;
/// How long a guest may compute without calling the host unless told otherwise.
pub(crate) const DEFAULT_MAX_BUSY: Duration = Duration::from_millis(1000);

/// Name lookups one guest may have in flight at once (see `link/dns.rs`).
pub(crate) const MAX_LOOKUPS: usize = 16;

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

/// The default per-guest socket cap when `guests` guests (instances included) share this
/// process: [`DEFAULT_MAX_SOCKETS`], or an equal share of the budget if that is smaller, so
/// that the guests of one process together never exhaust its descriptors.
pub(crate) fn default_max_sockets(guests: usize) -> u32 {
    let share = fd_budget().guests / guests.max(1) as u64;
    share.clamp(1, u64::from(DEFAULT_MAX_SOCKETS)) as u32
}

/// The limits a guest runs under, defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Enforced {
    pub(crate) max_memory: u64,
    pub(crate) max_sockets: u32,
    pub(crate) max_connections: u32,
    pub(crate) max_busy: Duration,
}

impl Enforced {
    pub(crate) fn new(limits: &Limits, default_sockets: u32) -> Enforced {
        Enforced {
            max_memory: limits.max_memory.unwrap_or(DEFAULT_MAX_MEMORY),
            max_sockets: limits.max_sockets.unwrap_or(default_sockets),
            max_connections: limits.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_busy: limits.max_busy.unwrap_or(DEFAULT_MAX_BUSY),
        }
    }
}
