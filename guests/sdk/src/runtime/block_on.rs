//! The event loop: rounds of the executor, each followed by one poll of the reactor, until
//! the guest's main future is done; then every task left is dropped in order.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use super::executor::Rounds;
use super::{coop, reactor};

/// Runs `future` and every task it spawns until `future` is done, then cancels the tasks
/// still running and tears the reactor down.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    reactor::install();
    let main_woken = Arc::new(MainWoken(AtomicBool::new(true)));
    let waker = Waker::from(main_woken.clone());
    let mut cx = Context::from_waker(&waker);
    let mut main = Box::pin(future);
    let mut rounds = Rounds::default();
    let mut woken = Vec::new();
    let output = loop {
        rounds.start();
        if main_woken.0.swap(false, Ordering::Relaxed) {
            coop::reset();
            if let Poll::Ready(output) = main.as_mut().poll(&mut cx) {
                break output;
            }
        }
        rounds.run();
        let runnable = rounds.any_ready() || main_woken.0.load(Ordering::Relaxed);
        let waited = reactor::poll_round(!runnable, &mut woken);
        woken.drain(..).for_each(Waker::wake);
        assert!(
            waited,
            "the guest's main future is waiting, but no task, socket or timer could wake it"
        );
    };
    drop(main);
    shut_down(&mut rounds);
    output
}

/// Drops every task left while the reactor still exists, so each one's streams and pollables
/// deregister before their sockets go; then drops the reactor.
fn shut_down(rounds: &mut Rounds) {
    loop {
        let cancelled = rounds.cancel_ready();
        // A detached task waiting on a socket or timer is owned only by the reactor's waker:
        // dropping the waker schedules the task, and the next sweep drops its future.
        let wakers = reactor::take_all_wakers();
        if !cancelled && wakers.is_empty() {
            break;
        }
        drop(wakers);
    }
    drop(reactor::uninstall());
    rounds.cancel_ready();
}

/// The main future's waker: a flag the loop checks at the start of each round.
struct MainWoken(AtomicBool);

impl Wake for MainWoken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}
