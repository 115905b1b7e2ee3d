//! Newline-delimited text over a TCP connection: the socket edge of [`crate::wire::LineDecoder`].
//!
//! Reads are bounded by [`Timeouts`] (idle 5 min, 30 s to complete a line once begun, by
//! default; see [`LineReader::with_timeouts`]): past one, `next_line` is a `TimedOut` error.

use std::io;

use sockbox_wire::{DEFAULT_MAX_LINE, LineDecoder};

use crate::net::ReadHalf;
use crate::timeouts::{Timeouts, Watchdog};

/// Most bytes asked of the host per read (the stream asks for less while lines are short).
const READ_MAX: usize = 16 * 1024;

/// Reads whole lines from the reading half of a connection.
pub struct LineReader {
    decoder: LineDecoder,
    closed: bool,
    watchdog: Watchdog,
    half: ReadHalf,
}

impl LineReader {
    /// Lines of up to 64 KiB ([`DEFAULT_MAX_LINE`]).
    pub fn new(half: ReadHalf) -> LineReader {
        LineReader::with_max_line(half, DEFAULT_MAX_LINE)
    }

    /// Lines of up to `max` bytes; a longer one is an error.
    pub fn with_max_line(half: ReadHalf, max: usize) -> LineReader {
        LineReader {
            decoder: LineDecoder::new(max),
            closed: false,
            watchdog: Watchdog::new(Timeouts::default()),
            half,
        }
    }

    /// Replaces the default [`Timeouts`] (idle 5 min, 30 s per line).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> LineReader {
        self.watchdog = Watchdog::new(timeouts);
        self
    }

    /// The next line without its `\n` or `\r\n`. When the peer closes, a last line without a
    /// newline is still returned, then `Ok(None)`. A line that is too long or not UTF-8 is an
    /// [`io::ErrorKind::InvalidData`] error; a timeout is `TimedOut`.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        loop {
            if self.closed {
                return self.decoder.finish().map_err(invalid);
            }
            if let Some(line) = self.decoder.next_line().map_err(invalid)? {
                self.watchdog.completed(self.decoder.buffered() > 0);
                return Ok(Some(line));
            }
            // Straight from the host's buffer into the decoder: no read buffer of our own.
            let read = self.half.input().read_vec(READ_MAX);
            let bytes = self.watchdog.guard(read).await?;
            self.closed = bytes.is_empty();
            if !self.closed {
                self.watchdog.received();
            }
            self.decoder.extend(&bytes);
        }
    }
}
