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
pub mod interlock;
pub mod policy;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::runtime::Supervisor;
use crate::sources::Writers;
use crate::telemetry::metrics::{ControlMetrics, DecisionLabels};
use crate::twin::{PropertyId, Twin, Value, WriteError};
use audit::{AuditLog, REFUSAL_SUMMARY_INTERVAL, Refusals};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use policy::{Accepted, Policy};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// An interlock guarding the property does not hold (or one of its inputs is not Good).
    pub const INTERLOCK: &str = "interlock";
    /// The plant is disarmed and the proposal came from a plugin.
    pub const DISARMED: &str = "disarmed";
    /// The plugin's mode is `off`.
    pub const MODE_OFF: &str = "mode-off";
    /// A newer accepted proposal replaced this one while it waited.
    pub const SUPERSEDED: &str = "superseded";
    /// The proposer had gone before the write was carried out.
    pub const EXPIRED: &str = "expired";
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
    /// An interlock guarding the property does not hold, or one of its inputs is not Good.
    #[error("interlock `{name}` holds the write: {why}")]
    Interlock {
        /// The interlock's name.
        name: String,
        /// Which input is not Good, or the condition and its inputs' values.
        why: String,
    },
    /// The plant is disarmed: plugins do not write (`[control] armed`).
    #[error("the plant is disarmed: plugins do not write")]
    Disarmed,
    /// Decided and audited, not written: the proposing plugin runs in shadow mode.
    #[error("decided in shadow mode: nothing was written")]
    Shadow,
    /// A newer accepted proposal for the same property replaced this one before it was carried
    /// out.
    #[error("superseded by a newer write to the same property")]
    Superseded,
    /// The proposer had gone (an OPC UA client that timed out) before the write was carried
    /// out; nothing was written.
    #[error("the proposer had gone before the write was carried out")]
    Expired,
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
    /// Decide and audit, but write nothing (a plugin in shadow mode).
    pub shadow: bool,
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
            shadow: false,
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
    /// decides and logs each one; with `shadow`, it decides and audits but writes nothing). Never waits: when the gate's queue is full the proposal is
    /// not queued. Returns where the outcome arrives; a receiver whose sender is dropped means
    /// the gate dropped the proposal unanswered (it stopped).
    ///
    /// Errors: [`ControlError::QueueFull`], or [`ControlError::Closed`] when the gate stopped.
    pub fn propose(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
        shadow: bool,
    ) -> Result<oneshot::Receiver<Result<(), ControlError>>, ControlError> {
        let (mut request, outcome) = WriteRequest::new(property, value, origin);
        request.shadow = shadow;
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
            Self::Interlock { .. } => Some(rule::INTERLOCK),
            Self::Superseded => Some(rule::SUPERSEDED),
            Self::Disarmed => Some(rule::DISARMED),
            Self::Shadow => None,
            Self::Expired => Some(rule::EXPIRED),
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

/// A write being carried out: it ends with its request and outcome.
type Carried =
    futures::future::BoxFuture<'static, (WriteRequest, &'static str, Result<(), ControlError>)>;

/// A decided write waiting for its property's turn.
#[derive(Debug)]
struct Job {
    request: WriteRequest,
    accepted: Accepted,
}

/// A property's writes: whether one is in flight, and the one waiting (a newer accepted
/// proposal replaces it: `superseded`).
#[derive(Debug, Default)]
struct Slot {
    busy: bool,
    pending: Option<Job>,
}

/// What the gate carries out with: cheap clones every write in flight holds.
#[derive(Debug, Clone)]
struct Executor {
    twin: Arc<Twin>,
    writers: Writers,
    audit: AuditLog,
    write_timeout: Duration,
    metrics: ControlMetrics,
    interlocks: Arc<interlock::Interlocks>,
}

impl Executor {
    /// Carries out `job`: its intent on disk first, then the device (within the write timeout),
    /// then its outcome. A proposer that has gone meanwhile (an OPC UA client that timed out)
    /// gets nothing written: `expired`.
    async fn run(self, job: Job) -> (WriteRequest, &'static str, Result<(), ControlError>) {
        let Job { request, accepted } = job;
        let rule = if accepted.clamped {
            "clamped-to-bounds"
        } else {
            "accepted"
        };
        if request.reply.is_closed() {
            return (request, rule, Err(ControlError::Expired));
        }
        // The interlocks again: the write may have waited for its turn while a condition changed.
        if let Err(held) = self.interlocks.check(&self.twin, request.property) {
            return (request, rule, Err(held));
        }
        let path = self.twin.model().property(request.property).path.clone();
        let old = self.twin.sample(request.property).value;
        let intent = match self
            .audit
            .intent(&request, &path, old.as_ref(), &accepted.value, rule)
            .await
        {
            Ok(intent) => intent,
            Err(error) => return (request, rule, Err(error)),
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.write_timeout,
            self.writers.write(request.property, accepted.value),
        )
        .await
        {
            Ok(written) => written.map_err(ControlError::from),
            Err(_) => Err(ControlError::Source(WriteError::Timeout)),
        };
        self.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = self.audit.outcome(intent, &result, started.elapsed()).await {
            tracing::error!(property = %path, intent, %error, "The write's outcome cannot be written to the audit log");
        }
        (request, rule, result)
    }
}

