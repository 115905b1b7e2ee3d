//! A guest's run as `/readyz` and the `ready` metric see it: an instance counts as ready from
//! the moment its readiness says so (every granted socket, or `control.ready` for a guest
//! that speaks `control`) until its run ends, however it ends (a kill aborts the run).

use std::future::Future;

use tokio::sync::watch;

use super::state::{Readiness, Shared};
use super::types::GuestExit;
use crate::metrics::GuestMetrics;

impl Readiness {
    /// The rule [`RunningGuest::ready`](super::RunningGuest::ready) waits for.
    pub(crate) fn is_ready(&self, uses_control: bool, expected_sockets: usize) -> bool {
        if uses_control {
            self.announced
        } else {
            self.sockets.len() >= expected_sockets
        }
    }
}

/// What a run is watched with: the guest's readiness, and where to count it.
pub(super) struct ReadyWatch {
    readiness: watch::Receiver<Readiness>,
    uses_control: bool,
    expected_sockets: usize,
    metrics: GuestMetrics,
}

impl ReadyWatch {
    pub(super) fn new(
        shared: &Shared,
        uses_control: bool,
        expected_sockets: usize,
        metrics: &GuestMetrics,
    ) -> ReadyWatch {
        ReadyWatch {
            readiness: shared.readiness.subscribe(),
            uses_control,
            expected_sockets,
            metrics: metrics.clone(),
        }
    }

    /// Awaits `run`, the instance counted ready in the metrics while it is.
    pub(super) async fn around(mut self, run: impl Future<Output = GuestExit>) -> GuestExit {
        let mut run = std::pin::pin!(run);
        let (control, expected) = (self.uses_control, self.expected_sockets);
        let ready = tokio::select! {
            exit = &mut run => return exit,
            ready = self.readiness.wait_for(|r| r.is_ready(control, expected)) => ready.is_ok(),
        };
        if !ready {
            return run.await;
        }
        let _ready = ReadyWhileAlive::new(&self.metrics);
        run.await
    }
}

/// Counts the instance ready until dropped: at the run's end, or when the task is aborted.
struct ReadyWhileAlive<'a>(&'a GuestMetrics);

impl<'a> ReadyWhileAlive<'a> {
    fn new(metrics: &'a GuestMetrics) -> Self {
        metrics.instance_ready(true);
        ReadyWhileAlive(metrics)
    }
}

impl Drop for ReadyWhileAlive<'_> {
    fn drop(&mut self) {
        self.0.instance_ready(false);
    }
}
