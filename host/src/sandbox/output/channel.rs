//! The bounded queues between a guest's output (or the host's own lines about guests) and the
//! host's real descriptors, and the one writer thread per descriptor that empties them.
//!
//! A `push` only appends to its channel's queue and wakes the writer thread, so a stdout or
//! stderr nobody reads (a busy supervisor, a stuck log shipper) never blocks the guest or the
//! event loop: past [`BUFFER_BOUND`] bytes waiting, whole lines are dropped and counted, and
//! once the queue has drained a notice on stderr says how many
//! (`sockbox: guest `framing`: dropped 1234 lines of stderr (output not read fast enough)`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes of one stream waiting for its descriptor before lines are dropped. Four times a
/// Linux pipe: a reader that pauses for a moment loses nothing.
pub const BUFFER_BOUND: usize = 256 * 1024;

/// A real descriptor of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fd {
    Stdout,
    Stderr,
}

impl Fd {
    fn write_all(self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Fd::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Fd::Stderr => io::stderr().lock().write_all(bytes),
        }
    }

    fn writer(self) -> &'static Writer {
        static STDOUT: OnceLock<Writer> = OnceLock::new();
        static STDERR: OnceLock<Writer> = OnceLock::new();
        let cell = match self {
            Fd::Stdout => &STDOUT,
            Fd::Stderr => &STDERR,
        };
        cell.get_or_init(|| Writer::start(self))
    }
}

/// One descriptor's writer thread and the channels with something to write.
struct Writer {
    due: Mutex<VecDeque<Arc<Channel>>>,
    wake: Condvar,
}

impl Writer {
    fn start(fd: Fd) -> Writer {
        let name = format!("sockbox-{fd:?}").to_lowercase();
        // The thread lives as long as the process; it only ever blocks on its descriptor.
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || fd.writer().run(fd));
        if let Err(err) = spawned {
            tracing::error!("cannot start the {fd:?} writer thread: {err}");
        }
        Writer {
            due: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
        }
    }

    fn schedule(&self, channel: Arc<Channel>) {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(channel);
        self.wake.notify_one();
    }

    fn run(&self, fd: Fd) {
        loop {
            let channel = {
                let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(channel) = due.pop_front() {
                        break channel;
                    }
                    due = self.wake.wait(due).unwrap_or_else(|e| e.into_inner());
                }
            };
            channel.write_out(fd);
        }
    }
}

/// What one stream has queued, and what it dropped.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// Bytes queued or being written.
    bytes: usize,
    /// The buffer overflowed: everything is dropped until the writer has drained it.
    full: bool,
    /// A line was dropped in part: its rest is dropped too.
    in_dropped_line: bool,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Handed to the writer thread and not yet done.
    scheduled: bool,
    /// The last byte written ended a line (a notice on the same descriptor starts afresh).
    at_line_start: bool,
}

/// One stream of one guest (or the host's own lines about guests) into one descriptor.
pub(crate) struct Channel {
    fd: Fd,
    /// Whose output: `guest `framing``, or the host's own.
    label: String,
    /// Which of its streams: `stdout` or `stderr` (the guest's, whatever `fd` is).
    stream: &'static str,
    queue: Mutex<Queue>,
    drained: Condvar,
}

