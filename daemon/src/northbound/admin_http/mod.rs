//! Admin HTTP endpoint (loopback by default): the live web view at `/`, `/healthz`, `/readyz`,
//! `/metrics`, arming and disarming.
//!
//! - `GET /`, `/web/*`, `/api/plant`, `/api/status`, `/api/control`, `/api/events`,
//!   `/api/trend` → the live web view ([`webview`], [`trend`], `docs/webview.md`).
//! - `GET /healthz` → 200 `ok` while the process serves requests (liveness).
//! - `GET /readyz` → 200 when every registered readiness condition is met (every source
//!   connected, the OPC UA server, if configured, listening); 503 with one line per unmet
//!   condition otherwise (readiness; see [`crate::runtime::readiness`]).
//! - `GET /metrics` → every metric in OpenMetrics text format
//!   (`application/openmetrics-text; version=1.0.0`), which Prometheus scrapes natively.
//! - `POST /control/arm` → arms the plant (plugins' proposals are written). Needs HTTP Basic
//!   credentials (RFC 7617) of one of `[admin_http] operators`: 401 without or with wrong ones,
//!   429 with `Retry-After` (seconds) when the client's address has no failed login left
//!   (`login_failures_burst`, `login_failures_per_minute`; the password is then not checked),
//!   503 with `Retry-After` when too many password checks wait already, 503 when the arming
//!   cannot be audited, 200 `armed`.
//! - `POST /control/disarm` → disarms the plant, always allowed (credentials, when sent and
//!   valid, name the user in the audit log; otherwise, or when they cannot be checked now, it
//!   says `anonymous`): 200 `disarmed`.
//! - `POST /control/clear-quarantine?plugin=<name>` → a quarantined plugin starts again (what
//!   the OPC UA `ClearQuarantine` method does). Needs an operator's credentials, answered as
//!   for arming (401, 429, 503); 200 `cleared`, 409 when the plugin is not quarantined, 404
//!   for a plugin that is not configured.
//!
//! Every request must name this endpoint as its host, and a state-changing one must not come
//! from another site's page ([`guard`]: 421, 403). Connections are capped and timed
//! ([`serve`]), TLS when `[admin_http.tls]` is set; passwords are checked on the daemon's login
//! pool behind a per-address throttle ([`crate::northbound::login`]), the same as OPC UA
//! logins.

mod events;
mod guard;
mod serve;
mod trend;
mod webview;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use tokio::net::TcpListener;

use crate::config::admin_http::{AdminHttpConfig, AdminUserConfig};
use crate::context::ComponentContext;
use crate::control::{ControlHandle, Origin};
use crate::northbound::ClearQuarantine;
use crate::northbound::login::{LoginPool, LoginThrottle, Logins, Refusal};
use crate::runtime::Readiness;
use crate::telemetry::Metrics;
use serve::Connection;

/// What the endpoints report on and check with.
#[derive(Debug)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
    control: ControlHandle,
    operators: Vec<AdminUserConfig>,
    logins: Logins,
    allowed_hosts: Vec<String>,
    events: Arc<events::Events>,
    /// The twin the web view shows.
    twin: Arc<crate::twin::Twin>,
    /// What the web view shows beyond the twin.
    shown: WebViewParts,
    /// The control gate's audit folder (the web view's latest records).
    audit_dir: std::path::PathBuf,
    /// Cancelled at shutdown: ends the web view's event streams.
    streams: tokio_util::sync::CancellationToken,
}

/// What the web view shows beyond the twin and the control gate, from the daemon's wiring.
#[derive(Clone, Default)]
pub struct WebViewParts {
    /// The configured sources' ids, in configuration order.
    pub sources: Vec<String>,
    /// The configured plugins' names, in configuration order.
    pub plugins: Vec<String>,
    /// Where `POST /control/clear-quarantine` goes; without it, every plugin is unknown (404).
    pub clear_quarantine: Option<ClearQuarantine>,
    /// The historian the trends read, when `[history]` runs.
    pub history: Option<crate::history::Historian>,
}

impl std::fmt::Debug for WebViewParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebViewParts")
            .field("sources", &self.sources)
            .field("plugins", &self.plugins)
            .field("clear_quarantine", &self.clear_quarantine.is_some())
            .field("history", &self.history.is_some())
            .finish()
    }
}

/// The HTTP Basic credentials (RFC 7617) of a request: name and password; `None` without an
/// `Authorization: Basic` header or with one that does not decode.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (name, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// The operator named by the request's credentials, checked from `peer` through the throttle
/// and the login pool; `Err(None)` without credentials, `Err(Some(refusal))` (logged and
/// counted) when they are refused.
async fn operator(
    state: &AdminState,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<String, Option<Refusal>> {
    let (name, password) = credentials(headers).ok_or(None)?;
    let known = state
        .operators
        .iter()
        .find(|user| user.name == name)
        .map(|user| user.password_hash.as_str());
    let stand_in = state.operators.first().map(|u| u.password_hash.as_str());
    match state
        .logins
        .check(Some(peer), known, stand_in, &password)
        .await
    {
        Ok(()) => Ok(name),
        Err(refusal) => {
            events::LoginRefused {
                peer,
                user: &name,
                refusal,
            }
            .emit(&state.events);
            Err(Some(refusal))
        }
    }
}

/// The answer to a request whose credentials are missing or refused.
fn unauthorized(refusal: Option<Refusal>) -> Response {
    let retry_after = |seconds: u64| [(header::RETRY_AFTER, seconds.to_string())];
    match refusal {
        Some(Refusal::Throttled { retry_after: after }) => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after(after.as_secs().max(1)),
            "too many failed logins from this address; the password was not checked\n",
        )
            .into_response(),
        Some(Refusal::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after(1),
            "too many logins at once; the password was not checked\n",
        )
            .into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"twinloom\", charset=\"UTF-8\"",
            )],
            "this needs the credentials of one of [admin_http] operators\n",
        )
            .into_response(),
    }
}

