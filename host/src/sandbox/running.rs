//! A guest that has started: waiting until it is ready, its capability decisions, asking it
//! to stop, and how it ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use wasmtime_wasi::I32Exit;

use super::errors;
use super::output::Outputs;
use super::state::{Readiness, Shared};
use super::types::{GuestExit, ReadySocket};
use crate::audit::AuditEvent;

/// How a guest's `run` ended, from what wasmtime returned.
pub(super) fn classify(result: wasmtime::Result<Result<(), ()>>) -> GuestExit {
    match result {
        Ok(Ok(())) => GuestExit::Clean,
        Ok(Err(())) => GuestExit::Status(1),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => GuestExit::Clean,
            Some(I32Exit(code)) => GuestExit::Status(*code),
            // The whole chain and the wasm backtrace, without the host's stack.
            None => GuestExit::Trapped(anyhow!("{}", errors::describe_trap(&err))),
        },
    }
}

/// Yields each socket the guest gets ready, in order (see [`RunningGuest::socket_watch`]).
pub struct SocketWatch {
    readiness: tokio::sync::watch::Receiver<Readiness>,
    seen: usize,
}

impl SocketWatch {
    /// The next ready socket; `None` once the guest is gone.
    pub async fn next(&mut self) -> Option<ReadySocket> {
        let seen = self.seen;
        let readiness = self
            .readiness
            .wait_for(|r| r.sockets.len() > seen)
            .await
            .ok()?;
        self.seen += 1;
        Some(readiness.sockets[seen])
    }

    /// The sockets ready and not yet returned, without waiting: what a guest that has ended
    /// got ready in its last moments.
    pub fn ready_now(&mut self) -> Vec<ReadySocket> {
        let sockets = self.readiness.borrow().sockets[self.seen..].to_vec();
        self.seen += sockets.len();
        sockets
    }
}

/// A guest that has started. Dropping it kills the guest.
pub struct RunningGuest {
    name: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<GuestExit>>,
    exit: Option<GuestExit>,
    uses_control: bool,
    expected_sockets: usize,
    outputs: Outputs,
}

/// How long [`RunningGuest::finish`] waits for a guest's last output to be written.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

impl RunningGuest {
    /// The guest whose `run` is `task`; `expected_sockets` make it ready unless it uses
    /// `control`.
    pub(super) fn new(
        name: String,
        shared: Arc<Shared>,
        task: JoinHandle<GuestExit>,
        uses_control: bool,
        expected_sockets: usize,
        outputs: Outputs,
    ) -> RunningGuest {
        RunningGuest {
            name,
            shared,
            task: Some(task),
            exit: None,
            uses_control,
            expected_sockets,
            outputs,
        }
    }

    /// What the guest wrote to stdout so far (empty unless output is captured).
    pub fn stdout(&self) -> String {
        self.outputs.stdout()
    }

    /// What the guest wrote to stderr so far (empty unless output is captured).
    pub fn stderr(&self) -> String {
        self.outputs.stderr()
    }

    /// The guest's name in logs and audit lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the component imports `sockbox:guest/control`.
    pub fn uses_control(&self) -> bool {
        self.uses_control
    }

    /// Waits until the guest is serving and returns its sockets with their actual addresses;
    /// a connection made after this returns succeeds. A guest using `control` is ready when it
    /// says so; any other component once it has as many sockets listening or bound as it was
    /// granted with `--listen`/`--udp` (at least one). Fails if the guest ends first.
    pub async fn ready(&mut self) -> Result<Vec<ReadySocket>> {
        let mut readiness = self.shared.readiness.subscribe();
        let uses_control = self.uses_control;
        let expected = self.expected_sockets;
        let is_ready = |r: &Readiness| {
            if uses_control {
                r.announced
            } else {
                r.sockets.len() >= expected
            }
        };
        let Some(task) = self.task.as_mut() else {
            bail!("guest `{}` is not running", self.name);
        };
        tokio::select! {
            ready = readiness.wait_for(is_ready) => {
                let ready = ready.map_err(|_| anyhow!("guest `{}` went away", self.name))?;
                Ok(ready.sockets.clone())
            }
            exit = task => {
                self.task = None;
                let exit = exit.unwrap_or_else(|err| GuestExit::Trapped(err.into()));
                let message = format!("guest `{}` {exit} before it was ready", self.name);
                self.exit = Some(exit);
                Err(anyhow!(message))
            }
        }
    }

    /// Every socket the guest gets ready, from the first one on, as it happens.
    pub fn socket_watch(&self) -> SocketWatch {
        SocketWatch {
            readiness: self.shared.readiness.subscribe(),
            seen: 0,
        }
    }

    /// A stream of capability decisions from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.shared.events.subscribe()
    }

    /// The decisions made so far (the most recent 10 000, and at most about 4 MiB of them;
    /// denials past 100 a second are counted in a `denials-suppressed` event instead).
    pub fn decisions(&self) -> Vec<AuditEvent> {
        self.shared
            .decisions
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// How many operations were denied so far.
    pub fn denials(&self) -> u64 {
        self.shared.denials.load(Ordering::Relaxed)
    }

    /// Asks the guest to stop (its `control.shutdown` pollable becomes ready).
    pub fn request_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Waits for the guest to end by itself; [`RunningGuest::finish`] then returns how.
    /// Cancel-safe: dropping this future leaves the guest running.
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let exit = task
                .await
                .unwrap_or_else(|err| GuestExit::Trapped(err.into()));
            self.task = None;
            self.exit = Some(exit);
        }
    }

    /// Asks the guest to stop and waits up to `grace` for it; kills it after that.
    pub async fn stop(mut self, grace: Duration) -> GuestExit {
        self.request_shutdown();
        self.finish(grace).await
    }

    /// How the guest ended: waits up to `grace` for it (asked to stop or not), then kills it.
    pub async fn finish(&mut self, grace: Duration) -> GuestExit {
        if let Some(task) = self.task.as_mut() {
            match tokio::time::timeout(grace, &mut *task).await {
                Ok(exit) => {
                    self.task = None;
                    self.exit = Some(exit.unwrap_or_else(|err| GuestExit::Trapped(err.into())));
                }
                Err(_) => {
                    task.abort();
                    self.task = None;
                    self.exit = Some(GuestExit::Killed);
                }
            }
        }
        self.outputs.drain(OUTPUT_DRAIN).await;
        self.exit.take().unwrap_or(GuestExit::Killed)
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
