//! The control gate's events: one type per occurrence, whose `emit` writes the log line and moves
//! the metric together, from one place (as in the sources' and the plugin runner's `events.rs`).
//! The gate and the executor say what happened; how it is reported lives here.
//!
//! The armed gauge (`twinloom_control_armed`) moves with the armed state itself (the gate's
//! `set_armed`, also at start, when nothing is logged); the write latency is observed by the
//! executor where it is measured.

use tokio::sync::mpsc::error::TrySendError;

use super::request::Command;
use super::{ControlError, Origin, Proposal};
use crate::telemetry::metrics::{ControlMetrics, DecisionLabels};

/// The gate decided a proposal (and, when accepted, the device answered): the one event per
/// decision, counted in `twinloom_control_decisions_total` by origin kind, rule and outcome,
/// and logged with its origin. People's writes (OPC UA, admin) log at info (carried out) or
/// warn (refused); a plugin's, which may come many per second, at debug: each is counted,
/// carried-out ones have their audit records, refusals their audit summaries, so a flood of
/// proposals cannot flood the log either.
#[derive(Debug)]
pub(super) struct WriteDecided<'a> {
    /// The property's path.
    pub property: &'a str,
    pub proposal: &'a Proposal,
    /// The rule that accepted it (`accepted`, `clamped-to-bounds`, `on-loss`), when one did.
    pub accepted_by: &'static str,
    pub outcome: &'a Result<(), ControlError>,
}

impl WriteDecided<'_> {
    pub fn emit(&self, metrics: &ControlMetrics) {
        let (rule, outcome) = match (
            self.outcome,
            self.outcome.as_ref().err().and_then(ControlError::rule),
        ) {
            (Ok(()), _) => (self.accepted_by, "written"),
            (Err(ControlError::Shadow), _) => (self.accepted_by, "shadow"),
            (Err(_), Some(rule)) => (rule, "refused"),
            (Err(_), None) => (self.accepted_by, "device-error"),
        };
        metrics
            .decisions
            .get_or_create(&DecisionLabels {
                origin: self.proposal.origin.kind().to_owned(),
                rule: rule.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let (property, value, origin) =
            (self.property, &self.proposal.value, &self.proposal.origin);
        let by_plugin = origin.is_plugin();
        match self.outcome {
            Ok(()) if by_plugin => {
                tracing::debug!(%property, %value, %origin, "Write accepted and carried out");
            }
            Ok(()) => tracing::info!(%property, %value, %origin, "Write accepted and carried out"),
            Err(error) if by_plugin => {
                tracing::debug!(%property, %value, %origin, %error, "Write refused");
            }
            Err(error) => tracing::warn!(%property, %value, %origin, %error, "Write refused"),
        }
    }
}

/// Proposals a proposer refused before they reached the gate's queue (a plugin's runner: the
/// writable list, the data type, mode off, the gate's full queue), `count` of them by `rule`:
/// counted in `twinloom_control_decisions_total` beside the gate's own decisions. Not logged
/// (the runner reports the plugin's rejected outputs).
#[derive(Debug)]
pub(super) struct RefusedBeforeQueue<'a> {
    pub origin: &'a Origin,
    pub rule: &'a str,
    pub count: u64,
}

impl RefusedBeforeQueue<'_> {
    pub fn emit(&self, metrics: &ControlMetrics) {
        metrics
            .decisions
            .get_or_create(&DecisionLabels {
                origin: self.origin.kind().to_owned(),
                rule: self.rule.to_owned(),
                outcome: "refused".to_owned(),
            })
            .inc_by(self.count);
    }
}

/// An arming by `by`: done when its record is on disk, not done when it could not be audited.
#[derive(Debug)]
pub(super) struct Armed<'a> {
    pub by: &'a Origin,
    pub outcome: &'a Result<(), ControlError>,
}

impl Armed<'_> {
    pub fn emit(&self) {
        let by = self.by;
        match self.outcome {
            Ok(()) => tracing::warn!(%by, "Plant armed: plugins' proposals are written"),
            Err(error) => {
                tracing::error!(%by, %error, "Plant not armed: the arming cannot be audited");
            }
        }
    }
}

/// The control state (`state.rs`) could not be read (the gate starts from the default: no
/// manual overrides) or saved (it is current in memory; a restart would not see the change).
#[derive(Debug)]
pub(super) struct ControlStateLost<'a> {
    pub error: &'a super::state::StateError,
    pub saving: bool,
}

