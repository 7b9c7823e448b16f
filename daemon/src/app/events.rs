//! The daemon process's own events (wiring, reload, systemd, the command line): one type per
//! occurrence, whose `emit` writes the log line.

/// The audit log cannot be opened: the control gate refuses every write until it can be.
#[derive(Debug)]
pub(crate) struct AuditUnavailable<'a> {
    pub dir: &'a std::path::Path,
    pub error: &'a crate::runtime::journal::JournalError,
}

impl AuditUnavailable<'_> {
    pub fn emit(&self) {
        tracing::error!(dir = %self.dir.display(), error = %self.error, "Cannot open the audit log: every write is refused until it can be");
    }
}

/// `count` properties went stale (no refresh within their interval) in one sweep.
#[derive(Debug)]
pub(crate) struct PropertiesStale {
    pub count: usize,
}

impl PropertiesStale {
    pub fn emit(&self) {
        tracing::warn!(properties = self.count, "Properties went stale");
    }
}

/// A notification to systemd (`sd_notify`) failed.
#[derive(Debug)]
pub(crate) struct SystemdNotifyFailed<'a> {
    pub error: &'a std::io::Error,
}

impl SystemdNotifyFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "Cannot notify systemd");
    }
}

/// A reload (SIGHUP) found the new configuration invalid; the running one stays.
#[derive(Debug)]
pub(crate) struct ReloadRefused<'a> {
    pub errors: &'a crate::config::ConfigError,
}

impl ReloadRefused<'_> {
    pub fn emit(&self) {
        tracing::error!(errors = %self.errors, "Reload refused: the new configuration is invalid; the running one stays");
    }
}

/// A reload failed while applying a valid configuration: the daemon stops.
#[derive(Debug)]
pub(crate) struct ReloadFailed<'a> {
    pub error: &'a anyhow::Error,
}

impl ReloadFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = %format!("{:#}", self.error), "Reload failed");
    }
}

/// The async runtime could not be built: nothing starts.
#[derive(Debug)]
pub(crate) struct RuntimeUnavailable<'a> {
    pub error: &'a std::io::Error,
}

impl RuntimeUnavailable<'_> {
    pub fn emit(&self) {
        tracing::error!(error = %self.error, "Cannot start the async runtime");
    }
}

/// The daemon ended with an error (a component failed to start, or a task failed).
#[derive(Debug)]
pub(crate) struct DaemonFailed<'a> {
    pub error: &'a anyhow::Error,
}

impl DaemonFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = %format!("{:#}", self.error), "Twinloom failed");
    }
}

/// SIGTERM cannot be listened for: only Ctrl-C (SIGINT) stops the daemon.
#[derive(Debug)]
pub(crate) struct NoSigterm<'a> {
    pub error: &'a std::io::Error,
}

impl NoSigterm<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "Cannot listen for SIGTERM; only Ctrl-C stops the daemon");
    }
}
