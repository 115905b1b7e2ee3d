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
        self.make_room();
        self.buf.extend_from_slice(bytes);
    }

    /// Appends bytes read from the wire, taking ownership: when nothing is pending, `bytes`
    /// becomes the buffer as it is, without a copy (the usual case: a read that starts at a
    /// frame boundary).
    pub fn extend_owned(&mut self, bytes: Vec<u8>) {
        if self.buffered() == 0 {
            self.buf = bytes;
            self.start = 0;
        } else {
            self.extend(&bytes);
        }
    }

    /// Drops consumed bytes before appending: all of them when nothing is pending, or with a
    /// memmove once they are most of the buffer.
    fn make_room(&mut self) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Bytes received but not yet returned as a frame (or consumed).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed, or an error if
    /// the next header announces an oversized payload (checked as soon as the header is in,
    /// before any of the payload is buffered).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.next_len()? else {
            return Ok(None);
        };
        let Some(payload) = self.pending().get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(payload))
    }

    /// The payload length the next frame's header announces, as soon as the header is in
    /// (the payload may not be); an error if it is over the maximum.
    pub fn next_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.pending().get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("4-byte header")) as usize;
        if len > self.max {
            return Err(FrameError {
                announced: len as u64,
                max: self.max,
            });
        }
        Ok(Some(len))
    }

    /// How many pending bytes, from the start, are whole frames (headers included), and the
    /// oversized header that stopped the count if one did: for a server whose answer to a
    /// frame is the frame itself, which can pass them on without taking them apart.
    pub fn whole_frames(&self) -> (usize, Option<FrameError>) {
        let pending = self.pending();
        let mut whole = 0;
        while let Some(header) = pending.get(whole..whole + HEADER_LEN) {
            let len = u32::from_be_bytes(header.try_into().expect("4-byte header")) as usize;
            if len > self.max {
                let too_large = FrameError {
                    announced: len as u64,
                    max: self.max,
                };
                return (whole, Some(too_large));
            }
            if pending.len() - whole < HEADER_LEN + len {
                break;
            }
            whole += HEADER_LEN + len;
        }
        (whole, None)
    }

    /// The bytes received and not yet returned or consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Forgets the first `n` pending bytes: the caller handled them in place (relayed them).
    ///
    /// # Panics
    /// If fewer than `n` bytes are pending.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.buffered(), "consumed more than is pending");
        self.start += n;
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

    #[test]
    fn an_owned_read_at_a_frame_boundary_becomes_the_buffer() {
        let mut dec = FrameDecoder::default();
        let wire = encode_frame(b"adopted");
        let at = wire.as_ptr();
        dec.extend_owned(wire);
        assert_eq!(dec.pending().as_ptr(), at, "no copy");
        dec.extend_owned(encode_frame(b"appended"));
        assert_eq!(drain(&mut dec), [&b"adopted"[..], b"appended"]);
    }

    #[test]
    fn next_len_is_known_before_the_payload() {
        let mut dec = FrameDecoder::new(100);
        dec.extend(&[0, 0]);
        assert_eq!(dec.next_len(), Ok(None));
        dec.extend(&[0, 42, 1, 2]);
        assert_eq!(dec.next_len(), Ok(Some(42)));
        assert_eq!(dec.next_frame(), Ok(None));
        dec.extend(&frame_header(101));
        assert_eq!(dec.next_len(), Ok(Some(42)), "only the next header counts");
    }

    #[test]
    fn whole_frames_counts_up_to_the_first_incomplete_one() {
        let mut dec = FrameDecoder::new(10);
        assert_eq!(dec.whole_frames(), (0, None));
        dec.extend(&encode_frame(b"one"));
        dec.extend(&encode_frame(b""));
        assert_eq!(dec.whole_frames(), (11, None));
        dec.extend(&[0, 0, 0]);
        assert_eq!(dec.whole_frames(), (11, None), "an incomplete header");
        dec.extend(&[5, b't', b'h']);
        assert_eq!(dec.whole_frames(), (11, None), "an incomplete payload");
        dec.consume(11);
        dec.extend(b"ree");
        assert_eq!(dec.whole_frames(), (9, None));
        dec.consume(9);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn whole_frames_stops_at_an_oversized_header() {
        let mut dec = FrameDecoder::new(10);
        dec.extend(&encode_frame(b"fine"));
        dec.extend(&frame_header(11));
        dec.extend(b"and more");
        let too_large = FrameError {
            announced: 11,
            max: 10,
        };
        assert_eq!(dec.whole_frames(), (8, Some(too_large)));
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

        /// Relaying whole frames as they come (owned reads, `whole_frames`, `consume`) passes
        /// the bytes through unchanged, however they are cut.
        #[test]
        fn relaying_whole_frames_is_the_identity(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
            let mut dec = FrameDecoder::default();
            let mut relayed = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                dec.extend_owned(rest[..n].to_vec());
                rest = &rest[n..];
                let (whole, too_large) = dec.whole_frames();
                prop_assert!(too_large.is_none());
                relayed.extend_from_slice(&dec.pending()[..whole]);
                dec.consume(whole);
                i += 1;
            }
            prop_assert_eq!(relayed, wire);
            prop_assert_eq!(dec.buffered(), 0);
        }
    }
}
