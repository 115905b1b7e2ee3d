//! Timers for the 0.3 backend: the 0.2 runtime's [`TimerHeap`] behind a single host wait.
//!
//! A driver task waits, with `wasi:clocks/monotonic-clock@0.3`'s `wait-until`, for the
//! earliest deadline in the heap, fires what is due and waits again. Arming a timer earlier
//! than the one waited for wakes the driver, which drops (cancels) its wait and starts one
//! for the new instant. The heap is in a thread-local: everything runs on the guest's thread.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Poll, Waker};

use wasip3::clocks::monotonic_clock;

use super::task::spawn;
use super::timer_heap::{Instant, TimerHeap};

/// What `sleep`, `timeout` and connection deadlines arm timers in.
pub(crate) struct Reactor {
    pub(crate) timers: TimerHeap,
    /// The instant the driver waits for, if it waits for one.
    waiting_for: Option<Instant>,
    /// The driver, to wake when a timer earlier than `waiting_for` is armed.
    driver: Option<Waker>,
}

thread_local! {
    static REACTOR: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

/// Installs the timers and spawns their driver (cancelled with every other task at the end).
pub(crate) fn install() {
    REACTOR.with(|reactor| {
        *reactor.borrow_mut() = Some(Reactor {
            timers: TimerHeap::default(),
            waiting_for: None,
            driver: None,
        })
    });
    spawn(drive()).detach();
}

/// Takes the timers out, for the caller to drop.
pub(crate) fn uninstall() -> Option<Reactor> {
    REACTOR.with(|reactor| reactor.borrow_mut().take())
}

/// Runs `f` on the timers, then wakes the driver if `f` armed one earlier than it waits for.
/// Panics outside [`crate::run`].
pub(crate) fn with<R>(f: impl FnOnce(&mut Reactor) -> R) -> R {
    let (result, driver) = REACTOR.with(|reactor| {
        let mut reactor = reactor.borrow_mut();
        let reactor = reactor
            .as_mut()
            .expect("sockets and timers work only inside sockbox_guest::run");
        let result = f(reactor);
        (result, reactor.driver_to_wake())
    });
    // Woken outside the borrow.
    if let Some(driver) = driver {
        driver.wake();
    }
    result
}

/// Runs `f` on the timers if they are still installed (a drop after the guest's main ended
/// has nothing left to remove).
pub(crate) fn with_if_running<R>(f: impl FnOnce(&mut Reactor) -> R) -> Option<R> {
    REACTOR.with(|reactor| reactor.borrow_mut().as_mut().map(f))
}

/// The monotonic clock (nanoseconds; the same clock as WASI 0.2's, which `sleep` reads).
pub(crate) fn now() -> Instant {
    monotonic_clock::now()
}

impl Reactor {
    /// The driver, taken, if the earliest timer is earlier than what it waits for.
    fn driver_to_wake(&mut self) -> Option<Waker> {
        let next = self.timers.next_deadline()?;
        match self.waiting_for {
            Some(at) if at <= next => None,
            _ => self.driver.take(),
        }
    }
}

/// The host wait in progress: for which instant, and the call.
type Wait = (Instant, Pin<Box<dyn Future<Output = ()>>>);

/// The driver task: fire what is due, wait for the next deadline, again.
async fn drive() {
    let mut wait: Option<Wait> = None;
    let mut woken = Vec::new();
    poll_fn(|cx| {
        loop {
            let now = now();
            let next = with_if_running(|reactor| {
                reactor.timers.fire_due(now, &mut woken);
                let next = reactor.timers.next_deadline();
                reactor.waiting_for = next;
                reactor.driver = Some(cx.waker().clone());
                next
            });
            woken.drain(..).for_each(Waker::wake);
            let Some(next) = next.flatten() else {
                wait = None; // nothing armed (or the guest is done): no host wait pending
                return Poll::Pending;
            };
            if wait.as_ref().is_none_or(|(at, _)| *at != next) {
                wait = Some((next, Box::pin(monotonic_clock::wait_until(next))));
            }
            let (_, waiting) = wait.as_mut().expect("armed just above");
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => wait = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}
