//! A guest line that begins with `ready` (after blanks or control bytes) is written as
//! `(guest) ready ...`, so the first `ready` line of stdout (or of stderr under `learn`) is
//! always the host's: a guest cannot forge the line scripts wait for. Nothing else of an
//! honest guest's output changes.

use bytes::Bytes;

/// What a guest line that could be read as a `ready` line is prefixed with.
pub const GUEST_READY_PREFIX: &[u8] = b"(guest) ";

/// Undecided bytes at a line's start held back while they might still become `ready`.
const MAX_UNDECIDED: usize = 64;

/// Splits output into pieces of lines and prefixes a line that begins with `ready`.
#[derive(Default)]
pub(super) struct ReadyGuard {
    /// The start of the current line while it might still turn into `ready`.
    undecided: Vec<u8>,
    /// The current line's start was judged (its first bytes are out).
    decided: bool,
}

impl ReadyGuard {
    /// Pieces to queue, each within one line (ending with `\n`, or the line's unfinished part).
    pub(super) fn feed(&mut self, bytes: Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = memchr(b'\n', &rest).map_or(rest.len(), |i| i + 1);
            let piece = rest.split_to(end);
            let ends_line = piece.ends_with(b"\n");
            if self.decided {
                out.push(piece);
            } else {
                self.undecided.extend_from_slice(&piece);
                match judge(&self.undecided) {
                    Judgement::Undecided if !ends_line && self.undecided.len() <= MAX_UNDECIDED => {
                    }
                    judgement => {
                        let held = std::mem::take(&mut self.undecided);
                        // Still undecided: at the end of a line it never read `ready`;
                        // past the bound (blanks, say) it still could, so it is prefixed.
                        let prefix = match judgement {
                            Judgement::Ready => true,
                            Judgement::Other => false,
                            Judgement::Undecided => !ends_line,
                        };
                        let mut bytes = Vec::with_capacity(held.len() + GUEST_READY_PREFIX.len());
                        if prefix {
                            bytes.extend_from_slice(GUEST_READY_PREFIX);
                        }
                        bytes.extend_from_slice(&held);
                        out.push(Bytes::from(bytes));
                        self.decided = true;
                    }
                }
            }
            if ends_line {
                self.decided = false;
            }
        }
        out
    }

    /// What is still held back when the stream closes.
    pub(super) fn finish(&mut self) -> Option<Bytes> {
        let held = std::mem::take(&mut self.undecided);
        (!held.is_empty()).then(|| Bytes::from(held))
    }
}

enum Judgement {
    Ready,
    Other,
    Undecided,
}

/// Whether a line that begins with `start` reads as a `ready` line: its first word after
/// blanks and control bytes (anything a parser might trim) begins with `ready`.
fn judge(start: &[u8]) -> Judgement {
    let word = match start.iter().position(|&b| !is_blank_byte(b)) {
        Some(i) => &start[i..],
        None => return Judgement::Undecided,
    };
    const READY: &[u8] = b"ready";
    if word.starts_with(READY) {
        Judgement::Ready
    } else if READY.starts_with(word) {
        Judgement::Undecided
    } else {
        Judgement::Other
    }
}

fn is_blank_byte(b: u8) -> bool {
    b != b'\n' && (b.is_ascii_whitespace() || b.is_ascii_control())
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(writes: &[&str]) -> String {
        let mut guard = ReadyGuard::default();
        let mut out = Vec::new();
        for w in writes {
            for piece in guard.feed(Bytes::copy_from_slice(w.as_bytes())) {
                out.extend_from_slice(&piece);
            }
        }
        out.extend(guard.finish().unwrap_or_default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_that_read_as_ready_are_prefixed_and_nothing_else_changes() {
        assert_eq!(guarded(&["hello\nworld\n"]), "hello\nworld\n");
        assert_eq!(
            guarded(&["ready tcp 192.0.2.1:9\n"]),
            "(guest) ready tcp 192.0.2.1:9\n"
        );
        // Split across writes, after blanks and control bytes, in the middle of the output.
        assert_eq!(
            guarded(&["ok\nre", "ady udp 1.2.3.4:5\n"]),
            "ok\n(guest) ready udp 1.2.3.4:5\n"
        );
        assert_eq!(guarded(&[" \t\rready\n"]), "(guest)  \t\rready\n");
        assert_eq!(guarded(&["rea", "l\n"]), "real\n");
        assert_eq!(guarded(&["not ready\n"]), "not ready\n");
        assert_eq!(guarded(&["\n\n"]), "\n\n");
        // A partial line at the end is kept.
        assert_eq!(guarded(&["re"]), "re");
        assert_eq!(guarded(&["bin\0ary"]), "bin\0ary");
        // Blanks past the bound cannot hide a `ready` after them.
        let blanks = " ".repeat(100);
        let out = guarded(&[&blanks, "ready tcp 1.2.3.4:5\n"]);
        assert!(out.starts_with("(guest) "), "{out:?}");
    }
}
