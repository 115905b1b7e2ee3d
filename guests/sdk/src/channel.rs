//! Queues between tasks of the guest's single-threaded reactor: bounded, or unbounded.
//!
//! A server that fans messages out (chat) gives each client its own queue and a task that
//! drains it into the socket, so one slow reader delays only itself; a bounded queue also
//! caps what a client that never reads can make the guest hold ([`bounded_by`] counts bytes):
//! a send to a full queue fails at once, never waits, and the server decides what to do with
//! that client. Everything runs on one thread, so the queue is an `Rc<RefCell<VecDeque>>` and
//! a waker, not a lock-free structure.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A new queue without a limit: any number of senders (clone the one returned), one receiver.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    bounded_by(usize::MAX, |_| 1)
}

/// A new queue of at most `capacity` items; a send to a full queue gives the item back.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    bounded_by(capacity, |_| 1)
}

/// A new queue holding items of at most `capacity` in total `weight` (bytes, say:
/// `bounded_by(1 << 20, |m: &String| m.len())`). An empty queue takes any one item, so a
/// single item heavier than the capacity still gets through.
pub fn bounded_by<T>(capacity: usize, weight: fn(&T) -> usize) -> (Sender<T>, Receiver<T>) {
    let shared = Rc::new(RefCell::new(Shared {
        items: VecDeque::new(),
        weight,
        queued: 0,
        capacity,
        waiting: None,
        senders: 1,
        receiving: true,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

/// Why a send failed; the item comes back in it.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// The queue holds its capacity already: its receiver is not keeping up.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> SendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(item) | SendError::Closed(item) => item,
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "the queue is full",
            SendError::Closed(_) => "the receiver is gone",
        })
    }
}

impl<T: fmt::Debug> std::error::Error for SendError<T> {}

struct Shared<T> {
    items: VecDeque<T>,
    weight: fn(&T) -> usize,
    /// The total weight of `items`.
    queued: usize,
    capacity: usize,
    waiting: Option<Waker>,
    senders: usize,
    receiving: bool,
}

impl<T> Shared<T> {
    fn wake(shared: &RefCell<Shared<T>>) {
        // Taken out first: waking must not happen while the queue is borrowed.
        let waker = shared.borrow_mut().waiting.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sending side of a queue; clone it for more senders.
pub struct Sender<T>(Rc<RefCell<Shared<T>>>);

impl<T> Sender<T> {
    /// Queues `item`, never waiting. Gives it back if the queue is full or the receiver gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        {
            let mut shared = self.0.borrow_mut();
            if !shared.receiving {
                return Err(SendError::Closed(item));
            }
            let weight = (shared.weight)(&item);
            if !shared.items.is_empty() && shared.queued.saturating_add(weight) > shared.capacity {
                return Err(SendError::Full(item));
            }
            shared.queued = shared.queued.saturating_add(weight);
            shared.items.push_back(item);
        }
        Shared::wake(&self.0);
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.borrow_mut().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut shared = self.0.borrow_mut();
            shared.senders -= 1;
            shared.senders == 0
        };
        if last {
            Shared::wake(&self.0);
        }
    }
}

/// The receiving side of a queue.
pub struct Receiver<T>(Rc<RefCell<Shared<T>>>);

impl<T> Receiver<T> {
    /// The next item in order; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut shared = self.0.borrow_mut();
            if let Some(item) = shared.items.pop_front() {
                shared.queued -= (shared.weight)(&item);
                Poll::Ready(Some(item))
            } else if shared.senders == 0 {
                Poll::Ready(None)
            } else {
                shared.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// The total weight queued and not yet received (items, for [`bounded`] and [`unbounded`]).
    pub fn queued(&self) -> usize {
        self.0.borrow().queued
    }

    /// Items queued and not yet received.
    pub fn len(&self) -> usize {
        self.0.borrow().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut shared = self.0.borrow_mut();
            shared.receiving = false;
            std::mem::take(&mut shared.items)
        };
        // Dropped outside the borrow: an item's own Drop may touch this queue.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn items_come_out_in_order_then_none() {
        let (tx, mut rx) = unbounded();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        assert_eq!(rx.len(), 2);
        drop((tx, tx2));
        assert_eq!(block_on(rx.recv()), Some(1));
        assert_eq!(block_on(rx.recv()), Some(2));
        assert_eq!(block_on(rx.recv()), None);
    }

    #[test]
    fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = unbounded();
        block_on(async {
            let mut recv = Box::pin(rx.recv());
            assert_eq!(poll_once(&mut recv).await, None, "nothing queued yet");
            tx.send("hi").unwrap();
            assert_eq!(recv.await, Some("hi"));
        });
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_item_back() {
        let (tx, rx) = unbounded();
        drop(rx);
        assert_eq!(tx.send(7), Err(SendError::Closed(7)));
    }

    #[test]
    fn a_full_queue_refuses_until_the_receiver_catches_up() {
        let (tx, mut rx) = bounded(2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(tx.send(3), Err(SendError::Full(3)));
        assert_eq!(block_on(rx.recv()), Some(1));
        tx.send(3).unwrap();
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn a_byte_bounded_queue_counts_bytes_and_always_takes_one_item() {
        let (tx, mut rx) = bounded_by(10, |s: &String| s.len());
        tx.send("x".repeat(25)).unwrap(); // heavier than the capacity, but the queue was empty
        assert_eq!(tx.send("y".into()), Err(SendError::Full("y".into())));
        assert_eq!(block_on(rx.recv()).map(|s| s.len()), Some(25));
        assert_eq!(rx.queued(), 0);
        tx.send("abcd".into()).unwrap();
        tx.send("efghij".into()).unwrap();
        assert_eq!(rx.queued(), 10);
        let err = tx.send("k".into()).unwrap_err();
        assert_eq!(err.to_string(), "the queue is full");
        assert_eq!(err.into_inner(), "k");
    }
}
