//! A pollable handed to the reactor for the life of the stream or socket it watches.
//!
//! Streams and sockets hold their `Registration` in a field declared before the WASI resource
//! it watches: Rust drops fields in declaration order, so the pollable (the resource's child)
//! always goes first and WASI never sees a parent dropped before its child.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use wasip2::io::poll::Pollable;

use super::reactor;

pub(crate) struct Registration {
    key: usize,
}

impl Registration {
    /// Hands `pollable` to the reactor. Panics outside [`crate::run`].
    pub(crate) fn new(pollable: Pollable) -> Registration {
        Registration {
            key: reactor::with(|reactor| reactor.pollables.insert(pollable)),
        }
    }

    /// Waits until the pollable is reported ready by the reactor's next poll. Call it only
    /// after the operation itself said it would block: there is no readiness check first.
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait {
            registration: self,
            seen: None,
        }
    }

    /// [`Registration::wait`] for futures that own their registration; `seen` starts `None`.
    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>, seen: &mut Option<u64>) -> Poll<()> {
        reactor::with(|reactor| reactor.pollables.poll_wait(self.key, cx.waker(), seen))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = reactor::with_if_running(|reactor| reactor.pollables.remove(self.key));
        // The pollable and any stale wakers go outside the reactor's borrow.
        drop(removed);
    }
}

/// The future of [`Registration::wait`].
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct Wait<'a> {
    registration: &'a Registration,
    seen: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.registration.poll_wait(cx, &mut this.seen)
    }
}