async fn arm(
    State(state): State<Arc<AdminState>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    let user = match operator(&state, &headers, connection.peer.ip()).await {
        Ok(user) => user,
        Err(refusal) => return unauthorized(refusal),
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

/// Disarming makes the plant safer: never refused for credentials. Credentials that cannot be
/// checked now (throttled, busy) or are wrong leave the audit's user `anonymous`.
async fn disarm(
    State(state): State<Arc<AdminState>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let user = operator(&state, &headers, connection.peer.ip())
        .await
        .unwrap_or_else(|_| "anonymous".to_owned());
    match state.control.disarm(Origin::Admin { user }).await {
        Ok(()) => (StatusCode::OK, "disarmed\n".to_owned()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

/// `?plugin=<name>` of a query string, as sent (plugin names are letters, digits, `_` and `-`:
/// nothing to decode).
fn plugin_of(query: Option<&str>) -> Option<String> {
    webview::param(query, "plugin").map(str::to_owned)
}

/// A quarantined plugin starts again: an operator's, like arming; not audited (it writes
/// nothing: the plugin's proposals still go through the gate), logged by the runner.
async fn clear_quarantine(
    State(state): State<Arc<AdminState>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let user = match operator(&state, &headers, connection.peer.ip()).await {
        Ok(user) => user,
        Err(refusal) => return unauthorized(refusal),
    };
    let plugin = plugin_of(uri.query()).unwrap_or_default();
    let clear = match &state.shown.clear_quarantine {
        Some(clear) if state.shown.plugins.contains(&plugin) => clear,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                format!("no plugin `{plugin}` is configured\n"),
            )
                .into_response();
        }
    };
    if clear(plugin.clone()).await {
        tracing::info!(%plugin, %user, "Plugin quarantine cleared over admin HTTP");
        (StatusCode::OK, "cleared\n").into_response()
    } else {
        (
            StatusCode::CONFLICT,
            format!("plugin `{plugin}` is not quarantined\n"),
        )
            .into_response()
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
/// `/readyz` lists the context's unmet readiness conditions; `/control/*` go to `control`,
/// operators' passwords to `logins` (the daemon's login pool); the web view shows the context's
/// twin, the control gate's state and audit log (`<state_dir>/audit`) and `shown` (sources,
/// plugins, history). TLS files resolve against `base_dir`.
/// Returns the bound address (useful with port 0).
///
/// Errors: the TLS files cannot be loaded (validation checked them; they changed since), or the
/// address cannot be bound.
pub async fn start(
    config: &AdminHttpConfig,
    base_dir: &Path,
    control: ControlHandle,
    logins: &LoginPool,
    shown: WebViewParts,
    context: ComponentContext<'_>,
) -> anyhow::Result<SocketAddr> {
    let tls = match &config.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
            tls.load(base_dir).map_err(|problems| {
                let problems: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();
                anyhow::anyhow!("[admin_http.tls]: {}", problems.join("; "))
            })?,
        )),
        None => None,
    };
    let events = Arc::new(events::Events::new(context.metrics));
    let limits = &config.limits;
    let state = Arc::new(AdminState {
        metrics: context.metrics.clone(),
        readiness: context.readiness.clone(),
        control,
        operators: config.operators.clone(),
        logins: Logins::new(
            // Throttled logins are counted by reason in twinloom_admin_http_refusals_total.
            LoginThrottle::new(
                limits.login_failures_burst,
                limits.login_failures_per_minute,
                Arc::new(AtomicU64::new(0)),
            ),
            logins.clone(),
        ),
        allowed_hosts: config.allowed_hosts.clone(),
        events: Arc::clone(&events),
        twin: Arc::clone(context.twin),
        shown,
        audit_dir: crate::control::audit::dir_in(context.state_dir),
        streams: tokio_util::sync::CancellationToken::new(),
    });
    let streams = state.streams.clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/", get(webview::index))
        .route("/web/app.js", get(webview::app_js))
        .route("/web/style.css", get(webview::style_css))
        .route(
            "/web/vendor/uplot/uPlot.iife.min.js",
            get(webview::uplot_js),
        )
        .route("/web/vendor/uplot/uPlot.min.css", get(webview::uplot_css))
        .route("/web/vendor/uplot/LICENSE", get(webview::uplot_license))
        .route("/api/plant", get(webview::plant))
        .route("/api/status", get(webview::status))
        .route("/api/control", get(webview::control))
        .route("/api/events", get(webview::events))
        .route("/api/trend", get(trend::trend))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/control/arm", post(arm))
        .route("/control/disarm", post(disarm))
        .route("/control/clear-quarantine", post(clear_quarantine))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::check,
        ))
        .with_state(state);
    events::Listening {
        addr,
        tls: tls.is_some(),
    }
    .emit();
    let limits = config.limits.clone();
    context
        .supervisor
        .spawn("admin-http", move |token| async move {
            serve::serve(listener, router, tls, limits, events, streams, token)
                .await
                .context("admin HTTP server failed")
        });
    Ok(addr)
}
