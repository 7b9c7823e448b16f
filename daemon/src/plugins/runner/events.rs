//! A plugin's events: one type per occurrence, whose `emit` writes the log line and moves the
//! plugin's metrics together, from one place (Vector's "internal events"). The runner and the
//! reloader say what happened; how it is reported lives here.

use std::path::Path;
use std::time::Duration;

use crate::plugins::runtime::PluginError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{
    PluginFailureLabels, PluginLabels, PluginReloadLabels, PluginStateLabels,
};

fn labels(plugin: &str) -> PluginLabels {
    PluginLabels {
        plugin: plugin.to_owned(),
    }
}

fn count_failure(metrics: &Metrics, plugin: &str, error: &PluginError) {
    metrics
        .plugins
        .failures
        .get_or_create(&PluginFailureLabels {
            plugin: plugin.to_owned(),
            kind: error.kind().to_owned(),
        })
        .inc();
}

fn count_reload(metrics: &Metrics, plugin: &str, outcome: &str) {
    metrics
        .plugins
        .reloads
        .get_or_create(&PluginReloadLabels {
            plugin: plugin.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// The plugin's file could not be loaded at start; it starts when a loadable file appears.
#[derive(Debug)]
pub(super) struct LoadFailed<'a> {
    pub plugin: &'a str,
    pub error: &'a PluginError,
}

impl LoadFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        count_failure(metrics, self.plugin, self.error);
        tracing::error!(plugin = %self.plugin, error = %self.error, "Plugin cannot be loaded; it starts when a loadable file appears");
    }
}

/// A call (or the start of an instance) failed; the instance is discarded.
#[derive(Debug)]
pub(super) struct CallFailed<'a> {
    pub plugin: &'a str,
    pub error: &'a PluginError,
    /// Consecutive failures, this one included.
    pub failures: u32,
}

impl CallFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        count_failure(metrics, self.plugin, self.error);
        tracing::warn!(plugin = %self.plugin, error = %self.error, failures = self.failures, "Plugin call failed; the instance is discarded");
    }
}

/// A new instance started after failures.
#[derive(Debug)]
pub(super) struct Restarted<'a> {
    pub plugin: &'a str,
}

impl Restarted<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .restarts
            .get_or_create(&labels(self.plugin))
            .inc();
    }
}

/// Too many failures in a row: no new instance until the file changes or SIGHUP.
#[derive(Debug)]
pub(super) struct Quarantined<'a> {
    pub plugin: &'a str,
    pub failures: u32,
}

impl Quarantined<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .quarantined
            .get_or_create(&labels(self.plugin))
            .set(1);
        tracing::error!(plugin = %self.plugin, failures = self.failures, "Plugin quarantined after consecutive failures; replace its file or reload the configuration to try again");
    }
}

/// A SIGHUP took the plugin out of quarantine; it starts again.
#[derive(Debug)]
pub(super) struct QuarantineLifted<'a> {
    pub plugin: &'a str,
}

impl QuarantineLifted<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .quarantined
            .get_or_create(&labels(self.plugin))
            .set(0);
        tracing::info!(plugin = %self.plugin, "Leaving quarantine on reload; starting the plugin again");
    }
}

/// A new version of the plugin's file compiled and initialised, and now runs.
#[derive(Debug)]
pub(super) struct VersionSwapped<'a> {
    pub plugin: &'a str,
}

impl VersionSwapped<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        count_reload(metrics, self.plugin, "swapped");
        metrics
            .plugins
            .quarantined
            .get_or_create(&labels(self.plugin))
            .set(0);
        tracing::info!(plugin = %self.plugin, "Plugin reloaded: the new version runs");
    }
}

/// The watcher on the plugin files could not be created (inotify limits): files are not
/// watched; SIGHUP still reloads them.
#[derive(Debug)]
pub(super) struct WatchFailed<'a> {
    pub error: &'a notify::Error,
}

impl WatchFailed<'_> {
    pub fn emit(&self) {
        let error = self.error;
        tracing::warn!(%error, "Cannot watch plugin files; SIGHUP reloads them");
    }
}

/// One folder of plugin files could not be watched: its plugins reload on SIGHUP only.
#[derive(Debug)]
pub(super) struct FolderWatchFailed<'a> {
    pub folder: &'a Path,
    pub error: &'a notify::Error,
}

impl FolderWatchFailed<'_> {
    pub fn emit(&self) {
        let error = self.error;
        tracing::warn!(folder = %self.folder.display(), %error, "Cannot watch a plugin folder; SIGHUP reloads its plugins");
    }
}

