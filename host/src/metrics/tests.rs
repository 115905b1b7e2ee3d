//! The exposition's names and values, readiness, and the listener's bounds.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::policy::Use;

/// The value of the sample `name{labels}` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn each_guest_event_moves_its_own_series() {
    let metrics = Metrics::new();
    let echo = metrics.guest("echo", 1);
    metrics.guest("chat", 1);
    echo.connection_opened();
    echo.connection_opened();
    echo.connections_closed(1);
    echo.received(10);
    echo.sent(7);
    echo.datagrams_received(2, 30);
    echo.datagrams_sent(1, 5);
    echo.decided(&AuditEvent::new(
        "echo",
        Use::TcpConnect,
        "192.0.2.1:80",
        false,
        None,
    ));
    echo.decided(&AuditEvent::new(
        "echo",
        Use::Dns,
        "example.com",
        true,
        None,
    ));
    let limit = Some(format!("{}max-connections 1", crate::audit::LIMIT_PREFIX));
    echo.decided(&AuditEvent::refused(
        "echo",
        "tcp-accept",
        "127.0.0.1:5",
        limit,
    ));
    echo.memory_changed(65536);
    echo.restarted();
    echo.busy_killed();
    echo.memory_killed();
    let text = metrics.encode();
    let e = |name: &str| sample(&text, &format!("sockbox_{name}{{guest=\"echo\"}}"));
    assert_eq!(e("connections_total"), Some(2.0), "{text}");
    assert_eq!(e("connections_active"), Some(1.0));
    assert_eq!(e("connections_refused_total"), Some(1.0));
    assert_eq!(e("received_bytes_total"), Some(40.0));
    assert_eq!(e("sent_bytes_total"), Some(12.0));
    assert_eq!(e("datagrams_received_total"), Some(2.0));
    assert_eq!(e("datagrams_sent_total"), Some(1.0));
    assert_eq!(e("dns_lookups_total"), Some(1.0));
    assert_eq!(e("memory_bytes"), Some(65536.0));
    assert_eq!(e("restarts_total"), Some(1.0));
    assert_eq!(e("busy_kills_total"), Some(1.0));
    assert_eq!(e("memory_kills_total"), Some(1.0));
    let denials = |use_: &str| {
        sample(
            &text,
            &format!("sockbox_denials_total{{guest=\"echo\",use=\"{use_}\"}}"),
        )
    };
    assert_eq!(denials("tcp-connect"), Some(1.0));
    assert_eq!(denials("tcp-accept"), Some(1.0));
    assert_eq!(denials("dns"), Some(0.0));
    // The other guest's series exist, untouched.
    assert_eq!(
        sample(&text, "sockbox_connections_total{guest=\"chat\"}"),
        Some(0.0)
    );
    assert!(text.contains("sockbox_build_info{version=\""), "{text}");
    assert!(sample(&text, "sockbox_uptime_seconds").is_some());
    assert!(sample(&text, "sockbox_descriptors_budget").unwrap() > 0.0);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn a_guest_is_ready_when_all_its_instances_are() {
    let metrics = Metrics::new();
    let echo = metrics.guest("echo", 2);
    assert_eq!(metrics.not_ready(), ["echo"]);
    echo.instance_ready(true);
    assert_eq!(metrics.not_ready(), ["echo"]);
    echo.instance_ready(true);
    assert!(metrics.not_ready().is_empty());
    assert!(
        metrics
            .encode()
            .contains("sockbox_ready{guest=\"echo\"} 1\n")
    );
    echo.instance_ready(false);
    assert_eq!(metrics.not_ready(), ["echo"]);
    // The same name is the same handles (instances and restarts count together).
    let again = metrics.guest("echo", 2);
    again.instance_ready(true);
    assert!(metrics.not_ready().is_empty());
}

#[test]
fn a_guest_name_is_escaped_in_its_label() {
    let metrics = Metrics::new();
    metrics.guest("a\"b\nc", 1);
    let text = metrics.encode();
    assert!(text.contains(r#"guest="a\"b\nc""#), "{text}");
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn the_endpoints_answer_and_readyz_names_the_guests_not_ready() {
    let metrics = Metrics::new();
    let echo = metrics.guest("echo", 1);
    metrics.guest("chat", 1).instance_ready(true);
    let server = serve(metrics, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.addr();
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let readyz = get(addr, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.ends_with("not ready: echo\n"), "{readyz}");
    echo.instance_ready(true);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let scrape = get(addr, "/metrics").await;
    assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
    assert!(
        scrape.contains("sockbox_ready{guest=\"echo\"} 1"),
        "{scrape}"
    );
    assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn past_the_connection_cap_a_client_is_closed_at_once() {
    let server = serve(Metrics::new(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.addr();
    let mut idle = Vec::new();
    for _ in 0..http::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Give the listener time to take them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_head_over_the_limit_is_refused() {
    let server = serve(Metrics::new(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // The server may close before all of it is written.
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(!response.contains("sockbox_"), "{response}");
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 431"),
        "{response}"
    );
}
