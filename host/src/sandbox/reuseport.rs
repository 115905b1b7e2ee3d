//! Letting the instances of one guest share each granted port (`--instances N`), and nobody
//! else.
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
//! The kernel lets any two `SO_REUSEPORT` sockets of one user share an address, so it cannot
//! tell one guest's instances from another guest. The host keeps that ownership itself: a
//! process-wide table of the shared addresses bound and the guest (port group) holding each.
//! A bind by a sharing guest to an address another group holds, or overlapping one (the same
//! port on the wildcard address), fails with `address-in-use` before it reaches the kernel. A
//! UDP bind to port 0 would let the kernel pick a port another group shares, so it is made
//! without `SO_REUSEPORT`, which is set again once the port is chosen (the kernel forms a UDP
//! group when the second socket joins, TCP's at `listen`, and never shares a TCP port 0).

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, anyhow, bail};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, Host as _, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{WasiSocketsCtxView, WasiSocketsView};

use super::Transport;
use super::state::HostState;
use crate::policy::SocketOp;

const TCP: &str = "wasi:sockets/tcp@0.2.12";
const UDP: &str = "wasi:sockets/udp@0.2.12";

/// Rounds of random hop limits before a single remaining socket is taken as the one marked.
/// Each round leaves a socket not following the sequence in by chance 1/254 at most.
const MIN_ROUNDS: usize = 3;
/// Rounds after which more than one candidate is an error rather than bad luck.
const MAX_ROUNDS: usize = 8;

/// Held while a socket carries a mark, so two guests never mark at once.
static MARKING: Mutex<()> = Mutex::new(());

/// A new port group: one guest, all of whose instances may share addresses.
pub(crate) fn new_group() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Sets `SO_REUSEPORT` on the guest's new, unbound TCP socket `rep` (called by the socket
/// constructor in `limits` when the guest shares its ports).
pub(crate) fn share_tcp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    set_reuseport(find_tcp(view, rep)?, true)
}

/// [`share_tcp`] for a UDP socket.
pub(crate) fn share_udp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<()> {
    set_reuseport(find_udp(view, rep)?, true)
}

