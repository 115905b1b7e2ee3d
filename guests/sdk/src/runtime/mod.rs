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
//! - [`pollables`]: the reactor's table of watched pollables and their waiters;
//!   [`registration`]: a stream's or socket's entry in it, subscribed once and kept for its
//!   life; operations are tried first and wait only when they would block.
//! - [`timer_heap`]: the reactor's heap of deadlines behind a single clock pollable;
//!   [`sleep`](mod@sleep): what guests use of it, `sleep`, `timeout`, and the `Deadline` of
//!   connection timeouts (moved freely, re-armed lazily).
//! - [`coop`]: a per-turn budget, so a task whose operations never block still yields.
//! - [`block_on`](mod@block_on): the loop, and the teardown that drops leftover tasks before the reactor.

mod block_on;
mod coop;
mod executor;
mod pollables;
mod reactor;
mod registration;
mod sleep;
mod timer_heap;

#[cfg(test)]
mod test_support;

pub(crate) use block_on::block_on;
pub(crate) use coop::{cooperate, poll_cooperate};
pub use executor::{Task, spawn};
pub(crate) use reactor::now;
pub(crate) use registration::Registration;
pub(crate) use sleep::{Deadline, NEVER};
pub use sleep::{Elapsed, Sleep, sleep, timeout};
pub(crate) use timer_heap::Instant;
