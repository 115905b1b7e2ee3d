//! The conversation state of one UDP socket: the role its bind gave it and the peers it
//! exchanged allowed datagrams with, bounded per socket and per guest and forgotten when idle.
//! The gate reads and updates it for each datagram; nothing here decides on its own.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::rule::Decision;

/// How many UDP peers one socket remembers for replies; the least recently used is forgotten
/// first.
pub const MAX_PEERS: usize = 4096;
/// How many UDP peers all sockets of one guest remember together (about 100 bytes each).
/// At this count a socket makes room among its own peers, or remembers no new one.
pub const MAX_GUEST_PEERS: usize = 65_536;
/// How long a UDP peer is remembered after its last allowed datagram (either way). Like
/// conntrack's UDP timeout (30 s for a flow; longer only once it is "assured", which sockbox
/// does not distinguish): a conversation that goes quiet must be opened again by the side
/// that may open it.
pub const PEER_IDLE: Duration = Duration::from_secs(30);

/// What a UDP socket was bound as, which decides who it hears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UdpRole {
    /// Not bound yet: hears nobody.
    #[default]
    Unbound,
    /// Bound by the wildcard, port-0 bind a `udp-send` grant allows: hears only the peers
    /// it sent to. Never announced as ready.
    Client,
    /// Bound to an address a `udp-bind` grant names: hears anyone (or whom `udp-recv` rules
    /// allow) and may answer them.
    Server,
}

/// The conversation state of one UDP socket. The sandbox keeps one per socket (made by
/// [`Gate::udp_socket`](super::Gate::udp_socket), which counts its peers against the guest's) and asks
/// [`Gate::check_udp`](super::Gate::check_udp) with it.
#[derive(Debug, Default)]
pub struct UdpSocketState {
    inner: Mutex<Conversation>,
    /// Peers remembered by all sockets of the guest.
    pub(super) guest_peers: Arc<AtomicUsize>,
}

impl Drop for UdpSocketState {
    fn drop(&mut self) {
        let held = self.lock().peers.entries.len();
        self.guest_peers.fetch_sub(held, Ordering::Relaxed);
    }
}

/// What the gate reads and updates under one lock for each datagram.
#[derive(Debug, Default)]
pub(super) struct Conversation {
    pub(super) role: UdpRole,
    pub(super) peers: Peers,
}

impl UdpSocketState {
    /// A new socket's state; `guest_peers` counts the peers of all the guest's sockets.
    pub(super) fn for_guest(guest_peers: Arc<AtomicUsize>) -> UdpSocketState {
        UdpSocketState {
            inner: Mutex::default(),
            guest_peers,
        }
    }

    /// What the socket was bound as (see [`UdpRole`]).
    pub fn role(&self) -> UdpRole {
        self.lock().role
    }

    /// Peers remembered at `now` (expired ones are not counted).
    #[cfg(test)]
    pub fn peer_count(&self, now: Instant) -> usize {
        let mut c = self.lock();
        c.peers.expire(now, &self.guest_peers);
        c.peers.entries.len()
    }

    /// Judges one datagram to or from `addr` under one lock: `decide` (the policy, given the
    /// socket's role), else a reply to a peer this socket already exchanged with (reported as
    /// `reply`). An allowed datagram remembers or refreshes its peer; the flag says whether
    /// this direction was reported for that peer before.
    pub(super) fn exchange(
        &self,
        addr: SocketAddr,
        direction: Direction,
        now: Instant,
        reply: &str,
        decide: impl FnOnce(UdpRole) -> Decision,
    ) -> (Decision, bool) {
        let mut c = self.lock();
        let mut d = decide(c.role);
        if !d.allowed && c.peers.contains(addr, now, &self.guest_peers) {
            d = Decision::allow(reply);
        }
        let repeat = d.allowed && c.peers.touch(addr, direction, now, &self.guest_peers);
        (d, repeat)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Conversation> {
        // Every update is one step, so the state stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The UDP peers one socket exchanged an allowed datagram with, least recently used first
/// out, each forgotten [`PEER_IDLE`] after its last datagram.
///
/// One set serves both directions: a peer the socket sent to may answer, and a peer it heard
/// from may be answered. Addresses are keyed by canonical IP and port, so a mapped IPv6 peer
/// and its IPv4 form are the same peer.
#[derive(Debug, Default)]
pub(super) struct Peers {
    pub(super) entries: HashMap<(IpAddr, u16), Peer>,
    /// Peers by the order they were last used; the first is the least recently used.
    pub(super) by_age: BTreeMap<u64, (IpAddr, u16)>,
    seq: u64,
}

#[derive(Debug)]
pub(super) struct Peer {
    seq: u64,
    last_used: Instant,
    /// The directions already reported, as bits of [`Direction`].
    reported: u8,
}

/// The two ways a datagram goes, as bits of a peer's reported set.
#[derive(Clone, Copy, Debug)]
pub(super) enum Direction {
    Send = 1,
    Receive = 2,
}

impl Peers {
    fn key(addr: SocketAddr) -> (IpAddr, u16) {
        (addr.ip().to_canonical(), addr.port())
    }

    /// Forgets the peers idle for longer than [`PEER_IDLE`] at `now`. The least recently
    /// used come first, so this stops at the first one still fresh.
    fn expire(&mut self, now: Instant, guest: &AtomicUsize) {
        while let Some((&seq, &key)) = self.by_age.first_key_value() {
            let fresh = self
                .entries
                .get(&key)
                .is_some_and(|p| now.saturating_duration_since(p.last_used) <= PEER_IDLE);
            if fresh {
                break;
            }
            self.forget_oldest(seq, key, guest);
        }
    }

    fn forget_oldest(&mut self, seq: u64, key: (IpAddr, u16), guest: &AtomicUsize) {
        self.by_age.remove(&seq);
        if self.entries.remove(&key).is_some() {
            guest.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn contains(&mut self, addr: SocketAddr, now: Instant, guest: &AtomicUsize) -> bool {
        self.expire(now, guest);
        self.entries.contains_key(&Peers::key(addr))
    }

    /// Marks the peer used at `now` in `direction`; true if that direction was reported
    /// before (within the peer's current life in the set). A new peer takes the place of this
    /// socket's least recently used one if the socket or the guest (`guest` counts its
    /// peers) is at its cap; with no peer of its own to give up, it is not remembered.
    pub(super) fn touch(
        &mut self,
        addr: SocketAddr,
        direction: Direction,
        now: Instant,
        guest: &AtomicUsize,
    ) -> bool {
        self.expire(now, guest);
        let key = Peers::key(addr);
        if !self.entries.contains_key(&key) {
            let full =
                self.entries.len() >= MAX_PEERS || guest.load(Ordering::Relaxed) >= MAX_GUEST_PEERS;
            if full {
                let Some((&seq, &oldest)) = self.by_age.first_key_value() else {
                    return false;
                };
                self.forget_oldest(seq, oldest, guest);
            }
            guest.fetch_add(1, Ordering::Relaxed);
        }
        self.seq += 1;
        let bit = direction as u8;
        let peer = self.entries.entry(key).or_insert(Peer {
            seq: 0,
            last_used: now,
            reported: 0,
        });
        self.by_age.remove(&peer.seq);
        let seen = peer.reported & bit != 0;
        peer.seq = self.seq;
        peer.last_used = now;
        peer.reported |= bit;
        self.by_age.insert(self.seq, key);
        seen
    }
}
