//! Admin HTTP endpoint (loopback by default): `/healthz`, `/readyz`, `/metrics`.
//!
//! - `GET /healthz` → 200 `ok` while the process serves requests (liveness).
//! - `GET /readyz` → 200 when every source is connected and the OPC UA server (if configured)
//!   listens; 503 with one line per unmet condition otherwise (readiness).
//! - `GET /metrics` → every metric in OpenMetrics text format
//!   (`application/openmetrics-text; version=1.0.0`), which Prometheus scrapes natively.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::admin_http::AdminHttpConfig;
use crate::runtime::Supervisor;
use crate::telemetry::Metrics;

/// What the endpoints report on.
#[derive(Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub metrics: Metrics,
    /// Ids of every source, for readiness.
    pub sources: Vec<String>,
    /// Whether an OPC UA server is configured and listening: `None` when not configured.
    pub opcua_listening: Option<bool>,
}

impl AdminState {
    /// Unmet readiness conditions, one line each; empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self
            .sources
            .iter()
            .filter(|id| !self.metrics.is_source_connected(id))
            .map(|id| format!("source {id} is not connected"))
            .collect();
        if self.opcua_listening == Some(false) {
            reasons.push("OPC UA server is not listening".to_owned());
        }
        reasons
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let reasons = state.not_ready();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Binds `config.listen` and serves the endpoints under `supervisor` until shutdown.
/// Returns the bound address (useful with port 0).
///
/// Errors: the address cannot be bound.
pub async fn start(
    config: &AdminHttpConfig,
    state: AdminState,
    supervisor: &Supervisor,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state));
    supervisor.spawn("admin-http", move |token| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("admin HTTP server failed")
    });
    tracing::info!(%addr, "Admin HTTP listening (/healthz, /readyz, /metrics)");
    Ok(addr)
}
