//! The frame decoder fed any bytes, cut any way: it never panics, the frames it returns are
//! the stream's own bytes (re-encoded, they are a prefix of it), no frame is over the maximum,
//! an oversized header stops it at the right place, and the relaying API (`whole_frames`,
//! `consume`) agrees with `next_frame` byte for byte.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sockbox_wire::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HEADER_LEN, encode_frame};

#[derive(Arbitrary, Debug)]
enum Max {
    /// Small limits, so that the fuzzer meets them.
    Small(u8),
    Medium(u16),
    Default,
}

#[derive(Arbitrary, Debug)]
enum Wire {
    /// Whatever bytes: mostly absurd headers.
    Raw(Vec<u8>),
    /// Well-formed frames followed by any tail, so that long runs of good frames are common.
    Frames(Vec<Vec<u8>>, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    max: Max,
    /// Chunk lengths (cycled) and whether the chunk is handed over as an owned read.
    cuts: Vec<(u8, bool)>,
    wire: Wire,
}

fuzz_target!(|input: Input| {
    let max = match input.max {
        Max::Small(n) => usize::from(n),
        Max::Medium(n) => usize::from(n),
        Max::Default => DEFAULT_MAX_FRAME,
    };
    let wire = match input.wire {
        Wire::Raw(bytes) => bytes,
        Wire::Frames(payloads, tail) => {
            let mut wire: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
            wire.extend(tail);
            wire
        }
    };
    let chunks = cut(&wire, &input.cuts);

    // `next_frame`, draining after every chunk as a server would.
    let mut dec = FrameDecoder::new(max);
    let mut reencoded = Vec::new();
    let mut fed = 0;
    let mut error = None;
    for (chunk, owned) in &chunks {
        if *owned {
            dec.extend_owned(chunk.to_vec());
        } else {
            dec.extend(chunk);
        }
        fed += chunk.len();
        loop {
            let announced = dec.next_len();
            match dec.next_frame() {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= max, "frame over the maximum");
                    assert_eq!(announced, Ok(Some(payload.len())), "next_len disagrees");
                    reencoded.extend(encode_frame(&payload));
                }
                Ok(None) => {
                    assert!(matches!(announced, Ok(None) | Ok(Some(_))));
                    break;
                }
                Err(e) => {
                    assert_eq!(announced, Err(e.clone()), "next_len disagrees");
                    error = Some(e);
                    break;
                }
            }
        }
        assert_eq!(
            reencoded.len() + dec.buffered(),
            fed,
            "bytes lost or invented"
        );
        if error.is_some() {
            break;
        }
    }
    assert_eq!(
        reencoded,
        wire[..reencoded.len()],
        "frames are not the input's prefix"
    );
    assert_eq!(dec.pending(), &wire[reencoded.len()..fed]);

    match &error {
        Some(e) => {
            // The header the error names is the one right after the last good frame.
            let header = &wire[reencoded.len()..reencoded.len() + HEADER_LEN];
            let len = u32::from_be_bytes(header.try_into().unwrap());
            assert_eq!(
                *e,
                FrameError {
                    announced: u64::from(len),
                    max
                }
            );
            assert!(usize::try_from(len).unwrap() > max);
            assert!(e.to_string().contains("frame too large"));
            // The decoder stays stopped: the stream cannot be resynchronised.
            assert_eq!(dec.next_frame(), Err(e.clone()));
            assert_eq!(dec.whole_frames(), (0, Some(e.clone())));
        }
        None => {
            // All was fed and what is left is an incomplete frame.
            assert_eq!(fed, wire.len());
            assert_eq!(dec.whole_frames(), (0, None));
            let rest = dec.pending();
            if rest.len() >= HEADER_LEN {
                let len = u32::from_be_bytes(rest[..HEADER_LEN].try_into().unwrap());
                assert!(rest.len() < HEADER_LEN + len as usize);
            }
        }
    }

    // The relaying API on the same chunks passes on exactly the same bytes.
    let mut relay = FrameDecoder::new(max);
    let mut relayed = Vec::new();
    let mut relay_error = None;
    for (chunk, owned) in &chunks {
        if *owned {
            relay.extend_owned(chunk.to_vec());
        } else {
            relay.extend(chunk);
        }
        let (whole, too_large) = relay.whole_frames();
        relayed.extend_from_slice(&relay.pending()[..whole]);
        relay.consume(whole);
        if too_large.is_some() {
            relay_error = too_large;
            break;
        }
    }
    assert_eq!(relayed, reencoded, "relaying and decoding disagree");
    assert_eq!(relay_error, error);
});

/// `wire` in chunks of the given lengths (cycled; 0 counts as 1), the last one whatever is left.
fn cut<'a>(wire: &'a [u8], cuts: &[(u8, bool)]) -> Vec<(&'a [u8], bool)> {
    if cuts.is_empty() {
        return vec![(wire, false)];
    }
    let mut chunks = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let (len, owned) = cuts[i % cuts.len()];
        let n = usize::from(len).max(1).min(rest.len());
        chunks.push((&rest[..n], owned));
        rest = &rest[n..];
        i += 1;
    }
    chunks
}
