//! Admin HTTP's events: one type per occurrence, whose `emit` writes the log line and moves the
//! endpoint's metrics together, from one place. Refusals that a flood repeats (throttled or
//! busy logins, cross-site requests, foreign hosts, the connection cap) are logged at most once
//! a minute per reason ([`Throttle`]) and counted every time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::northbound::login::Refusal;
use crate::telemetry::Throttle;
use crate::telemetry::metrics::{MetricSet, Metrics};

/// Labels of the refusal series (a fixed set of reasons).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A login's refusal (`throttled`, `busy`, `unknown-user`, `wrong-password`, `no-users`),
    /// or a request's or connection's: `cross-site`, `host`, `max-connections`,
    /// `tls-handshake`, `header-read-timeout`, `request-timeout`.
    pub reason: String,
}

/// Admin HTTP's metric families (`twinloom_admin_http_*`).
#[derive(Debug, Clone, Default)]
pub struct AdminHttpMetrics {
    refusals: Family<ReasonLabels, Counter>,
}

impl MetricSet for AdminHttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.sub_registry_with_prefix("admin_http").register(
            "refusals",
            "Admin HTTP logins, requests and connections refused, by reason",
            metrics.refusals.clone(),
        );
        metrics
    }
}

/// What the events report into: the families and the repeat throttle of the log lines.
#[derive(Debug)]
pub(super) struct Events {
    metrics: AdminHttpMetrics,
    repeats: Mutex<Throttle<&'static str>>,
}

impl Events {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            metrics: metrics.set(),
            repeats: Mutex::default(),
        }
    }

    /// Counts one refusal for `reason`; `Some(held back)` when its line is to be logged.
    fn refused(&self, reason: &'static str, throttled: bool) -> Option<u64> {
        self.metrics
            .refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
        if !throttled {
            return Some(0);
        }
        self.repeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(reason, Instant::now())
    }
}

/// The endpoint listens.
#[derive(Debug)]
pub(super) struct Listening {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Listening {
    pub fn emit(&self) {
        let scheme = if self.tls { "https" } else { "http" };
        tracing::info!(addr = %self.addr, scheme, "Admin HTTP listening (/healthz, /readyz, /metrics, /control/arm, /control/disarm)");
        if !self.tls && !self.addr.ip().is_loopback() {
            tracing::warn!(
                addr = %self.addr,
                "Admin HTTP listens beyond loopback without TLS: operators' passwords and the plant's metrics cross the network in clear text; set [admin_http.tls] or listen on loopback"
            );
        }
    }
}

/// A login (HTTP Basic credentials) was refused.
#[derive(Debug)]
pub(super) struct LoginRefused<'a> {
    pub peer: IpAddr,
    pub user: &'a str,
    pub refusal: Refusal,
}

impl LoginRefused<'_> {
    pub fn emit(&self, events: &Events) {
        // A wrong password is logged every time (the throttle bounds how often); refusals
        // without a check come in floods.
        let repeats = matches!(self.refusal, Refusal::Throttled { .. } | Refusal::Busy);
        if let Some(held_back) = events.refused(self.refusal.kind(), repeats) {
            tracing::warn!(peer = %self.peer, user = self.user, why = self.refusal.why(), held_back, "Admin HTTP login refused");
        }
    }
}

/// Why a request or connection was refused before any handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// A state-changing request from a browser on another site (answered 403).
    CrossSite,
    /// A `Host` that is not this endpoint's (answered 421).
    Host,
    /// `max_connections` connections were open: closed as accepted.
    MaxConnections,
    /// The TLS handshake failed or did not finish within `header_read_timeout`.
    TlsHandshake,
    /// The request's headers did not arrive within `header_read_timeout`.
    HeaderReadTimeout,
    /// The request was not answered within `request_timeout` (answered 503).
    RequestTimeout,
}

impl Refused {
    fn reason(self) -> &'static str {
        match self {
            Self::CrossSite => "cross-site",
            Self::Host => "host",
            Self::MaxConnections => "max-connections",
            Self::TlsHandshake => "tls-handshake",
            Self::HeaderReadTimeout => "header-read-timeout",
            Self::RequestTimeout => "request-timeout",
        }
    }
}

/// A request or connection refused, from `peer`; `detail` says what was wrong.
#[derive(Debug)]
pub(super) struct RequestRefused<'a> {
    pub peer: IpAddr,
    pub refused: Refused,
    pub detail: &'a str,
}

impl RequestRefused<'_> {
    pub fn emit(&self, events: &Events) {
        let Some(held_back) = events.refused(self.refused.reason(), true) else {
            return;
        };
        match self.refused {
            // A client that speaks plain HTTP to the TLS port, or a scanner: not a warning.
            Refused::TlsHandshake | Refused::HeaderReadTimeout => {
                tracing::info!(peer = %self.peer, reason = self.refused.reason(), detail = self.detail, held_back, "Admin HTTP connection closed");
            }
            _ => {
                tracing::warn!(peer = %self.peer, reason = self.refused.reason(), detail = self.detail, held_back, "Admin HTTP request refused");
            }
        }
    }
}
