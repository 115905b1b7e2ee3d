//! Setting `SO_REUSEPORT` on a socket wasmtime-wasi made, so the instances of one guest can
//! share each granted port (`--instances N`).
//!
//! Every instance runs its own accept loop on its own socket bound to the same address with
//! `SO_REUSEPORT`, and the kernel spreads new clients over them, so N instances use N cores with
//! no hand-off between them. The option must be set on every socket before it binds, but
//! wasmtime-wasi creates the guest's sockets itself and exposes neither their descriptors nor a
//! creation hook. So the host finds the descriptor of the guest's new, unbound socket: under a
//! process-wide lock it sets the socket's hop limit (through the WASI API) to a random value,
//! keeps the unbound sockets of this process that carry it, and repeats with other random
//! values until exactly one is left. Guests can set hop limits on their own sockets too, but
//! cannot see or predict these values, so no socket of theirs follows the sequence. (A
//! socket-creation hook in wasmtime-wasi would make this unnecessary.)
//!
//! Which guest may share which address is `ports.rs`'s; the hooks that call this are in
//! `link/sockets.rs` (creation) and `link/bind.rs` (a UDP bind to port 0).

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;

use anyhow::{Result, anyhow, bail};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::p3::bindings::sockets::types as p3;
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// Rounds of random hop limits before a single remaining socket is taken as the one marked.
/// Each round leaves a socket not following the sequence in by chance 1/254 at most.
const MIN_ROUNDS: usize = 3;
/// Rounds after which more than one candidate is an error rather than bad luck.
const MAX_ROUNDS: usize = 8;

/// Held while a socket carries a mark, so two guests never mark at once.
static MARKING: Mutex<()> = Mutex::new(());

/// Sets `SO_REUSEPORT` on the guest's new, unbound TCP socket `rep` (called by the socket
/// constructor in `link/sockets.rs` when the guest shares its ports).
pub(crate) fn share_tcp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    set_reuseport(find_tcp(view, rep)?, true)
}

/// [`share_tcp`] for a UDP socket.
pub(crate) fn share_udp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    set_reuseport(find_udp(view, rep)?, true)
}

pub(crate) fn set_reuseport(fd: RawFd, on: bool) -> Result<()> {
    // SAFETY: `fd` is the socket of a resource in the store we hold exclusively (see
    // `find_socket`), so it stays open until the hook that found it returns.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::net::sockopt::set_socket_reuseport(fd, on)?;
    Ok(())
}

/// [`share_tcp`] for a WASI 0.3 TCP socket (`link/p3/sockets.rs`).
pub(crate) fn share_tcp_p3(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = || Resource::<wasmtime_wasi::sockets::TcpSocket>::new_borrow(rep);
        let before = p3::HostTcpSocket::get_hop_limit(view, this()).map_err(p3_error)?;
        p3::HostTcpSocket::set_hop_limit(view, this(), hops).map_err(p3_error)?;
        Ok(before)
    };
    set_reuseport(
        find_socket(rustix::net::SocketType::STREAM, &mut mark)?,
        true,
    )
}

/// [`find_udp`] for a WASI 0.3 UDP socket (`link/p3/bind.rs`).
pub(crate) fn find_udp_p3(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<RawFd> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = || Resource::<wasmtime_wasi::sockets::UdpSocket>::new_borrow(rep);
        let before = p3::HostUdpSocket::get_unicast_hop_limit(view, this()).map_err(p3_error)?;
        p3::HostUdpSocket::set_unicast_hop_limit(view, this(), hops).map_err(p3_error)?;
        Ok(before)
    };
    find_socket(rustix::net::SocketType::DGRAM, &mut mark)
}

/// [`share_udp`] for a WASI 0.3 UDP socket.
pub(crate) fn share_udp_p3(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    set_reuseport(find_udp_p3(view, rep)?, true)
}

fn p3_error(err: wasmtime_wasi::p3::sockets::SocketError) -> anyhow::Error {
    match err.downcast() {
        Ok(code) => anyhow!("{code:?}"),
        Err(trap) => anyhow!("{trap:?}"),
    }
}

