//! One instance of one guest under `sockbox up`: started, its ready sockets reported (the
//! first instance pins port-0 grants for the others and for restarts), started again as its
//! restart rule and the backoff say, and stopped with the grace period when `up` ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;

use super::backoff::{Backoff, Next, RestartSettings};
use super::events::{Ending, Event, EventSink};
use super::manifest::Restart;
use crate::metrics::GuestMetrics;
use crate::policy::Policy;
use crate::sandbox::{GuestExit, ReadySocket, RunningGuest, SandboxBuilder, Transport};

/// The ports a guest's first instance got for its port-0 grants, which every later start
/// (restarts, further instances) is pinned to.
#[derive(Clone, Debug)]
pub(super) enum PortPin {
    Waiting,
    Pinned(Policy),
    /// The first instance ended for good without serving.
    Never,
}

/// One instance of one guest and everything needed to start it again.
pub(super) struct Slot {
    pub(super) guest: String,
    pub(super) instance: String,
    pub(super) index: usize,
    pub(super) builder: SandboxBuilder,
    pub(super) policy: Policy,
    pub(super) restart: Restart,
    pub(super) settings: RestartSettings,
    pub(super) pin: Arc<watch::Sender<PortPin>>,
    pub(super) events: EventSink,
    /// Where its restarts are counted.
    pub(super) metrics: GuestMetrics,
}

impl Slot {
    fn has_port_zero(&self) -> bool {
        let zero = |a: &std::net::SocketAddr| a.port() == 0;
        self.policy.listen.iter().any(zero) || self.policy.udp.iter().any(zero)
    }

    /// Runs the instance, restarting it as its rule says, until it ends for good or
    /// `stopping` turns true.
    pub(super) async fn supervise(self, mut stopping: watch::Receiver<bool>) -> Ending {
        // Further instances share the first one's ports, so they wait until it has them.
        if self.index > 0 && self.has_port_zero() {
            let mut pin = self.pin.subscribe();
            tokio::select! {
                pinned = pin.wait_for(|p| !matches!(p, PortPin::Waiting)) => {
                    if matches!(pinned.as_deref(), Ok(PortPin::Never) | Err(_)) {
                        return Ending::Failed(
                            "not started: the first instance never got its ports".into(),
                        );
                    }
                }
                _ = stopping.wait_for(|s| *s) => return Ending::Stopped,
            }
        }
        let ending = self.run_until_final(&mut stopping).await;
        if self.index == 0 {
            self.pin.send_if_modified(|p| {
                let waiting = matches!(p, PortPin::Waiting);
                if waiting {
                    *p = PortPin::Never;
                }
                waiting
            });
        }
        ending
    }

    async fn run_until_final(&self, stopping: &mut watch::Receiver<bool>) -> Ending {
        let mut backoff = Backoff::new(self.settings);
        let mut run = 0;
        loop {
            run += 1;
            let policy = match &*self.pin.borrow() {
                PortPin::Pinned(policy) => policy.clone(),
                _ => self.policy.clone(),
            };
            let started = Instant::now();
            let builder = self.builder.clone().policy(policy).name(&self.instance);
            let exit = match builder.start().await {
                Ok(mut guest) => {
                    (self.events)(Event::Started {
                        instance: self.instance.clone(),
                        run,
                    });
                    if self.serve(&mut guest, run, stopping).await {
                        return self.stop(guest).await;
                    }
                    guest.finish(Duration::ZERO).await
                }
                Err(err) => GuestExit::Trapped(err.context("cannot start it")),
            };
            let failed = !exit.is_clean();
            let how = exit.to_string();
            (self.events)(Event::Ended {
                instance: self.instance.clone(),
                how: how.clone(),
                failed,
            });
            let again = match self.restart {
                Restart::Never => false,
                Restart::OnFailure => failed,
                Restart::Always => true,
            };
            if !again {
                return if failed {
                    Ending::Failed(how)
                } else {
                    Ending::Clean
                };
            }
            match backoff.after_run(Instant::now(), started.elapsed()) {
                Next::GiveUp => {
                    (self.events)(Event::GaveUp {
                        instance: self.instance.clone(),
                        restarts: self.settings.max_restarts,
                        window: self.settings.window,
                    });
                    return Ending::GaveUp(how);
                }
                Next::Restart { after, restart } => {
                    (self.events)(Event::Restarting {
                        instance: self.instance.clone(),
                        after,
                        restart,
                        max: self.settings.max_restarts,
                    });
                    tokio::select! {
                        () = tokio::time::sleep(after) => self.metrics.restarted(),
                        _ = stopping.wait_for(|s| *s) => return Ending::Stopped,
                    }
                }
            }
        }
    }

    /// Reports the guest's sockets until it ends (false) or the supervisor stops (true).
    async fn serve(
        &self,
        guest: &mut RunningGuest,
        run: u32,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut sockets = guest.socket_watch();
        let mut seen = Vec::new();
        let stopped = loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break true,
                () = guest.wait() => break false,
                Some(socket) = sockets.next() => self.socket_ready(socket, run, &mut seen),
            }
        };
        // A socket readied just before the end is still reported (and pins its port).
        while let Some(Some(socket)) = sockets.next().now_or_never() {
            self.socket_ready(socket, run, &mut seen);
        }
        if self.index == 0 && !seen.is_empty() {
            self.pin_ports(&seen);
        }
        stopped
    }

    fn socket_ready(&self, socket: ReadySocket, run: u32, seen: &mut Vec<ReadySocket>) {
        // Further instances share the first one's sockets; their first ready lines would
        // only repeat its lines.
        if self.index == 0 || run > 1 {
            (self.events)(Event::Ready {
                guest: self.guest.clone(),
                socket,
            });
        }
        seen.push(socket);
        if self.index == 0 && seen.len() == self.policy.listen.len() + self.policy.udp.len() {
            self.pin_ports(seen);
        }
    }

    /// Pins the port-0 grants to the ports this first run got, once.
    fn pin_ports(&self, sockets: &[ReadySocket]) {
        let addrs = |t: Transport| -> Vec<_> {
            (sockets.iter().filter(|s| s.transport == t))
                .map(|s| s.addr)
                .collect()
        };
        let pinned = self
            .policy
            .pinned_to(&addrs(Transport::Tcp), &addrs(Transport::Udp));
        self.pin.send_if_modified(|p| {
            let waiting = matches!(p, PortPin::Waiting);
            if waiting {
                *p = PortPin::Pinned(pinned);
            }
            waiting
        });
    }

    /// Asks the guest to stop; one without `control` cannot be asked and is killed, which is
    /// what stopping it meant.
    async fn stop(&self, mut guest: RunningGuest) -> Ending {
        guest.request_shutdown();
        let grace = if guest.uses_control() {
            self.settings.grace
        } else {
            Duration::ZERO
        };
        match guest.finish(grace).await {
            GuestExit::Clean => Ending::Stopped,
            GuestExit::Killed if !guest.uses_control() => Ending::Stopped,
            other => {
                let how = other.to_string();
                (self.events)(Event::Ended {
                    instance: self.instance.clone(),
                    how: how.clone(),
                    failed: true,
                });
                Ending::Failed(how)
            }
        }
    }
}
