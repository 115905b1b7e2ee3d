//! What `sockbox up` reports as it goes (the CLI prints `ready` lines on stdout and the rest
//! on stderr), and how each instance ended for good.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::sandbox::ReadySocket;

/// What the supervisor reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A socket of guest `guest` is ready: the contract's `ready tcp 127.0.0.1:7000 echo`.
    Ready {
        /// The guest's name (its table in the manifest).
        guest: String,
        /// The socket, with its transport and actual address.
        socket: ReadySocket,
    },
    /// An instance started (`run` counts its starts from 1).
    Started {
        /// The instance's name.
        instance: String,
        /// Which start this is, from 1.
        run: u32,
    },
    /// An instance's run ended by itself; `how` says how.
    Ended {
        /// The instance's name.
        instance: String,
        /// How it ended, as a sentence (`exited with status 3`).
        how: String,
        /// Whether that counts as a failure for its restart rule.
        failed: bool,
    },
    /// It is started again after `after`; `restart` of at most `max` within the window.
    Restarting {
        /// The instance's name.
        instance: String,
        /// The wait before it starts again.
        after: Duration,
        /// Which restart this is within the window.
        restart: u32,
        /// The most restarts allowed within the window.
        max: u32,
    },
    /// It failed too often within the window and stays down.
    GaveUp {
        /// The instance's name.
        instance: String,
        /// The restarts it had within the window.
        restarts: u32,
        /// The window.
        window: Duration,
    },
    /// Every guest is being asked to stop.
    Stopping,
}

impl Event {
    /// The guest or instance it is about, if one.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Event::Ready { guest, .. } => Some(guest),
            Event::Started { instance, .. }
            | Event::Ended { instance, .. }
            | Event::Restarting { instance, .. }
            | Event::GaveUp { instance, .. } => Some(instance),
            Event::Stopping => None,
        }
    }

    /// The `ready` line for stdout, if this is one.
    pub fn ready_line(&self) -> Option<String> {
        match self {
            Event::Ready { guest, socket } => Some(format!("ready {socket} {guest}")),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    /// The log line (without a `sockbox:` prefix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Ready { guest, socket } => write!(f, "guest `{guest}` ready on {socket}"),
            Event::Started { instance, run: 1 } => write!(f, "guest `{instance}` started"),
            Event::Started { instance, run } => {
                write!(f, "guest `{instance}` started (run {run})")
            }
            Event::Ended { instance, how, .. } => write!(f, "guest `{instance}` {how}"),
            Event::Restarting {
                instance,
                after,
                restart,
                max,
            } => write!(
                f,
                "guest `{instance}` restarting in {after:?} (restart {restart} of at most {max} \
                 within the window)"
            ),
            Event::GaveUp {
                instance,
                restarts,
                window,
            } => write!(
                f,
                "guest `{instance}` given up: it ended again after {restarts} restarts within \
                 {window:?}; the other guests keep running"
            ),
            Event::Stopping => f.write_str("asking every guest to stop"),
        }
    }
}

/// How one instance ended for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It returned cleanly and is not restarted.
    Clean,
    /// It was stopped by [`Supervisor::run`](super::Supervisor::run)'s stop signal (cleanly, or killed because it
    /// does not import `control`).
    Stopped,
    /// It failed and its restart rule does not start it again (or it failed while stopping).
    Failed(String),
    /// It failed too often and was given up.
    GaveUp(String),
}

impl Ending {
    /// Whether the instance ended failed (or was given up).
    pub fn is_failure(&self) -> bool {
        matches!(self, Ending::Failed(_) | Ending::GaveUp(_))
    }
}

/// How every instance ended, in manifest order.
#[derive(Debug)]
pub struct Outcome {
    /// Each instance's name (`guest`, or `guest#N` with several instances) and ending.
    pub endings: Vec<(String, Ending)>,
}

impl Outcome {
    /// No instance failed for good.
    pub fn succeeded(&self) -> bool {
        !self.endings.iter().any(|(_, ending)| ending.is_failure())
    }
}

/// Where events go: called from the instances' tasks.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;