impl Channel {
    pub(super) fn new(fd: Fd, label: String, stream: &'static str) -> Arc<Channel> {
        Arc::new(Channel {
            fd,
            label,
            stream,
            queue: Mutex::new(Queue {
                at_line_start: true,
                ..Queue::default()
            }),
            drained: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one piece of a line (it ends with `\n` or is the line's unfinished part), or
    /// drops it; never blocks on the descriptor.
    pub(super) fn push(self: &Arc<Self>, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let ends_line = piece.ends_with(b"\n");
        let mut q = self.lock();
        if q.full || q.in_dropped_line || q.bytes + piece.len() > BUFFER_BOUND {
            q.full = q.full || !q.in_dropped_line;
            q.dropped_bytes += piece.len() as u64;
            if ends_line {
                q.dropped_lines += 1;
            }
            q.in_dropped_line = !ends_line;
            // The writer reports the drop once it has drained what was queued.
            self.schedule(q);
            return;
        }
        q.bytes += piece.len();
        q.chunks.push_back(piece);
        self.schedule(q);
    }

    fn schedule(self: &Arc<Self>, mut q: std::sync::MutexGuard<'_, Queue>) {
        if !q.scheduled {
            q.scheduled = true;
            drop(q);
            self.fd.writer().schedule(self.clone());
        }
    }

    /// On the writer thread: writes what is queued, then the drop notice if lines were
    /// dropped, until the queue is empty.
    fn write_out(&self, fd: Fd) {
        loop {
            let batch: Vec<Bytes> = {
                let mut q = self.lock();
                if q.chunks.is_empty() {
                    let dropped = std::mem::take(&mut q.dropped_lines);
                    let dropped_bytes = std::mem::take(&mut q.dropped_bytes);
                    // Drained: the guest's next lines are taken again.
                    q.full = false;
                    if dropped == 0 && dropped_bytes == 0 {
                        q.scheduled = false;
                        drop(q);
                        self.drained.notify_all();
                        return;
                    }
                    let fresh_line = q.at_line_start || self.fd != Fd::Stderr;
                    drop(q);
                    let notice = format!(
                        "{}sockbox: {}: dropped {dropped} lines ({dropped_bytes} bytes) of {} \
                         (output not read fast enough)\n",
                        if fresh_line { "" } else { "\n" },
                        self.label,
                        self.stream,
                    );
                    let _ = Fd::Stderr.write_all(notice.as_bytes());
                    if self.fd == Fd::Stderr {
                        self.lock().at_line_start = true;
                    }
                    continue;
                }
                q.chunks.drain(..).collect()
            };
            // One write for the batch: a guest printing many small pieces costs one syscall
            // per wake-up, not one per piece.
            let joined = batch.concat();
            let written = joined.len();
            let last = joined.last().copied().unwrap_or(b'\n');
            // A descriptor that fails (closed pipe) loses the output, as a plain write would.
            let _ = fd.write_all(&joined);
            let mut q = self.lock();
            q.bytes -= written;
            q.at_line_start = last == b'\n';
        }
    }

    /// Waits until everything queued so far is written, at most until `deadline`.
    pub(super) fn wait_drained(&self, deadline: Instant) -> bool {
        let mut q = self.lock();
        while q.scheduled {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .drained
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Every channel made, to drain before the process exits.
fn registry() -> &'static Mutex<Vec<std::sync::Weak<Channel>>> {
    static ALL: OnceLock<Mutex<Vec<std::sync::Weak<Channel>>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

pub(super) fn register(channel: &Arc<Channel>) {
    let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|c| c.strong_count() > 0);
    all.push(Arc::downgrade(channel));
}

/// Waits (at most `timeout`) until every guest's output and every host line queued so far
/// has been written; a program calls it before it exits. False if something was left.
pub fn drain_output(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let all: Vec<_> = (registry().lock().unwrap_or_else(|e| e.into_inner()).iter())
        .filter_map(|c| c.upgrade())
        .collect();
    all.iter().all(|c| c.wait_drained(deadline))
}

/// Prints one of the host's own stderr lines about guests (denials, their summaries, `up`'s
/// events): bounded like a guest's stderr, so a flood of them never blocks a guest's thread.
pub fn host_line(line: &str) {
    push_host_line(&super::json::shape(None, line));
}

/// [`host_line`] about guest `guest` (named in the line's JSON form).
pub fn guest_line(guest: &str, line: &str) {
    push_host_line(&super::json::shape(Some(guest), line));
}

fn push_host_line(line: &str) {
    static HOST: OnceLock<Arc<Channel>> = OnceLock::new();
    let channel = HOST.get_or_init(|| {
        let channel = Channel::new(Fd::Stderr, "host".into(), "stderr");
        register(&channel);
        channel
    });
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    channel.push(Bytes::from(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_drops_whole_lines_and_counts_them() {
        let channel = Channel::new(Fd::Stderr, "guest `t`".into(), "stderr");
        // Not scheduled on a real writer: mark it scheduled so push only queues.
        channel.lock().scheduled = true;
        let line = Bytes::from(format!("{}\n", "x".repeat(1023)));
        for _ in 0..(BUFFER_BOUND / 1024 + 10) {
            channel.push(line.clone());
        }
        let q = channel.lock();
        assert_eq!(q.bytes, BUFFER_BOUND);
        assert_eq!(q.dropped_lines, 10);
        assert!(q.full);
        drop(q);
        // Half a line fits no more: it and its rest are dropped, then counted as one line.
        channel.lock().full = false;
        channel.push(Bytes::from_static(b"half"));
        channel.push(Bytes::from_static(b" and the rest\n"));
        assert_eq!(channel.lock().dropped_lines, 11);
        assert!(channel.lock().chunks.iter().all(|c| c.ends_with(b"\n")));
    }
}
