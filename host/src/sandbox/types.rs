//! What a sandbox reports to its user: the transports, the sockets a guest serves on, and how
//! a guest's run ended. Plain values, so every layer above can name them.

use std::fmt;
use std::net::SocketAddr;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A stream socket: `--listen`, `--connect`.
    Tcp,
    /// A datagram socket: `--udp`, `--udp-connect`.
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// A socket the guest serves on, with its actual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadySocket {
    /// Whether it listens for connections or receives datagrams.
    pub transport: Transport,
    /// The address it is bound to, with the real port when the grant said `:0`.
    pub addr: SocketAddr,
}

impl fmt::Display for ReadySocket {
    /// The contract's `ready` line body: `tcp 127.0.0.1:7000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)
    }
}

/// How a guest's run ended.
#[derive(Debug)]
pub enum GuestExit {
    /// `run` returned success (or the guest exited with status 0).
    Clean,
    /// The guest exited with a non-zero status.
    Status(i32),
    /// A trap, a panic or a host error; the message carries the wasm backtrace.
    Trapped(anyhow::Error),
    /// It did not stop within the grace period and was killed.
    Killed,
}

impl GuestExit {
    /// It ended as a well-behaved guest does: `run` returned success or exit status 0.
    pub fn is_clean(&self) -> bool {
        matches!(self, GuestExit::Clean)
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestExit::Clean => f.write_str("exited cleanly"),
            GuestExit::Status(code) => write!(f, "exited with status {code}"),
            // `{:#}`: the message and its causes, never the host's backtrace (see `errors`).
            GuestExit::Trapped(err) => write!(f, "failed: {err:#}"),
            GuestExit::Killed => f.write_str("did not stop within the grace period and was killed"),
        }
    }
}
