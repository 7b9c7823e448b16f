//! The control gate: the only way a write reaches a device.
//!
//! OPC UA clients (and, later, plugins) *propose* writes by sending a [`WriteRequest`] to the
//! gate's bounded queue. The gate checks the proposal against the property's declaration
//! (read-write access, data type, write limits in engineering units), forwards accepted writes to
//! the owning source through [`Writers`], logs every decision with its origin, and answers.
//! Every write it carries out is audited ([`audit`]): an intent record on disk before the device
//! is written, an outcome record after; refusals are summarised per origin and rule. Richer
//! policy (rate limits, interlocks, arming) belongs to the control-path issue; it will live here,
//! behind the same handle.

pub mod audit;
pub mod policy;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::runtime::Supervisor;
use crate::sources::Writers;
use crate::twin::{PropertyId, Twin, Value, WriteError};
use audit::{Audit, REFUSAL_SUMMARY_INTERVAL};
use policy::{Accepted, Policy};

/// Write proposals queued at the gate before `write` waits (a full queue slows proposers, not the gate).
pub const CONTROL_QUEUE_CAPACITY: usize = 256;

/// Who proposed a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An OPC UA client session, by user name (`anonymous` for anonymous sessions).
    OpcUa {
        /// The session's user.
        user: String,
    },
    /// A plugin, by instance name.
    Plugin {
        /// The plugin instance.
        name: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpcUa { user } => write!(f, "opcua:{user}"),
            Self::Plugin { name } => write!(f, "plugin:{name}"),
        }
    }
}

/// The names of the rules that decide a proposal: what an audit record, a plugin's outcome and
/// a metric call them.
pub mod rule {
    /// A plugin proposed to an index outside its writable list (its `writes`).
    pub const WRITABLE_LIST: &str = "writable-list";
    /// The property is read-only.
    pub const ACCESS: &str = "read-write-access";
    /// The value's kind does not fit the property's data type.
    pub const DATA_TYPE: &str = "data-type";
    /// The value is NaN or infinite.
    pub const FINITE: &str = "finite";
    /// The value lies outside the property's write limits.
    pub const BOUNDS: &str = "bounds";
    /// The gate's queue was full.
    pub const QUEUE: &str = "queue";
    /// Too soon after the last write to the property (`min_write_interval`).
    pub const MIN_INTERVAL: &str = "min-interval";
    /// The step from the last value written is too steep (`max_rate`).
    pub const MAX_RATE: &str = "max-rate";
    /// The origin has used its writes for the minute.
    pub const ORIGIN_BUDGET: &str = "origin-budget";
    /// The intent could not be audited.
    pub const AUDIT: &str = "audit";
}

/// Why the gate refused or could not carry out a write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The property is read-only.
    #[error("property is read-only")]
    NotWritable,
    /// The value's kind does not fit the property's data type.
    #[error("value {0} does not fit the property's data type")]
    TypeMismatch(String),
    /// The value lies outside the property's write limits.
    #[error("value {value} is outside the write limits [{low}, {high}]")]
    OutOfLimits {
        /// The proposed value.
        value: f64,
        /// Lowest allowed.
        low: f64,
        /// Highest allowed.
        high: f64,
    },
    /// The value is NaN or infinite (refused for every numeric property, limits or not).
    #[error("value {0} is not finite")]
    NotFinite(f64),
    /// The property was written less than its `min_write_interval` ago.
    #[error("the last write was {since:?} ago, less than the {interval:?} between writes")]
    TooSoon {
        /// The property's `min_write_interval`.
        interval: std::time::Duration,
        /// Time since the last write.
        since: std::time::Duration,
    },
    /// The step from the last value written is steeper than the property's `max_rate`.
    #[error("a change of {rate} units per second, more than the {max} allowed")]
    TooFast {
        /// The step over the time since the last write, EU/s.
        rate: f64,
        /// The property's `max_rate`, EU/s.
        max: f64,
    },
    /// The origin has used its writes for the minute.
    #[error("this origin has used its {per_minute} writes per minute")]
    OverBudget {
        /// `[control] max_writes_per_origin_per_minute`.
        per_minute: u32,
    },
    /// The write's intent could not be written to the audit log (full or failing disk, no audit
    /// folder): fail safe, nothing is written to the device.
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
    /// The source could not write it.
    #[error("source refused the write: {0}")]
    Source(#[from] WriteError),
    /// The gate's queue ([`CONTROL_QUEUE_CAPACITY`]) is full; the proposal was not queued.
    #[error("the control gate's queue is full")]
    QueueFull,
    /// The gate is not running.
    #[error("the control gate is not running")]
    Closed,
}

/// A write proposal.
#[derive(Debug)]
pub struct WriteRequest {
    /// The property to write.
    pub property: PropertyId,
    /// The value in engineering units.
    pub value: Value,
    /// Who proposes it.
    pub origin: Origin,
    /// Where the decision goes.
    pub reply: oneshot::Sender<Result<(), ControlError>>,
}

impl WriteRequest {
    /// A request and the receiver its outcome arrives on.
    fn new(
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> (Self, oneshot::Receiver<Result<(), ControlError>>) {
        let (reply, answer) = oneshot::channel();
        let request = Self {
            property,
            value,
            origin,
            reply,
        };
        (request, answer)
    }
}

/// Proposes writes to the gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<WriteRequest>,
}

