//! Length-prefixed frames over a TCP connection: the socket edge of [`crate::wire::FrameDecoder`].
//!
//! The built-in framed protocols (framing, rcmd) are request/response: every frame gets one
//! frame back, and an oversized header gets the error frame of CONTRACT.md before the
//! connection closes. [`FramedStream::answer_each`] is that whole loop, so a guest only says
//! how to answer one payload.

use std::io;

use sockbox_wire::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame};

use crate::net::TcpStream;

/// The payload of the frame sent before closing a connection whose header announced more
/// than the maximum.
pub const TOO_LARGE_REPLY: &[u8] = b"ERR frame too large";

/// Bytes asked of the host per read: large frames arrive in a few reads, small ones in one.
const READ_CHUNK: usize = 64 * 1024;

/// A TCP connection that speaks frames: `u32` big-endian length, then the payload.
pub struct FramedStream {
    decoder: FrameDecoder,
    chunk: Vec<u8>,
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
            chunk: vec![0; READ_CHUNK],
            stream,
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame's payload, however the bytes were split or glued on the wire.
    /// `Ok(None)` when the peer closed between frames. A header announcing more than the
    /// maximum is an [`io::ErrorKind::InvalidData`] error carrying a [`FrameError`] (see
    /// [`too_large`]); the peer closing in the middle of a frame is `UnexpectedEof`.
    pub async fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(payload) = self
                .decoder
                .next_frame()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(Some(payload));
            }
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                return match self.decoder.buffered() {
                    0 => Ok(None),
                    partial => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed {partial} bytes into a frame"),
                    )),
                };
            }
            self.decoder.extend(&self.chunk[..n]);
        }
    }

    /// Sends one frame holding `payload`.
    pub async fn write_frame(&self, payload: &[u8]) -> io::Result<()> {
        if u32::try_from(payload.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame cannot hold {} bytes", payload.len()),
            ));
        }
        // Header and payload in one write, so a small frame leaves as one segment.
        self.stream.write_all(&encode_frame(payload)).await
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
                Err(err) if too_large(&err).is_some() => {
                    self.write_frame(TOO_LARGE_REPLY).await?;
                    return self.stream.shutdown_write().await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// The oversized header behind an error from [`FramedStream::read_frame`], if that was it.
pub fn too_large(err: &io::Error) -> Option<&FrameError> {
    err.get_ref()?.downcast_ref::<FrameError>()
}
