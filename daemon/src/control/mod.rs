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

use tokio::sync::{mpsc, oneshot, watch};

use crate::runtime::Supervisor;
use crate::sources::Writers;
use crate::telemetry::metrics::{ControlMetrics, DecisionLabels};
use crate::twin::spec::{OnLoss, SafeValue};
use crate::twin::{DataType, PropertyId, Reading, Twin, Value, WriteError};
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
    /// An admin HTTP client, by the user its credential named (`anonymous` without one).
    Admin {
        /// The user.
        user: String,
    },
    /// The daemon itself: an `on_loss` write after the controller was lost.
    OnLoss,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpcUa { user } => write!(f, "opcua:{user}"),
            Self::Plugin { name } => write!(f, "plugin:{name}"),
            Self::Admin { user } => write!(f, "admin:{user}"),
            Self::OnLoss => f.write_str("twinloom:on-loss"),
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
    /// The setpoint was changed by hand (at the HMI) since the gate last wrote it: plugins do
    /// not write it until the plant is armed again.
    pub const MANUAL_OVERRIDE: &str = "manual-override";
    /// The property needs a select first (`select_before_operate`) and the proposer holds none.
    pub const SELECT_BEFORE_OPERATE: &str = "select-before-operate";
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
    /// The property needs a select first and the proposer holds none that is still valid; or,
    /// for a select, another user holds one.
    #[error("select before operate: {0}")]
    NotSelected(String),
    /// The setpoint was changed by hand since the gate last wrote it; plugins do not write it
    /// until the plant is armed again.
    #[error(
        "the setpoint was changed by hand (manual override): plugins do not write it until the plant is armed again"
    )]
    ManualOverride,
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
    /// When the proposer stops waiting (an OPC UA request's timeout hint): the device write
    /// ends by then, and one whose turn comes later is not carried out (`expired`).
    pub deadline: Option<Instant>,
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
            deadline: None,
        };
        (request, answer)
    }
}

