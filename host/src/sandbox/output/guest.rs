//! A guest's stdout or stderr as wasmtime-wasi sees it: every stream the guest opens on it
//! writes into one bounded [`Channel`] and never blocks, its lines passed through the
//! [`ReadyGuard`] first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::channel::{Channel, Fd, register};
use super::ready_guard::ReadyGuard;

/// Most bytes one `write` may carry (what `check-write` answers); more is a guest error.
const WRITE_BUDGET: usize = 64 * 1024;

/// A guest's stdout or stderr as wasmtime-wasi sees it: every stream the guest opens on it
/// writes into the same bounded channel.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    channel: Arc<Channel>,
    /// Whether the real descriptor the guest's stream is named after is a terminal.
    terminal: bool,
}

impl GuestOutput {
    /// `guest`'s `stream` ("stdout" or "stderr") into the host's descriptor `fd`.
    pub(crate) fn new(guest: &str, stream: &'static str, fd: Fd) -> GuestOutput {
        let channel = Channel::new(fd, format!("guest `{guest}`"), stream);
        register(&channel);
        let terminal = match fd {
            Fd::Stdout => std::io::IsTerminal::is_terminal(&io::stdout()),
            Fd::Stderr => std::io::IsTerminal::is_terminal(&io::stderr()),
        };
        GuestOutput { channel, terminal }
    }

    fn stream(&self) -> GuestStream {
        GuestStream {
            channel: self.channel.clone(),
            guard: ReadyGuard::default(),
        }
    }

    /// Waits (at most until `deadline`) for what the guest wrote so far to be written.
    pub(crate) fn wait_drained(&self, deadline: Instant) -> bool {
        self.channel.wait_drained(deadline)
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.stream())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.stream())
    }
}

/// One stream handle of the guest; never blocks.
struct GuestStream {
    channel: Arc<Channel>,
    guard: ReadyGuard,
}

impl GuestStream {
    fn put(&mut self, bytes: Bytes) {
        for piece in self.guard.feed(bytes) {
            self.channel.push(piece);
        }
    }
}

impl Drop for GuestStream {
    fn drop(&mut self) {
        if let Some(rest) = self.guard.finish() {
            self.channel.push(rest);
        }
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_BUDGET {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "write of {} bytes exceeds the {WRITE_BUDGET} check-write allowed",
                bytes.len()
            )));
        }
        self.put(bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(WRITE_BUDGET);
        self.get_mut().put(Bytes::copy_from_slice(&buf[..n]));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
