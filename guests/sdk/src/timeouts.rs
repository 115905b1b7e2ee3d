//! Read and idle timeouts for a connection, so a client that sends nothing, or one byte a
//! second (slowloris), cannot hold a connection open forever.
//!
//! Two limits, checked together by one [`Watchdog`] per connection:
//! - **idle**: nothing received (and no write accepted by the host) for this long;
//! - **read**: a message (frame or line) begun but not completed within this long.
//!
//! The hot path stays free of timer work: a read notes the round's clock (read from the host
//! at most once per round) and moves the deadline with a store; the connection's single timer
//! is armed when a read first has to wait, and re-armed only when it fires early.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use crate::runtime::{Deadline, Instant, NEVER, now};

/// Idle timeout by default: 5 minutes without a byte received.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Read timeout by default: 30 seconds to complete a frame or line once begun.
pub const DEFAULT_READ: Duration = Duration::from_secs(30);

/// The timeouts of a connection; `None` turns one off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest time with nothing received (nor any write accepted by the host).
    pub idle: Option<Duration>,
    /// Longest time from a message's first byte to its last.
    pub read: Option<Duration>,
}

impl Default for Timeouts {
    /// [`DEFAULT_IDLE`] and [`DEFAULT_READ`].
    fn default() -> Timeouts {
        Timeouts {
            idle: Some(DEFAULT_IDLE),
            read: Some(DEFAULT_READ),
        }
    }
}

impl Timeouts {
    /// No timeouts at all (a connection may wait forever).
    pub const NONE: Timeouts = Timeouts {
        idle: None,
        read: None,
    };
}

/// Parses a timeout given as a guest argument: a duration such as `2s`, `500ms`, `5min` or
/// `1h 30m`; `off` (or `0`) for none. The error names what was wrong and the accepted forms.
pub fn parse_timeout(arg: &str) -> Result<Option<Duration>, String> {
    if arg == "off" || arg == "0" {
        return Ok(None);
    }
    match humantime::parse_duration(arg) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "`{arg}` is not a timeout ({e}); give a duration such as 30s, 500ms or 5min, or off"
        )),
    }
}

/// The timeouts of one connection, as a deadline its reads and writes are raced against.
pub(crate) struct Watchdog {
    timeouts: Timeouts,
    deadline: Deadline,
    /// When the last bytes came (or a write was accepted, or the connection opened).
    last_activity: Instant,
    /// When the message being received began, if one has.
    message_began: Option<Instant>,
}

impl Watchdog {
    pub(crate) fn new(timeouts: Timeouts) -> Watchdog {
        let mut watchdog = Watchdog {
            timeouts,
            deadline: Deadline::new(),
            last_activity: if timeouts == Timeouts::NONE { 0 } else { now() },
            message_began: None,
        };
        watchdog.update();
        watchdog
    }

    /// Bytes arrived: the connection is active, and a message has begun if none had.
    pub(crate) fn received(&mut self) {
        if self.timeouts == Timeouts::NONE {
            return;
        }
        let now = now();
        self.last_activity = now;
        self.message_began.get_or_insert(now);
        self.update();
    }

    /// A write was taken by the host: the peer is reading, the connection is not idle.
    pub(crate) fn wrote(&mut self) {
        if self.timeouts.idle.is_some() {
            self.last_activity = now();
            self.update();
        }
    }

    /// A message was completed; `more` says whether bytes of the next one are already in
    /// (they came with the last read, so it began then).
    pub(crate) fn completed(&mut self, more: bool) {
        self.message_began = more.then_some(self.last_activity);
        self.update();
    }

    fn update(&mut self) {
        let at = deadline(self.timeouts, self.last_activity, self.message_began);
        self.deadline.set(at);
    }

    /// Runs `io` unless the deadline passes first, which is a `TimedOut` error saying which
    /// limit it was.
    pub(crate) async fn guard<T>(
        &mut self,
        io: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        let mut io = pin!(io);
        poll_fn(|cx| {
            if let Poll::Ready(result) = io.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            self.deadline
                .poll_expired(cx)
                .map(|()| Err(self.timed_out()))
        })
        .await
    }

    fn timed_out(&self) -> io::Error {
        let read_expired = match (self.message_began, self.timeouts.read) {
            (Some(began), Some(limit)) => began.saturating_add(nanos(limit)) <= now(),
            _ => false,
        };
        let message = match (read_expired, self.timeouts) {
            (true, Timeouts { read: Some(t), .. }) => {
                format!("read timeout: a message begun was not completed within {t:?}")
            }
            (_, Timeouts { idle: Some(t), .. }) => {
                format!("idle timeout: nothing received for {t:?}")
            }
            _ => "timed out".to_string(),
        };
        io::Error::new(io::ErrorKind::TimedOut, message)
    }
}

/// When a connection times out: the idle limit after its last activity, or the read limit
/// after the start of the message it is receiving, whichever comes first.
fn deadline(timeouts: Timeouts, last_activity: Instant, message_began: Option<Instant>) -> Instant {
    let after = |from: Instant, limit: Option<Duration>| match limit {
        Some(limit) => from.saturating_add(nanos(limit)),
        None => NEVER,
    };
    let idle = after(last_activity, timeouts.idle);
    let read = message_began.map_or(NEVER, |began| after(began, timeouts.read));
    idle.min(read)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn the_earlier_limit_sets_the_deadline() {
        let both = Timeouts {
            idle: Some(Duration::from_secs(10)),
            read: Some(Duration::from_secs(3)),
        };
        // Between messages only the idle limit counts.
        assert_eq!(deadline(both, 100 * SEC, None), 110 * SEC);
        // A message begun at 100 s must end by 103 s, however recently a byte came.
        assert_eq!(deadline(both, 102 * SEC, Some(100 * SEC)), 103 * SEC);
        // A read limit longer than the idle one: the idle one comes first.
        let long_read = Timeouts {
            read: Some(Duration::from_secs(60)),
            ..both
        };
        assert_eq!(deadline(long_read, 102 * SEC, Some(100 * SEC)), 112 * SEC);
        assert_eq!(deadline(Timeouts::NONE, 5, Some(5)), NEVER);
        let huge = Timeouts {
            idle: Some(Duration::MAX),
            read: None,
        };
        assert_eq!(deadline(huge, 5, None), NEVER, "saturates, never wraps");
    }

    #[test]
    fn timeouts_parse_as_durations_or_off() {
        assert_eq!(parse_timeout("2s"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_timeout("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_timeout("5min"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parse_timeout("off"), Ok(None));
        assert_eq!(parse_timeout("0s"), Ok(None));
        let err = parse_timeout("soon").unwrap_err();
        assert!(err.contains("`soon`") && err.contains("30s"), "{err}");
        assert!(parse_timeout("10").is_err(), "a bare number has no unit");
    }
}