/// Commands the gate's queue for commands cannot hold; past them `controller_lost` is logged and
/// dropped (each command is small and the gate serves commands before proposals).
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// A command to the gate, served before waiting proposals.
#[derive(Debug)]
enum Command {
    /// Arm the plant: plugins' proposals may be written.
    Arm {
        by: Origin,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Disarm the plant: plugins' waiting writes are dropped, `on_loss` applies.
    Disarm {
        by: Origin,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Select `property` for `by`'s next write (select-before-operate).
    Select {
        property: PropertyId,
        by: Origin,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// The controller of `properties` was lost (`why`): their `on_loss` applies.
    Lost {
        why: String,
        properties: Vec<PropertyId>,
    },
}

/// Proposes writes to the gate, arms and disarms the plant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<WriteRequest>,
    commands: mpsc::Sender<Command>,
    armed: watch::Receiver<bool>,
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
        self.write_until(property, value, origin, None).await
    }

    /// [`write`](Self::write) for a proposer that stops waiting at `deadline` (an OPC UA
    /// request's arrival plus its timeout hint): the device write ends by then (the smaller of
    /// it and `[control] write_timeout`), and a write whose turn comes after it is not carried
    /// out ([`ControlError::Expired`]).
    ///
    /// Errors: see [`ControlError`].
    pub async fn write_until(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
        deadline: Option<Instant>,
    ) -> Result<(), ControlError> {
        let (mut request, answer) = WriteRequest::new(property, value, origin);
        request.deadline = deadline;
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

impl ControlHandle {
    /// Arms the plant (`by` an operator): plugins' proposals may be written from now on. The
    /// arming is audited first; when it cannot be, the plant stays disarmed.
    ///
    /// Errors: [`ControlError::AuditUnavailable`], or [`ControlError::Closed`] when the gate
    /// stopped.
    pub async fn arm(&self, by: Origin) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Arm { by, reply }).await?;
        answer.await.map_err(|_| ControlError::Closed)?
    }

    /// Disarms the plant (always allowed): plugins' writes not yet carried out are dropped
    /// (outcome `disarmed`), later proposals refused, and every setpoint's `on_loss` applies.
    /// Audited; a disarm that cannot be audited still disarms (and is logged).
    ///
    /// Errors: [`ControlError::Closed`] when the gate stopped.
    pub async fn disarm(&self, by: Origin) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Disarm { by, reply }).await?;
        answer.await.map_err(|_| ControlError::Closed)?
    }

    /// Selects `property` for `by`'s next write (select-before-operate): the select lasts the
    /// property's `select_before_operate` time, is used up by one write of the same origin, and
    /// is audited. Selecting again renews one's own select.
    ///
    /// Errors: [`ControlError::NotSelected`] when the property needs no select, or another
    /// origin holds a valid select on it; [`ControlError::Closed`].
    pub async fn select(&self, property: PropertyId, by: Origin) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Select {
            property,
            by,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::Closed)?
    }

    /// Tells the gate the controller of `properties` is lost (`why`: a plugin quarantined or
    /// unloaded): the `on_loss` of each applies. Never waits; a full command queue is logged.
    pub fn controller_lost(&self, why: impl Into<String>, properties: Vec<PropertyId>) {
        let why = why.into();
        if let Err(error) = self.commands.try_send(Command::Lost { why, properties }) {
            tracing::error!(%error, "The control gate cannot take a lost controller's on_loss");
        }
    }

    /// Whether the plant is armed now.
    pub fn is_armed(&self) -> bool {
        *self.armed.borrow()
    }

    async fn command(&self, command: Command) -> Result<(), ControlError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ControlError::Closed)
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
            Self::ManualOverride => Some(rule::MANUAL_OVERRIDE),
            Self::NotSelected(_) => Some(rule::SELECT_BEFORE_OPERATE),
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
        let (commands, _) = mpsc::channel(1);
        let (_, armed) = watch::channel(false);
        Self {
            tx,
            commands,
            armed,
        }
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
    /// An `on_loss` write: carried out even when it cannot be audited, with no interlock or
    /// proposer to wait for.
    forced: bool,
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
        let Job {
            request,
            accepted,
            forced,
        } = job;
        let rule = match (forced, accepted.clamped) {
            (true, _) => ON_LOSS,
            (false, true) => "clamped-to-bounds",
            (false, false) => "accepted",
        };
        let gone =
            request.reply.is_closed() || request.deadline.is_some_and(|at| at <= Instant::now());
        if !forced && gone {
            return (request, rule, Err(ControlError::Expired));
        }
        // The interlocks again: the write may have waited for its turn while a condition changed.
        if !forced && let Err(held) = self.interlocks.check(&self.twin, request.property) {
            return (request, rule, Err(held));
        }
        let path = self.twin.model().property(request.property).path.clone();
        let old = self.twin.sample(request.property).value;
        let intent = match self
            .audit
            .intent(&request, &path, old.as_ref(), &accepted.value, rule)
            .await
        {
            Ok(intent) => Some(intent),
            // The fallback is written even when it cannot be audited: refusing it could leave a
            // heater at full power.
            Err(error) if forced => {
                tracing::error!(property = %path, %error, "Writing the on_loss value without its audit record");
                None
            }
            Err(error) => return (request, rule, Err(error)),
        };
        let started = Instant::now();
        let ends = request.deadline.map_or(started + self.write_timeout, |at| {
            at.min(started + self.write_timeout)
        });
        let result = match tokio::time::timeout_at(
            ends.into(),
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
        if let Some(intent) = intent
            && let Err(error) = self.audit.outcome(intent, &result, started.elapsed()).await
        {
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
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(CONTROL_QUEUE_CAPACITY);
    let (commands, mut commands_rx) = mpsc::channel::<Command>(COMMAND_QUEUE_CAPACITY);
    let (armed_tx, armed) = watch::channel(limits.armed);
    let policy = Policy::new(limits.writes_per_origin_per_minute, Arc::clone(&interlocks));
    let executor = Executor {
        twin: Arc::clone(&twin),
        writers,
        audit: AuditLog::new(journal),
        write_timeout: limits.write_timeout,
        metrics: metrics.clone(),
        interlocks,
    };
    let mut gate = Gate {
        on_loss: on_loss_values(&twin),
        armed_property: twin
            .model()
            .property_by_path(&crate::twin::spec::control_status_path("armed")),
        twin,
        executor,
        policy,
        armed: armed_tx,
        refusals: Refusals::default(),
        slots: HashMap::new(),
        running: FuturesUnordered::new(),
        audit_failed: false,
        written: HashMap::new(),
        overridden: Default::default(),
        selections: HashMap::new(),
    };
    let model = gate.twin.model();
    let setpoints: Vec<PropertyId> = (0..model.properties().len() as u32)
        .map(PropertyId)
        .filter(|&p| model.decl(p).access == crate::twin::Access::ReadWrite)
        .collect();
    let mut readings = gate.twin.subscribe(
        crate::twin::Filter::Properties(setpoints),
        crate::twin::DEFAULT_SUBSCRIBER_CAPACITY,
    );
    let mut changes = Vec::new();
    gate.set_armed(limits.armed);
    supervisor.spawn("control-gate", move |token| async move {
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => {
                    gate.summarise("last ").await;
                    return Ok(());
                }
                Some(command) = commands_rx.recv() => gate.command(command).await,
                Some((request, rule, outcome)) = gate.running.next(), if !gate.running.is_empty() => {
                    gate.finished(request, rule, outcome).await;
                }
                _ = readings.recv(&mut changes) => {
                    for change in changes.drain(..) {
                        gate.read(&change).await;
                    }
                }
                _ = summary.tick() => gate.summarise("").await,
                request = rx.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    gate.decide(request).await;
                }
            }
        }
    });
    ControlHandle {
        tx,
        commands,
        armed,
    }
}

