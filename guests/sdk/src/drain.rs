//! What graceful shutdown waits for: connections holding a request they have not answered.
//!
//! A connection marks itself with an [`InHand`] from a request's first byte until its answer
//! is handed to the host; on shutdown the accept loops stop and [`all_answered`] waits for the
//! count to reach zero (bounded by the drain period) before idle connections are closed. A
//! thread-local count: everything runs on the guest's one thread.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State { in_hand: 0, waiter: None }) };
}

struct State {
    in_hand: usize,
    waiter: Option<Waker>,
}

/// Marks a connection as holding a request not yet answered, so a graceful shutdown lets it
/// finish. [`crate::framed::FramedStream`] keeps one itself; a handler with a protocol of
/// its own sets one while it works on a request. Dropping it clears the mark.
#[derive(Debug, Default)]
pub struct InHand {
    held: bool,
}

impl InHand {
    pub fn new() -> InHand {
        InHand::default()
    }

    /// Says whether a request is in hand now. Cheap when nothing changes.
    pub fn set(&mut self, held: bool) {
        if held == self.held {
            return;
        }
        self.held = held;
        let waiter = STATE.with(|state| {
            let mut state = state.borrow_mut();
            if held {
                state.in_hand += 1;
                None
            } else {
                state.in_hand -= 1;
                if state.in_hand == 0 {
                    state.waiter.take()
                } else {
                    None
                }
            }
        });
        // Woken outside the borrow.
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Resolves once no connection holds a request in hand (at once if none does).
pub(crate) async fn all_answered() {
    poll_fn(|cx| {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            if state.in_hand == 0 {
                Poll::Ready(())
            } else {
                state.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn shutdown_waits_until_the_last_request_is_answered() {
        let (mut a, mut b) = (InHand::new(), InHand::new());
        a.set(true);
        b.set(true);
        a.set(true); // marking twice counts once
        block_on(async {
            let mut answered = Box::pin(all_answered());
            assert_eq!(poll_once(&mut answered).await, None);
            a.set(false);
            assert_eq!(poll_once(&mut answered).await, None, "b still has one");
            drop(b);
            assert_eq!(poll_once(&mut answered).await, Some(()));
        });
    }
}
