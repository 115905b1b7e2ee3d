//! The SDK's own async runtime: a single-threaded executor and a reactor over WASI 0.2
//! pollables, shaped for servers with many connections.
//!
//! Why not wstd's: its event loop is built for a handful of futures. After every task it runs
//! while others are ready it calls `poll` over every pending pollable (O(n) host work per
//! task, O(n²) per round), every wait first asks the host whether the pollable is ready and
//! registers its waker in a map under a fresh key, and wakers are re-registered per wait. A
//! guest serving 64 clients spent its time there. This runtime keeps the same model (tasks on
//! `async-task`, futures woken by pollables) in a different shape:
//!
//! - [`executor`]: a round runs every task ready at its start once; tasks woken meanwhile wait
//!   for the next round, so a busy connection cannot starve the others.
//! - [`reactor`]: after each round, exactly one `poll`, over the registrations somebody waits
//!   on (plus the earliest timer), non-blocking if tasks are already runnable.
//! - [`registration`], [`registry`]: one pollable per stream or socket, subscribed once and
//!   kept for its life; operations are tried first and wait only when they would block.
//! - [`timers`], [`time`]: a timer heap behind a single clock pollable; `sleep`, `timeout`, and
//!   the `Deadline` of connection timeouts (moved freely, re-armed lazily).
//! - [`coop`]: a per-turn budget, so a task whose operations never block still yields.
//! - [`block_on`](mod@block_on): the loop, and the teardown that drops leftover tasks before the reactor.

mod block_on;
mod coop;
mod executor;
mod reactor;
mod registration;
mod registry;
mod time;
mod timers;

#[cfg(test)]
mod test_support;

pub(crate) use block_on::block_on;
pub(crate) use coop::cooperate;
pub use executor::{Task, spawn};
pub(crate) use reactor::now;
pub(crate) use registration::Registration;
pub(crate) use time::{Deadline, NEVER};
pub use time::{Elapsed, Sleep, sleep, timeout};
pub(crate) use timers::Instant;