/// How many recent written values per setpoint a reading is compared with: a poll that read a
/// value just before a newer write still matches one of them.
const WRITTEN_HISTORY: usize = 8;

/// The rule name of an `on_loss` write in the audit log and metrics.
const ON_LOSS: &str = "on-loss";

/// The `on_loss = { write = ... }` value of every property that has one, converted to its data
/// type (validated at config load).
fn on_loss_values(twin: &Twin) -> HashMap<PropertyId, Value> {
    let model = twin.model();
    (0..model.properties().len() as u32)
        .map(PropertyId)
        .filter_map(|id| {
            let decl = model.decl(id);
            let OnLoss::Write(safe) = decl.write_policy.on_loss else {
                return None;
            };
            let value = match (safe, decl.data_type) {
                (SafeValue::Bool(b), _) => Value::Bool(b),
                (SafeValue::Number(v), DataType::Integer) => Value::Int(v.round() as i64),
                (SafeValue::Number(v), DataType::Unsigned) => {
                    Value::UInt(v.round().max(0.0) as u64)
                }
                (SafeValue::Number(v), _) => Value::Float(v),
            };
            Some((id, value))
        })
        .collect()
}

/// The gate's state, owned by its task.
struct Gate {
    twin: Arc<Twin>,
    executor: Executor,
    policy: Policy,
    armed: watch::Sender<bool>,
    /// `twinloom/control/armed` in the twin, when the model has it.
    armed_property: Option<PropertyId>,
    on_loss: HashMap<PropertyId, Value>,
    refusals: Refusals,
    slots: HashMap<PropertyId, Slot>,
    running: FuturesUnordered<Carried>,
    /// An intent could not be audited since the last one that could (`on_loss` applied once).
    audit_failed: bool,
    /// The last [`WRITTEN_HISTORY`] values the gate started writing to each setpoint (as
    /// numbers): a reading that matches one of them is the gate's own.
    written: HashMap<PropertyId, std::collections::VecDeque<f64>>,
    /// Setpoints changed by hand since the gate wrote them: plugins do not write them until
    /// the plant is armed again.
    overridden: std::collections::HashSet<PropertyId>,
    /// Valid selects (select-before-operate): the origin holding each and when it expires.
    selections: HashMap<PropertyId, (Origin, Instant)>,
}

impl Gate {
    fn answer(
        &mut self,
        request: WriteRequest,
        accepted_by: &'static str,
        outcome: Result<(), ControlError>,
    ) {
        answer(
            &self.twin,
            &self.executor.metrics,
            &mut self.refusals,
            request,
            accepted_by,
            outcome,
        );
    }

    async fn summarise(&mut self, which: &str) {
        if let Err(error) = self.executor.audit.summarise(&mut self.refusals).await {
            tracing::error!(%error, "Cannot write the {which}refusal summary to the audit log");
        }
    }

    fn set_armed(&mut self, armed: bool) {
        self.armed.send_replace(armed);
        self.executor.metrics.armed.set(i64::from(armed));
        if let Some(property) = self.armed_property {
            self.twin
                .apply(&[Reading::value(property, Value::Bool(armed), None)]);
        }
    }

    /// Starts `job` now, or makes it its property's waiting write (answering the one it
    /// replaces: superseded).
    fn schedule(&mut self, job: Job) {
        let slot = self.slots.entry(job.request.property).or_default();
        if !slot.busy {
            slot.busy = true;
            self.start(job);
        } else if let Some(old) = slot.pending.replace(job) {
            self.answer(old.request, "", Err(ControlError::Superseded));
        }
    }

