//! Sleeping and timeouts, on the reactor's timer heap.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future;
use wasip2::clocks::monotonic_clock;

use super::reactor;
use super::timer_heap::Instant;

/// Waits for `duration` (at least) on the monotonic clock, counted from this call.
pub fn sleep(duration: Duration) -> Sleep {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Sleep {
        deadline: monotonic_clock::now().saturating_add(nanos),
        timer: None,
    }
}

/// Runs `future` for at most `duration` (counted from this call): its output, or [`Elapsed`]
/// if the time ran out first, in which case `future` is dropped (cancelled).
/// `Elapsed` converts into an [`io::Error`] of kind `TimedOut`, so `timeout(d, read).await??`
/// reads with a deadline.
pub fn timeout<F: Future>(
    duration: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    let expired = sleep(duration);
    future::or(async move { Ok(future.await) }, async move {
        expired.await;
        Err(Elapsed)
    })
}

/// The future of [`sleep`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    /// The timer armed on first poll, removed on drop.
    timer: Option<usize>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let waker = cx.waker();
        match self.timer {
            Some(timer) => reactor::with(|reactor| reactor.timers.poll(timer, waker)),
            None => {
                let timer = reactor::with(|reactor| reactor.timers.insert(deadline, waker));
                self.timer = Some(timer);
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            let waker = reactor::with_if_running(|reactor| reactor.timers.remove(timer));
            // Dropped outside the reactor's borrow.
            drop(waker);
        }
    }
}

/// A deadline that moves often and expires rarely, such as a connection's idle timeout: one
/// timer, armed when first waited on and re-armed only when it fires early (the deadline
/// moved later meanwhile) or the deadline moved earlier. Moving it is a store, no timer work,
/// so a connection can push it back on every read.
pub(crate) struct Deadline {
    at: Instant,
    /// The armed timer's key and instant.
    armed: Option<(usize, Instant)>,
}

/// A deadline that never comes.
pub(crate) const NEVER: Instant = Instant::MAX;

impl Deadline {
    pub(crate) fn new() -> Deadline {
        Deadline {
            at: NEVER,
            armed: None,
        }
    }

    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the clock has passed the deadline as it stands.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.armed {
                _ if self.at == NEVER => {
                    self.disarm();
                    return Poll::Pending;
                }
                None => {
                    let at = self.at;
                    let key = reactor::with(|reactor| reactor.timers.insert(at, cx.waker()));
                    self.armed = Some((key, at));
                    return Poll::Pending;
                }
                Some((key, when)) if when <= self.at => {
                    if reactor::with(|reactor| reactor.timers.poll(key, cx.waker())).is_pending() {
                        return Poll::Pending;
                    }
                    self.disarm();
                    // Fired: the clock is past `when`, so past a deadline not moved since.
                    if when == self.at {
                        return Poll::Ready(());
                    }
                }
                // Moved earlier than the timer: arm again for the new one.
                Some(_) => self.disarm(),
            }
        }
    }

    fn disarm(&mut self) {
        if let Some((key, _)) = self.armed.take() {
            let waker = reactor::with_if_running(|reactor| reactor.timers.remove(key));
            // Dropped outside the reactor's borrow.
            drop(waker);
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The error of [`timeout`]: the time ran out before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(elapsed: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, elapsed)
    }
}
