//! Length-prefixed frames: a big-endian `u32` payload length, then the payload
//! (Python's `struct.pack('!I', n) + payload`), the classic fix for TCP's sticky packets.

use std::fmt;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The largest payload accepted unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The header announcing a payload of `len` bytes.
///
/// # Panics
/// If `len` does not fit in a `u32`; frames that large cannot be expressed on the wire.
pub fn frame_header(len: usize) -> [u8; HEADER_LEN] {
    u32::try_from(len)
        .expect("frame payload larger than u32::MAX")
        .to_be_bytes()
}

/// One whole frame: header and payload.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&frame_header(payload.len()));
    out.extend_from_slice(payload);
    out
}

/// A header announced more than the decoder accepts; the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The length the header announced.
    pub announced: u64,
    /// The configured maximum.
    pub max: usize,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame too large: header announces {} bytes, the maximum is {}",
            self.announced, self.max
        )
    }
}

impl std::error::Error for FrameError {}

/// Reassembles frames from bytes as they arrive, however they were split or glued.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`; compacted lazily to avoid a memmove per frame.
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that rejects payloads larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Appends bytes read from the wire.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed, or an error if
    /// the next header announces an oversized payload (checked as soon as the header is in,
    /// before any of the payload is buffered).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("4-byte header")) as usize;
        if len > self.max {
            return Err(FrameError {
                announced: len as u64,
                max: self.max,
            });
        }
        let Some(payload) = pending.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(dec: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(frame) = dec.next_frame().unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(frame_header(0x0102_0304), [1, 2, 3, 4]);
        assert_eq!(encode_frame(b"hi"), [0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let mut dec = FrameDecoder::default();
        dec.extend(&encode_frame(b""));
        assert_eq!(drain(&mut dec), vec![Vec::<u8>::new()]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn glued_frames_come_out_one_by_one() {
        let mut wire = Vec::new();
        for i in 0..100u32 {
            wire.extend(encode_frame(format!("frame {i}").as_bytes()));
        }
        let mut dec = FrameDecoder::default();
        dec.extend(&wire);
        let frames = drain(&mut dec);
        assert_eq!(frames.len(), 100);
        assert_eq!(frames[42], b"frame 42");
    }

    #[test]
    fn split_byte_by_byte() {
        let wire = encode_frame(b"hello, sticky world");
        let mut dec = FrameDecoder::default();
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(dec.next_frame().unwrap(), None, "early frame at byte {i}");
            dec.extend(&[*b]);
        }
        assert_eq!(dec.next_frame().unwrap().unwrap(), b"hello, sticky world");
    }

    #[test]
    fn oversized_header_is_rejected_before_the_payload() {
        let mut dec = FrameDecoder::new(10);
        dec.extend(&frame_header(11));
        let err = dec.next_frame().unwrap_err();
        assert_eq!(
            err,
            FrameError {
                announced: 11,
                max: 10
            }
        );
        assert!(err.to_string().contains("frame too large"));
    }

    #[test]
    fn max_sized_frame_is_accepted() {
        let mut dec = FrameDecoder::new(10);
        dec.extend(&encode_frame(&[7; 10]));
        assert_eq!(dec.next_frame().unwrap().unwrap(), vec![7; 10]);
    }

    proptest! {
        /// Any payloads, cut into any chunks, come back whole and in order.
        #[test]
        fn any_split_roundtrips(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
            let mut dec = FrameDecoder::default();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                dec.extend(&rest[..n]);
                rest = &rest[n..];
                got.extend(drain(&mut dec));
                i += 1;
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(dec.buffered(), 0);
        }
    }
}
