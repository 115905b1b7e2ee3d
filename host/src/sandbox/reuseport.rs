//! Letting the instances of one guest share each granted port (`--instances N`).
//!
//! Every instance runs its own accept loop on its own socket bound to the same address with
//! `SO_REUSEPORT`, and the kernel spreads new clients over them, so N instances use N cores with
//! no hand-off between them. The option must be set on every socket before it binds, but
//! wasmtime-wasi creates the guest's sockets itself and exposes neither their descriptors nor a
//! creation hook. So when ports are shared the host's socket constructors (in `limits`), once a
//! socket is created, mark the new socket with an unusual hop limit through the WASI API,
//! finds the one unbound socket of this process that carries the mark, sets `SO_REUSEPORT` on
//! it and restores the hop limit. A process-wide lock makes the mark unique while it is looked
//! for. (A socket-creation hook in wasmtime-wasi would make this unnecessary.)

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;

use anyhow::{Result, anyhow, bail};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// The hop limit that marks the socket being looked for; nothing else here uses it.
const MARK: u8 = 167;

/// Held while a socket carries the mark, so two guests never mark at once.
static MARKING: Mutex<()> = Mutex::new(());

/// Sets `SO_REUSEPORT` on the guest's new, unbound TCP socket `rep` (called by the socket
/// constructor in `limits` when the guest shares its ports).
pub(crate) fn share_tcp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = Resource::<TcpSocket>::new_borrow(rep);
        let before = HostTcpSocket::hop_limit(view, this).map_err(|e| anyhow!("{e:?}"))?;
        let this = Resource::<TcpSocket>::new_borrow(rep);
        HostTcpSocket::set_hop_limit(view, this, hops).map_err(|e| anyhow!("{e:?}"))?;
        Ok(before)
    };
    share_port(rustix::net::SocketType::STREAM, &mut mark)
}

/// [`share_tcp`] for a UDP socket.
pub(crate) fn share_udp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    let mut mark = |hops: u8| -> Result<u8> {
        let this = Resource::<UdpSocket>::new_borrow(rep);
        let before = HostUdpSocket::unicast_hop_limit(view, this).map_err(|e| anyhow!("{e:?}"))?;
        let this = Resource::<UdpSocket>::new_borrow(rep);
        HostUdpSocket::set_unicast_hop_limit(view, this, hops).map_err(|e| anyhow!("{e:?}"))?;
        Ok(before)
    };
    share_port(rustix::net::SocketType::DGRAM, &mut mark)
}

/// Marks the new socket with `set_hops(MARK)`, finds it, sets `SO_REUSEPORT`, restores its
/// hop limit. `set_hops` returns the hop limit it replaced.
fn share_port(
    kind: rustix::net::SocketType,
    set_hops: &mut dyn FnMut(u8) -> Result<u8>,
) -> Result<()> {
    let _marking = MARKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = set_hops(MARK)?;
    let found = marked_socket(kind);
    set_hops(before)?;
    let fd = found?;
    // SAFETY: the marked socket belongs to the store we hold exclusively, so it stays open
    // until this call returns.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::net::sockopt::set_socket_reuseport(fd, true)?;
    Ok(())
}

/// The one unbound socket of `kind` in this process whose hop limit is [`MARK`].
fn marked_socket(kind: rustix::net::SocketType) -> Result<RawFd> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: only socket options are read; a descriptor closed meanwhile by another
        // thread makes these calls fail (or read another socket), which is harmless.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if is_marked(borrowed, kind) {
            found.push(fd);
        }
    }
    match found[..] {
        [fd] => Ok(fd),
        [] => bail!("the new socket was not found among this process's descriptors"),
        _ => bail!("{} sockets carry the mark; refusing to guess", found.len()),
    }
}

fn is_marked(fd: BorrowedFd<'_>, kind: rustix::net::SocketType) -> bool {
    use rustix::net::sockopt;
    if sockopt::socket_type(fd).ok() != Some(kind) {
        return false;
    }
    // An IPv6 socket may answer the IPv4 option too, so either carrying the mark counts.
    let v4 = sockopt::ip_ttl(fd).is_ok_and(|ttl| ttl == u32::from(MARK));
    let v6 = sockopt::ipv6_unicast_hops(fd).is_ok_and(|hops| hops == MARK);
    if !(v4 || v6) {
        return false;
    }
    // Unbound: a fresh socket has no port yet.
    rustix::net::getsockname(fd)
        .ok()
        .and_then(|addr| std::net::SocketAddr::try_from(addr).ok())
        .is_some_and(|addr| addr.port() == 0)
}
