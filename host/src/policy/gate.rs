//! The gate: the policy applied to the questions wasmtime-wasi actually asks.
//!
//! wasmtime-wasi checks one `(address, operation)` pair at a time, including binds the guest
//! never wrote (an unbound socket is bound to the wildcard address, port 0, before a connect
//! or a send) and every accepted client and received datagram. The user's policy speaks of
//! uses (`tcp-connect`, `udp-recv`, ...). This module maps one onto the other so that a
//! connect grant works, yet opens no listen or receive path the policy did not grant.
//!
//! UDP is judged per socket ([`UdpSocketState`]), like a stateful firewall's conntrack: a
//! socket bound by a `udp-bind` grant is a server (it hears anyone unless `udp-recv` rules
//! narrow it, and may answer whoever it heard); a socket bound only because it sends (the
//! wildcard, port-0 bind a `udp-send` grant allows) is a client and hears only the peers *it*
//! sent to. Either way a peer is remembered for [`PEER_IDLE`] after its last datagram, at most
//! [`MAX_PEERS`] per socket and [`MAX_GUEST_PEERS`] per guest, so one datagram never opens a
//! path forever or on another socket, and remote peers cannot grow the host's memory unbounded.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Policy;
use super::rule::{Decision, Use, is_implicit_bind_addr};

/// Rule reported for a client accepted while the policy has no `tcp-accept` rule.
pub const DEFAULT_ACCEPT: &str = "default: any client may connect to a granted listener";
/// Rule reported for a datagram received while the policy has udp-bind but no udp-recv rules.
pub const DEFAULT_UDP_RECV: &str = "default: anyone may send to a granted udp-bind";
/// Rule reported for a datagram sent to a peer the guest received from.
pub const REPLY_SEND: &str = "default: reply to a peer that sent to the guest";
/// Rule reported for a datagram received from a peer the guest sent to.
pub const REPLY_RECV: &str = "default: reply from a peer the guest sent to";
/// Rule reported for the wildcard bind before a connect, when tcp-connect is granted.
pub const IMPLICIT_TCP_BIND: &str = "default: implicit bind before tcp-connect";
/// Rule reported for the wildcard bind before a send, when udp-send is granted.
pub const IMPLICIT_UDP_BIND: &str = "default: implicit bind before udp-send";

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

/// The operations wasmtime-wasi checks (mirrors its `SocketAddrUse`, which the sandbox maps
/// onto this so the policy does not depend on wasmtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketOp {
    TcpBind,
    TcpListen,
    TcpAccept,
    TcpConnect,
    UdpBind,
    UdpSend,
    UdpReceive,
}

/// One decision of the gate, under the use it is reported as (audit line, denial message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub use_: Use,
    pub addr: SocketAddr,
    pub allowed: bool,
    pub rule: Option<String>,
    /// The wildcard, port-0 bind wasmtime-wasi checks before a connect or send from an
    /// unbound socket. When allowed it is noise in an audit log; when denied, the message
    /// cannot name the destination (it is checked only after the bind).
    pub implicit_bind: bool,
    /// The address a grant for this would name: `addr`, except for a denied listen on the
    /// wildcard, which can only follow a bind to its port 0 (any other port is judged at the
    /// bind), so the port shown is the OS's pick and the grant to add is the port-0 one.
    pub grant_addr: SocketAddr,
    /// An allowed datagram in a UDP conversation whose same use was already allowed and
    /// reported: one audit line per peer and direction, not one per datagram.
    pub repeat: bool,
}

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
/// [`Gate::udp_socket`], which counts its peers against the guest's) and asks
/// [`Gate::check_udp`] with it.
#[derive(Debug, Default)]
pub struct UdpSocketState {
    inner: Mutex<Conversation>,
    /// Peers remembered by all sockets of the guest.
    guest_peers: Arc<AtomicUsize>,
}

