//! What a guest prints: kept in memory (tests and tools), or passed through to the host's
//! stdout and stderr without ever blocking the guest, and the host's own lines about guests.
//!
//! [`channel`] holds the bounded queues and their writer threads; [`guest`] is what
//! wasmtime-wasi writes the guest's streams into; [`ready_guard`] keeps a guest from forging
//! the host's `ready` line; [`json`] shapes the host's lines for `--log-format json`.

mod channel;
mod guest;
mod json;
mod ready_guard;

use std::time::{Duration, Instant};

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use channel::Fd;
pub use channel::{drain_output, guest_line, host_line};
use guest::GuestOutput;
pub use json::host_lines_as_json;

/// Captured output beyond this fails the guest's write; it is meant for tests and tools.
const CAPTURE_CAPACITY: usize = 64 * 1024 * 1024;

/// A guest's stdout and stderr.
#[derive(Clone)]
pub(crate) enum Outputs {
    /// Kept in memory, for [`Outputs::stdout`] and [`Outputs::stderr`].
    Captured {
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    },
    /// Passed through to the host's descriptors (stdout, stderr).
    Passed([GuestOutput; 2]),
}

impl Outputs {
    /// `guest`'s outputs, captured or passed through; `stdout_to_stderr` sends its stdout to
    /// the host's stderr (for a host whose stdout carries something else).
    pub(crate) fn new(guest: &str, capture: bool, stdout_to_stderr: bool) -> Outputs {
        if capture {
            return Outputs::Captured {
                stdout: MemoryOutputPipe::new(CAPTURE_CAPACITY),
                stderr: MemoryOutputPipe::new(CAPTURE_CAPACITY),
            };
        }
        let stdout_fd = if stdout_to_stderr {
            Fd::Stderr
        } else {
            Fd::Stdout
        };
        Outputs::Passed([
            GuestOutput::new(guest, "stdout", stdout_fd),
            GuestOutput::new(guest, "stderr", Fd::Stderr),
        ])
    }

    /// Makes them the guest's.
    pub(crate) fn give_to(&self, wasi: &mut WasiCtxBuilder) {
        match self {
            Outputs::Captured { stdout, stderr } => {
                wasi.stdout(stdout.clone()).stderr(stderr.clone())
            }
            Outputs::Passed([stdout, stderr]) => wasi.stdout(stdout.clone()).stderr(stderr.clone()),
        };
    }

    /// What the guest wrote to stdout so far, if captured.
    pub(crate) fn stdout(&self) -> String {
        match self {
            Outputs::Captured { stdout, .. } => String::from_utf8_lossy(&stdout.contents()).into(),
            Outputs::Passed(_) => String::new(),
        }
    }

    /// What the guest wrote to stderr so far, if captured.
    pub(crate) fn stderr(&self) -> String {
        match self {
            Outputs::Captured { stderr, .. } => String::from_utf8_lossy(&stderr.contents()).into(),
            Outputs::Passed(_) => String::new(),
        }
    }

    /// Waits (at most `timeout`, off the event loop) until what the guest printed is written.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let Outputs::Passed(outputs) = self.clone() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let _ = tokio::task::spawn_blocking(move || {
            outputs.iter().all(|out| out.wait_drained(deadline))
        })
        .await;
    }
}
