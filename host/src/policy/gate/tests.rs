//! Table tests of the gate: the TCP checks wasmtime-wasi makes, implicit binds, names (UDP
//! is in `udp_tests`).

use super::*;

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn gate(listen: &[&str], udp: &[&str], allow: &[&str]) -> Gate {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Gate::new(Policy::from_flags(&s(listen), &s(udp), &s(allow)).unwrap())
}

pub(super) fn check(g: &Gate, op: SocketOp, addr: &str) -> (bool, Use, Option<String>) {
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
#[test]
fn dns_goes_by_name_rules() {
    let g = gate(&[], &[], &["dns=*.test"]);
    assert_eq!(
        g.check_name("db.test"),
        Decision::allow("--allow dns=*.test")
    );
    assert!(!g.check_name("test").allowed);
}
