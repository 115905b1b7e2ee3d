//! The reactor's timers: a min-heap of deadlines behind a single clock pollable.
//!
//! However many timers are armed, each poll round subscribes to one instant, the earliest.
//! Connection timeouts are armed and cancelled far more often than they fire, so cancelling
//! is O(1): the heap entry is left behind as stale and skipped when it surfaces; the heap is
//! rebuilt without them once they outnumber the live timers. Pure bookkeeping over
//! nanosecond instants, tested natively.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::{Poll, Waker};

use slab::Slab;

/// A point on the monotonic clock, in nanoseconds (WASI's `monotonic-clock.instant`).
pub(crate) type Instant = u64;

/// Stale heap entries tolerated beyond the live ones before a rebuild.
const STALE_SLACK: usize = 64;

#[derive(Default)]
pub(crate) struct TimerHeap {
    /// (deadline, arming order, slot): the arming order keeps equal deadlines first-in first-out
    /// and tells a live entry from a stale one whose slot was reused.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slots: Slab<Slot>,
    armed: u64,
    stale: usize,
}

struct Slot {
    order: u64,
    waker: Option<Waker>,
    fired: bool,
}

impl TimerHeap {
    /// Arms a timer for `deadline`; the key names it until [`TimerHeap::remove`].
    pub(crate) fn insert(&mut self, deadline: Instant, waker: &Waker) -> usize {
        self.armed += 1;
        let order = self.armed;
        let key = self.slots.insert(Slot {
            order,
            waker: Some(waker.clone()),
            fired: false,
        });
        self.heap.push(Reverse((deadline, order, key)));
        key
    }

    /// Ready once the timer has fired; until then `waker` is the one to wake.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> Poll<()> {
        let slot = &mut self.slots[key];
        if slot.fired {
            return Poll::Ready(());
        }
        match &slot.waker {
            Some(current) if current.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        Poll::Pending
    }

    /// Forgets a timer, fired or not; returns its waker for the caller to drop outside the
    /// reactor.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Waker> {
        let slot = self.slots.remove(key);
        if !slot.fired {
            self.stale += 1;
            if self.stale > self.slots.len() + STALE_SLACK {
                self.drop_stale();
            }
        }
        slot.waker
    }

    /// The earliest deadline of a live timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, order, key))) = self.heap.peek() {
            if self.is_live(order, key) {
                return Some(deadline);
            }
            self.heap.pop();
            self.stale -= 1;
        }
        None
    }

    /// Fires every timer due at `now`, earliest first: their wakers go to `woken`.
    pub(crate) fn fire_due(&mut self, now: Instant, woken: &mut Vec<Waker>) {
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            let Some(Reverse((_, _, key))) = self.heap.pop() else {
                break;
            };
            let slot = &mut self.slots[key];
            slot.fired = true;
            woken.extend(slot.waker.take());
        }
    }

    /// Every waker of every armed timer, for tearing the runtime down.
    #[cfg_attr(
        feature = "p3",
        allow(dead_code, reason = "the 0.3 runtime drops its timers whole")
    )]
    pub(crate) fn take_all_wakers(&mut self, into: &mut Vec<Waker>) {
        into.extend(self.slots.iter_mut().filter_map(|(_, s)| s.waker.take()));
    }

    /// Timers armed and not yet removed (fired or not).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_live(&self, order: u64, key: usize) -> bool {
        self.slots
            .get(key)
            .is_some_and(|s| s.order == order && !s.fired)
    }

    fn drop_stale(&mut self) {
        let slots = &self.slots;
        self.heap.retain(|&Reverse((_, order, key))| {
            slots.get(key).is_some_and(|s| s.order == order && !s.fired)
        });
        self.stale = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_support::CountingWaker;

    fn fire(timers: &mut TimerHeap, now: Instant) -> usize {
        let mut woken = Vec::new();
        timers.fire_due(now, &mut woken);
        let n = woken.len();
        woken.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn fires_in_deadline_order_only_when_due() {
        let mut timers = TimerHeap::default();
        let (early, late) = (CountingWaker::new(), CountingWaker::new());
        let l = timers.insert(300, &late.waker());
        let e = timers.insert(100, &early.waker());
        assert_eq!(timers.next_deadline(), Some(100));
        assert_eq!(fire(&mut timers, 99), 0);
        assert_eq!(fire(&mut timers, 100), 1);
        assert_eq!((early.count(), late.count()), (1, 0));
        assert!(timers.poll(e, &early.waker()).is_ready());
        assert!(timers.poll(l, &late.waker()).is_pending());
        assert_eq!(timers.next_deadline(), Some(300));
        assert_eq!(fire(&mut timers, 1_000), 1);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_cancelled_timer_never_fires_nor_sets_the_deadline() {
        let mut timers = TimerHeap::default();
        let waker = CountingWaker::new();
        let first = timers.insert(10, &waker.waker());
        timers.insert(20, &waker.waker());
        timers.remove(first);
        assert_eq!(timers.next_deadline(), Some(20));
        assert_eq!(fire(&mut timers, 15), 0);
        assert_eq!(fire(&mut timers, 25), 1);
    }

    #[test]
    fn a_reused_slot_does_not_revive_its_stale_entry() {
        let mut timers = TimerHeap::default();
        let waker = CountingWaker::new();
        let old = timers.insert(10, &waker.waker());
        timers.remove(old);
        let new = timers.insert(50, &waker.waker());
        assert_eq!(new, old, "the slab reuses the slot");
        assert_eq!(fire(&mut timers, 10), 0, "the stale entry at 10 is skipped");
        assert_eq!(timers.next_deadline(), Some(50));
    }

    #[test]
    fn the_latest_waker_is_woken() {
        let mut timers = TimerHeap::default();
        let (before, after) = (CountingWaker::new(), CountingWaker::new());
        let key = timers.insert(5, &before.waker());
        assert!(timers.poll(key, &after.waker()).is_pending());
        fire(&mut timers, 5);
        assert_eq!((before.count(), after.count()), (0, 1));
    }

    #[test]
    fn arm_and_cancel_churn_keeps_the_heap_small() {
        let mut timers = TimerHeap::default();
        let waker = CountingWaker::new();
        let live: Vec<_> = (0..100)
            .map(|i| timers.insert(1_000 + i, &waker.waker()))
            .collect();
        for i in 0..100_000 {
            let key = timers.insert(2_000 + i, &waker.waker());
            timers.remove(key);
        }
        assert!(
            timers.heap.len() <= 2 * live.len() + STALE_SLACK + 1,
            "{}",
            timers.heap.len()
        );
        assert_eq!(timers.len(), 100);
        assert_eq!(fire(&mut timers, u64::MAX), 100);
    }

    #[test]
    fn equal_deadlines_fire_in_arming_order() {
        let mut timers = TimerHeap::default();
        let wakers: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        for w in &wakers {
            timers.insert(7, &w.waker());
        }
        let mut woken = Vec::new();
        timers.fire_due(7, &mut woken);
        for (woken, expected) in woken.iter().zip(&wakers) {
            assert!(woken.will_wake(&expected.waker()));
        }
    }
}
