//! The 0.3 backend's runtime: wit-bindgen's executor (the callback loop of the `wasi:cli/run`
//! export and `spawn_local`), which alone can drive WASI 0.3 events, with what the SDK adds on
//! top of it:
//!
//! - [`task`]: [`Task`] handles that cancel on drop (as the 0.2 runtime's do, and as
//!   `serve` relies on), and the cancelling of every task left when the guest's main ends;
//!   each poll of a task refills its [`coop`] budget, shared with the 0.2 runtime.
//! - [`reactor`]: the 0.2 runtime's timer heap behind one `wait-until` of
//!   `wasi:clocks/monotonic-clock@0.3` for the earliest deadline, so a thousand idle
//!   connections' timeouts cost one pending host call; [`sleep`](mod@sleep) is the 0.2
//!   runtime's `sleep`, `timeout` and `Deadline` over it, unchanged.
//!
//! Fairness between tasks is the executor's: woken tasks run in the order they were woken,
//! which follows the order the host delivers events (docs/design/wasi-p3.md).

#[path = "../../runtime/coop.rs"]
mod coop;
mod reactor;
#[path = "../../runtime/sleep.rs"]
mod sleep;
mod task;
#[cfg(test)]
#[path = "../../runtime/test_support.rs"]
pub(crate) mod test_support;
#[path = "../../runtime/timer_heap.rs"]
mod timer_heap;

pub(crate) use coop::{cooperate, poll_cooperate};
pub(crate) use reactor::now;
pub(crate) use sleep::{Deadline, NEVER};
pub use sleep::{Elapsed, Sleep, sleep, timeout};
pub use task::{Task, spawn};
pub(crate) use timer_heap::Instant;

use std::future::{Future, poll_fn};
use std::pin::pin;

/// Runs the guest's main future with the timers installed; when it is done, every task still
/// running is cancelled (the export returns once they are gone).
pub(crate) async fn run_main<F: Future>(main: F) -> F::Output {
    reactor::install();
    let mut main = pin!(main);
    let output = poll_fn(|cx| {
        coop::reset();
        main.as_mut().poll(cx)
    })
    .await;
    task::cancel_all();
    drop(reactor::uninstall());
    output
}

/// Whether the guest's main is still running (tasks can be spawned, timers armed).
pub(crate) fn running() -> bool {
    reactor::with_if_running(|_| ()).is_some()
}
