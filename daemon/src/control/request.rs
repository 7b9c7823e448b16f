//! The gate's vocabulary: who proposes ([`Origin`]), what ([`Proposal`]), the commands served
//! before proposals ([`Command`]), the rules' names ([`rule`]) and every answer ([`ControlError`]).

use std::fmt;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::twin::{PropertyId, Value, WriteError};

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
    /// A Sparkplug host's `DCMD`, by the device id it named (a subscriber cannot know who
    /// published a command: the broker's ACLs decide who may; `docs/sparkplug.md`).
    Sparkplug {
        /// The Sparkplug device id (the asset's path with `/` as `:`).
        device: String,
    },
    /// The daemon itself: an `on_loss` write after the controller was lost.
    OnLoss,
    /// The configuration: `[control] armed` at a start or a reload.
    Config,
}

impl Origin {
    /// The origin's kind, without the user or plugin: `opcua`, `plugin`, `admin`, `sparkplug`,
    /// `on-loss` or `config`
    /// (the `origin` label of `twinloom_control_decisions_total`, a bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OpcUa { .. } => "opcua",
            Self::Plugin { .. } => "plugin",
            Self::Admin { .. } => "admin",
            Self::Sparkplug { .. } => "sparkplug",
            Self::OnLoss => "on-loss",
            Self::Config => "config",
        }
    }

    /// Whether a plugin proposed it (the rules `disarmed` and `manual-override` hold only
    /// plugins).
    pub fn is_plugin(&self) -> bool {
        matches!(self, Self::Plugin { .. })
    }

    /// Whether the rule `disarmed` holds it: a plugin's proposal or a remote machine's
    /// (Sparkplug `DCMD`), never a person's at an OPC UA client or admin HTTP.
    pub fn needs_arming(&self) -> bool {
        matches!(self, Self::Plugin { .. } | Self::Sparkplug { .. })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpcUa { user } | Self::Admin { user } => write!(f, "{}:{user}", self.kind()),
            Self::Plugin { name } => write!(f, "{}:{name}", self.kind()),
            Self::Sparkplug { device } => write!(f, "{}:{device}", self.kind()),
            Self::OnLoss | Self::Config => write!(f, "twinloom:{}", self.kind()),
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
    /// The plant is disarmed and the proposal came from a plugin or a Sparkplug host.
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
    /// The gate's queue ([`CONTROL_QUEUE_CAPACITY`](super::CONTROL_QUEUE_CAPACITY)) is full; the proposal was not queued.
    #[error("the control gate's queue is full")]
    QueueFull,
    /// The gate is not running.
    #[error("the control gate is not running")]
    Closed,
}

impl ControlError {
    /// Whether the write's request reached the device: the device answered (took it, refused
    /// it, or read back otherwise) or may have (no answer in time). The origin budget counts
    /// these ([`super::policy`]); writes refused, superseded, expired or held before sending do
    /// not.
    pub fn reached_device(&self) -> bool {
        matches!(
            self,
            Self::Source(
                WriteError::Timeout
                    | WriteError::DeviceRejected { .. }
                    | WriteError::ReadBackMismatch { .. }
            )
        )
    }

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

/// A write proposal, as it waits in the gate's queue.
#[derive(Debug)]
pub struct Proposal {
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

impl Proposal {
    /// A proposal and the receiver its outcome arrives on.
    pub(super) fn new(
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> (Self, oneshot::Receiver<Result<(), ControlError>>) {
        let (reply, answer) = oneshot::channel();
        let proposal = Self {
            property,
            value,
            origin,
            reply,
            shadow: false,
            deadline: None,
        };
        (proposal, answer)
    }
}

/// A command to the gate, served before waiting proposals.
#[derive(Debug)]
pub(super) enum Command {
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
