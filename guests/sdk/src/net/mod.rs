//! Async sockets over WASI 0.2, safe to drop in any order.
//!
//! WASI 0.2 traps the whole instance if a socket is dropped while one of its streams or
//! pollables is alive ("resource has children"). Every type here owns its children in fields
//! declared before the socket (Rust drops fields in declaration order), and the split halves
//! of a [`TcpStream`] share one reference-counted connection, so the socket goes last no
//! matter which half a guest drops first.

pub mod addr;
mod tcp;
mod udp;

pub use tcp::{ReadHalf, TcpListener, TcpStream, WriteHalf};
pub use udp::{MAX_DATAGRAM, UdpSocket};

use std::io;
use wasip2::sockets::network::ErrorCode;

/// Maps a WASI socket error onto the `std::io` kind a Rust programmer would test for.
pub(crate) fn io_error(code: ErrorCode) -> io::Error {
    use io::ErrorKind as K;
    let kind = match code {
        ErrorCode::AccessDenied => K::PermissionDenied,
        ErrorCode::NotSupported => K::Unsupported,
        ErrorCode::InvalidArgument => K::InvalidInput,
        ErrorCode::OutOfMemory => K::OutOfMemory,
        ErrorCode::Timeout => K::TimedOut,
        ErrorCode::WouldBlock => K::WouldBlock,
        ErrorCode::AddressInUse => K::AddrInUse,
        ErrorCode::AddressNotBindable => K::AddrNotAvailable,
        ErrorCode::ConnectionRefused => K::ConnectionRefused,
        ErrorCode::ConnectionReset => K::ConnectionReset,
        ErrorCode::ConnectionAborted => K::ConnectionAborted,
        ErrorCode::RemoteUnreachable => K::HostUnreachable,
        ErrorCode::DatagramTooLarge => K::InvalidInput,
        _ => K::Other,
    };
    io::Error::new(kind, format!("{code:?}"))
}