impl ControlHandle {
    /// Proposes writing `value` (engineering units) to `property` and waits for the outcome.
    ///
    /// Errors: see [`ControlError`].
    pub async fn write(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> Result<(), ControlError> {
        let (request, answer) = WriteRequest::new(property, value, origin);
        self.tx
            .send(request)
            .await
            .map_err(|_| ControlError::Closed)?;
        answer.await.map_err(|_| ControlError::Closed)?
    }

    /// Queues a write proposal without waiting for its outcome (a plugin's proposals: the gate
    /// decides and logs each one). Never waits: when the gate's queue is full the proposal is
    /// not queued. Returns where the outcome arrives; a receiver whose sender is dropped means
    /// the gate dropped the proposal unanswered (it stopped).
    ///
    /// Errors: [`ControlError::QueueFull`], or [`ControlError::Closed`] when the gate stopped.
    pub fn propose(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> Result<oneshot::Receiver<Result<(), ControlError>>, ControlError> {
        let (request, outcome) = WriteRequest::new(property, value, origin);
        self.tx.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ControlError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => ControlError::Closed,
        })?;
        Ok(outcome)
    }
}

impl ControlError {
    /// The rule that refused, for a refusal ([`rule`]); `None` for a device's answer or a gate
    /// that is gone.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Self::NotWritable => Some(rule::ACCESS),
            Self::TypeMismatch(_) => Some(rule::DATA_TYPE),
            Self::OutOfLimits { .. } => Some(rule::BOUNDS),
            Self::NotFinite(_) => Some(rule::FINITE),
            Self::TooSoon { .. } => Some(rule::MIN_INTERVAL),
            Self::TooFast { .. } => Some(rule::MAX_RATE),
            Self::OverBudget { .. } => Some(rule::ORIGIN_BUDGET),
            Self::AuditUnavailable(_) => Some(rule::AUDIT),
            Self::QueueFull => Some(rule::QUEUE),
            Self::Source(_) | Self::Closed => None,
        }
    }
}

#[cfg(test)]
impl ControlHandle {
    /// A handle whose gate is gone: every write answers [`ControlError::Closed`]. For tests of
    /// components that hold a handle but propose nothing.
    pub(crate) fn detached() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self { tx }
    }
}

/// Starts the gate under `supervisor`, auditing to `journal` (or refusing every write with the
/// reason there is none), allowing each origin `writes_per_origin_per_minute` writes a minute
/// (the [`policy`]).
pub fn spawn(
    twin: Arc<Twin>,
    writers: Writers,
    journal: Result<crate::runtime::journal::Journal, String>,
    writes_per_origin_per_minute: u32,
    supervisor: &Supervisor,
) -> ControlHandle {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(CONTROL_QUEUE_CAPACITY);
    let mut policy = Policy::new(writes_per_origin_per_minute);
    supervisor.spawn("control-gate", move |token| async move {
        let mut audit = Audit::new(journal);
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let request = tokio::select! {
                () = token.cancelled() => {
                    if let Err(error) = audit.summarise_refusals().await {
                        tracing::error!(%error, "Cannot write the last refusal summary to the audit log");
                    }
                    return Ok(());
                }
                _ = summary.tick() => {
                    if let Err(error) = audit.summarise_refusals().await {
                        tracing::error!(%error, "Cannot write a refusal summary to the audit log");
                    }
                    continue;
                }
                request = rx.recv() => match request {
                    Some(request) => request,
                    None => return Ok(()),
                },
            };
            let path = &twin.model().property(request.property).path;
            let outcome = match policy.decide(&twin, &request, std::time::Instant::now()) {
                Ok(accepted) => {
                    let value = accepted.value.clone();
                    let done = carry_out(&twin, &writers, &audit, &request, path, accepted).await;
                    if done.is_ok() {
                        policy.written(request.property, &value, std::time::Instant::now());
                    }
                    done
                }
                Err(refused) => Err(refused),
            };
            if let Some(rule) = outcome.as_ref().err().and_then(ControlError::rule) {
                audit.refused(&request.origin, rule);
            }
            WriteDecided {
                property: path,
                request: &request,
                outcome: &outcome,
            }
            .emit();
            let _ = request.reply.send(outcome);
        }
    });
    ControlHandle { tx }
}

/// Carries out an accepted write: its intent on disk first, then the device, then its outcome.
async fn carry_out(
    twin: &Twin,
    writers: &Writers,
    audit: &Audit,
    request: &WriteRequest,
    path: &str,
    accepted: Accepted,
) -> Result<(), ControlError> {
    let old = twin.sample(request.property).value;
    let rule = if accepted.clamped {
        "clamped-to-bounds"
    } else {
        "accepted"
    };
    let value = accepted.value;
    let intent = audit
        .intent(request, path, old.as_ref(), &value, rule)
        .await?;
    let started = std::time::Instant::now();
    let result = writers
        .write(request.property, value)
        .await
        .map_err(ControlError::from);
    if let Err(error) = audit.outcome(intent, &result, started.elapsed()).await {
        tracing::error!(property = %path, intent, %error, "The write's outcome cannot be written to the audit log");
    }
    result
}

/// Checks a proposal against the property's declaration; returns the value to write.
/// The gate decided a proposal (and, when accepted, the device answered): the one event per
/// decision, logged with its origin. The control-path work adds its audit record here.
#[derive(Debug)]
struct WriteDecided<'a> {
    property: &'a str,
    request: &'a WriteRequest,
    outcome: &'a Result<(), ControlError>,
}

impl WriteDecided<'_> {
    fn emit(&self) {
        let (property, value, origin) = (self.property, &self.request.value, &self.request.origin);
        match self.outcome {
            Ok(()) => tracing::info!(%property, %value, %origin, "Write accepted and carried out"),
            Err(error) => tracing::warn!(%property, %value, %origin, %error, "Write refused"),
        }
    }
}