/// The plugin's file could not be read on a reload; the running version stays.
#[derive(Debug)]
pub(super) struct FileUnreadable<'a> {
    pub plugin: &'a str,
    pub file: &'a Path,
    pub error: &'a std::io::Error,
}

impl FileUnreadable<'_> {
    pub fn emit(&self) {
        let error = self.error;
        tracing::warn!(plugin = %self.plugin, file = %self.file.display(), %error, "Cannot read the plugin file; the running version stays");
    }
}

/// Why a new version was refused.
#[derive(Debug)]
pub(super) enum Refusal<'a> {
    /// It does not compile (not a component of the contract).
    Compile(&'a PluginError),
    /// It compiled but failed to instantiate or initialise.
    Init(&'a PluginError),
}

/// A new version of the plugin's file was refused; the running version stays.
#[derive(Debug)]
pub(super) struct VersionRefused<'a> {
    pub plugin: &'a str,
    pub why: Refusal<'a>,
}

impl VersionRefused<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        count_reload(metrics, self.plugin, "refused");
        match self.why {
            Refusal::Compile(error) => {
                tracing::error!(plugin = %self.plugin, %error, "The new plugin version does not compile; the running version stays")
            }
            Refusal::Init(error) => {
                tracing::error!(plugin = %self.plugin, %error, "The new plugin version failed to initialise; the running version stays")
            }
        }
    }
}

/// Why an output of the plugin was not taken.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Rejection {
    /// A derived value for an index outside the owned list.
    OwnedIndex { index: u32 },
    /// A derived value that is not finite while its quality is not bad.
    NotFinite { property: String, value: f64 },
    /// A proposal for an index outside the writable list.
    WritableIndex { index: u32 },
    /// A proposal whose value does not fit its property's data type, or is not finite.
    ProposalValue { property: String },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OwnedIndex { index } => {
                write!(
                    f,
                    "derived value for owned index {index}, outside the owned list"
                )
            }
            Self::NotFinite { property, value } => {
                write!(f, "derived value {value} for `{property}` is not finite")
            }
            Self::WritableIndex { index } => write!(
                f,
                "proposal for writable index {index}, outside the writable list (the plugin's `writes`)"
            ),
            Self::ProposalValue { property } => write!(
                f,
                "proposal for `{property}` does not fit its data type or is not finite"
            ),
        }
    }
}

/// Outputs of one call were rejected: one line per call however many (the first one named),
/// each counted in `twinloom_plugin_rejected_outputs_total`.
#[derive(Debug)]
pub(super) struct OutputsRejected<'a> {
    pub plugin: &'a str,
    pub count: u64,
    pub first: &'a Rejection,
}

impl OutputsRejected<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .rejected_outputs
            .get_or_create(&labels(self.plugin))
            .inc_by(self.count);
        tracing::warn!(plugin = %self.plugin, count = self.count, first = %self.first, "Rejected plugin outputs");
    }
}

/// Log lines the plugin's rate limit dropped: counted at once; summarised in one line at most
/// once per `interval`.
#[derive(Debug)]
pub(super) struct LogLinesDropped<'a> {
    pub plugin: &'a str,
    /// Dropped by the call just made.
    pub now: u64,
    /// Dropped since the last summary, `now` included, when a summary is due.
    pub summary: Option<(u64, Duration)>,
}

impl LogLinesDropped<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .log_lines_dropped
            .get_or_create(&labels(self.plugin))
            .inc_by(self.now);
        if let Some((dropped, interval)) = self.summary {
            tracing::warn!(plugin = %self.plugin, dropped, "Plugin log lines dropped by its rate limit in the last {}", humantime::format_duration(interval));
        }
    }
}

/// The states a plugin's life goes through, as the metric and the status object name them.
pub(super) const STATES: [&str; 4] = ["unloaded", "running", "backing-off", "quarantined"];

/// The plugin entered `state` (one of [`STATES`]): the state-set metric follows.
#[derive(Debug)]
pub(super) struct StateEntered<'a> {
    pub plugin: &'a str,
    pub state: &'static str,
}

impl StateEntered<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        for state in STATES {
            metrics
                .plugins
                .state
                .get_or_create(&PluginStateLabels {
                    plugin: self.plugin.to_owned(),
                    state: state.to_owned(),
                })
                .set(i64::from(state == self.state));
        }
    }
}
