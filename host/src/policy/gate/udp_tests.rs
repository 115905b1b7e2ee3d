//! Table tests of the gate on UDP: who a socket hears and answers by its role, replies,
//! the peers remembered per socket and per guest, and one audit line per conversation.

use super::tests::{check, gate, sa};
use super::*;
use crate::policy::udp_state::*;
use std::time::Duration;

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
