//! The reactor's table of watched pollables: one entry per stream or socket, the wakers waiting
//! on it, and how often it has fired.
//!
//! An entry lives as long as the stream it watches (subscribed once, not per wait). Only entries
//! with a waiter go into a `poll` call; when `poll` reports one ready its wakers are taken and
//! its fire count goes up, which is how a [`super::registration::Wait`] tells a real readiness
//! from a wake-up meant for something else in the same task. Generic over the pollable so the
//! bookkeeping is tested natively, without WASI.

use std::task::{Poll, Waker};

use slab::Slab;

pub(crate) struct PollableTable<P> {
    entries: Slab<Entry<P>>,
}

struct Entry<P> {
    pollable: P,
    /// The usual single waiter, inline; more (rare: two tasks on one stream) spill over.
    first: Option<Waker>,
    more: Vec<Waker>,
    fired: u64,
}

impl<P> Entry<P> {
    fn is_waited_on(&self) -> bool {
        self.first.is_some()
    }

    fn add_waiter(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                if !self.more.iter().any(|w| w.will_wake(waker)) {
                    self.more.push(waker.clone());
                }
            }
        }
    }

    fn take_waiters(&mut self, into: &mut Vec<Waker>) {
        into.extend(self.first.take());
        into.append(&mut self.more);
    }
}

impl<P> Default for PollableTable<P> {
    fn default() -> Self {
        PollableTable {
            entries: Slab::new(),
        }
    }
}

impl<P> PollableTable<P> {
    /// Starts watching `pollable`; the key names it until [`PollableTable::remove`].
    pub(crate) fn insert(&mut self, pollable: P) -> usize {
        self.entries.insert(Entry {
            pollable,
            first: None,
            more: Vec::new(),
            fired: 0,
        })
    }

    /// Stops watching: gives back the pollable and any wakers still waiting, for the caller to
    /// drop outside the reactor (dropping a waker can schedule a task).
    pub(crate) fn remove(&mut self, key: usize) -> (P, Vec<Waker>) {
        let mut entry = self.entries.remove(key);
        let mut waiters = Vec::new();
        entry.take_waiters(&mut waiters);
        (entry.pollable, waiters)
    }

    /// One step of waiting on entry `key`. `seen` is the waiting future's own state: `None`
    /// before its first poll, then the fire count it started from. Ready once the entry has
    /// fired since; until then the waker is (re)registered, at most once per task.
    pub(crate) fn poll_wait(
        &mut self,
        key: usize,
        waker: &Waker,
        seen: &mut Option<u64>,
    ) -> Poll<()> {
        let entry = &mut self.entries[key];
        match *seen {
            Some(start) if entry.fired != start => Poll::Ready(()),
            _ => {
                seen.get_or_insert(entry.fired);
                entry.add_waiter(waker);
                Poll::Pending
            }
        }
    }

    /// The poll list: every pollable someone waits on, and beside it (same index) its key.
    /// `keys` is cleared first; pass the same vector every round to keep its capacity.
    pub(crate) fn waited_on<'a>(&'a self, keys: &mut Vec<usize>, targets: &mut Vec<&'a P>) {
        keys.clear();
        for (key, entry) in self.entries.iter().filter(|(_, e)| e.is_waited_on()) {
            keys.push(key);
            targets.push(&entry.pollable);
        }
    }

    /// Entry `key` was reported ready: its waiters go to `woken` and are forgotten.
    pub(crate) fn fire(&mut self, key: usize, woken: &mut Vec<Waker>) {
        let entry = &mut self.entries[key];
        entry.fired = entry.fired.wrapping_add(1);
        entry.take_waiters(woken);
    }

    /// Every waker of every entry, for tearing the runtime down.
    pub(crate) fn take_all_waiters(&mut self, into: &mut Vec<Waker>) {
        for (_, entry) in self.entries.iter_mut() {
            entry.take_waiters(into);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_support::CountingWaker;

    #[test]
    fn only_waited_on_entries_are_polled_with_their_keys() {
        let mut table = PollableTable::default();
        let idle = table.insert("idle");
        let busy = table.insert("busy");
        let waker = CountingWaker::new();
        let mut seen = None;
        assert!(
            table
                .poll_wait(busy, &waker.waker(), &mut seen)
                .is_pending()
        );
        let (mut keys, mut targets) = (Vec::new(), Vec::new());
        table.waited_on(&mut keys, &mut targets);
        assert_eq!(keys, [busy]);
        assert_eq!(targets, [&"busy"]);
        assert_ne!(idle, busy);
    }

    #[test]
    fn firing_wakes_once_and_readies_the_wait() {
        let mut table = PollableTable::default();
        let key = table.insert(());
        let waker = CountingWaker::new();
        let mut seen = None;
        assert!(table.poll_wait(key, &waker.waker(), &mut seen).is_pending());
        // A spurious wake-up (something else in the task) is not readiness.
        assert!(table.poll_wait(key, &waker.waker(), &mut seen).is_pending());
        let mut woken = Vec::new();
        table.fire(key, &mut woken);
        assert_eq!(
            woken.len(),
            1,
            "the same task registered twice is woken once"
        );
        woken.drain(..).for_each(Waker::wake);
        assert_eq!(waker.count(), 1);
        assert!(table.poll_wait(key, &waker.waker(), &mut seen).is_ready());
        // Fired and cleared: nothing waits any more, so it leaves the poll list.
        let (mut keys, mut targets) = (Vec::new(), Vec::new());
        table.waited_on(&mut keys, &mut targets);
        assert!(keys.is_empty());
    }

    #[test]
    fn a_new_wait_after_a_fire_waits_for_the_next_one() {
        let mut table = PollableTable::default();
        let key = table.insert(());
        let waker = CountingWaker::new();
        let mut woken = Vec::new();
        table.fire(key, &mut woken);
        let mut seen = None;
        assert!(table.poll_wait(key, &waker.waker(), &mut seen).is_pending());
    }

    #[test]
    fn two_tasks_on_one_entry_are_both_woken() {
        let mut table = PollableTable::default();
        let key = table.insert(());
        let (a, b) = (CountingWaker::new(), CountingWaker::new());
        let (mut seen_a, mut seen_b) = (None, None);
        let _ = table.poll_wait(key, &a.waker(), &mut seen_a);
        let _ = table.poll_wait(key, &b.waker(), &mut seen_b);
        let _ = table.poll_wait(key, &b.waker(), &mut seen_b);
        let mut woken = Vec::new();
        table.fire(key, &mut woken);
        assert_eq!(woken.len(), 2);
        woken.drain(..).for_each(Waker::wake);
        assert_eq!((a.count(), b.count()), (1, 1));
    }

    #[test]
    fn removing_gives_back_the_pollable_and_waiters() {
        let mut table = PollableTable::default();
        let key = table.insert(7);
        let waker = CountingWaker::new();
        let _ = table.poll_wait(key, &waker.waker(), &mut None);
        let (pollable, waiters) = table.remove(key);
        assert_eq!((pollable, waiters.len(), table.len()), (7, 1, 0));
    }
}
