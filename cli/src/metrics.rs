//! `--metrics ADDR` (on `run` and `up`): serves `/metrics`, `/healthz` and `/readyz` for the
//! process's guests, and says where on stderr (`sockbox: metrics on http://ADDR/metrics`).

use std::net::SocketAddr;

use super::Failure;
use sockbox::metrics::{self, Metrics, MetricsServer};

/// Starts the listener (before any guest, so `/readyz` answers 503 until they are ready).
pub(crate) async fn start(addr: SocketAddr, metrics: &Metrics) -> Result<MetricsServer, Failure> {
    let server = metrics::serve(metrics.clone(), addr)
        .await
        .map_err(Failure::usage)?;
    sockbox::sandbox::host_line(&format!(
        "sockbox: metrics on http://{}/metrics",
        server.addr()
    ));
    Ok(server)
}

pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:9100, got {text:?}"))
}
