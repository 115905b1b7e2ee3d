//! The ledger's rules, one table row or scenario each.

use super::*;
use std::time::Duration;

fn ledger(max_sockets: u32, max_connections: u32, process: &Arc<ProcessSockets>) -> SocketLedger {
    let limits = Enforced {
        max_memory: 0,
        max_sockets,
        max_connections,
        max_busy: Duration::ZERO,
    };
    SocketLedger::new(
        true,
        false,
        &limits,
        process.clone(),
        crate::metrics::GuestMetrics::detached(),
    )
}

fn held(process: &ProcessSockets) -> u64 {
    process.held.load(Ordering::Relaxed)
}

/// One step of a guest's life, as the hooks report it.
#[derive(Clone, Copy, Debug)]
enum Step {
    Create(Transport),
    Accept(u32),
    Drop(u32),
    Refund,
}
use Step::*;
const TCP: Transport = Transport::Tcp;
const UDP: Transport = Transport::Udp;

#[test]
fn sockets_are_admitted_until_a_limit_refuses_them() {
    // (what, max-sockets, max-connections, process budget, steps, the last step's result)
    type Case = (
        &'static str,
        u32,
        u32,
        u64,
        &'static [Step],
        Result<(), Refusal>,
    );
    let cases: &[Case] = &[
        ("a granted transport", 2, 2, 10, &[Create(TCP)], Ok(())),
        (
            "no rule for UDP",
            2,
            2,
            10,
            &[Create(UDP)],
            Err(Refusal::NoGrant),
        ),
        (
            "at max-sockets",
            2,
            9,
            10,
            &[Create(TCP), Accept(1), Create(TCP)],
            Err(Refusal::MaxSockets(2)),
        ),
        (
            "a dropped socket frees its place",
            2,
            9,
            10,
            &[Create(TCP), Accept(1), Drop(1), Create(TCP)],
            Ok(()),
        ),
        (
            "a refund frees its place",
            1,
            9,
            10,
            &[Create(TCP), Refund, Create(TCP)],
            Ok(()),
        ),
        (
            "at max-connections",
            9,
            1,
            10,
            &[Create(TCP), Accept(1), Accept(2)],
            Err(Refusal::MaxConnections(1)),
        ),
        (
            "a closed connection frees its place",
            9,
            1,
            10,
            &[Accept(1), Drop(1), Accept(2)],
            Ok(()),
        ),
        (
            "max-connections before max-sockets",
            1,
            1,
            10,
            &[Accept(1), Accept(2)],
            Err(Refusal::MaxConnections(1)),
        ),
        (
            "at the process's budget",
            9,
            9,
            2,
            &[Create(TCP), Accept(1), Create(TCP)],
            Err(Refusal::Budget(2)),
        ),
    ];
    for &(what, max_sockets, max_connections, budget, steps, ref expected) in cases {
        let process = ProcessSockets::new(budget);
        let mut ledger = ledger(max_sockets, max_connections, &process);
        let mut last = Ok(());
        for step in steps {
            last = match *step {
                Create(transport) => ledger.admit(transport),
                Accept(rep) => ledger.accept(rep, Some((rep + 200, rep + 100))),
                Drop(rep) => {
                    ledger.release(rep);
                    Ok(())
                }
                Refund => {
                    ledger.refund();
                    Ok(())
                }
            };
        }
        assert_eq!(&last, expected, "{what}");
        assert_eq!(
            held(&process),
            u64::from(ledger.held),
            "{what}: the process counts the same"
        );
        drop(ledger);
        assert_eq!(
            held(&process),
            0,
            "{what}: dropping the ledger returns everything"
        );
    }
}

#[test]
fn the_guests_of_a_process_share_its_budget() {
    let process = ProcessSockets::new(3);
    let mut first = ledger(9, 9, &process);
    let mut second = ledger(9, 9, &process);
    first.admit(TCP).unwrap();
    first.admit(TCP).unwrap();
    second.admit(TCP).unwrap();
    assert_eq!(second.admit(TCP), Err(Refusal::Budget(3)));
    assert_eq!(first.admit(TCP), Err(Refusal::Budget(3)));
    drop(first);
    assert_eq!(held(&process), 1);
    second.admit(TCP).unwrap();
}

