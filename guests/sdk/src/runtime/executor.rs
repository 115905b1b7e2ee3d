//! The executor: spawned tasks, and the queue of those ready to run, taken in rounds.
//!
//! A round runs, once each, the tasks that were ready when it began. A task woken during the
//! round (by another task, or by yielding) waits for the next one, after the reactor's poll,
//! so a connection that always has work cannot starve the others or the reactor.
//! Everything runs on the guest's one thread: the queue is a thread-local `VecDeque`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::mem;

use async_task::Runnable;

/// A spawned task. Await it for its output; dropping it cancels the task (its future is
/// dropped on the executor, while the reactor still runs); [`Task::detach`] lets it run on
/// its own.
pub type Task<T> = async_task::Task<T>;

thread_local! {
    static READY: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs `future` as a task of its own, beside the guest's other tasks. Call it inside
/// [`crate::run`]; the task is cancelled if it is still running when `run`'s future ends.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    task
}

fn schedule(runnable: Runnable) {
    READY.with(|ready| ready.borrow_mut().push_back(runnable));
}

/// The running of rounds: the batch being run now, apart from the tasks queued for the next.
#[derive(Default)]
pub(crate) struct Rounds {
    batch: VecDeque<Runnable>,
}

impl Rounds {
    /// Takes every task ready now as this round's batch; tasks woken from here on go to the
    /// next round. (The two queues swap, so neither allocates once warm.)
    pub(crate) fn start(&mut self) {
        debug_assert!(
            self.batch.is_empty(),
            "a round started before the last one ran"
        );
        READY.with(|ready| mem::swap(&mut *ready.borrow_mut(), &mut self.batch));
    }

    /// Runs the batch, each task once.
    pub(crate) fn run(&mut self) {
        while let Some(runnable) = self.batch.pop_front() {
            super::coop::reset();
            runnable.run();
        }
    }

    /// Whether a task is ready for the next round.
    pub(crate) fn any_ready(&self) -> bool {
        READY.with(|ready| !ready.borrow().is_empty())
    }

    /// Cancels every task ready or in the batch: their futures are dropped here, one at a
    /// time and outside the queue's borrow (a future's drop may cancel more tasks, which land
    /// in the queue and are dropped in turn). Returns whether there was any.
    pub(crate) fn cancel_ready(&mut self) -> bool {
        let mut any = false;
        while let Some(runnable) = self
            .batch
            .pop_front()
            .or_else(|| READY.with(|ready| ready.borrow_mut().pop_front()))
        {
            drop(runnable);
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::yield_now;
    use std::cell::Cell;
    use std::rc::Rc;

    fn counter() -> Rc<Cell<usize>> {
        Rc::new(Cell::new(0))
    }

    fn round(rounds: &mut Rounds) {
        rounds.start();
        rounds.run();
    }

    #[test]
    fn a_busy_task_runs_once_per_round_beside_the_others() {
        let mut rounds = Rounds::default();
        let busy = counter();
        let quiet = counter();
        let b = busy.clone();
        let _busy = spawn(async move {
            loop {
                b.set(b.get() + 1);
                yield_now().await;
            }
        });
        let q = quiet.clone();
        let _quiet = spawn(async move {
            for _ in 0..3 {
                q.set(q.get() + 1);
                yield_now().await;
            }
        });
        for n in 1..=3 {
            round(&mut rounds);
            assert_eq!((busy.get(), quiet.get()), (n, n), "round {n}");
            assert!(rounds.any_ready());
        }
        drop((_busy, _quiet));
        rounds.cancel_ready();
        assert!(!rounds.any_ready());
    }

    #[test]
    fn a_task_spawned_or_woken_during_a_round_waits_for_the_next() {
        let mut rounds = Rounds::default();
        let child_runs = counter();
        let c = child_runs.clone();
        let parent = spawn(async move {
            spawn(async move { c.set(c.get() + 1) }).detach();
        });
        round(&mut rounds);
        assert!(parent.is_finished());
        assert_eq!(child_runs.get(), 0, "spawned during round 1");
        round(&mut rounds);
        assert_eq!(child_runs.get(), 1);
        assert!(!rounds.any_ready());
    }

    #[test]
    fn dropping_a_task_cancels_it_on_the_executor() {
        struct Dropped(Rc<Cell<usize>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let mut rounds = Rounds::default();
        let drops = counter();
        let guard = Dropped(drops.clone());
        let task = spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        round(&mut rounds);
        drop(task);
        assert_eq!(drops.get(), 0, "dropped by the executor, not by the handle");
        assert!(rounds.any_ready());
        assert!(rounds.cancel_ready());
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn cancelling_cascades_to_tasks_owned_by_cancelled_ones() {
        let mut rounds = Rounds::default();
        let inner_ran = counter();
        let r = inner_ran.clone();
        let outer = spawn(async move {
            let _inner = spawn(async move {
                std::future::pending::<()>().await;
                r.set(1);
            });
            std::future::pending::<()>().await;
        });
        round(&mut rounds);
        round(&mut rounds);
        drop(outer);
        assert!(rounds.cancel_ready());
        assert!(
            !rounds.any_ready(),
            "the inner task was cancelled in the same sweep"
        );
        assert_eq!(inner_ran.get(), 0);
    }
}
