//! Spawned tasks on wit-bindgen's executor, with the 0.2 runtime's handle semantics: dropping
//! a [`Task`] cancels it, [`Task::detach`] lets it run on its own, and when the guest's main
//! ends every task still alive is cancelled ([`cancel_all`]), so the `wasi:cli/run` export
//! can return (wit-bindgen's export waits for every spawned task).
//!
//! A cancelled task's future is dropped on the executor, on its next poll (the cancel wakes
//! it), as `async-task`'s are; each poll refills the task's cooperative budget first.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::coop;

/// A spawned task. Await it for its output; dropping it cancels the task (its future is
/// dropped on the executor); [`Task::detach`] lets it run on its own.
#[must_use = "dropping a task cancels it; detach it to let it run"]
pub struct Task<T> {
    state: Rc<TaskState<T>>,
    detached: bool,
}

struct TaskState<T> {
    inner: RefCell<Inner<T>>,
}

struct Inner<T> {
    output: Option<T>,
    cancelled: bool,
    /// The task's own waker, to wake it when cancelled.
    runner: Option<Waker>,
    /// Whoever awaits the handle.
    joiner: Option<Waker>,
}

/// What [`cancel_all`] reaches of a task, whatever its output type.
trait Cancel {
    fn cancel(&self);
}

impl<T> Cancel for TaskState<T> {
    fn cancel(&self) {
        let runner = {
            let mut inner = self.inner.borrow_mut();
            inner.cancelled = true;
            inner.runner.take()
        };
        if let Some(runner) = runner {
            runner.wake();
        }
    }
}

thread_local! {
    /// Every task spawned and not yet finished or dropped.
    static LIVE: RefCell<Slab<Rc<dyn Cancel>>> = const { RefCell::new(Slab::new()) };
}

/// Runs `future` as a task of its own, beside the guest's other tasks. Call it inside
/// [`crate::run`]; the task is cancelled if it is still running when `run`'s future ends.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(TaskState {
        inner: RefCell::new(Inner {
            output: None,
            cancelled: false,
            runner: None,
            joiner: None,
        }),
    });
    let key = LIVE.with(|live| live.borrow_mut().insert(state.clone()));
    // wit-bindgen's handle is dropped: that detaches; cancelling is ours.
    drop(wasip3::spawn_local(Running {
        future: Box::pin(future),
        state: state.clone(),
        key,
    }));
    Task {
        state,
        detached: false,
    }
}

/// Cancels every live task: the end of the guest's main.
pub(crate) fn cancel_all() {
    let live: Vec<_> = LIVE.with(|live| live.borrow_mut().drain().collect());
    for task in live {
        task.cancel();
    }
}

impl<T> Task<T> {
    /// Lets the task run to its end without a handle (or until the guest's main ends).
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Whether the task has finished (its output is waiting for whoever awaits it).
    pub fn is_finished(&self) -> bool {
        self.state.inner.borrow().output.is_some()
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    /// The task's output. A task cancelled by the end of the guest's main never finishes.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut inner = self.state.inner.borrow_mut();
        match inner.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                inner.joiner = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if !self.detached {
            self.state.cancel();
        }
    }
}

/// The future wit-bindgen runs for a task: the task's own, until it ends or is cancelled.
struct Running<F: Future> {
    future: Pin<Box<F>>,
    state: Rc<TaskState<F::Output>>,
    key: usize,
}

impl<F: Future> Future for Running<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut inner = self.state.inner.borrow_mut();
            if inner.cancelled {
                return Poll::Ready(()); // the executor drops us, and the future, now
            }
            match &inner.runner {
                Some(runner) if runner.will_wake(cx.waker()) => {}
                _ => inner.runner = Some(cx.waker().clone()),
            }
        }
        coop::reset();
        let output = match self.future.as_mut().poll(cx) {
            Poll::Ready(output) => output,
            Poll::Pending => return Poll::Pending,
        };
        let joiner = {
            let mut inner = self.state.inner.borrow_mut();
            inner.output = Some(output);
            inner.joiner.take()
        };
        if let Some(joiner) = joiner {
            joiner.wake();
        }
        Poll::Ready(())
    }
}

impl<F: Future> Drop for Running<F> {
    fn drop(&mut self) {
        // A task cancelled by `cancel_all` is out of the list already, and its slot may hold
        // a newer task: remove only our own entry.
        let ours = Rc::as_ptr(&self.state).cast::<()>();
        let _ = LIVE.try_with(|live| {
            if let Ok(mut live) = live.try_borrow_mut()
                && live
                    .get(self.key)
                    .is_some_and(|t| Rc::as_ptr(t).cast::<()>() == ours)
            {
                live.remove(self.key);
            }
        });
    }
}
