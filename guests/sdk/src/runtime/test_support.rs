//! A waker that counts its wake-ups, for testing the bookkeeping without an executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

pub(crate) struct CountingWaker(Arc<Count>);

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl CountingWaker {
    pub(crate) fn new() -> CountingWaker {
        CountingWaker(Arc::new(Count(AtomicUsize::new(0))))
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker::from(self.0.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.0.0.load(Ordering::Relaxed)
    }
}
