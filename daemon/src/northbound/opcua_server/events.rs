//! The OPC UA server's events: one type per occurrence, whose `emit` writes the log line and moves
//! the server's metrics and readiness together, from one place.

use prometheus_client::metrics::counter::Counter;

use crate::runtime::ReadyFlag;

/// The server listens and serves the address space.
#[derive(Debug)]
pub(super) struct Listening<'a> {
    pub endpoint: &'a str,
    pub pki: &'a std::path::Path,
}

impl Listening<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(true);
        tracing::info!(endpoint = %self.endpoint, pki = %self.pki.display(), "OPC UA server listening");
    }
}

/// A user logged in.
#[derive(Debug)]
pub(super) struct LoggedIn<'a> {
    pub user: &'a str,
}

impl LoggedIn<'_> {
    pub fn emit(&self) {
        tracing::info!(user = self.user, "OPC UA user logged in");
    }
}

/// A login was refused (counted in `twinloom_opcua_failed_logins_total`).
#[derive(Debug)]
pub(super) struct LoginFailed<'a> {
    pub user: &'a str,
    pub policy: &'a str,
    pub mode: &'a str,
    pub why: &'a str,
}

impl LoginFailed<'_> {
    pub fn emit(&self, failed_logins: &Counter) {
        failed_logins.inc();
        // async-opcua's authenticator interface carries no peer address; the transport logs it
        // ("Accept new connection from ...") when the connection opens.
        tracing::warn!(user = self.user, endpoint = %self.policy, mode = %self.mode, why = self.why, "OPC UA login failed");
    }
}

/// The server certificate expires within `certificate_expiry_warning` (or has expired).
#[derive(Debug)]
pub(super) struct CertificateExpiring<'a> {
    pub certificate: &'a std::path::Path,
    /// Seconds until it expires; negative once it has.
    pub seconds_left: i64,
}

impl CertificateExpiring<'_> {
    pub fn emit(&self) {
        let days = self.seconds_left as f64 / 86_400.0;
        tracing::warn!(
            certificate = %self.certificate.display(),
            days_left = format!("{days:.1}"),
            "The OPC UA server certificate expires soon: clients will refuse the server once it has; replace it (own/cert.der and private/private.pem) and restart"
        );
    }
}

/// The address space refused a batch of value updates (subscribers miss those changes).
#[derive(Debug)]
pub(super) struct ValuesNotUpdated<'a> {
    pub status: &'a opcua::types::StatusCode,
}

impl ValuesNotUpdated<'_> {
    pub fn emit(&self) {
        tracing::warn!(status = %self.status, "Cannot update OPC UA values");
    }
}

/// The PKI's `rejected/` folder cannot be watched: it is capped at start only.
#[derive(Debug)]
pub(super) struct RejectedNotWatched<'a> {
    pub pki: &'a std::path::Path,
    pub error: &'a notify::Error,
}

impl RejectedNotWatched<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, pki = %self.pki.display(), "Cannot watch rejected/; it is capped at start only");
    }
}

/// The oldest rejected client certificates beyond `max_rejected_certificates` were deleted
/// (counted in `pruned`), or capping failed.
#[derive(Debug)]
pub(super) enum RejectedCapped<'a> {
    Deleted {
        deleted: usize,
        keep: usize,
    },
    Failed {
        pki: &'a std::path::Path,
        error: &'a std::io::Error,
    },
}

impl RejectedCapped<'_> {
    pub fn emit(&self, pruned: &std::sync::atomic::AtomicU64) {
        match self {
            Self::Deleted { deleted, keep } => {
                pruned.fetch_add(*deleted as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    deleted,
                    keep,
                    "Deleted the oldest rejected client certificates beyond max_rejected_certificates"
                );
            }
            Self::Failed { pki, error } => {
                tracing::warn!(%error, pki = %pki.display(), "Cannot cap rejected/");
            }
        }
    }
}
