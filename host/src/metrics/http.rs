//! The metrics listener: `/metrics`, `/healthz` and `/readyz` over HTTP/1.1, bounded like any
//! other endpoint a stranger may reach.
//!
//! At most [`MAX_CONNECTIONS`] at once (past them a client is closed at once, so a flood of
//! idle connections costs a bounded number of tasks), [`HEAD_TIMEOUT`] to send the request
//! head, a head of at most [`MAX_HEAD`] bytes, one request per connection and [`MAX_LIFETIME`]
//! in all. hyper parses; the answers are tiny and built in memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::Metrics;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time to send the request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head (hyper's smallest buffer).
pub const MAX_HEAD: usize = 8 * 1024;
/// The most one connection may last, answer included.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10);

/// The OpenMetrics text format, which Prometheus asks for and reads.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metrics listener serving in the background; dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `metrics` on it until the returned server is dropped.
pub async fn serve(metrics: Metrics, addr: SocketAddr) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(metrics, listener));
    Ok(MetricsServer { addr, task })
}

async fn accept_loop(metrics: Metrics, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!("metrics listener: cannot accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

/// The answer to one request.
fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<String> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(metrics.encode());
            response.headers_mut().insert(
                "content-type",
                METRICS_TYPE.parse().expect("a valid header"),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let not_ready = metrics.not_ready();
            if not_ready.is_empty() {
                plain(StatusCode::OK, "ready\n".into())
            } else {
                let names = not_ready.join(" ");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {names}\n"),
                )
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn plain(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("a valid header"),
    );
    response
}
