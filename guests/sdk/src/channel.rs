//! An unbounded queue between tasks of the guest's single-threaded reactor.
//!
//! A server that fans messages out (chat) gives each client its own queue and a task that
//! drains it into the socket, so one slow reader delays only itself. Everything runs on one
//! thread, so the queue is an `Rc<RefCell<VecDeque>>` and a waker, not a lock-free structure.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A new queue: any number of senders (clone the one returned), one receiver.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Rc::new(RefCell::new(Shared {
        items: VecDeque::new(),
        waiting: None,
        senders: 1,
        receiving: true,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

struct Shared<T> {
    items: VecDeque<T>,
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
    /// Queues `item`, never waiting. Gives it back if the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        {
            let mut shared = self.0.borrow_mut();
            if !shared.receiving {
                return Err(item);
            }
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
        assert_eq!(tx.send(7), Err(7));
    }
}
