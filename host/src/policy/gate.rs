//! The gate: the policy applied to the questions wasmtime-wasi actually asks.
//!
//! wasmtime-wasi checks one `(address, operation)` pair at a time, including binds the guest
//! never wrote (an unbound socket is bound to the wildcard address, port 0, before a connect
//! or a send) and every accepted client and received datagram. The user's policy speaks of
//! uses (`tcp-connect`, `udp-recv`, ...). This module maps one onto the other so that a
//! connect grant works, yet opens no listen or receive path the policy did not grant. It keeps
//! the only state of the policy: the UDP peers the guest is talking with, so replies pass.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

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

/// How many UDP peers are remembered for replies; the oldest is forgotten first.
pub const MAX_PEERS: usize = 4096;

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

/// The policy of one guest, with the UDP conversation state. Cheap to share (`Arc<Gate>`).
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    peers: Mutex<Peers>,
}

impl Gate {
    pub fn new(policy: Policy) -> Gate {
        Gate {
            policy,
            peers: Mutex::new(Peers::default()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A dns lookup: the name must be granted by a `dns` rule.
    pub fn check_name(&self, name: &str) -> Decision {
        self.policy.decide_name(name)
    }

    pub fn check(&self, op: SocketOp, addr: SocketAddr) -> Verdict {
        let p = &self.policy;
        let verdict = |use_: Use, d: Decision| Verdict {
            use_,
            addr,
            allowed: d.allowed,
            rule: d.rule,
            implicit_bind: false,
            grant_addr: addr,
            repeat: false,
        };
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
            SocketOp::UdpBind => {
                let bind = p.decide(Use::UdpBind, addr);
                if bind.allowed || !is_implicit_bind_addr(addr) {
                    return verdict(Use::UdpBind, bind);
                }
                implicit(
                    addr,
                    Use::UdpSend,
                    p.has_rule(Use::UdpSend),
                    IMPLICIT_UDP_BIND,
                )
            }
            SocketOp::UdpSend => {
                let mut peers = self.lock_peers();
                let mut d = p.decide(Use::UdpSend, addr);
                if !d.allowed && peers.contains(addr) {
                    d = Decision::allow(REPLY_SEND);
                }
                let repeat = d.allowed && peers.touch(addr, Direction::Send);
                Verdict {
                    repeat,
                    ..verdict(Use::UdpSend, d)
                }
            }
            SocketOp::UdpReceive => {
                let mut peers = self.lock_peers();
                let mut d = if p.has_rule(Use::UdpRecv) {
                    p.decide(Use::UdpRecv, addr)
                } else if p.has_rule(Use::UdpBind) {
                    // A UDP server the user granted a bind for is meant to hear from anyone,
                    // as a TCP listener accepts anyone.
                    Decision::allow(DEFAULT_UDP_RECV)
                } else {
                    Decision::deny()
                };
                if !d.allowed && peers.contains(addr) {
                    d = Decision::allow(REPLY_RECV);
                }
                let repeat = d.allowed && peers.touch(addr, Direction::Receive);
                Verdict {
                    repeat,
                    ..verdict(Use::UdpRecv, d)
                }
            }
        }
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        // The peer set stays consistent even if a holder panicked: every update is one step.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
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

/// UDP peers the guest has exchanged an allowed datagram with, least recently used first out.
///
/// One set serves both directions: a peer the guest sent to may answer, and a peer the guest
/// heard from may be answered. Addresses are keyed by canonical IP and port, so a mapped IPv6
/// peer and its IPv4 form are the same peer.
#[derive(Debug, Default)]
struct Peers {
    /// When each peer was last used, and the directions already reported for it.
    last_used: HashMap<(IpAddr, u16), (u64, u8)>,
    by_age: BTreeMap<u64, (IpAddr, u16)>,
    clock: u64,
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

    fn contains(&self, addr: SocketAddr) -> bool {
        self.last_used.contains_key(&Peers::key(addr))
    }

    /// Marks the peer used now in `direction`; true if that direction was reported before.
    fn touch(&mut self, addr: SocketAddr, direction: Direction) -> bool {
        let key = Peers::key(addr);
        self.clock += 1;
        let bit = direction as u8;
        let mut seen = 0;
        if let Some((old, directions)) = self.last_used.insert(key, (self.clock, bit)) {
            self.by_age.remove(&old);
            seen = directions;
            self.last_used.insert(key, (self.clock, directions | bit));
        }
        self.by_age.insert(self.clock, key);
        while self.last_used.len() > MAX_PEERS {
            let (_, oldest) = self.by_age.pop_first().expect("non-empty");
            self.last_used.remove(&oldest);
        }
        seen & bit != 0
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

    #[test]
    fn a_udp_server_hears_anyone_and_replies_only_to_them() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        use SocketOp::*;
        assert!(check(&g, UdpBind, "127.0.0.1:9000").0);
        assert!(!g.check(UdpBind, sa("127.0.0.1:9001")).allowed);
        assert!(!g.check(UdpSend, sa("127.0.0.1:5000")).allowed);
        assert_eq!(
            check(&g, UdpReceive, "127.0.0.1:5000"),
            (true, Use::UdpRecv, Some(DEFAULT_UDP_RECV.into()))
        );
        assert_eq!(
            check(&g, UdpSend, "127.0.0.1:5000"),
            (true, Use::UdpSend, Some(REPLY_SEND.into()))
        );
        // The same peer written as mapped IPv6 is the same peer.
        assert!(g.check(UdpSend, sa("[::ffff:127.0.0.1]:5000")).allowed);
        // A different port of the same host is a different peer.
        assert!(!g.check(UdpSend, sa("127.0.0.1:5001")).allowed);
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
        // Before it sent anything, nobody may reach it.
        assert!(!g.check(UdpReceive, sa("127.0.0.1:53")).allowed);
        assert!(g.check(UdpSend, sa("127.0.0.1:53")).allowed);
        assert_eq!(
            check(&g, UdpReceive, "127.0.0.1:53"),
            (true, Use::UdpRecv, Some(REPLY_RECV.into()))
        );
        assert!(!g.check(UdpReceive, sa("127.0.0.1:54")).allowed);
        assert!(!g.check(UdpReceive, sa("127.0.0.2:53")).allowed);
        // The implicit bind does not make it a server.
        assert!(!g.check(UdpBind, sa("127.0.0.1:0")).allowed);
    }

    #[test]
    fn udp_connect_checks_send_then_receive() {
        // wasmtime-wasi's udp connect: UdpBind(wildcard:0), UdpSend(peer), UdpReceive(peer).
        let g = gate(&[], &[], &["udp-send=[::1]:7"]);
        use SocketOp::*;
        assert!(g.check(UdpBind, sa("[::]:0")).allowed);
        assert!(g.check(UdpSend, sa("[::1]:7")).allowed);
        assert!(g.check(UdpReceive, sa("[::1]:7")).allowed);
    }

    #[test]
    fn udp_recv_rules_narrow_who_may_be_heard() {
        let g = gate(
            &[],
            &["127.0.0.1:9000"],
            &["udp-recv=127.0.0.0/8", "udp-send=192.0.2.1:9"],
        );
        use SocketOp::*;
        assert_eq!(
            check(&g, UdpReceive, "127.0.0.5:1"),
            (
                true,
                Use::UdpRecv,
                Some("--allow udp-recv=127.0.0.0/8".into())
            )
        );
        assert!(!g.check(UdpReceive, sa("198.51.100.1:1")).allowed);
        // A peer the guest sent to may still answer.
        assert!(!g.check(UdpReceive, sa("192.0.2.1:9")).allowed);
        assert!(g.check(UdpSend, sa("192.0.2.1:9")).allowed);
        assert!(g.check(UdpReceive, sa("192.0.2.1:9")).allowed);
        // Denied datagrams are not remembered as peers.
        assert!(!g.check(UdpSend, sa("198.51.100.1:1")).allowed);
    }

    #[test]
    fn a_conversation_is_reported_once_each_way_and_again_after_it_is_forgotten() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        let peer = sa("127.0.0.1:5000");
        let first_in = g.check(SocketOp::UdpReceive, peer);
        assert!(first_in.allowed && !first_in.repeat);
        let first_out = g.check(SocketOp::UdpSend, peer);
        assert!(
            first_out.allowed && !first_out.repeat,
            "the reply is its own report"
        );
        for _ in 0..3 {
            assert!(g.check(SocketOp::UdpReceive, peer).repeat);
            assert!(g.check(SocketOp::UdpSend, peer).repeat);
        }
        // A denial is never a repeat, however often it happens.
        let stranger = sa("192.0.2.7:53");
        assert!(!g.check(SocketOp::UdpSend, stranger).repeat);
        assert!(!g.check(SocketOp::UdpSend, stranger).repeat);
        // Pushed out of the peer set, the peer starts a new conversation.
        for i in 0..MAX_PEERS {
            let other = SocketAddr::new("10.0.0.2".parse().unwrap(), 1000 + i as u16);
            g.check(SocketOp::UdpReceive, other);
        }
        assert!(!g.check(SocketOp::UdpReceive, peer).repeat);
    }

    #[test]
    fn the_peer_set_forgets_the_least_recently_used() {
        let g = gate(&[], &["127.0.0.1:9000"], &[]);
        let peer = |i: usize| SocketAddr::new("10.0.0.1".parse().unwrap(), 1000 + i as u16);
        for i in 0..MAX_PEERS {
            assert!(g.check(SocketOp::UdpReceive, peer(i)).allowed);
        }
        // Refresh the first, then push one more: the second is the one forgotten.
        assert!(g.check(SocketOp::UdpSend, peer(0)).allowed);
        assert!(g.check(SocketOp::UdpReceive, peer(MAX_PEERS)).allowed);
        assert!(g.check(SocketOp::UdpSend, peer(0)).allowed);
        assert!(!g.check(SocketOp::UdpSend, peer(1)).allowed);
        assert!(g.check(SocketOp::UdpSend, peer(2)).allowed);
        assert!(g.check(SocketOp::UdpSend, peer(MAX_PEERS)).allowed);
        assert_eq!(g.lock_peers().last_used.len(), MAX_PEERS);
        assert_eq!(g.lock_peers().by_age.len(), MAX_PEERS);
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
