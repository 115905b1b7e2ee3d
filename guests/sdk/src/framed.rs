//! Length-prefixed frames over a TCP connection: the socket edge of [`crate::wire::FrameDecoder`].
//!
//! The built-in framed protocols (framing, rcmd) are request/response: every frame gets one
//! frame back, and an oversized header gets the error frame of docs/contract.md before the
//! connection closes. [`FramedStream::answer_each`] is that whole loop, so a guest only says
//! how to answer one payload; [`FramedStream::echo_each`] is the loop of a guest whose answer
//! is the request itself, relayed without taking it apart.
//!
//! Bytes are copied as little as the host allows: a read's vector becomes the decoder's buffer
//! when it starts at a frame boundary, an answer is written with its header in one write
//! (copying at most one write's worth), and a relayed frame goes back from the buffer it was
//! read into.
//!
//! Every connection has [`Timeouts`] (idle 5 min, 30 s to complete a frame, by default; see
//! [`FramedStream::with_timeouts`]): past one, the loop ends with a `TimedOut` error and the
//! connection is closed without a reply. A frame begun is a request in hand
//! ([`crate::serve::InHand`]) until its answer is written, so a graceful shutdown answers it
//! before closing.

use std::io;

use sockbox_wire::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HEADER_LEN, encode_frame};

use crate::drain::InHand;
use crate::net::TcpStream;
use crate::timeouts::{Timeouts, Watchdog};

/// The payload of the frame sent before closing a connection whose header announced more
/// than the maximum.
pub const TOO_LARGE_REPLY: &[u8] = b"ERR frame too large";

/// Most bytes asked of the host per read: large frames arrive in a few reads, small ones in
/// one (the stream asks for less while frames are small).
const READ_MAX: usize = 64 * 1024;

/// What wasmtime takes per write.
const WRITE_MAX: usize = 64 * 1024;

/// Payload bytes gathered behind the header into one write.
const GATHER_MAX: usize = WRITE_MAX - HEADER_LEN;

/// A TCP connection that speaks frames: `u32` big-endian length, then the payload.
pub struct FramedStream {
    decoder: FrameDecoder,
    /// A header and the start of its payload, gathered for one write (kept for its capacity).
    gathered: Vec<u8>,
    watchdog: Watchdog,
    in_hand: InHand,
    stream: TcpStream,
}

impl FramedStream {
    /// Frames of up to 16 MiB ([`DEFAULT_MAX_FRAME`]).
    pub fn new(stream: TcpStream) -> FramedStream {
        FramedStream::with_max_frame(stream, DEFAULT_MAX_FRAME)
    }

    /// Frames of up to `max` payload bytes; a larger header is an error.
    pub fn with_max_frame(stream: TcpStream, max: usize) -> FramedStream {
        FramedStream {
            decoder: FrameDecoder::new(max),
            gathered: Vec::new(),
            watchdog: Watchdog::new(Timeouts::default()),
            in_hand: InHand::new(),
            stream,
        }
    }

