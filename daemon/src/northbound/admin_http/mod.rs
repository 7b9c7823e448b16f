//! Admin HTTP endpoint (loopback by default): `/healthz`, `/readyz`, `/metrics`.
//!
//! - `GET /healthz` → 200 `ok` while the process serves requests (liveness).
//! - `GET /readyz` → 200 when every registered readiness condition is met (every source
//!   connected, the OPC UA server, if configured, listening); 503 with one line per unmet
//!   condition otherwise (readiness; see [`crate::runtime::readiness`]).
//! - `GET /metrics` → every metric in OpenMetrics text format
//!   (`application/openmetrics-text; version=1.0.0`), which Prometheus scrapes natively.
//! - `POST /control/arm` → arms the plant (plugins' proposals are written). Needs HTTP Basic
//!   credentials (RFC 7617) of one of `[admin_http] operators`: 401 without or with wrong ones,
//!   503 when the arming cannot be audited, 200 `armed`.
//! - `POST /control/disarm` → disarms the plant, always allowed (credentials, when sent and
//!   valid, name the user in the audit log; otherwise it says `anonymous`): 200 `disarmed`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use tokio::net::TcpListener;

use crate::config::admin_http::{AdminHttpConfig, AdminUserConfig};
use crate::context::ComponentContext;
use crate::control::{ControlHandle, Origin};
use crate::runtime::Readiness;
use crate::telemetry::Metrics;

/// What the endpoints report on.
#[derive(Debug)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
    control: ControlHandle,
    operators: Vec<AdminUserConfig>,
}

/// The user named by valid HTTP Basic credentials of one of the operators; `None` without
/// credentials or with wrong ones (an unknown user is checked against a real hash too, so the
/// answer takes as long).
async fn operator(state: &AdminState, headers: &HeaderMap) -> Option<String> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (name, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    let known = state.operators.iter().find(|user| user.name == name);
    let stand_in = &state.operators.first()?.password_hash;
    let known_hash = known.map(|user| user.password_hash.as_str());
    super::check_login(known_hash, stand_in, password)
        .await
        .then(|| name.to_owned())
}

async fn arm(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> impl IntoResponse {
    let Some(user) = operator(&state, &headers).await else {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"twinloom\", charset=\"UTF-8\"",
            )],
            "arming needs the credentials of one of [admin_http] operators\n".to_owned(),
        )
            .into_response();
    };
    match state.control.arm(Origin::Admin { user }).await {
        Ok(()) => (StatusCode::OK, "armed\n".to_owned()).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not armed: {error}\n"),
        )
            .into_response(),
    }
}

async fn disarm(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> impl IntoResponse {
    let user = operator(&state, &headers)
        .await
        .unwrap_or_else(|| "anonymous".to_owned());
    match state.control.disarm(Origin::Admin { user }).await {
        Ok(()) => (StatusCode::OK, "disarmed\n".to_owned()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
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
/// `/readyz` lists the context's unmet readiness conditions; `/control/*` go to `control`.
/// Returns the bound address (useful with port 0).
///
/// Errors: the address cannot be bound.
pub async fn start(
    config: &AdminHttpConfig,
    control: ControlHandle,
    context: ComponentContext<'_>,
) -> anyhow::Result<SocketAddr> {
    let state = AdminState {
        metrics: context.metrics.clone(),
        readiness: context.readiness.clone(),
        control,
        operators: config.operators.clone(),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/control/arm", post(arm))
        .route("/control/disarm", post(disarm))
        .with_state(Arc::new(state));
    context
        .supervisor
        .spawn("admin-http", move |token| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("admin HTTP server failed")
        });
    tracing::info!(%addr, "Admin HTTP listening (/healthz, /readyz, /metrics, /control/arm, /control/disarm)");
    Ok(addr)
}
