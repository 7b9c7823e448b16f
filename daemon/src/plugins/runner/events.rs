//! A plugin's events: one type per occurrence, whose `emit` writes the log line and moves the
//! plugin's metrics together, from one place (Vector's "internal events"). The runner and the
//! reloader say what happened; how it is reported lives here.

use crate::control::ControlError;
use crate::plugins::runtime::PluginError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{PluginFailureLabels, PluginLabels, PluginReloadLabels};

fn labels(plugin: &str) -> PluginLabels {
    PluginLabels {
        plugin: plugin.to_owned(),
    }
}

/// The `kind` label of `twinloom_plugin_failures_total` for `error`.
fn failure_kind(error: &PluginError) -> &'static str {
    match error {
        PluginError::Load(_) => "load",
        PluginError::Deadline(_) => "deadline",
        PluginError::MemoryCap(_) => "memory_cap",
        PluginError::OutOfFuel => "out_of_fuel",
        PluginError::Trap(_) => "trap",
        PluginError::HostPanic(_) => "host_panic",
    }
}

fn count_failure(metrics: &Metrics, plugin: &str, error: &PluginError) {
    metrics
        .plugins
        .failures
        .get_or_create(&PluginFailureLabels {
            plugin: plugin.to_owned(),
            kind: failure_kind(error).to_owned(),
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
#[derive(Debug)]
pub(super) enum Rejection<'a> {
    /// A derived value for a property not bound to this plugin, or not finite.
    DerivedValue { value: f64 },
    /// A write proposal for a property the twin does not have.
    UnknownProposalTarget,
    /// A write proposal the control gate could not queue.
    ProposalNotQueued { error: &'a ControlError },
}

/// An output of the plugin was rejected (counted in `twinloom_plugin_rejected_outputs_total`).
#[derive(Debug)]
pub(super) struct OutputRejected<'a> {
    pub plugin: &'a str,
    pub property: &'a str,
    pub why: Rejection<'a>,
}

impl OutputRejected<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .plugins
            .rejected_outputs
            .get_or_create(&labels(self.plugin))
            .inc();
        let (plugin, property) = (self.plugin, self.property);
        match &self.why {
            Rejection::DerivedValue { value } => {
                tracing::warn!(%plugin, %property, value, "Rejected a derived value: not a property of this plugin, or not finite")
            }
            Rejection::UnknownProposalTarget => {
                tracing::warn!(%plugin, %property, "Rejected a write proposal for an unknown property")
            }
            Rejection::ProposalNotQueued { error } => {
                tracing::warn!(%plugin, %property, %error, "Write proposal not queued")
            }
        }
    }
}