/// The gate's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Writes accepted per origin in any minute.
    pub writes_per_origin_per_minute: u32,
    /// Longest a device write may take before it counts as timed out.
    pub write_timeout: Duration,
    /// Whether plugins may write from the start (the plant is armed).
    pub armed: bool,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            writes_per_origin_per_minute: 600,
            write_timeout: Duration::from_secs(10),
            armed: false,
        }
    }
}

/// Starts the gate under `supervisor`, auditing to `journal` (or refusing every write with the
/// reason there is none), with `limits` and `interlocks`.
///
/// Deciding is synchronous, in arrival order ([`policy`]); carrying out is concurrent: each
/// property has at most one write in flight and one waiting, writes to different properties (and
/// so different sources) run side by side, and their audit records share the journal's group
/// commits.
pub fn spawn(
    twin: Arc<Twin>,
    writers: Writers,
    journal: Result<crate::runtime::journal::Journal, String>,
    limits: GateLimits,
    interlocks: interlock::Interlocks,
    metrics: &ControlMetrics,
    supervisor: &Supervisor,
) -> ControlHandle {
    let interlocks = Arc::new(interlocks);
    metrics.armed.set(i64::from(limits.armed));
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(CONTROL_QUEUE_CAPACITY);
    let mut policy = Policy::new(limits.writes_per_origin_per_minute, Arc::clone(&interlocks));
    let executor = Executor {
        twin: Arc::clone(&twin),
        writers,
        audit: AuditLog::new(journal),
        write_timeout: limits.write_timeout,
        metrics: metrics.clone(),
        interlocks,
    };
    supervisor.spawn("control-gate", move |token| async move {
        let mut refusals = Refusals::default();
        let mut slots: HashMap<PropertyId, Slot> = HashMap::new();
        let mut running: FuturesUnordered<Carried> = FuturesUnordered::new();
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    if let Err(error) = executor.audit.summarise(&mut refusals).await {
                        tracing::error!(%error, "Cannot write the last refusal summary to the audit log");
                    }
                    return Ok(());
                }
                _ = summary.tick() => {
                    if let Err(error) = executor.audit.summarise(&mut refusals).await {
                        tracing::error!(%error, "Cannot write a refusal summary to the audit log");
                    }
                }
                Some((request, rule, outcome)) = running.next(), if !running.is_empty() => {
                    let property = request.property;
                    answer(&twin, &executor.metrics, &mut refusals, request, rule, outcome);
                    let slot = slots.entry(property).or_default();
                    match slot.pending.take() {
                        Some(job) => running.push(Box::pin(executor.clone().run(job))),
                        None => slot.busy = false,
                    }
                }
                request = rx.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    let from_plugin = matches!(request.origin, Origin::Plugin { .. });
                    if from_plugin && !request.shadow && !limits.armed {
                        answer(&twin, &executor.metrics, &mut refusals, request, "", Err(ControlError::Disarmed));
                        continue;
                    }
                    match policy.decide(&twin, &request, Instant::now()) {
                        Ok(accepted) if request.shadow => {
                            let outcome = executor.audit.shadow(&request, &twin.model().property(request.property).path, &accepted.value).await;
                            answer(&twin, &executor.metrics, &mut refusals, request, "accepted", outcome.and(Err(ControlError::Shadow)));
                        }
                        Ok(accepted) => {
                            let job = Job { request, accepted };
                            let slot = slots.entry(job.request.property).or_default();
                            if !slot.busy {
                                slot.busy = true;
                                running.push(Box::pin(executor.clone().run(job)));
                            } else if let Some(old) = slot.pending.replace(job) {
                                answer(&twin, &executor.metrics, &mut refusals, old.request, "", Err(ControlError::Superseded));
                            }
                        }
                        Err(refused) => answer(&twin, &executor.metrics, &mut refusals, request, "", Err(refused)),
                    }
                }
            }
        }
    });
    ControlHandle { tx }
}

/// Answers `request` with `outcome` (`accepted_by` names the rule that accepted it, when one
/// did): counts the decision and a refusal, logs the decision, replies.
fn answer(
    twin: &Twin,
    metrics: &ControlMetrics,
    refusals: &mut Refusals,
    request: WriteRequest,
    accepted_by: &'static str,
    outcome: Result<(), ControlError>,
) {
    let refused_by = outcome.as_ref().err().and_then(ControlError::rule);
    if let Some(rule) = refused_by {
        refusals.count(&request.origin, rule);
    }
    let (rule, kind) = match (&outcome, refused_by) {
        (Ok(()), _) => (accepted_by, "written"),
        (Err(ControlError::Shadow), _) => (accepted_by, "shadow"),
        (Err(_), Some(rule)) => (rule, "refused"),
        (Err(_), None) => (accepted_by, "device-error"),
    };
    metrics
        .decisions
        .get_or_create(&DecisionLabels {
            origin: match request.origin {
                Origin::OpcUa { .. } => "opcua",
                Origin::Plugin { .. } => "plugin",
            }
            .to_owned(),
            rule: rule.to_owned(),
            outcome: kind.to_owned(),
        })
        .inc();
    WriteDecided {
        property: &twin.model().property(request.property).path,
        request: &request,
        outcome: &outcome,
    }
    .emit();
    let _ = request.reply.send(outcome);
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
