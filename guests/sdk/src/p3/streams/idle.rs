//! Which posted reads have gone idle: a connection keeps its read (and its buffer) posted
//! while it is active, and gives the buffer back once the read has stayed pending for a tick.
//!
//! Each pending posted read holds a [`Ticket`]; a sweeper task, running only while there are
//! tickets, marks those older than a whole tick and wakes their reads, which cancel themselves
//! and wait for readiness with a zero-length read instead (no buffer). So an idle connection
//! costs no read buffer, and an active one no extra host calls per message (the figures in
//! docs/design/wasi-p3.md: 16.9 KiB vs ~0.8 KiB per idle connection, 18.8k vs 12.3k round trips/s).

use std::cell::RefCell;
use std::task::{Context, Waker};
use std::time::Duration;

use slab::Slab;

use crate::runtime::{sleep, spawn};

/// How often the sweeper looks: a read is parked after one to two ticks without data.
const TICK: Duration = Duration::from_millis(500);

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

#[derive(Default)]
struct Idle {
    tick: u64,
    reads: Slab<Pending>,
    sweeping: bool,
}

struct Pending {
    /// The tick the read was first seen pending in.
    since: u64,
    waker: Waker,
    parked: bool,
}

/// A posted read's place among the pending ones.
#[derive(Default)]
pub(crate) struct Ticket {
    key: Option<usize>,
}

impl Ticket {
    /// Called each time the read is pending: true once it has been for a whole tick (the read
    /// should then be cancelled and its buffer freed).
    pub(crate) fn poll_parked(&mut self, cx: &mut Context<'_>) -> bool {
        let (parked, start_sweeper) = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let since = idle.tick;
            match self.key {
                None => {
                    let waker = cx.waker().clone();
                    self.key = Some(idle.reads.insert(Pending {
                        since,
                        waker,
                        parked: false,
                    }));
                    (false, !std::mem::replace(&mut idle.sweeping, true))
                }
                Some(key) if idle.reads[key].parked => {
                    idle.reads.remove(key);
                    self.key = None;
                    (true, false)
                }
                Some(key) => {
                    let pending = &mut idle.reads[key];
                    if !pending.waker.will_wake(cx.waker()) {
                        pending.waker = cx.waker().clone();
                    }
                    (false, false)
                }
            }
        });
        if start_sweeper {
            spawn(sweep()).detach();
        }
        parked
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let _ = IDLE.try_with(|idle| {
                if let Ok(mut idle) = idle.try_borrow_mut() {
                    idle.reads.try_remove(key);
                }
            });
        }
    }
}

/// Each tick, parks the reads pending since before the last one; ends when none is pending.
async fn sweep() {
    loop {
        sleep(TICK).await;
        match advance() {
            // Woken outside the borrow.
            Some(parked) => parked.into_iter().for_each(Waker::wake),
            None => return,
        }
    }
}

/// One tick: marks the reads pending since before the last tick and returns their wakers, or
/// `None` (and the sweeper stops) when no read is pending.
fn advance() -> Option<Vec<Waker>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.tick += 1;
        if idle.reads.is_empty() {
            idle.sweeping = false;
            return None;
        }
        let tick = idle.tick;
        let due = idle
            .reads
            .iter_mut()
            .filter(|(_, read)| !read.parked && read.since + 1 < tick)
            .map(|(_, read)| {
                read.parked = true;
                read.waker.clone()
            });
        Some(due.collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_support::CountingWaker;

    fn tick() -> Vec<Waker> {
        advance().unwrap_or_default()
    }

    #[test]
    fn a_read_is_parked_after_a_whole_tick_pending_and_woken_once() {
        // The sweeper is not spawned natively: mark it running.
        IDLE.with(|idle| idle.borrow_mut().sweeping = true);
        let counting = CountingWaker::new();
        let waker = counting.waker();
        let mut cx = Context::from_waker(&waker);
        let mut ticket = Ticket::default();
        assert!(!ticket.poll_parked(&mut cx), "first pending poll");
        tick().into_iter().for_each(Waker::wake);
        assert!(
            !ticket.poll_parked(&mut cx),
            "pending less than a whole tick"
        );
        assert_eq!(counting.count(), 0);
        tick().into_iter().for_each(Waker::wake);
        assert_eq!(counting.count(), 1, "woken to give its buffer back");
        assert!(ticket.poll_parked(&mut cx));
        assert!(tick().is_empty(), "a parked read leaves the list");
        drop(ticket);
        IDLE.with(|idle| idle.borrow_mut().sweeping = true);
        let mut dropped = Ticket::default();
        assert!(!dropped.poll_parked(&mut cx));
        drop(dropped); // a read that completed: forgotten
        IDLE.with(|idle| assert!(idle.borrow().reads.is_empty()));
    }
}
