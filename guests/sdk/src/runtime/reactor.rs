//! The reactor: every pollable the guest waits on and every timer, and the one WASI `poll`
//! call per round that waits for them.
//!
//! The poll list is rebuilt each round from the registrations that have a waiter (plus one
//! pollable for the earliest timer); nothing is subscribed or allocated per entry. When tasks
//! are already runnable the call must not block, so a zero-duration clock pollable, created
//! once and always ready, is added to the list.

use std::cell::RefCell;
use std::task::Waker;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::{Pollable, poll};

use super::pollables::PollableTable;
use super::timer_heap::{Instant, TimerHeap};

thread_local! {
    static REACTOR: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

pub(crate) struct Reactor {
    pub(crate) pollables: PollableTable<Pollable>,
    pub(crate) timers: TimerHeap,
    /// A pollable for the earliest deadline, kept while that deadline stays the earliest.
    alarm: Option<(Instant, Pollable)>,
    /// Ready at once and forever: added to a poll that must not block.
    always_ready: Pollable,
    /// The pollable table's key behind each index of the last poll list (kept for its capacity).
    polled: Vec<usize>,
    /// The clock read once per round, on first demand (see [`now`]).
    now: Option<Instant>,
}

impl Reactor {
    fn new() -> Reactor {
        Reactor {
            pollables: PollableTable::default(),
            timers: TimerHeap::default(),
            alarm: None,
            always_ready: monotonic_clock::subscribe_duration(0),
            polled: Vec::new(),
            now: None,
        }
    }

    /// One `poll` call over everything waited on, blocking unless `block` is false. The
    /// wakers of whatever is ready go to `woken`. Returns `false`, without calling `poll`,
    /// if nothing is waited on at all.
    fn poll(&mut self, block: bool, woken: &mut Vec<Waker>) -> bool {
        self.now = None;
        let deadline = self.timers.next_deadline();
        if self.alarm.as_ref().map(|(at, _)| *at) != deadline {
            self.alarm = deadline.map(|at| (at, monotonic_clock::subscribe_instant(at)));
        }
        let mut targets = Vec::with_capacity(self.polled.len() + 2);
        self.pollables.waited_on(&mut self.polled, &mut targets);
        let alarm_index = self.alarm.as_ref().map(|(_, alarm)| {
            targets.push(alarm);
            targets.len() - 1
        });
        if targets.is_empty() {
            return !block;
        }
        if !block {
            targets.push(&self.always_ready);
        }
        let ready = poll(&targets);
        drop(targets);
        let mut alarm_rang = false;
        for index in ready.into_iter().map(|i| i as usize) {
            match self.polled.get(index) {
                Some(&key) => self.pollables.fire(key, woken),
                None => alarm_rang |= Some(index) == alarm_index,
            }
        }
        if alarm_rang {
            let now = monotonic_clock::now();
            self.now = Some(now);
            self.timers.fire_due(now, woken);
        }
        true
    }
}

/// Creates the reactor for a [`super::block_on()`].
pub(crate) fn install() {
    REACTOR.with(|reactor| {
        let mut reactor = reactor.borrow_mut();
        assert!(
            reactor.is_none(),
            "sockbox_guest::run cannot run inside itself"
        );
        *reactor = Some(Reactor::new());
    });
}

/// Takes the reactor out, for its caller to drop (with every pollable still registered).
pub(crate) fn uninstall() -> Option<Reactor> {
    REACTOR.with(|reactor| reactor.borrow_mut().take())
}

/// Runs `f` on the reactor. Panics outside [`crate::run`].
pub(crate) fn with<R>(f: impl FnOnce(&mut Reactor) -> R) -> R {
    REACTOR.with(|reactor| {
        let mut reactor = reactor.borrow_mut();
        let reactor = reactor
            .as_mut()
            .expect("sockets, timers and the shutdown signal work only inside sockbox_guest::run");
        f(reactor)
    })
}

/// Runs `f` on the reactor if there is one (a drop after the runtime is gone has nothing
/// left to deregister: the reactor dropped the pollable with itself).
pub(crate) fn with_if_running<R>(f: impl FnOnce(&mut Reactor) -> R) -> Option<R> {
    REACTOR.with(|reactor| reactor.borrow_mut().as_mut().map(f))
}

/// The round's poll (see [`Reactor::poll`]); the woken wakers are left in `woken` for the
/// caller to wake once the reactor is no longer borrowed.
pub(crate) fn poll_round(block: bool, woken: &mut Vec<Waker>) -> bool {
    with(|reactor| reactor.poll(block, woken))
}

/// The monotonic clock as of this round: read from the host once per round at most, so
/// connections noting when their bytes came cost no host call each. Stale by at most one
/// round, which is nothing next to a timeout of seconds.
pub(crate) fn now() -> Instant {
    with(|reactor| *reactor.now.get_or_insert_with(monotonic_clock::now))
}

/// Every waker the reactor holds, for tearing the runtime down.
pub(crate) fn take_all_wakers() -> Vec<Waker> {
    let mut wakers = Vec::new();
    with_if_running(|reactor| {
        reactor.pollables.take_all_waiters(&mut wakers);
        reactor.timers.take_all_wakers(&mut wakers);
    });
    wakers
}
