//! The gate: the policy applied to the questions wasmtime-wasi actually asks.
//!
//! wasmtime-wasi checks one `(address, operation)` pair at a time, including binds the guest
//! never wrote (an unbound socket is bound to the wildcard address, port 0, before a connect
//! or a send) and every accepted client and received datagram. The user's policy speaks of
//! uses (`tcp-connect`, `udp-recv`, ...). This module maps one onto the other so that a
//! connect grant works, yet opens no listen or receive path the policy did not grant.
//!
//! UDP is judged per socket ([`UdpSocketState`], in `udp_state`), like a stateful firewall's conntrack: a
//! socket bound by a `udp-bind` grant is a server (it hears anyone unless `udp-recv` rules
//! narrow it, and may answer whoever it heard); a socket bound only because it sends (the
//! wildcard, port-0 bind a `udp-send` grant allows) is a client and hears only the peers *it*
//! sent to. Either way a peer is remembered for [`PEER_IDLE`] after its last datagram, at most
//! [`MAX_PEERS`] per socket and [`MAX_GUEST_PEERS`] per guest, so one datagram never opens a
//! path forever or on another socket, and remote peers cannot grow the host's memory unbounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::Policy;
use super::rule::{Decision, Use, is_implicit_bind_addr};
use super::udp_state::{Direction, UdpRole, UdpSocketState};

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

/// The operations wasmtime-wasi checks (mirrors its `SocketAddrUse`, which the sandbox maps
/// onto this so the policy does not depend on wasmtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketOp {
    /// A bind of a TCP socket (explicit, or the implicit one before a connect).
    TcpBind,
    /// A listen, on the socket's actual local address.
    TcpListen,
    /// A client accepted by a listener, by the client's address.
    TcpAccept,
    /// A connect, by its destination.
    TcpConnect,
    /// A bind of a UDP socket (explicit, or the implicit one before a send).
    UdpBind,
    /// A datagram sent, by its destination.
    UdpSend,
    /// A datagram received, by its sender.
    UdpReceive,
}

/// One decision of the gate, under the use it is reported as (audit line, denial message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The use the decision is reported as.
    pub use_: Use,
    /// The address judged.
    pub addr: SocketAddr,
    /// Whether the operation may go ahead.
    pub allowed: bool,
    /// The rule that allowed it (as the user wrote it, or a `default: ...`); `None` if denied.
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

/// The policy of one guest. Cheap to share (`Arc<Gate>`).
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    /// UDP peers remembered by all sockets of this guest (see [`MAX_GUEST_PEERS`]).
    udp_peers: Arc<AtomicUsize>,
}

impl Gate {
    /// The gate of one guest under `policy`.
    pub fn new(policy: Policy) -> Gate {
        Gate {
            policy,
            udp_peers: Arc::default(),
        }
    }

    /// The state of a new UDP socket of this guest.
    pub fn udp_socket(&self) -> UdpSocketState {
        UdpSocketState::for_guest(self.udp_peers.clone())
    }

    /// UDP peers remembered by all sockets of this guest.
    #[cfg(test)]
    pub fn udp_peers(&self) -> usize {
        self.udp_peers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The policy this gate applies.
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
                let (d, repeat) = socket.exchange(addr, Direction::Send, now, REPLY_SEND, |_| {
                    p.decide(Use::UdpSend, addr)
                });
                Verdict {
                    repeat,
                    ..verdict(Use::UdpSend, d)
                }
            }
            SocketOp::UdpReceive => {
                let (d, repeat) = socket.exchange(
                    addr,
                    Direction::Receive,
                    now,
                    REPLY_RECV,
                    |role| match role {
                        // A UDP server the user granted a bind for is meant to hear from
                        // anyone, as a TCP listener accepts anyone, unless udp-recv rules say
                        // whom.
                        UdpRole::Server if p.has_rule(Use::UdpRecv) => p.decide(Use::UdpRecv, addr),
                        UdpRole::Server => Decision::allow(DEFAULT_UDP_RECV),
                        // A socket bound only to send hears its own peers and nobody else.
                        UdpRole::Client | UdpRole::Unbound => Decision::deny(),
                    },
                );
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod udp_tests;