/// The descriptor of the guest's unbound TCP socket `rep`.
fn find_tcp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<RawFd> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = Resource::<TcpSocket>::new_borrow(rep);
        let before = HostTcpSocket::hop_limit(view, this).map_err(|e| anyhow!("{e:?}"))?;
        let this = Resource::<TcpSocket>::new_borrow(rep);
        HostTcpSocket::set_hop_limit(view, this, hops).map_err(|e| anyhow!("{e:?}"))?;
        Ok(before)
    };
    find_socket(rustix::net::SocketType::STREAM, &mut mark)
}

/// The descriptor of the guest's unbound UDP socket `rep`.
pub(crate) fn find_udp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<RawFd> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = Resource::<UdpSocket>::new_borrow(rep);
        let before = HostUdpSocket::unicast_hop_limit(view, this).map_err(|e| anyhow!("{e:?}"))?;
        let this = Resource::<UdpSocket>::new_borrow(rep);
        HostUdpSocket::set_unicast_hop_limit(view, this, hops).map_err(|e| anyhow!("{e:?}"))?;
        Ok(before)
    };
    find_socket(rustix::net::SocketType::DGRAM, &mut mark)
}

/// Marks the socket with `set_hops` (which returns the hop limit it replaced) and finds it
/// among this process's descriptors; restores its hop limit.
fn find_socket(
    kind: rustix::net::SocketType,
    set_hops: &mut dyn FnMut(u8) -> Result<u8>,
) -> Result<RawFd> {
    let _marking = MARKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let marks = Marks::new();
    let first = marks.next(0);
    let before = set_hops(first)?;
    let found = narrow(kind, first, &marks, set_hops);
    set_hops(before)?;
    found
}

/// The random hop limits of one search: unknown outside this process.
struct Marks(RandomState);

impl Marks {
    fn new() -> Marks {
        Marks(RandomState::new())
    }

    /// A mark in 1..=255 other than `previous`.
    fn next(&self, previous: u8) -> u8 {
        (0u64..)
            .map(|i| (self.0.hash_one((previous, i)) % 255) as u8 + 1)
            .find(|&m| m != previous)
            .expect("an endless sequence")
    }
}

/// Keeps the unbound sockets of `kind` that carry each mark in turn.
fn narrow(
    kind: rustix::net::SocketType,
    first: u8,
    marks: &Marks,
    set_hops: &mut dyn FnMut(u8) -> Result<u8>,
) -> Result<RawFd> {
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if carries(fd, kind, first) {
            candidates.push(fd);
        }
    }
    let mut mark = first;
    for round in 1.. {
        let settled = candidates.len() == 1 && round >= MIN_ROUNDS;
        if candidates.is_empty() || settled || round >= MAX_ROUNDS {
            break;
        }
        mark = marks.next(mark);
        set_hops(mark)?;
        candidates.retain(|&fd| carries(fd, kind, mark));
    }
    match candidates[..] {
        [fd] => Ok(fd),
        [] => bail!("the new socket was not found among this process's descriptors"),
        _ => bail!(
            "{} sockets carry the marks; refusing to guess",
            candidates.len()
        ),
    }
}

/// Whether `fd` is an unbound socket of `kind` whose hop limit is `mark`.
fn carries(fd: RawFd, kind: rustix::net::SocketType, mark: u8) -> bool {
    use rustix::net::sockopt;
    // SAFETY: only socket options are read; a descriptor closed meanwhile by another thread
    // makes these calls fail (or read another socket, which the next rounds rule out).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if sockopt::socket_type(fd).ok() != Some(kind) {
        return false;
    }
    // An IPv6 socket may answer the IPv4 option too, so either carrying the mark counts.
    let v4 = sockopt::ip_ttl(fd).is_ok_and(|ttl| ttl == u32::from(mark));
    let v6 = sockopt::ipv6_unicast_hops(fd).is_ok_and(|hops| hops == mark);
    if !(v4 || v6) {
        return false;
    }
    // Unbound: a fresh socket has no port yet.
    rustix::net::getsockname(fd)
        .ok()
        .and_then(|addr| SocketAddr::try_from(addr).ok())
        .is_some_and(|addr| addr.port() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_never_zero_nor_repeated() {
        let marks = Marks::new();
        let mut m = marks.next(0);
        for _ in 0..1000 {
            let next = marks.next(m);
            assert!(next != 0 && next != m);
            m = next;
        }
    }
}
