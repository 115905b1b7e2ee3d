//! Async sockets over WASI 0.3: the same types as the 0.2 backend's `net`, on `wasip3`.
//!
//! A 0.3 socket has no children that trap when it is dropped first (its streams and futures
//! live on their own), but the field order still drops streams before their socket, as in 0.2.

#[path = "../../net/addr.rs"]
pub mod addr;
mod tcp;
mod udp;

pub use tcp::{ReadHalf, TcpListener, TcpStream, WriteHalf};
pub use udp::{MAX_DATAGRAM, UdpSocket};

use std::io;
use wasip3::sockets::types::ErrorCode;

/// Maps a WASI socket error onto the `std::io` kind a Rust programmer would test for.
pub(crate) fn io_error(code: ErrorCode) -> io::Error {
    use io::ErrorKind as K;
    let kind = match &code {
        ErrorCode::AccessDenied => K::PermissionDenied,
        ErrorCode::NotSupported => K::Unsupported,
        ErrorCode::InvalidArgument => K::InvalidInput,
        ErrorCode::OutOfMemory => K::OutOfMemory,
        ErrorCode::Timeout => K::TimedOut,
        ErrorCode::AddressInUse => K::AddrInUse,
        ErrorCode::AddressNotBindable => K::AddrNotAvailable,
        ErrorCode::ConnectionRefused => K::ConnectionRefused,
        ErrorCode::ConnectionReset => K::ConnectionReset,
        ErrorCode::ConnectionAborted => K::ConnectionAborted,
        ErrorCode::ConnectionBroken => K::BrokenPipe,
        ErrorCode::RemoteUnreachable => K::HostUnreachable,
        ErrorCode::DatagramTooLarge => K::InvalidInput,
        _ => K::Other,
    };
    io::Error::new(kind, format!("{code:?}"))
}
