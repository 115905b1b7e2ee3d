//! Issue 14, items 1, 11 and the receive part of 12: UDP sockets judged one by one, and ports
//! shared only among one guest's instances.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sockbox::{RunningGuest, Sandbox, Transport};

use crate::escape::{MARKER, hostile_results};
use crate::support::{PATIENCE, policy, test_guest};

/// How long a socket waits to show nothing came back.
const QUIET: Duration = Duration::from_millis(400);

fn loopback_socket(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(QUIET)).unwrap();
    socket
}

/// What `socket` received within its read timeout.
fn heard(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

/// Waits (bounded) for a stdout line starting with `prefix`; returns the rest of it.
async fn line_starting(guest: &RunningGuest, prefix: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(line) = guest.stdout().lines().find_map(|l| l.strip_prefix(prefix)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} line; stdout:\n{}\nstderr:\n{}",
            guest.stdout(),
            guest.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_bound_to_send_hears_only_its_own_peers_and_is_never_ready() {
    for hostile in ["hostile", "hostile_p3"] {
        conversation(hostile, false).await;
        // The same with instances (SO_REUSEPORT, and the bind to port 0 made unshared).
        conversation(hostile, true).await;
    }
}

async fn conversation(hostile: &str, share_ports: bool) {
    // The policy of the report: a UDP server grant, and a send grant for one peer (the decoy).
    let decoy = loopback_socket("127.0.0.1");
    let decoy_addr = decoy.local_addr().unwrap();
    let stranger = loopback_socket("127.0.0.1");
    let mut guest = Sandbox::builder(test_guest(hostile))
        .policy(policy(
            &[],
            &["127.0.0.1:0"],
            &[&format!("udp-send={decoy_addr}")],
        ))
        .args([format!("udp-conversation:{decoy_addr}:2500")])
        .share_ports(share_ports)
        .capture_output(true)
        .start()
        .await
        .expect("guest starts");
    let mut watch = guest.socket_watch();
    let ports = line_starting(&guest, "PORTS ").await;
    let ports: Vec<u16> = ports.split(' ').map(|p| p.parse().unwrap()).collect();
    let (a, b) = (
        SocketAddr::from(([127, 0, 0, 1], ports[0])),
        SocketAddr::from(([127, 0, 0, 1], ports[1])),
    );

    let (bytes, from) = heard(&decoy).expect("the guest's send reaches the decoy");
    assert_eq!((bytes.as_slice(), from.port()), (MARKER, a.port()));

    // A stranger reaches neither socket, so nothing comes back.
    stranger.send_to(b"stranger", a).unwrap();
    stranger.send_to(b"stranger", b).unwrap();
    assert_eq!(heard(&stranger), None, "a stranger got an answer");
    // The peer socket a sent to cannot reach socket b.
    decoy.send_to(b"to b", b).unwrap();
    assert_eq!(heard(&decoy), None, "a's peer got an answer from b");
    // Control: it may answer a, and a answers it.
    decoy.send_to(b"to a", a).unwrap();
    let (bytes, from) = heard(&decoy).expect("a's peer is answered");
    assert_eq!((bytes.as_slice(), from), (&b"to a"[..], a));

    tokio::time::timeout(PATIENCE, guest.wait()).await.unwrap();
    let results = hostile_results(&guest.stdout());
    assert_eq!(results.len(), 1, "{}", guest.stdout());
    assert!(results[0].ok, "{}", results[0]);
    assert_eq!(
        results[0].detail,
        format!("a heard [\"{decoy_addr}(answer Ok(4))\"] b heard []")
    );
    // Neither socket was announced: they are not servers.
    let ready = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
    assert!(
        matches!(ready, Err(_) | Ok(None)),
        "a socket bound to send was announced ready: {ready:?}"
    );
    // The stranger's datagrams were refused and recorded as such.
    let stranger_addr = stranger.local_addr().unwrap().to_string();
    let refused = guest
        .decisions()
        .into_iter()
        .filter(|d| d.use_ == "udp-recv" && d.addr == stranger_addr && !d.allowed())
        .count();
    assert_eq!(refused, 2, "{:#?}", guest.decisions());
    assert!(
        !guest
            .decisions()
            .iter()
            .any(|d| d.use_ == "udp-recv" && d.addr == stranger_addr && d.allowed())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbours_hop_limits_do_not_stop_port_sharing() {
    // The neighbour keeps unbound sockets carrying every hop limit (167 was the old mark).
    let mut neighbour = Sandbox::builder(test_guest("hostile"))
        .policy(policy(&["127.0.0.1:0"], &["127.0.0.1:0"], &[]))
        .args(["hop-marks:255", "hold"])
        .capture_output(true)
        .start()
        .await
        .expect("neighbour starts");
    let marked = line_starting(&neighbour, "RESULT hop-marks:255 ").await;
    assert!(marked.starts_with("ok "), "{marked}");

    // Both worlds: WASI 0.3 sockets are found and shared by their own twins (`reuseport.rs`).
    for (guest, listen, udp) in [
        ("echo", &["127.0.0.1:0"][..], &[][..]),
        ("udp-echo", &[][..], &["127.0.0.1:0"][..]),
        ("echo-p3", &["127.0.0.1:0"][..], &[][..]),
        ("udp-echo-p3", &[][..], &["127.0.0.1:0"][..]),
    ] {
        let started = tokio::time::timeout(
            PATIENCE,
            Sandbox::builder(guest)
                .policy(policy(listen, udp, &[]))
                .capture_output(true)
                .start_instances(2),
        )
        .await
        .expect("in time");
        let (instances, sockets) = started.unwrap_or_else(|e| panic!("{guest}: {e:#}"));
        assert_eq!(sockets.len(), 1);
        if sockets[0].transport == Transport::Udp {
            // Both instances share the (port-0) UDP port: clients from many ports reach both.
            let addr = sockets[0].addr;
            tokio::task::spawn_blocking(move || {
                for i in 0..64 {
                    let client = loopback_socket("127.0.0.1");
                    client.set_read_timeout(Some(PATIENCE)).unwrap();
                    let message = format!("client {i}");
                    client.send_to(message.as_bytes(), addr).unwrap();
                    let (bytes, _) = heard(&client).expect("an answer");
                    assert_eq!(bytes, message.as_bytes());
                }
            })
            .await
            .unwrap();
            for instance in &instances {
                let heard = instance
                    .decisions()
                    .iter()
                    .filter(|d| d.use_ == "udp-recv" && d.allowed())
                    .count();
                assert!(heard > 0, "instance {} heard no client", instance.name());
            }
        }
        for instance in instances {
            let exit = instance.stop(Duration::from_secs(10)).await;
            assert!(exit.is_clean(), "{guest}: {exit}");
        }
    }
    assert!(neighbour.decisions().iter().all(|d| d.allowed()));
    drop(neighbour.finish(Duration::ZERO).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_guest_cannot_join_a_port_group_through_a_range() {
    // Owner and intruder in either world: a 0.3 group keeps out a 0.2 intruder and the reverse.
    let worlds = [
        ("", "hostile"),
        ("-p3", "hostile_p3"),
        ("", "hostile_p3"),
        ("-p3", "hostile"),
    ];
    for (suffix, hostile) in worlds {
        port_group_keeps_out(suffix, hostile).await;
    }
}

async fn port_group_keeps_out(suffix: &str, hostile: &str) {
    for (server, listen, udp, attempt, use_) in [
        (
            "echo",
            &["127.0.0.1:0"][..],
            &[][..],
            "wasi-listen",
            "tcp-listen",
        ),
        (
            "udp-echo",
            &[][..],
            &["127.0.0.1:0"][..],
            "udp-bind",
            "udp-bind",
        ),
    ] {
        let server = format!("{server}{suffix}");
        let (instances, sockets) = Sandbox::builder(server.as_str())
            .policy(policy(listen, udp, &[]))
            .capture_output(true)
            .start_instances(2)
            .await
            .expect("the owner's instances start");
        let port = sockets[0].addr.port();
        // Another guest with instances (SO_REUSEPORT) and a range that covers the port.
        let range = format!("{use_}=127.0.0.1:{}-{}", port.saturating_sub(5), port + 5);
        let mut intruder = Sandbox::builder(test_guest(hostile))
            .policy(policy(&[], &[], &[&range]))
            .share_ports(true)
            .args([
                format!("{attempt}:127.0.0.1:{port}"),
                format!("{attempt}:0.0.0.0:{port}"),
            ])
            .capture_output(true)
            .start()
            .await
            .expect("intruder starts");
        tokio::time::timeout(PATIENCE, intruder.wait())
            .await
            .unwrap();
        let results = hostile_results(&intruder.stdout());
        assert_eq!(results.len(), 2, "{}", intruder.stdout());
        let exact = &results[0];
        let in_use = ["AddrInUse", "AddressInUse", "address-in-use"];
        assert!(
            !exact.ok && in_use.iter().any(|s| exact.detail.contains(s)),
            "{server}: {exact}"
        );
        // The wildcard is not granted by the range: the policy refuses it first.
        assert!(!results[1].ok, "{server}: {}", results[1]);
        for instance in instances {
            let exit = instance.stop(Duration::from_secs(10)).await;
            assert!(exit.is_clean(), "{exit}");
        }
        // Once the owner is gone the address is free for others.
        let mut later = Sandbox::builder(test_guest(hostile))
            .policy(policy(&[], &[], &[&range]))
            .share_ports(true)
            .args([format!("{attempt}:127.0.0.1:{port}")])
            .capture_output(true)
            .start()
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, later.wait()).await.unwrap();
        let results = hostile_results(&later.stdout());
        assert!(results[0].ok, "{server}: {}", results[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_datagrams_keeps_no_host_call_busy() {
    // WASI 0.2's batched receive, and 0.3's one datagram per call.
    for udp_echo in ["udp-echo", "udp-echo-p3"] {
        refused_flood(udp_echo).await;
    }
}

async fn refused_flood(udp_echo: &str) {
    // udp-echo hears only 127.0.0.2; a flood from 127.0.0.1 is refused datagram by datagram.
    let (guest, sockets) = crate::support::start(
        udp_echo,
        policy(&[], &["127.0.0.1:0"], &["udp-recv=127.0.0.2"]),
        &[],
    )
    .await;
    let target = sockets[0].addr;
    let (neighbour, neighbour_sockets) =
        crate::support::start("echo", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let neighbour_addr = crate::support::tcp(&neighbour_sockets);

    let flooding = Arc::new(AtomicBool::new(true));
    let flood = std::thread::spawn({
        let flooding = flooding.clone();
        move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let started = Instant::now();
            let mut sent = 0u64;
            // Bounded: stops when told, or after 8 s whatever happens.
            while flooding.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(8) {
                if socket.send_to(&[0u8; 64], target).is_ok() {
                    sent += 1;
                }
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The one peer it may hear gets through (a full socket buffer drops datagrams, so it
    // retries, as a UDP client does), and the neighbour keeps answering.
    let (answered, worst_neighbour) = tokio::task::spawn_blocking(move || {
        let peer = loopback_socket("127.0.0.2");
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let started = Instant::now();
        let mut answered = None;
        while answered.is_none() && started.elapsed() < Duration::from_secs(3) {
            peer.send_to(b"ping", target).unwrap();
            if let Some((bytes, _)) = heard(&peer) {
                assert_eq!(bytes, b"ping");
                answered = Some(started.elapsed());
            }
        }
        let mut worst_neighbour = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let mut stream = std::net::TcpStream::connect(neighbour_addr).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            use std::io::{Read, Write};
            stream.write_all(b"hello").unwrap();
            let mut back = [0u8; 5];
            stream.read_exact(&mut back).unwrap();
            worst_neighbour = worst_neighbour.max(started.elapsed());
        }
        (answered, worst_neighbour)
    })
    .await
    .unwrap();

    // Asked to stop during the flood, it stops by itself: no host call is stuck draining it.
    let asked = Instant::now();
    let exit = guest.stop(Duration::from_secs(2)).await;
    let stopped_in = asked.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    eprintln!(
        "flood: {sent} datagrams; the allowed peer answered after {answered:?}, the \
         neighbour's worst answer {worst_neighbour:?}; stopped in {stopped_in:?}"
    );
    assert!(
        exit.is_clean(),
        "{exit} (after {stopped_in:?}, flood of {sent})"
    );
    assert!(
        worst_neighbour < Duration::from_secs(2),
        "{worst_neighbour:?}"
    );
    let exit = neighbour.stop(Duration::from_secs(10)).await;
    assert!(exit.is_clean(), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receive_call_reads_a_bounded_number_of_refused_datagrams() {
    // 300 refused datagrams queued before the guest's first receive, then one it may hear.
    let mut guest = Sandbox::builder(test_guest("hostile"))
        .policy(policy(&[], &["127.0.0.1:0"], &["udp-recv=127.0.0.2"]))
        .args(["udp-receive-calls:127.0.0.1:0:1500"])
        .capture_output(true)
        .start()
        .await
        .expect("guest starts");
    let port: u16 = line_starting(&guest, "BOUND ").await.parse().unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let stranger = loopback_socket("127.0.0.1");
    for _ in 0..300 {
        stranger.send_to(b"refused", target).unwrap();
    }
    loopback_socket("127.0.0.2")
        .send_to(b"allowed", target)
        .unwrap();
    tokio::time::timeout(PATIENCE, guest.wait()).await.unwrap();
    let results = hostile_results(&guest.stdout());
    assert_eq!(results.len(), 1, "{}", guest.stdout());
    // Every denial counts, including those past the audit's rate limit (100 a second).
    let refused = guest.denials();
    // The kernel kept more than one call's worth (else this proves nothing).
    assert!(refused > 256, "only {refused} refused datagrams arrived");
    let empty: usize = results[0]
        .detail
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", results[0]));
    assert!(
        results[0].ok && empty >= 1 && results[0].detail.contains("from 127.0.0.2:"),
        "one call drained all {refused} refused datagrams: {}",
        results[0]
    );
}