#[test]
fn each_refusal_names_its_limit() {
    let rule = |refusal: Refusal| refusal.rule().map(|r| r.replace(LIMIT_PREFIX, "LIMIT "));
    assert_eq!(rule(Refusal::NoGrant), None);
    assert_eq!(rule(Refusal::MaxSockets(4)).unwrap(), "LIMIT max-sockets 4");
    assert_eq!(
        rule(Refusal::MaxConnections(2)).unwrap(),
        "LIMIT max-connections 2"
    );
    assert_eq!(
        rule(Refusal::Budget(7)).unwrap(),
        "LIMIT the descriptor budget of this process's guests (7)"
    );
}

#[test]
fn a_lingering_close_counts_until_it_is_done() {
    let process = ProcessSockets::new(10);
    let mut ledger = ledger(2, 9, &process);
    ledger.admit(TCP).unwrap();
    ledger.connected(1, 200, 100);
    // The output stream is dropped with a write in flight, then the socket.
    let linger = ledger
        .output_dropped(100, true)
        .expect("a socket's stream lingers");
    ledger.release(1);
    assert_eq!(ledger.held, 0);
    assert_eq!(ledger.lingering.load(Ordering::Acquire), 1);
    assert_eq!(held(&process), 1, "the process still counts the descriptor");
    ledger.admit(TCP).unwrap();
    assert_eq!(ledger.admit(TCP), Err(Refusal::MaxSockets(2)));
    linger.finished();
    assert_eq!(ledger.lingering.load(Ordering::Acquire), 0);
    assert_eq!(held(&process), 1);
    ledger.admit(TCP).unwrap();
}

#[test]
fn a_close_that_ends_before_its_socket_is_dropped_counts_once() {
    let process = ProcessSockets::new(10);
    let mut ledger = ledger(1, 9, &process);
    ledger.admit(TCP).unwrap();
    ledger.connected(1, 200, 100);
    let linger = ledger.output_dropped(100, true).unwrap();
    linger.finished();
    ledger.release(1);
    assert_eq!(ledger.lingering.load(Ordering::Acquire), 0);
    assert_eq!(held(&process), 0);
    ledger.admit(TCP).unwrap();
}

#[test]
fn streams_with_nothing_in_flight_or_no_socket_do_not_linger() {
    let process = ProcessSockets::new(10);
    let mut ledger = ledger(1, 9, &process);
    ledger.connected(1, 200, 100);
    assert!(ledger.output_dropped(100, false).is_none());
    assert!(ledger.output_dropped(7, true).is_none());
    assert!(ledger.closing.is_empty() && ledger.outputs.is_empty());
}

#[test]
fn a_dropped_ledger_returns_all_but_its_lingering_closes_until_they_end() {
    let process = ProcessSockets::new(10);
    let mut ledger = ledger(9, 9, &process);
    for rep in 1..=3 {
        ledger.accept(rep, Some((rep + 200, rep + 100))).unwrap();
    }
    let linger = ledger.output_dropped(101, true).unwrap();
    assert_eq!(held(&process), 3);
    drop(ledger);
    assert_eq!(
        held(&process),
        1,
        "the lingering close keeps its descriptor"
    );
    linger.finished();
    assert_eq!(held(&process), 0);
}

#[test]
fn accepted_connections_are_counted_until_released_or_the_ledger_is_dropped() {
    let metrics = crate::metrics::Metrics::new();
    let limits = Enforced {
        max_memory: 0,
        max_sockets: 9,
        max_connections: 2,
        max_busy: Duration::ZERO,
    };
    let process = ProcessSockets::new(10);
    let mut ledger = SocketLedger::new(true, false, &limits, process, metrics.guest("g", 1));
    for rep in 1..=3 {
        let _ = ledger.accept(rep, Some((rep + 200, rep + 100)));
    }
    let series = |text: &str, name: &str| {
        let prefix = format!("sockbox_{name}{{guest=\"g\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    };
    let text = metrics.encode();
    assert_eq!(series(&text, "connections_total").as_deref(), Some("2"));
    assert_eq!(series(&text, "connections_active").as_deref(), Some("2"));
    assert!(ledger.is_connection_input(201) && ledger.is_connection_output(101));
    assert!(
        !ledger.is_connection_input(101),
        "an output is not an input"
    );
    ledger.release(1);
    assert!(!ledger.is_connection_input(201), "released with its socket");
    let text = metrics.encode();
    assert_eq!(series(&text, "connections_active").as_deref(), Some("1"));
    drop(ledger);
    let text = metrics.encode();
    assert_eq!(series(&text, "connections_active").as_deref(), Some("0"));
    assert_eq!(series(&text, "connections_total").as_deref(), Some("2"));
}
