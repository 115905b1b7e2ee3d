//! Cooperative budget: how many stream operations a task may complete in one turn without
//! waiting before it yields to the others.
//!
//! Waiting yields by itself, but a peer that keeps a connection's input full (or a listener's
//! backlog) would let its task loop without ever returning `Pending`, and the round-based
//! executor can only be fair between tasks that return. Every SDK stream operation spends one
//! unit; the executor refills the budget before each task runs.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Context, Poll};

/// Operations per turn: many small frames or a few MiB spliced before a task steps aside.
const BUDGET: u32 = 64;

thread_local! {
    static LEFT: Cell<u32> = const { Cell::new(BUDGET) };
}

/// Refills the budget: a task is about to run.
pub(crate) fn reset() {
    LEFT.with(|left| left.set(BUDGET));
}

/// Spends one unit, or, if the task has spent its budget, yields once (to the next round)
/// first.
pub(crate) async fn cooperate() {
    poll_fn(poll_cooperate).await
}

/// [`cooperate`] for `poll_*` functions (the `AsyncRead`/`AsyncWrite` impls): ready with one
/// unit spent, or pending (the task woken for the next round) once the budget is spent.
pub(crate) fn poll_cooperate(cx: &mut Context<'_>) -> Poll<()> {
    LEFT.with(|left| match left.get() {
        0 => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        n => {
            left.set(n - 1);
            Poll::Ready(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn a_spent_budget_yields_once_then_continues_after_a_refill() {
        reset();
        block_on(async {
            for _ in 0..BUDGET {
                assert_eq!(poll_once(cooperate()).await, Some(()));
            }
            let mut next = Box::pin(cooperate());
            assert_eq!(poll_once(&mut next).await, None, "budget spent: yield");
            reset();
            assert_eq!(poll_once(&mut next).await, Some(()));
        });
    }
}
