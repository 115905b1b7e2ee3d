//! The busy watch: a guest that computes without calling the host yields to the runtime at
//! every epoch tick, so it cannot hold a worker thread, and one that computes through more
//! than `max-busy` of ticks (a runaway loop) is stopped.
//!
//! One thread advances the engine's epoch every [`EPOCH_TICK`]; each store counts the ticks
//! its guest ran into, and every return from a host call (`poll` included) starts the count
//! again.

use std::sync::Once;
use std::time::Duration;

use wasmtime::{CallHook, Engine, Store, UpdateDeadline};

use crate::metrics::GuestMetrics;

/// How often the epoch advances. A guest that computes without calling the host yields to
/// the async runtime at every epoch, so one busy guest cannot starve the host's other work.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epoch ticks the guest has computed through since it last returned from a host call.
#[derive(Default)]
pub(crate) struct Busy {
    ticks: u32,
    /// Inside the epoch check, which wasmtime runs as a host call of its own.
    in_epoch_check: bool,
}

impl Busy {
    /// The guest returned from a host call: unless that call was the epoch check itself, it
    /// yielded, and the count starts again.
    fn returned_from_host(&mut self) {
        if !std::mem::take(&mut self.in_epoch_check) {
            self.ticks = 0;
        }
    }

    /// The guest ran into one more tick; false once it is over `allowed`.
    fn tick(&mut self, allowed: u32) -> bool {
        self.ticks += 1;
        self.in_epoch_check = true;
        self.ticks <= allowed
    }
}

/// Installs the watch on `store`, whose data holds the guest's [`Busy`] (reached by `busy`).
pub(crate) fn watch<T: 'static>(
    store: &mut Store<T>,
    busy: fn(&mut T) -> &mut Busy,
    name: &str,
    max_busy: Duration,
    metrics: GuestMetrics,
) {
    tick(store.engine());
    store.call_hook(move |mut store, hook| {
        if matches!(hook, CallHook::ReturningFromHost) {
            busy(store.data_mut()).returned_from_host();
        }
        Ok(())
    });
    let allowed = ticks(max_busy);
    let name = name.to_string();
    store.epoch_deadline_callback(move |mut store| {
        // Counted per tick the guest ran into, so time spent waiting for a worker thread
        // after a yield is not held against it.
        if !busy(store.data_mut()).tick(allowed) {
            metrics.busy_killed();
            return Err(wasmtime::format_err!(
                "guest `{name}` computed for more than {} ms without yielding to the host and \
                 was stopped (max-busy; raise it with --max-busy MS or `max-busy` in [limits])",
                max_busy.as_millis()
            ));
        }
        // tokio's own yield, not a bare self-wake: it defers the task until the worker has
        // polled the I/O driver, so a guest that never waits (every host call answered at
        // once) still lets new socket readiness in every tick. With a self-wake the driver
        // ran only at tokio's maintenance, every 61 task polls (~0.6 s at one per tick).
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] for as long as it lives, on a thread of its
/// own started with the first store (the engine is one per process).
fn tick(engine: &Engine) {
    static TICKER: Once = Once::new();
    TICKER.call_once(|| {
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sockbox-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawn the epoch thread");
    });
}

/// Epoch ticks a guest may compute through without calling the host.
fn ticks(max_busy: Duration) -> u32 {
    max_busy
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .clamp(1, u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_busy_is_counted_in_whole_ticks_and_at_least_one() {
        let tick = EPOCH_TICK;
        for (max_busy, ticks_allowed) in [
            (Duration::ZERO, 1),
            (tick, 1),
            (tick + Duration::from_millis(1), 2),
            (tick * 100, 100),
            (Duration::from_secs(u64::MAX), u32::MAX),
        ] {
            assert_eq!(ticks(max_busy), ticks_allowed, "{max_busy:?}");
        }
    }

    #[test]
    fn only_a_return_from_a_real_host_call_resets_the_count() {
        let mut busy = Busy::default();
        assert!(busy.tick(2));
        // Returning from the epoch check is no yield.
        busy.returned_from_host();
        assert!(busy.tick(2));
        busy.returned_from_host();
        assert!(!busy.tick(2), "a third tick without a host call is over");
        // A real host call (no epoch check since) starts the count again.
        busy.returned_from_host();
        busy.returned_from_host();
        assert!(busy.tick(2) && busy.tick(2));
    }
}