impl Drop for UdpSocketState {
    fn drop(&mut self) {
        let held = self.lock().peers.entries.len();
        self.guest_peers.fetch_sub(held, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Conversation {
    role: UdpRole,
    peers: Peers,
}

impl UdpSocketState {
    pub fn role(&self) -> UdpRole {
        self.lock().role
    }

    /// Peers remembered at `now` (expired ones are not counted).
    pub fn peer_count(&self, now: Instant) -> usize {
        let mut c = self.lock();
        c.peers.expire(now, &self.guest_peers);
        c.peers.entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conversation> {
        // Every update is one step, so the state stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The policy of one guest. Cheap to share (`Arc<Gate>`).
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    /// UDP peers remembered by all sockets of this guest (see [`MAX_GUEST_PEERS`]).
    udp_peers: Arc<AtomicUsize>,
}

impl Gate {
    pub fn new(policy: Policy) -> Gate {
        Gate {
            policy,
            udp_peers: Arc::default(),
        }
    }

    /// The state of a new UDP socket of this guest.
    pub fn udp_socket(&self) -> UdpSocketState {
        UdpSocketState {
            inner: Mutex::default(),
            guest_peers: self.udp_peers.clone(),
        }
    }

    /// UDP peers remembered by all sockets of this guest.
    pub fn udp_peers(&self) -> usize {
        self.udp_peers.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A dns lookup: the name must be granted by a `dns` rule.
    pub fn check_name(&self, name: &str) -> Decision {
        self.policy.decide_name(name)
    }

    /// Judges `op` on `addr` for no socket in particular: TCP operations need no state; a UDP
    /// operation is judged as for a fresh socket (no peers, no role), so a receive is denied.
    /// The sandbox judges UDP traffic with [`Gate::check_udp`].
    pub fn check(&self, op: SocketOp, addr: SocketAddr) -> Verdict {
        let p = &self.policy;
        let verdict = |use_: Use, d: Decision| decided(use_, addr, d);
        match op {
            SocketOp::TcpBind => {
                // A bind opens nothing by itself (listen is checked next), but the port it
                // takes is what a later listen would carry, so port-0 grants mean port 0 here.
                let listen = p.decide(Use::TcpListen, addr);
                if listen.allowed || !is_implicit_bind_addr(addr) {
                    return verdict(Use::TcpListen, listen);
                }
                // Always allowed: wasmtime-wasi never performs this bind itself (the OS binds at
                // connect), the connect check follows at once and names the destination, and a
                // socket bound here still cannot listen without a rule naming the wildcard.
                implicit(addr, Use::TcpConnect, true, IMPLICIT_TCP_BIND)
            }
            // The address is the socket's actual local one: after a bind to port 0 it carries
            // the OS-chosen port, which a port-0 grant must therefore match. A specific port
            // was already held to its grant by the bind check.
            SocketOp::TcpListen => {
                let mut v = verdict(Use::TcpListen, p.decide_listening(addr));
                if !v.allowed && addr.ip().is_unspecified() {
                    v.grant_addr.set_port(0);
                }
                v
            }
            SocketOp::TcpAccept => {
                if p.has_rule(Use::TcpAccept) {
                    verdict(Use::TcpAccept, p.decide(Use::TcpAccept, addr))
                } else {
                    verdict(Use::TcpAccept, Decision::allow(DEFAULT_ACCEPT))
                }
            }
            SocketOp::TcpConnect => verdict(Use::TcpConnect, p.decide(Use::TcpConnect, addr)),
            SocketOp::UdpBind | SocketOp::UdpSend | SocketOp::UdpReceive => {
                self.check_udp(&UdpSocketState::default(), op, addr, Instant::now())
            }
        }
    }

    /// Judges `op` on `addr` for the UDP socket whose state is `socket`, at `now` (TCP
    /// operations ignore both). An allowed UDP bind sets the socket's role; an allowed
    /// datagram remembers or refreshes its peer on this socket only.
    pub fn check_udp(
        &self,
        socket: &UdpSocketState,
        op: SocketOp,
        addr: SocketAddr,
        now: Instant,
    ) -> Verdict {
        let p = &self.policy;
        let verdict = |use_: Use, d: Decision| decided(use_, addr, d);
        match op {
            SocketOp::TcpBind
            | SocketOp::TcpListen
            | SocketOp::TcpAccept
            | SocketOp::TcpConnect => self.check(op, addr),
            SocketOp::UdpBind => {
                let bind = p.decide(Use::UdpBind, addr);
                let v = if bind.allowed || !is_implicit_bind_addr(addr) {
                    verdict(Use::UdpBind, bind)
                } else {
                    implicit(
                        addr,
                        Use::UdpSend,
                        p.has_rule(Use::UdpSend),
                        IMPLICIT_UDP_BIND,
                    )
                };
                // wasmtime-wasi checks a socket's bind only while it is unbound, so the last
                // allowed check is the bind that happened (a failed bind is followed by
                // another check).
                if v.allowed {
                    socket.lock().role = if v.implicit_bind {
                        UdpRole::Client
                    } else {
                        UdpRole::Server
                    };
                }
                v
            }
            SocketOp::UdpSend => {
                let mut c = socket.lock();
                let mut d = p.decide(Use::UdpSend, addr);
                if !d.allowed && c.peers.contains(addr, now, &socket.guest_peers) {
                    d = Decision::allow(REPLY_SEND);
                }
                let repeat = d.allowed
                    && c.peers
                        .touch(addr, Direction::Send, now, &socket.guest_peers);
                Verdict {
                    repeat,
                    ..verdict(Use::UdpSend, d)
                }
            }
            SocketOp::UdpReceive => {
                let mut c = socket.lock();
                let mut d = match c.role {
                    // A UDP server the user granted a bind for is meant to hear from anyone,
                    // as a TCP listener accepts anyone, unless udp-recv rules say whom.
                    UdpRole::Server if p.has_rule(Use::UdpRecv) => p.decide(Use::UdpRecv, addr),
                    UdpRole::Server => Decision::allow(DEFAULT_UDP_RECV),
                    // A socket bound only to send hears its own peers and nobody else.
                    UdpRole::Client | UdpRole::Unbound => Decision::deny(),
                };
                if !d.allowed && c.peers.contains(addr, now, &socket.guest_peers) {
                    d = Decision::allow(REPLY_RECV);
                }
                let repeat = d.allowed
                    && c.peers
                        .touch(addr, Direction::Receive, now, &socket.guest_peers);
                Verdict {
                    repeat,
                    ..verdict(Use::UdpRecv, d)
                }
            }
        }
    }
}

/// The verdict of a decision on `addr`, reported as `use_`.
fn decided(use_: Use, addr: SocketAddr, d: Decision) -> Verdict {
    Verdict {
        use_,
        addr,
        allowed: d.allowed,
        rule: d.rule,
        implicit_bind: false,
        grant_addr: addr,
        repeat: false,
    }
}

/// The wildcard port-0 bind before a connect/send: allowed iff the use that follows is
/// granted at all; the destination is judged by the check that follows.
fn implicit(addr: SocketAddr, use_: Use, granted: bool, rule: &str) -> Verdict {
    Verdict {
        use_,
        addr,
        allowed: granted,
        rule: granted.then(|| rule.to_string()),
        implicit_bind: true,
        grant_addr: addr,
        repeat: false,
    }
}

/// The UDP peers one socket exchanged an allowed datagram with, least recently used first
/// out, each forgotten [`PEER_IDLE`] after its last datagram.
///
/// One set serves both directions: a peer the socket sent to may answer, and a peer it heard
/// from may be answered. Addresses are keyed by canonical IP and port, so a mapped IPv6 peer
/// and its IPv4 form are the same peer.
#[derive(Debug, Default)]
struct Peers {
    entries: HashMap<(IpAddr, u16), Peer>,
    /// Peers by the order they were last used; the first is the least recently used.
    by_age: BTreeMap<u64, (IpAddr, u16)>,
    seq: u64,
}

#[derive(Debug)]
struct Peer {
    seq: u64,
    last_used: Instant,
    /// The directions already reported, as bits of [`Direction`].
    reported: u8,
}

/// The two ways a datagram goes, as bits of a peer's reported set.
#[derive(Clone, Copy, Debug)]
enum Direction {
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

    fn contains(&mut self, addr: SocketAddr, now: Instant, guest: &AtomicUsize) -> bool {
        self.expire(now, guest);
        self.entries.contains_key(&Peers::key(addr))
    }

    /// Marks the peer used at `now` in `direction`; true if that direction was reported
    /// before (within the peer's current life in the set). A new peer takes the place of this
    /// socket's least recently used one if the socket or the guest (`guest` counts its
    /// peers) is at its cap; with no peer of its own to give up, it is not remembered.
    fn touch(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn gate(listen: &[&str], udp: &[&str], allow: &[&str]) -> Gate {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Gate::new(Policy::from_flags(&s(listen), &s(udp), &s(allow)).unwrap())
    }

    fn check(g: &Gate, op: SocketOp, addr: &str) -> (bool, Use, Option<String>) {
        let v = g.check(op, sa(addr));
        assert_eq!(v.addr, sa(addr));
        (v.allowed, v.use_, v.rule)
    }

    #[test]
    fn gate_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Gate>();
    }

    #[test]
    fn an_empty_policy_denies_every_operation() {
        let g = gate(&[], &[], &[]);
        use SocketOp::*;
        for op in [TcpBind, TcpListen, TcpConnect, UdpBind, UdpSend, UdpReceive] {
            for addr in ["127.0.0.1:7000", "0.0.0.0:0", "[::]:0", "[::1]:1"] {
                // The wildcard TCP bind is the step before a connect: it opens nothing.
                let implicit_tcp = op == TcpBind && addr.ends_with(":0") && !addr.contains("127");
                assert_eq!(g.check(op, sa(addr)).allowed, implicit_tcp, "{op:?} {addr}");
            }
        }
        assert!(!g.check(TcpListen, sa("0.0.0.0:41000")).allowed);
        assert!(!g.check_name("db.test").allowed);
    }

    #[test]
    fn a_connect_grant_allows_the_implicit_bind_and_nothing_else() {
        let g = gate(&[], &[], &["tcp-connect=127.0.0.1:5432"]);
        use SocketOp::*;
        // The bind wasmtime-wasi checks before connecting an unbound socket.
        let v = g.check(TcpBind, sa("0.0.0.0:0"));
        assert!(v.allowed && v.implicit_bind);
        assert_eq!(
            (v.use_, v.rule.as_deref()),
            (Use::TcpConnect, Some(IMPLICIT_TCP_BIND))
        );
        assert!(g.check(TcpBind, sa("[::]:0")).allowed);
        assert_eq!(
            check(&g, TcpConnect, "127.0.0.1:5432"),
            (
                true,
                Use::TcpConnect,
                Some("--allow tcp-connect=127.0.0.1:5432".into())
            )
        );
        assert!(!g.check(TcpConnect, sa("127.0.0.1:5433")).allowed);
        // ...but that bind does not let the socket listen, wherever it ended up.
        assert!(!g.check(TcpListen, sa("0.0.0.0:0")).allowed);
        assert!(!g.check(TcpListen, sa("0.0.0.0:41000")).allowed);
        // An explicit bind of a concrete address is a listen question.
        let v = g.check(TcpBind, sa("127.0.0.1:0"));
        assert!(!v.allowed && !v.implicit_bind);
        assert_eq!(v.use_, Use::TcpListen);
        assert!(!g.check(TcpBind, sa("0.0.0.0:7000")).allowed);
    }

    #[test]
    fn without_a_connect_grant_the_connect_itself_is_denied_with_its_destination() {
        let g = gate(&["127.0.0.1:7000"], &[], &[]);
        let v = g.check(SocketOp::TcpBind, sa("0.0.0.0:0"));
        assert!(v.allowed && v.implicit_bind);
        let v = g.check(SocketOp::TcpConnect, sa("127.0.0.1:5432"));
        assert!(!v.allowed);
        assert_eq!(
            (v.use_, v.addr, v.rule),
            (Use::TcpConnect, sa("127.0.0.1:5432"), None)
        );
    }

    #[test]
    fn listen_grants_bind_exactly_and_listen_on_the_bound_port() {
        let g = gate(&["127.0.0.1:7000", "127.0.0.1:0", "[::1]:0"], &[], &[]);
        use SocketOp::*;
        let table = [
            (TcpBind, "127.0.0.1:7000", true),
            (TcpListen, "127.0.0.1:7000", true),
            (TcpBind, "127.0.0.1:0", true),
            // After binding port 0 the listen check carries the OS-chosen port.
            (TcpListen, "127.0.0.1:41234", true),
            (TcpBind, "[::1]:0", true),
            (TcpListen, "[::1]:41234", true),
            // A port-0 grant is not a grant for every port at bind time.
            (TcpBind, "127.0.0.1:8000", false),
            (TcpBind, "[::1]:8000", false),
            (TcpBind, "127.0.0.2:0", false),
            (TcpBind, "0.0.0.0:7000", false),
            (TcpListen, "127.0.0.2:41234", false),
            (TcpListen, "0.0.0.0:7000", false),
            // No connect grant: no connecting (the wildcard bind before it opens nothing).
            (TcpConnect, "127.0.0.1:7000", false),
            (TcpBind, "0.0.0.0:0", true),
            (TcpListen, "0.0.0.0:41234", false),
        ];
        for (op, addr, want) in table {
            let v = g.check(op, sa(addr));
            assert_eq!(v.allowed, want, "{op:?} {addr}");
        }
        assert_eq!(
            check(&g, TcpListen, "127.0.0.1:41234").2.as_deref(),
            Some("--listen 127.0.0.1:0")
        );
    }

    #[test]
    fn a_wildcard_listen_grant_is_reported_as_listen() {
        let g = gate(&["0.0.0.0:0"], &[], &["tcp-connect=127.0.0.1:80"]);
        let v = g.check(SocketOp::TcpBind, sa("0.0.0.0:0"));
        assert!(v.allowed && !v.implicit_bind);
        assert_eq!(
            (v.use_, v.rule.as_deref()),
            (Use::TcpListen, Some("--listen 0.0.0.0:0"))
        );
        assert!(g.check(SocketOp::TcpListen, sa("0.0.0.0:39999")).allowed);
        assert!(!g.check(SocketOp::TcpListen, sa("[::]:39999")).allowed);
    }

    #[test]
    fn accept_defaults_to_anyone_until_a_rule_narrows_it() {
        let open = gate(&["127.0.0.1:7000"], &[], &[]);
        assert_eq!(
            check(&open, SocketOp::TcpAccept, "192.0.2.1:50000"),
            (true, Use::TcpAccept, Some(DEFAULT_ACCEPT.into()))
        );
        let narrow = gate(&["127.0.0.1:7000"], &[], &["tcp-accept=127.0.0.0/8"]);
        assert!(
            narrow
                .check(SocketOp::TcpAccept, sa("127.0.0.1:50000"))
                .allowed
        );
        assert!(
            narrow
                .check(SocketOp::TcpAccept, sa("[::ffff:127.0.0.9]:1"))
                .allowed
        );
        assert_eq!(
            check(&narrow, SocketOp::TcpAccept, "192.0.2.1:50000"),
            (false, Use::TcpAccept, None)
        );
    }

    /// A socket after the bind of `addr` was checked (and allowed).
    fn bound(g: &Gate, addr: &str) -> UdpSocketState {
        let socket = g.udp_socket();
        let v = g.check_udp(&socket, SocketOp::UdpBind, sa(addr), Instant::now());
        assert!(v.allowed, "bind {addr}");
        socket
    }

    fn udp(g: &Gate, s: &UdpSocketState, op: SocketOp, addr: &str) -> Verdict {
        g.check_udp(s, op, sa(addr), Instant::now())
    }

    #[test]
    fn a_udp_server_hears_anyone_and_replies_only_to_them() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        use SocketOp::*;
        assert!(check(&g, UdpBind, "127.0.0.1:9000").0);
        assert!(!g.check(UdpBind, sa("127.0.0.1:9001")).allowed);
        let s = bound(&g, "127.0.0.1:9000");
        assert_eq!(s.role(), UdpRole::Server);
        assert!(!udp(&g, &s, UdpSend, "127.0.0.1:5000").allowed);
        let v = udp(&g, &s, UdpReceive, "127.0.0.1:5000");
        assert_eq!(
            (v.allowed, v.use_, v.rule),
            (true, Use::UdpRecv, Some(DEFAULT_UDP_RECV.into()))
        );
        let v = udp(&g, &s, UdpSend, "127.0.0.1:5000");
        assert_eq!(
            (v.allowed, v.use_, v.rule),
            (true, Use::UdpSend, Some(REPLY_SEND.into()))
        );
        // The same peer written as mapped IPv6 is the same peer.
        assert!(udp(&g, &s, UdpSend, "[::ffff:127.0.0.1]:5000").allowed);
        // A different port of the same host is a different peer.
        assert!(!udp(&g, &s, UdpSend, "127.0.0.1:5001").allowed);
        // No implicit bind: the server has no udp-send grant.
        let v = g.check(UdpBind, sa("0.0.0.0:0"));
        assert!(!v.allowed && v.implicit_bind);
        assert_eq!(v.use_, Use::UdpSend);
    }

    #[test]
    fn a_udp_client_hears_only_replies() {
        let g = gate(&[], &[], &["udp-send=127.0.0.1:53"]);
        use SocketOp::*;
        // send from an unbound socket: implicit bind, then the send itself.
        let v = g.check(UdpBind, sa("[::]:0"));
        assert!(v.allowed && v.implicit_bind);
        assert_eq!(
            (v.use_, v.rule.as_deref()),
            (Use::UdpSend, Some(IMPLICIT_UDP_BIND))
        );
        let s = bound(&g, "0.0.0.0:0");
        assert_eq!(s.role(), UdpRole::Client);
        // Before it sent anything, nobody may reach it.
        assert!(!udp(&g, &s, UdpReceive, "127.0.0.1:53").allowed);
        assert!(udp(&g, &s, UdpSend, "127.0.0.1:53").allowed);
        let v = udp(&g, &s, UdpReceive, "127.0.0.1:53");
        assert_eq!(
            (v.allowed, v.use_, v.rule),
            (true, Use::UdpRecv, Some(REPLY_RECV.into()))
        );
        assert!(!udp(&g, &s, UdpReceive, "127.0.0.1:54").allowed);
        assert!(!udp(&g, &s, UdpReceive, "127.0.0.2:53").allowed);
        // The implicit bind does not make it a server.
        assert!(!g.check(UdpBind, sa("127.0.0.1:0")).allowed);
    }

    #[test]
    fn a_socket_bound_to_send_is_no_server_even_if_a_udp_bind_is_granted() {
        // Issue 14, item 1: `--udp 127.0.0.1:0 --allow udp-send=127.0.0.1:9`, the guest binds
        // 0.0.0.0:0. Before, any udp-bind rule let anyone reach every socket.
        let g = gate(&[], &["127.0.0.1:0"], &["udp-send=127.0.0.1:9"]);
        use SocketOp::*;
        let s = bound(&g, "0.0.0.0:0");
        assert_eq!(s.role(), UdpRole::Client);
        assert!(!udp(&g, &s, UdpReceive, "127.0.0.1:40000").allowed);
        assert!(!udp(&g, &s, UdpSend, "127.0.0.1:40000").allowed);
        // udp-recv rules narrow a server; they do not open a client.
        let g = gate(
            &[],
            &["127.0.0.1:0"],
            &["udp-send=127.0.0.1:9", "udp-recv=127.0.0.0/8"],
        );
        let s = bound(&g, "0.0.0.0:0");
        assert!(!udp(&g, &s, UdpReceive, "127.0.0.1:40000").allowed);
        // The granted address is a server.
        let server = bound(&g, "127.0.0.1:0");
        assert_eq!(server.role(), UdpRole::Server);
        assert!(udp(&g, &server, UdpReceive, "127.0.0.1:40000").allowed);
    }

    #[test]
    fn one_sockets_peer_opens_nothing_on_another_socket() {
        let g = gate(&[], &["127.0.0.1:9000"], &["udp-send=127.0.0.1:53"]);
        use SocketOp::*;
        let a = bound(&g, "0.0.0.0:0");
        let b = bound(&g, "0.0.0.0:0");
        assert!(udp(&g, &a, UdpSend, "127.0.0.1:53").allowed);
        assert!(udp(&g, &a, UdpReceive, "127.0.0.1:53").allowed);
        assert!(!udp(&g, &b, UdpReceive, "127.0.0.1:53").allowed);
        // A stranger heard by the server may be answered by the server only.
        let server = bound(&g, "127.0.0.1:9000");
        assert!(udp(&g, &server, UdpReceive, "192.0.2.7:4000").allowed);
        assert!(udp(&g, &server, UdpSend, "192.0.2.7:4000").allowed);
        assert!(!udp(&g, &a, UdpSend, "192.0.2.7:4000").allowed);
        assert!(!udp(&g, &b, UdpReceive, "192.0.2.7:4000").allowed);
    }

    #[test]
    fn a_peer_is_forgotten_after_it_was_idle_for_peer_idle() {
        let g = gate(&[], &["127.0.0.1:9000"], &["udp-send=127.0.0.1:53"]);
        use SocketOp::*;
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let client = bound(&g, "0.0.0.0:0");
        let dns = sa("127.0.0.1:53");
        assert!(g.check_udp(&client, UdpSend, dns, at(0)).allowed);
        // Traffic refreshes it: 20 s, then 45 s (25 s after the last), still open.
        assert!(g.check_udp(&client, UdpReceive, dns, at(20)).allowed);
        assert!(g.check_udp(&client, UdpReceive, dns, at(45)).allowed);
        assert_eq!(client.peer_count(at(45)), 1);
        // 31 s of silence: forgotten; the reply path is closed until the guest sends again.
        let late = at(45) + PEER_IDLE + Duration::from_secs(1);
        assert!(!g.check_udp(&client, UdpReceive, dns, late).allowed);
        assert_eq!(client.peer_count(late), 0);
        // One (spoofed) datagram to a server opens a reply path for PEER_IDLE only.
        let server = bound(&g, "127.0.0.1:9000");
        let spoofed = sa("192.0.2.1:7");
        assert!(g.check_udp(&server, UdpReceive, spoofed, at(0)).allowed);
        assert!(g.check_udp(&server, UdpSend, spoofed, at(30)).allowed);
        assert!(!g.check_udp(&server, UdpSend, spoofed, at(61)).allowed);
        // ...and after it is forgotten a new conversation is reported again.
        let v = g.check_udp(&server, UdpReceive, spoofed, at(100));
        assert!(v.allowed && !v.repeat);
    }

    #[test]
    fn udp_connect_checks_send_then_receive() {
        // wasmtime-wasi's udp connect: UdpBind(wildcard:0), UdpSend(peer), UdpReceive(peer).
        let g = gate(&[], &[], &["udp-send=[::1]:7"]);
        use SocketOp::*;
        let s = bound(&g, "[::]:0");
        assert!(udp(&g, &s, UdpSend, "[::1]:7").allowed);
        assert!(udp(&g, &s, UdpReceive, "[::1]:7").allowed);
    }

    #[test]
    fn udp_recv_rules_narrow_who_may_be_heard() {
        let g = gate(
            &[],
            &["127.0.0.1:9000"],
            &["udp-recv=127.0.0.0/8", "udp-send=192.0.2.1:9"],
        );
        use SocketOp::*;
        let s = bound(&g, "127.0.0.1:9000");
        let v = udp(&g, &s, UdpReceive, "127.0.0.5:1");
        assert_eq!(
            (v.allowed, v.use_, v.rule),
            (
                true,
                Use::UdpRecv,
                Some("--allow udp-recv=127.0.0.0/8".into())
            )
        );
        assert!(!udp(&g, &s, UdpReceive, "198.51.100.1:1").allowed);
        // A peer the socket sent to may still answer.
        assert!(!udp(&g, &s, UdpReceive, "192.0.2.1:9").allowed);
        assert!(udp(&g, &s, UdpSend, "192.0.2.1:9").allowed);
        assert!(udp(&g, &s, UdpReceive, "192.0.2.1:9").allowed);
        // Denied datagrams are not remembered as peers.
        assert!(!udp(&g, &s, UdpSend, "198.51.100.1:1").allowed);
    }

    #[test]
    fn a_conversation_is_reported_once_each_way_and_again_after_it_is_forgotten() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        let s = bound(&g, "127.0.0.1:9000");
        let now = Instant::now();
        let peer = sa("127.0.0.1:5000");
        let first_in = g.check_udp(&s, SocketOp::UdpReceive, peer, now);
        assert!(first_in.allowed && !first_in.repeat);
        let first_out = g.check_udp(&s, SocketOp::UdpSend, peer, now);
        assert!(
            first_out.allowed && !first_out.repeat,
            "the reply is its own report"
        );
        for _ in 0..3 {
            assert!(g.check_udp(&s, SocketOp::UdpReceive, peer, now).repeat);
            assert!(g.check_udp(&s, SocketOp::UdpSend, peer, now).repeat);
        }
        // A denial is never a repeat, however often it happens.
        let stranger = sa("192.0.2.7:53");
        assert!(!g.check_udp(&s, SocketOp::UdpSend, stranger, now).repeat);
        assert!(!g.check_udp(&s, SocketOp::UdpSend, stranger, now).repeat);
        // Pushed out of the peer set, the peer starts a new conversation.
        for i in 0..MAX_PEERS {
            let other = SocketAddr::new("10.0.0.2".parse().unwrap(), 1000 + i as u16);
            g.check_udp(&s, SocketOp::UdpReceive, other, now);
        }
        assert!(!g.check_udp(&s, SocketOp::UdpReceive, peer, now).repeat);
    }

    #[test]
    fn the_peer_set_forgets_the_least_recently_used() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        let s = bound(&g, "127.0.0.1:9000");
        let now = Instant::now();
        let peer = |i: usize| SocketAddr::new("10.0.0.1".parse().unwrap(), 1000 + i as u16);
        for i in 0..MAX_PEERS {
            assert!(g.check_udp(&s, SocketOp::UdpReceive, peer(i), now).allowed);
        }
        // Refresh the first, then push one more: the second is the one forgotten.
        assert!(g.check_udp(&s, SocketOp::UdpSend, peer(0), now).allowed);
        assert!(
            g.check_udp(&s, SocketOp::UdpReceive, peer(MAX_PEERS), now)
                .allowed
        );
        assert!(g.check_udp(&s, SocketOp::UdpSend, peer(0), now).allowed);
        assert!(!g.check_udp(&s, SocketOp::UdpSend, peer(1), now).allowed);
        assert!(g.check_udp(&s, SocketOp::UdpSend, peer(2), now).allowed);
        assert!(
            g.check_udp(&s, SocketOp::UdpSend, peer(MAX_PEERS), now)
                .allowed
        );
        let c = s.lock();
        assert_eq!(c.peers.entries.len(), MAX_PEERS);
        assert_eq!(c.peers.by_age.len(), MAX_PEERS);
    }

    #[test]
    fn the_guests_sockets_together_remember_at_most_max_guest_peers() {
        let g = gate(&[], &["127.0.0.1:0"], &[]);
        let now = Instant::now();
        let peer = |i: usize| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i / 60_000) as u32);
            SocketAddr::new(ip.into(), 1 + (i % 60_000) as u16)
        };
        let sockets: Vec<_> = (0..MAX_GUEST_PEERS / MAX_PEERS)
            .map(|_| bound(&g, "127.0.0.1:0"))
            .collect();
        let mut i = 0;
        for s in &sockets {
            for _ in 0..MAX_PEERS {
                assert!(g.check_udp(s, SocketOp::UdpReceive, peer(i), now).allowed);
                i += 1;
            }
        }
        assert_eq!(g.udp_peers(), MAX_GUEST_PEERS);
        // At the guest's cap, a socket with peers makes room among its own...
        assert!(
            g.check_udp(&sockets[0], SocketOp::UdpReceive, peer(i), now)
                .allowed
        );
        assert_eq!(sockets[0].peer_count(now), MAX_PEERS);
        assert!(
            !g.check_udp(&sockets[0], SocketOp::UdpSend, peer(0), now)
                .allowed
        );
        assert!(
            g.check_udp(&sockets[0], SocketOp::UdpSend, peer(i), now)
                .allowed
        );
        // ...a new socket still hears (the datagram is allowed) but remembers nobody.
        let extra = bound(&g, "127.0.0.1:0");
        assert!(
            g.check_udp(&extra, SocketOp::UdpReceive, peer(i + 1), now)
                .allowed
        );
        assert_eq!(extra.peer_count(now), 0);
        assert_eq!(g.udp_peers(), MAX_GUEST_PEERS);
        // A closed socket gives its peers back; expired peers are given back too.
        drop(sockets);
        assert_eq!(g.udp_peers(), 0);
        assert!(
            g.check_udp(&extra, SocketOp::UdpReceive, peer(1), now)
                .allowed
        );
        assert_eq!(g.udp_peers(), 1);
        extra.peer_count(now + PEER_IDLE + Duration::from_secs(1));
        assert_eq!(g.udp_peers(), 0);
    }

    #[test]
    fn dns_goes_by_name_rules() {
        let g = gate(&[], &[], &["dns=*.test"]);
        assert_eq!(
            g.check_name("db.test"),
            Decision::allow("--allow dns=*.test")
        );
        assert!(!g.check_name("test").allowed);
    }
}