    /// Carries `job` out, remembering its value among the setpoint's recent writes.
    fn start(&mut self, job: Job) {
        if let Some(value) = job.accepted.value.as_f64() {
            let history = self.written.entry(job.request.property).or_default();
            if history.len() == WRITTEN_HISTORY {
                history.pop_front();
            }
            history.push_back(value);
        }
        self.running.push(Box::pin(self.executor.clone().run(job)));
    }

    async fn decide(&mut self, request: WriteRequest) {
        let from_plugin = matches!(request.origin, Origin::Plugin { .. });
        if from_plugin && !request.shadow && !*self.armed.borrow() {
            self.answer(request, "", Err(ControlError::Disarmed));
            return;
        }
        if from_plugin && self.overridden.contains(&request.property) {
            self.answer(request, "", Err(ControlError::ManualOverride));
            return;
        }
        if let Err(refused) = self.operate(&request) {
            self.answer(request, "", Err(refused));
            return;
        }
        match self.policy.decide(&self.twin, &request, Instant::now()) {
            Ok(accepted) if request.shadow => {
                let path = &self.twin.model().property(request.property).path;
                let outcome = self
                    .executor
                    .audit
                    .shadow(&request, path, &accepted.value)
                    .await;
                self.answer(request, "accepted", outcome.and(Err(ControlError::Shadow)));
            }
            Ok(accepted) => self.schedule(Job {
                request,
                accepted,
                forced: false,
            }),
            Err(refused) => self.answer(request, "", Err(refused)),
        }
    }

    /// A write ended: answer it, start its property's waiting write; an intent that could not
    /// be audited applies every `on_loss` (once, until an intent can be audited again).
    async fn finished(
        &mut self,
        request: WriteRequest,
        rule: &'static str,
        outcome: Result<(), ControlError>,
    ) {
        let property = request.property;
        match &outcome {
            Err(ControlError::AuditUnavailable(why)) if !self.audit_failed => {
                self.audit_failed = true;
                let why = format!("the audit log cannot be written: {why}");
                self.lose(&why, self.on_loss.keys().copied().collect())
                    .await;
            }
            Ok(()) | Err(ControlError::Source(_)) if rule != ON_LOSS => self.audit_failed = false,
            _ => {}
        }
        self.answer(request, rule, outcome);
        let slot = self.slots.entry(property).or_default();
        match slot.pending.take() {
            Some(job) => self.start(job),
            None => slot.busy = false,
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Arm { by, reply } => {
                let outcome = self.executor.audit.armed(&by, true, 0).await;
                match &outcome {
                    Ok(()) => {
                        self.set_armed(true);
                        self.overridden.clear();
                        tracing::warn!(%by, "Plant armed: plugins' proposals are written");
                    }
                    Err(error) => {
                        tracing::error!(%by, %error, "Plant not armed: the arming cannot be audited")
                    }
                }
                let _ = reply.send(outcome);
            }
            Command::Disarm { by, reply } => {
                self.set_armed(false);
                let mut dropped = Vec::new();
                for slot in self.slots.values_mut() {
                    if slot
                        .pending
                        .as_ref()
                        .is_some_and(|job| matches!(job.request.origin, Origin::Plugin { .. }))
                    {
                        dropped.extend(slot.pending.take());
                    }
                }
                let count = dropped.len();
                for job in dropped {
                    self.answer(job.request, "", Err(ControlError::Disarmed));
                }
                if let Err(error) = self.executor.audit.armed(&by, false, count).await {
                    tracing::error!(%by, %error, "The disarming cannot be audited (the plant is disarmed)");
                }
                tracing::warn!(%by, dropped = count, "Plant disarmed: plugins' proposals are refused");
                self.lose("disarmed", self.on_loss.keys().copied().collect())
                    .await;
                let _ = reply.send(Ok(()));
            }
            Command::Select {
                property,
                by,
                reply,
            } => {
                let outcome = self.select(property, by).await;
                let _ = reply.send(outcome);
            }
            Command::Lost { why, properties } => self.lose(&why, properties).await,
        }
    }

    /// Records a select of `property` by `by` (audited), unless another origin holds one.
    async fn select(&mut self, property: PropertyId, by: Origin) -> Result<(), ControlError> {
        let Some(lasts) = self
            .twin
            .model()
            .decl(property)
            .write_policy
            .select_before_operate
        else {
            return Err(ControlError::NotSelected(
                "this property takes writes without a select".into(),
            ));
        };
        let now = Instant::now();
        if let Some((holder, until)) = self.selections.get(&property)
            && *until > now
            && *holder != by
        {
            return Err(ControlError::NotSelected(format!("selected by {holder}")));
        }
        let path = self.twin.model().property(property).path.clone();
        self.executor.audit.selected(&by, &path, lasts).await?;
        self.selections.insert(property, (by, now + lasts));
        Ok(())
    }

