//! The line decoder fed any bytes, cut any way: it never panics, every line it returns is the
//! stream's own bytes up to a newline (re-joined with what it stripped, they are a prefix of
//! the stream), no line is over the maximum, and how the bytes were cut changes nothing: the
//! answers are those of the whole stream decoded in one piece.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sockbox_wire::{DEFAULT_MAX_LINE, LineDecoder, LineError};

#[derive(Arbitrary, Debug)]
enum Max {
    /// Small limits, so that the fuzzer meets them.
    Small(u8),
    Medium(u16),
    Default,
}

#[derive(Arbitrary, Debug)]
enum Wire {
    /// Whatever bytes.
    Raw(Vec<u8>),
    /// Lines ended by `\n` or `\r\n`, then any tail: long runs of good lines are common.
    Lines(Vec<(String, bool)>, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    max: Max,
    /// Chunk lengths, cycled.
    cuts: Vec<u8>,
    wire: Wire,
}

/// What a caller sees, in order.
#[derive(Debug, PartialEq)]
enum Event {
    Line(String),
    Error(LineError),
    /// `finish` at the end: the unterminated tail.
    Tail(Result<Option<String>, LineError>),
}

fuzz_target!(|input: Input| {
    let max = match input.max {
        Max::Small(n) => usize::from(n),
        Max::Medium(n) => usize::from(n),
        Max::Default => DEFAULT_MAX_LINE,
    };
    let wire = match input.wire {
        Wire::Raw(bytes) => bytes,
        Wire::Lines(lines, tail) => {
            let mut wire = Vec::new();
            for (line, crlf) in lines {
                wire.extend(line.as_bytes());
                wire.extend(if crlf { &b"\r\n"[..] } else { b"\n" });
            }
            wire.extend(tail);
            wire
        }
    };

    let whole = decode(&wire, &[], max);
    let chunked = decode(&wire, &input.cuts, max);
    assert_eq!(
        whole, chunked,
        "the answer depends on how the bytes were cut"
    );
    check_against_stream(&wire, &whole, max);
});

/// Feeds `wire` in chunks (one piece if `cuts` is empty), draining after each as a server
/// would, up to the first `TooLong`.
fn decode(wire: &[u8], cuts: &[u8], max: usize) -> Vec<Event> {
    let mut dec = LineDecoder::new(max);
    let mut events = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let n = match cuts {
            [] => rest.len(),
            _ => usize::from(cuts[i % cuts.len()]).max(1).min(rest.len()),
        };
        dec.extend(&rest[..n]);
        rest = &rest[n..];
        i += 1;
        loop {
            match dec.next_line() {
                Ok(Some(line)) => events.push(Event::Line(line)),
                Ok(None) => break,
                Err(e) => {
                    // A line over the maximum ends what can be compared: the stream decoded
                    // in one piece reports it once its newline is in, a chunked one may
                    // report it earlier, and a server hangs up either way.
                    let stop = matches!(e, LineError::TooLong { .. });
                    events.push(Event::Error(e));
                    if stop {
                        return events;
                    }
                }
            }
        }
    }
    events.push(Event::Tail(dec.finish()));
    events
}

/// The events against the stream itself: each line is the bytes up to the next `\n`, less the
/// `\n` and one `\r` before it.
fn check_against_stream(wire: &[u8], events: &[Event], max: usize) {
    let mut at = 0;
    for event in events {
        match event {
            Event::Line(line) => {
                assert!(line.len() <= max, "line over the maximum");
                let nl = at + line.len();
                let mut end = nl;
                if wire.get(end) == Some(&b'\r') {
                    end += 1;
                }
                assert_eq!(&wire[at..nl], line.as_bytes(), "line is not the input");
                assert_eq!(wire.get(end), Some(&b'\n'), "line not ended by a newline");
                assert!(!wire[at..nl].contains(&b'\n'));
                at = end + 1;
            }
            Event::Error(LineError::NotUtf8) => {
                let nl = at + wire[at..].iter().position(|&b| b == b'\n').unwrap();
                let line = wire[at..nl].strip_suffix(b"\r").unwrap_or(&wire[at..nl]);
                assert!(line.len() <= max);
                assert!(std::str::from_utf8(line).is_err());
                at = nl + 1;
            }
            Event::Error(LineError::TooLong { max: m }) => {
                assert_eq!(*m, max);
                // The line (up to its newline if any, less a `\r\n`) is over the maximum.
                let line = match wire[at..].iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        let line = &wire[at..at + pos];
                        line.strip_suffix(b"\r").unwrap_or(line)
                    }
                    None => &wire[at..],
                };
                assert!(
                    line.len() > max,
                    "TooLong for a line of {} bytes",
                    line.len()
                );
                return;
            }
            Event::Tail(tail) => {
                let rest = &wire[at..];
                assert!(!rest.contains(&b'\n'));
                match tail {
                    Ok(None) => assert!(rest.is_empty()),
                    Ok(Some(s)) => assert_eq!(s.as_bytes(), rest),
                    Err(e) => {
                        assert_eq!(*e, LineError::NotUtf8);
                        assert!(std::str::from_utf8(rest).is_err());
                    }
                }
                at = wire.len();
            }
        }
    }
    assert_eq!(at, wire.len(), "bytes left unaccounted for");
}