fn set_reuseport(fd: RawFd, on: bool) -> Result<()> {
    // SAFETY: `fd` is the socket of a resource in the store we hold exclusively (see
    // `find_socket`), so it stays open until the hook that found it returns.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::net::sockopt::set_socket_reuseport(fd, on)?;
    Ok(())
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
fn find_udp(view: &mut WasiSocketsCtxView<'_>, rep: u32) -> Result<RawFd> {
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

/// The shared addresses bound in this process: (transport, address) -> (group, instances
/// holding it).
static CLAIMS: Mutex<Vec<Claim>> = Mutex::new(Vec::new());

struct Claim {
    transport: Transport,
    addr: SocketAddr,
    group: u64,
    holders: usize,
}

/// The same port on the same IP, or on the unspecified address of the same family: two
/// `SO_REUSEPORT` sockets the kernel would let bind both.
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Shared addresses one instance may hold: far more than a server serves on; the bound keeps
/// a guest binding port after port from growing the table without end.
const MAX_CLAIMS: usize = 4096;

/// Why an address could not be claimed.
#[derive(Debug, PartialEq, Eq)]
enum Unclaimed {
    /// Another group (this one) holds it or an overlapping address.
    Taken(u64),
    /// The instance holds [`MAX_CLAIMS`] already.
    Full,
}

/// The shared addresses one instance (store) holds; released when it ends.
#[derive(Debug)]
pub(crate) struct PortClaims {
    group: u64,
    held: Vec<(Transport, SocketAddr)>,
}

impl PortClaims {
    pub(crate) fn new(group: u64) -> PortClaims {
        PortClaims {
            group,
            held: Vec::new(),
        }
    }

    /// Claims `addr` for this instance's group. True if this call added the claim (the caller
    /// releases it if the bind fails).
    fn claim(&mut self, transport: Transport, addr: SocketAddr) -> Result<bool, Unclaimed> {
        if self.held.contains(&(transport, addr)) {
            return Ok(false);
        }
        if self.held.len() >= MAX_CLAIMS {
            return Err(Unclaimed::Full);
        }
        let mut claims = lock_claims();
        if let Some(other) = claims
            .iter()
            .find(|c| c.transport == transport && overlaps(c.addr, addr) && c.group != self.group)
        {
            return Err(Unclaimed::Taken(other.group));
        }
        match claims
            .iter_mut()
            .find(|c| c.transport == transport && c.addr == addr)
        {
            Some(c) => c.holders += 1,
            None => claims.push(Claim {
                transport,
                addr,
                group: self.group,
                holders: 1,
            }),
        }
        self.held.push((transport, addr));
        Ok(true)
    }

    fn release(&mut self, transport: Transport, addr: SocketAddr) {
        self.held.retain(|h| *h != (transport, addr));
        let mut claims = lock_claims();
        if let Some(i) = claims
            .iter()
            .position(|c| c.transport == transport && c.addr == addr && c.group == self.group)
        {
            claims[i].holders -= 1;
            if claims[i].holders == 0 {
                claims.swap_remove(i);
            }
        }
    }
}

impl Drop for PortClaims {
    fn drop(&mut self) {
        for (transport, addr) in std::mem::take(&mut self.held) {
            self.release(transport, addr);
        }
    }
}

fn lock_claims() -> std::sync::MutexGuard<'static, Vec<Claim>> {
    // Each update is one step; a panic elsewhere leaves the table consistent.
    CLAIMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replaces `start-bind` of both socket kinds and TCP `start-listen`: for a guest that shares
/// its ports, a bind is checked against (and recorded in) the process's claims, and so is the
/// address a listener got. Must run after wasmtime-wasi's own
/// `add_to_linker`.
pub(crate) fn add_hooks(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TCP)?.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, network, local): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let claimed = match pre_bind(state, Transport::Tcp, addr) {
                    Ok(claimed) => claimed,
                    Err(code) => return Ok((Err(code),)),
                };
                let mut view = state.sockets();
                let result = match HostTcpSocket::start_bind(&mut view, socket, network, local)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(err) => Err(view.convert_error_code(err)?),
                };
                let bound = result.is_ok().then(|| {
                    HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                post_bind(state, Transport::Tcp, addr, claimed, bound.flatten(), false);
                Ok((result,))
            })
        },
    )?;
    linker.instance(TCP)?.func_wrap_async(
        "[method]tcp-socket.start-listen",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let mut view = state.sockets();
                let result = match HostTcpSocket::start_listen(&mut view, socket).await {
                    Ok(()) => Ok(()),
                    Err(err) => Err(view.convert_error_code(err)?),
                };
                let local = HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep));
                if result.is_ok()
                    && state.share_ports
                    && let Ok(local) = local
                {
                    claim_bound(state, Transport::Tcp, SocketAddr::from(local));
                }
                Ok((result,))
            })
        },
    )?;
    linker.instance(UDP)?.func_wrap_async(
        "[method]udp-socket.start-bind",
        |mut store: StoreContextMut<'_, HostState>,
         (socket, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let rep = socket.rep();
                let state = store.data_mut();
                let addr = SocketAddr::from(local);
                let claimed = match pre_bind(state, Transport::Udp, addr) {
                    Ok(claimed) => claimed,
                    Err(code) => return Ok((Err(code),)),
                };
                let share = state.share_ports;
                let mut view = state.sockets();
                // Port 0 without SO_REUSEPORT, so the kernel picks a port nobody shares.
                let unshared = if share && addr.port() == 0 {
                    let fd = find_udp(&mut view, rep);
                    match fd.and_then(|fd| set_reuseport(fd, false).map(|()| fd)) {
                        Ok(fd) => Some(fd),
                        Err(err) => {
                            tracing::error!("cannot bind a shared UDP socket to port 0: {err:#}");
                            return Ok((Err(ErrorCode::Unknown),));
                        }
                    }
                } else {
                    None
                };
                let result = match HostUdpSocket::start_bind(&mut view, socket, network, local)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(err) => Err(view.convert_error_code(err)?),
                };
                let bound = result.is_ok().then(|| {
                    HostUdpSocket::local_address(&mut view, Resource::new_borrow(rep))
                        .ok()
                        .map(SocketAddr::from)
                });
                let serving = state.udp.serves(rep);
                // A server's port is shared again, for its other instances to join; a socket
                // bound to send keeps its port to itself. A failed bind leaves it as it was.
                if let Some(fd) = unshared
                    && (serving || result.is_err())
                    && let Err(err) = set_reuseport(fd, true)
                {
                    tracing::error!("cannot share the port of a UDP socket: {err:#}");
                }
                post_bind(state, Transport::Udp, addr, claimed, bound.flatten(), serving);
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Before a sharing guest's bind to a specific port that its policy grants: claims the
/// address for its group, or refuses with `address-in-use` if another group holds it. Returns
/// whether a claim was added. Binds the policy refuses are left to the policy (and its audit).
fn pre_bind(
    state: &mut HostState,
    transport: Transport,
    addr: SocketAddr,
) -> Result<bool, ErrorCode> {
    if !state.share_ports || addr.port() == 0 {
        return Ok(false);
    }
    let op = match transport {
        Transport::Tcp => SocketOp::TcpBind,
        Transport::Udp => SocketOp::UdpBind,
    };
    if !state.gate.check(op, addr).allowed {
        return Ok(false);
    }
    state.ports.claim(transport, addr).map_err(|why| {
        let guest = &state.shared.guest;
        match why {
            Unclaimed::Taken(_) => tracing::warn!(
                guest = %guest,
                "{transport} {addr} is shared by another guest's instances; bind refused \
                 (address-in-use)"
            ),
            Unclaimed::Full => tracing::warn!(
                guest = %guest,
                "{transport} {addr}: this instance holds {MAX_CLAIMS} shared addresses already; \
                 bind refused (address-in-use)"
            ),
        }
        ErrorCode::AddressInUse
    })
}

/// After the bind: a failed one gives its claim back; a UDP server's bind to port 0 claims
/// the port it got (a TCP socket's is claimed when it listens; client sockets, bound to send
/// or connect, claim nothing).
fn post_bind(
    state: &mut HostState,
    transport: Transport,
    addr: SocketAddr,
    claimed: bool,
    bound: Option<SocketAddr>,
    serving: bool,
) {
    let Some(actual) = bound else {
        if claimed {
            state.ports.release(transport, addr);
        }
        return;
    };
    // The kernel gave a port no other sharing socket held (TCP never shares a port 0, and the
    // UDP bind above was unshared), so the claim cannot conflict.
    if state.share_ports && addr.port() == 0 && serving {
        claim_bound(state, transport, actual);
    }
}

/// Claims an address the kernel chose (a port no other sharing socket held: TCP never shares
/// a port 0, and a UDP port-0 bind is made unshared), so only the cap can refuse it.
fn claim_bound(state: &mut HostState, transport: Transport, actual: SocketAddr) {
    if let Err(why) = state.ports.claim(transport, actual) {
        tracing::warn!(guest = %state.shared.guest, "{transport} {actual} not claimed: {why:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_group_shares_its_addresses_and_nobody_else_does() {
        let (a, b) = (new_group(), new_group());
        let mut a0 = PortClaims::new(a);
        let mut a1 = PortClaims::new(a);
        let mut b0 = PortClaims::new(b);
        let addr = sa("127.0.0.1:47001");
        assert_eq!(a0.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(a0.claim(Transport::Tcp, addr), Ok(false), "held already");
        assert_eq!(a1.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(b0.claim(Transport::Tcp, addr), Err(Unclaimed::Taken(a)));
        // The wildcard overlaps; the other transport and the other family do not.
        assert_eq!(
            b0.claim(Transport::Tcp, sa("0.0.0.0:47001")),
            Err(Unclaimed::Taken(a))
        );
        assert_eq!(b0.claim(Transport::Udp, addr), Ok(true));
        assert_eq!(b0.claim(Transport::Tcp, sa("[::1]:47001")), Ok(true));
        // Held until every instance of the group let go.
        drop(a0);
        assert_eq!(b0.claim(Transport::Tcp, addr), Err(Unclaimed::Taken(a)));
        a1.release(Transport::Tcp, addr);
        assert_eq!(b0.claim(Transport::Tcp, addr), Ok(true));
        assert_eq!(
            PortClaims::new(a).claim(Transport::Tcp, addr),
            Err(Unclaimed::Taken(b))
        );
    }

    #[test]
    fn an_instance_holds_at_most_max_claims() {
        let mut claims = PortClaims::new(new_group());
        let addr = |i: usize| SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 47002));
        for i in 0..MAX_CLAIMS {
            assert_eq!(claims.claim(Transport::Udp, addr(i)), Ok(true));
        }
        assert_eq!(claims.claim(Transport::Udp, addr(0)), Ok(false));
        assert_eq!(
            claims.claim(Transport::Udp, addr(MAX_CLAIMS)),
            Err(Unclaimed::Full)
        );
        drop(claims);
        assert!(!lock_claims().iter().any(|c| c.addr.port() == 47002));
    }

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