    /// Select-before-operate: a write to a property that needs a select uses up its origin's
    /// valid select.
    fn operate(&mut self, request: &WriteRequest) -> Result<(), ControlError> {
        let decl = self.twin.model().decl(request.property);
        if decl.write_policy.select_before_operate.is_none() {
            return Ok(());
        }
        match self.selections.get(&request.property) {
            Some((holder, until)) if *holder == request.origin => {
                let valid = *until > Instant::now();
                self.selections.remove(&request.property);
                if valid {
                    Ok(())
                } else {
                    Err(ControlError::NotSelected("the select expired".into()))
                }
            }
            _ => Err(ControlError::NotSelected(
                "select the property first (its Select method)".into(),
            )),
        }
    }

    /// A setpoint's new reading: when it matches none of the values the gate recently started
    /// writing to it (beyond the property's deadband and at least one raw step, `|scale|`), the
    /// setpoint was changed by hand: audited, and plugins no longer write it until the plant is
    /// armed again. A setpoint the gate never wrote is not watched.
    async fn read(&mut self, change: &crate::twin::Change) {
        let property = change.property;
        let Some(history) = self.written.get(&property) else {
            return;
        };
        let sample = &change.sample;
        let Some(read) = sample.value.as_ref().and_then(Value::as_f64) else {
            return;
        };
        if !sample.quality.is_good() || self.overridden.contains(&property) {
            return;
        }
        let model = self.twin.model();
        let decl = model.decl(property);
        let tolerance = decl
            .deadband
            .threshold(decl.range)
            .max(model.property(property).scaling.scale.abs());
        if history
            .iter()
            .any(|written| (read - written).abs() <= tolerance)
        {
            return;
        }
        let written = history.back().copied().unwrap_or(f64::NAN);
        self.overridden.insert(property);
        let path = model.property(property).path.clone();
        tracing::warn!(property = %path, written, read, "Setpoint changed by hand: plugins do not write it until the plant is armed again");
        if let Err(error) = self
            .executor
            .audit
            .manual_override(&path, written, read)
            .await
        {
            tracing::error!(%error, "Cannot write the manual override to the audit log");
        }
    }

    /// Applies the `on_loss` of `properties` (those that write a value): each value is written
    /// through the property's slot, replacing a waiting write, without the rules.
    async fn lose(&mut self, why: &str, mut properties: Vec<PropertyId>) {
        properties.retain(|p| self.on_loss.contains_key(p));
        properties.sort_unstable();
        properties.dedup();
        if properties.is_empty() {
            return;
        }
        let paths: Vec<String> = properties
            .iter()
            .map(|&p| self.twin.model().property(p).path.clone())
            .collect();
        tracing::warn!(why, properties = ?paths, "Controller lost: writing the on_loss values");
        let names: Vec<&str> = paths.iter().map(String::as_str).collect();
        if let Err(error) = self.executor.audit.controller_lost(why, &names).await {
            tracing::error!(%error, "Cannot write the controller-lost record to the audit log");
        }
        for property in properties {
            let value = self.on_loss[&property].clone();
            let (request, _) = WriteRequest::new(property, value.clone(), Origin::OnLoss);
            self.schedule(Job {
                request,
                accepted: Accepted {
                    value,
                    clamped: false,
                },
                forced: true,
            });
        }
    }
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
                Origin::Admin { .. } => "admin",
                Origin::OnLoss => "on-loss",
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

/// The gate decided a proposal (and, when accepted, the device answered): the one event per
/// decision, logged with its origin. People's writes (OPC UA, admin) log at info (carried out)
/// or warn (refused); a plugin's, which may come many per second, at debug: each is counted
/// in `twinloom_control_decisions_total`, carried-out ones have their audit records, refusals
/// their audit summaries, so a flood of proposals cannot flood the log either.
#[derive(Debug)]
struct WriteDecided<'a> {
    property: &'a str,
    request: &'a WriteRequest,
    outcome: &'a Result<(), ControlError>,
}

impl WriteDecided<'_> {
    fn emit(&self) {
        let (property, value, origin) = (self.property, &self.request.value, &self.request.origin);
        let by_plugin = matches!(origin, Origin::Plugin { .. });
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
