//! Admin HTTP endpoint (loopback by default): `/healthz`, `/readyz`, `/metrics`.
//!
//! - `GET /healthz` → 200 `ok` while the process serves requests (liveness).
//! - `GET /readyz` → 200 when every registered readiness condition is met (every source
//!   connected, the OPC UA server, if configured, listening); 503 with one line per unmet
//!   condition otherwise (readiness; see [`crate::runtime::readiness`]).
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
use crate::context::ComponentContext;
use crate::runtime::Readiness;
use crate::telemetry::Metrics;

/// What the endpoints report on.
#[derive(Debug)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let reasons = state.readiness.unmet();
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

/// Binds `config.listen` and serves the endpoints under the context's supervisor until shutdown;
/// `/readyz` lists the context's unmet readiness conditions. Returns the bound address (useful
/// with port 0).
///
/// Errors: the address cannot be bound.
pub async fn start(
    config: &AdminHttpConfig,
    context: ComponentContext<'_>,
) -> anyhow::Result<SocketAddr> {
    let state = AdminState {
        metrics: context.metrics.clone(),
        readiness: context.readiness.clone(),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state));
    context
        .supervisor
        .spawn("admin-http", move |token| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("admin HTTP server failed")
        });
    tracing::info!(%addr, "Admin HTTP listening (/healthz, /readyz, /metrics)");
    Ok(addr)
}