    /// Replaces the default [`Timeouts`] (idle 5 min, 30 s per frame).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> FramedStream {
        self.watchdog = Watchdog::new(timeouts);
        self
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame's payload, however the bytes were split or glued on the wire.
    /// `Ok(None)` when the peer closed between frames. A header announcing more than the
    /// maximum is an [`io::ErrorKind::InvalidData`] error carrying a [`FrameError`] (see
    /// [`too_large`]); the peer closing in the middle of a frame is `UnexpectedEof`; a
    /// timeout is `TimedOut`. The frame is a request in hand until the next write.
    pub async fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(payload) = self
                .decoder
                .next_frame()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                self.watchdog.completed(self.decoder.buffered() > 0);
                return Ok(Some(payload));
            }
            if !self.read_more(0).await? {
                return match self.decoder.buffered() {
                    0 => Ok(None),
                    partial => Err(closed_into_a_frame(partial)),
                };
            }
        }
    }

    /// Sends one frame holding `payload`. Returns once the host has it, without waiting for
    /// it to be sent (see [`TcpStream::write_all`]).
    pub async fn write_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame cannot hold {} bytes", payload.len()),
            ));
        };
        // Header and payload in one write, so a small frame leaves as one segment; past what
        // one write takes, the rest goes from where it is.
        let (head, rest) = payload.split_at(payload.len().min(GATHER_MAX));
        self.gathered.clear();
        self.gathered.extend_from_slice(&len.to_be_bytes());
        self.gathered.extend_from_slice(head);
        let output = self.stream.output();
        self.watchdog
            .guard(output.write_all(&self.gathered))
            .await?;
        if !rest.is_empty() {
            self.watchdog.guard(output.write_all(rest)).await?;
        }
        output.flush()?;
        self.watchdog.wrote();
        self.in_hand.set(self.decoder.buffered() > 0);
        Ok(())
    }

    /// Answers every frame with one frame holding `answer(payload)`, until the peer closes.
    /// On an oversized header it sends [`TOO_LARGE_REPLY`] as a frame, half-closes and returns
    /// `Ok`: the stream cannot be resynchronised, but that is the client's error, not ours.
    pub async fn answer_each(
        mut self,
        mut answer: impl FnMut(Vec<u8>) -> Vec<u8>,
    ) -> io::Result<()> {
        loop {
            match self.read_frame().await {
                Ok(Some(payload)) => self.write_frame(&answer(payload)).await?,
                Ok(None) => return Ok(()),
                Err(err) if too_large(&err).is_some() => return self.refuse().await,
                Err(err) => return Err(err),
            }
        }
    }

    /// Answers every frame with one frame holding the same payload, until the peer closes:
    /// [`FramedStream::answer_each`] with the identity, without taking frames apart. Frames
    /// go back from the buffer they were read into, as many in one write as arrived.
    ///
    /// A frame larger than one write goes back in the same writes as an answer would (see
    /// [`FramedStream::write_frame`]), the first as soon as it is in and the rest once the
    /// frame is whole: smaller pieces as they arrive would leave in segments of any size,
    /// and without TCP_NODELAY (WASI has no such option) a short segment holds the next one
    /// back until the peer's delayed ACK. A peer that closes in the middle of such a frame
    /// gets back its first write's worth.
    pub async fn echo_each(mut self) -> io::Result<()> {
        // Bytes of the frame whose first write went ahead, still to come.
        let mut rest = 0;
        loop {
            if rest > 0 && self.decoder.buffered() >= rest {
                self.send_pending(rest).await?;
                rest = 0;
                self.frames_answered();
            }
            if rest == 0 {
                let (whole, too_large) = self.decoder.whole_frames();
                if whole > 0 {
                    self.send_pending(whole).await?;
                    self.frames_answered();
                }
                if too_large.is_some() {
                    return self.refuse().await;
                }
                if let Ok(Some(len)) = self.decoder.next_len()
                    && HEADER_LEN + len > WRITE_MAX
                    && self.decoder.buffered() >= WRITE_MAX
                {
                    self.send_pending(WRITE_MAX).await?;
                    rest = HEADER_LEN + len - WRITE_MAX;
                    continue;
                }
            }
            if !self.read_more(rest).await? {
                return match (rest, self.decoder.buffered()) {
                    (0, 0) => Ok(()),
                    (0, partial) => Err(closed_into_a_frame(partial)),
                    (rest, got) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed {} bytes short of a frame's end", rest - got),
                    )),
                };
            }
        }
    }

    /// Reads what has arrived into the decoder; `false` at end of stream. `rest` is what is
    /// still to come of a frame partly sent already. Once the size of the frame being read
    /// is known, asks for no more than it still needs (wasmtime zero-fills every byte asked
    /// for) and takes its end as a pause in the stream (see `InputStream::read_vec_to_end`).
    async fn read_more(&mut self, rest: usize) -> io::Result<bool> {
        let frame = if rest > 0 {
            rest
        } else {
            match self.decoder.next_len() {
                Ok(Some(len)) => HEADER_LEN + len,
                _ => 0,
            }
        };
        let input = self.stream.input();
        let bytes = match frame.saturating_sub(self.decoder.buffered()) {
            0 => self.watchdog.guard(input.read_vec(READ_MAX)).await?,
            missing => self.watchdog.guard(input.read_vec_to_end(missing)).await?,
        };
        if bytes.is_empty() {
            return Ok(false);
        }
        self.watchdog.received();
        self.in_hand.set(true);
        self.decoder.extend_owned(bytes);
        Ok(true)
    }

    /// Whole frames went back: the next one, if begun, counts from now.
    fn frames_answered(&mut self) {
        let more = self.decoder.buffered() > 0;
        self.watchdog.completed(more);
        self.in_hand.set(more);
    }

    /// Writes the first `n` pending bytes as they are, asks the host to send them, and
    /// forgets them.
    async fn send_pending(&mut self, n: usize) -> io::Result<()> {
        let output = self.stream.output();
        self.watchdog
            .guard(output.write_all(&self.decoder.pending()[..n]))
            .await?;
        output.flush()?;
        self.watchdog.wrote();
        self.decoder.consume(n);
        Ok(())
    }

    /// The answer to an oversized header: the error frame, then a half-close (bounded by the
    /// timeouts, for a peer that reads nothing).
    async fn refuse(&mut self) -> io::Result<()> {
        let stream = &self.stream;
        self.watchdog
            .guard(async {
                stream.write_all(&encode_frame(TOO_LARGE_REPLY)).await?;
                stream.shutdown_write().await
            })
            .await
    }
}

/// The oversized header behind an error from [`FramedStream::read_frame`], if that was it.
pub fn too_large(err: &io::Error) -> Option<&FrameError> {
    err.get_ref()?.downcast_ref::<FrameError>()
}

fn closed_into_a_frame(bytes: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("peer closed {bytes} bytes into a frame"),
    )
}
