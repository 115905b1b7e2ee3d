//! Newline-delimited text (chat): bytes in, whole lines out, with a cap so a client that never
//! sends `\n` cannot grow a buffer without bound.

use std::fmt;

/// The longest line accepted unless configured otherwise (64 KiB).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Why a line could not be returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// More than the maximum arrived without a newline.
    TooLong { max: usize },
    /// The line is not UTF-8.
    NotUtf8,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { max } => write!(f, "line longer than {max} bytes"),
            LineError::NotUtf8 => f.write_str("line is not valid UTF-8"),
        }
    }
}

impl std::error::Error for LineError {}

/// Splits a byte stream into lines; `\n` and `\r\n` both end a line and are not returned.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// How far `buf` is known to hold no newline, so each byte is scanned once.
    scanned: usize,
    max: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder that rejects lines longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// Appends bytes read from the wire.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as a line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole line, `Ok(None)` if more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<String>, LineError> {
        let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = self.buf.len();
            // A trailing `\r` may be the first half of a `\r\n`, which is not part of the
            // line: counting it would refuse a line of exactly `max` bytes cut after its `\r`.
            let line_len = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
            if line_len > self.max {
                return Err(LineError::TooLong { max: self.max });
            }
            return Ok(None);
        };
        let end = self.scanned + pos;
        let mut line: Vec<u8> = self.buf.drain(..=end).collect();
        self.scanned = 0;
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| LineError::NotUtf8)
    }

    /// What is left once the peer closed: a final line without a newline, if any.
    pub fn finish(&mut self) -> Result<Option<String>, LineError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buf);
        String::from_utf8(rest)
            .map(Some)
            .map_err(|_| LineError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_split_and_glued() {
        let mut dec = LineDecoder::default();
        dec.extend(b"al");
        assert_eq!(dec.next_line().unwrap(), None);
        dec.extend(b"ice\nhello\r\nwor");
        assert_eq!(dec.next_line().unwrap().as_deref(), Some("alice"));
        assert_eq!(dec.next_line().unwrap().as_deref(), Some("hello"));
        assert_eq!(dec.next_line().unwrap(), None);
        dec.extend(b"ld\n");
        assert_eq!(dec.next_line().unwrap().as_deref(), Some("world"));
        assert_eq!(dec.finish().unwrap(), None);
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let mut dec = LineDecoder::default();
        dec.extend(b"bye");
        assert_eq!(dec.next_line().unwrap(), None);
        assert_eq!(dec.finish().unwrap().as_deref(), Some("bye"));
    }

    #[test]
    fn too_long_without_newline_is_an_error() {
        let mut dec = LineDecoder::new(4);
        dec.extend(b"12345");
        assert_eq!(dec.next_line(), Err(LineError::TooLong { max: 4 }));
    }

    /// Found by the `line_decoder` fuzz target: a `\r\n` split between two reads made a line
    /// of exactly the maximum too long, while the same bytes in one read were accepted.
    #[test]
    fn fuzz_regression_crlf_split_after_a_line_at_the_limit() {
        let mut dec = LineDecoder::new(0);
        dec.extend(b"\r");
        assert_eq!(dec.next_line(), Ok(None));
        dec.extend(b"\n");
        assert_eq!(dec.next_line().unwrap().as_deref(), Some(""));

        let mut dec = LineDecoder::new(4);
        dec.extend(b"abcd\r");
        assert_eq!(dec.next_line(), Ok(None));
        dec.extend(b"\n");
        assert_eq!(dec.next_line().unwrap().as_deref(), Some("abcd"));
        // Without the `\n`, one byte more than the maximum is still refused.
        dec.extend(b"abcd\r\r");
        assert_eq!(dec.next_line(), Err(LineError::TooLong { max: 4 }));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut dec = LineDecoder::default();
        dec.extend(b"\xff\xfe\n");
        assert_eq!(dec.next_line(), Err(LineError::NotUtf8));
    }

    proptest! {
        /// Any lines, ended by `\n` or `\r\n` and cut into any chunks, come back whole and in
        /// order, and an unterminated last line comes back from `finish`.
        #[test]
        fn any_split_roundtrips(
            lines in prop::collection::vec(("[^\r\n]{0,40}", any::<bool>()), 0..20),
            tail in "[^\r\n]{0,40}",
            cuts in prop::collection::vec(1usize..16, 1..20),
        ) {
            let mut wire = Vec::new();
            for (line, crlf) in &lines {
                wire.extend_from_slice(line.as_bytes());
                wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
            wire.extend_from_slice(tail.as_bytes());
            let mut dec = LineDecoder::default();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                dec.extend(&rest[..n]);
                rest = &rest[n..];
                while let Some(line) = dec.next_line().unwrap() {
                    got.push(line);
                }
                i += 1;
            }
            let want: Vec<String> = lines.into_iter().map(|(line, _)| line).collect();
            prop_assert_eq!(got, want);
            let last = dec.finish().unwrap();
            prop_assert_eq!(last, (!tail.is_empty()).then_some(tail));
        }
    }
}