impl ControlStateLost<'_> {
    pub fn emit(&self) {
        if self.saving {
            tracing::error!(error = %self.error, "Cannot save the control state: a restart would not see the latest arming or manual override");
        } else {
            tracing::error!(error = %self.error, "Cannot read the control state: starting with no manual overrides");
        }
    }
}

/// A disarming by `by`, which dropped `dropped` waiting writes of plugins; it happened whether
/// or not its record could be written (`audited`).
#[derive(Debug)]
pub(super) struct Disarmed<'a> {
    pub by: &'a Origin,
    pub dropped: usize,
    pub audited: &'a Result<(), ControlError>,
}

impl Disarmed<'_> {
    pub fn emit(&self) {
        let by = self.by;
        if let Err(error) = self.audited {
            tracing::error!(%by, %error, "The disarming cannot be audited (the plant is disarmed)");
        }
        tracing::warn!(%by, dropped = self.dropped, "Plant disarmed: plugins' proposals are refused");
    }
}

/// The controller of `properties` was lost (`why`): their `on_loss` values are being written.
#[derive(Debug)]
pub(super) struct ControllerLost<'a> {
    pub why: &'a str,
    /// The properties' paths.
    pub properties: &'a [String],
}

impl ControllerLost<'_> {
    pub fn emit(&self) {
        let (why, properties) = (self.why, self.properties);
        tracing::warn!(
            why,
            ?properties,
            "Controller lost: writing the on_loss values"
        );
    }
}

/// The gate's command queue could not take a lost controller's `on_loss` (full, or the gate
/// stopped): it is dropped.
#[derive(Debug)]
pub(super) struct LostControllerDropped<'a> {
    pub error: &'a TrySendError<Command>,
}

impl LostControllerDropped<'_> {
    pub fn emit(&self) {
        let error = self.error;
        tracing::error!(%error, "The control gate cannot take a lost controller's on_loss");
    }
}

/// A setpoint the gate wrote reads a value it did not write (`written` was its last, `read` the
/// reading): changed by hand; plugins do not write it until the plant is armed again.
#[derive(Debug)]
pub(super) struct ManualOverride<'a> {
    /// The property's path.
    pub property: &'a str,
    pub written: f64,
    pub read: f64,
}

impl ManualOverride<'_> {
    pub fn emit(&self) {
        let (property, written, read) = (self.property, self.written, self.read);
        tracing::warn!(%property, written, read, "Setpoint changed by hand: plugins do not write it until the plant is armed again");
    }
}

/// An `on_loss` value is written although its intent could not be audited: refusing the
/// fallback could leave a heater at full power.
#[derive(Debug)]
pub(super) struct OnLossUnaudited<'a> {
    /// The property's path.
    pub property: &'a str,
    pub error: &'a ControlError,
}

impl OnLossUnaudited<'_> {
    pub fn emit(&self) {
        let (property, error) = (self.property, self.error);
        tracing::error!(%property, %error, "Writing the on_loss value without its audit record");
    }
}

/// A record the gate could not write to the audit log, after what it records happened anyway.
#[derive(Debug)]
pub(super) enum Unaudited<'a> {
    /// The refusals summarised every 10 s (`last`: the one at shutdown).
    RefusalSummary { last: bool },
    /// A manual override.
    ManualOverride,
    /// A lost controller.
    ControllerLost,
    /// A write's outcome (its intent, record `intent`, shows as open in `twinloom audit verify`).
    Outcome {
        /// The property's path.
        property: &'a str,
        intent: u64,
    },
}

/// The audit log could not take `record`.
#[derive(Debug)]
pub(super) struct AuditRecordLost<'a> {
    pub record: Unaudited<'a>,
    pub error: &'a ControlError,
}

impl AuditRecordLost<'_> {
    pub fn emit(&self) {
        let error = self.error;
        match self.record {
            Unaudited::RefusalSummary { last } => {
                let which = if last { "last " } else { "" };
                tracing::error!(%error, "Cannot write the {which}refusal summary to the audit log");
            }
            Unaudited::ManualOverride => {
                tracing::error!(%error, "Cannot write the manual override to the audit log");
            }
            Unaudited::ControllerLost => {
                tracing::error!(%error, "Cannot write the controller-lost record to the audit log");
            }
            Unaudited::Outcome { property, intent } => {
                tracing::error!(%property, intent, %error, "The write's outcome cannot be written to the audit log");
            }
        }
    }
}
