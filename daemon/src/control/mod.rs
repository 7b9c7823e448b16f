//! The control gate: the only way a write reaches a device.
//!
//! OPC UA clients, admin HTTP and plugins reach it through the [`ControlHandle`]: they *propose*
//! writes (a [`Proposal`] in the gate's bounded queue), arm and disarm the plant, select a
//! property before operating it, and tell it a controller was lost. What lives where:
//!
//! - `request.rs`: the vocabulary: [`Origin`], [`Proposal`], the gate's commands, the rules'
//!   names ([`rule`]) and every answer ([`ControlError`]);
//! - [`policy`]: the whole ordered list of rules that decide a proposal (disarmed, manual
//!   override, select-before-operate, access, data type, finiteness, bounds, interval, rate,
//!   interlocks, origin budget) and their state;
//! - [`interlock`]: conditions over twin properties guarding writes, checked by the policy and
//!   again just before a write is carried out;
//! - `gate.rs`: [`spawn`], the gate's task: commands, decisions in arrival order, at most one
//!   write in flight and one waiting per property, manual overrides detected from the
//!   setpoints' readings, `on_loss` applied when the controller is lost;
//! - `executor.rs`: carrying out one write: intent audited, device written within the timeout,
//!   outcome audited;
//! - [`audit`]: the audit log (intent before each device write, outcome after, refusals
//!   summarised) and `twinloom audit verify`;
//! - `events.rs`: every decision, arming, disarming, lost controller, manual override and
//!   audit failure as a typed event that writes its log line and moves its metric together.

pub mod audit;
mod events;
mod executor;
mod gate;
pub mod interlock;
pub mod policy;
mod request;
pub mod state;

use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::telemetry::metrics::ControlMetrics;
use crate::twin::{PropertyId, Value};
use events::{LostControllerDropped, RefusedBeforeQueue};
pub use gate::{GateLimits, GateRecords, ON_LOSS_PACE, spawn};
use request::Command;
pub use request::{ControlError, Origin, Proposal, rule};

/// Write proposals queued at the gate before `write` waits (a full queue slows proposers, not the gate).
pub const CONTROL_QUEUE_CAPACITY: usize = 256;

/// Commands the gate's queue for commands cannot hold; past them `controller_lost` is logged and
/// dropped (each command is small and the gate serves commands before proposals).
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// Proposes writes to the gate, arms and disarms the plant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Proposal>,
    commands: mpsc::Sender<Command>,
    armed: watch::Receiver<bool>,
    metrics: ControlMetrics,
    /// The gate's interlocks, for those who show them ([`Self::interlocks`]).
    interlocks: std::sync::Arc<interlock::Interlocks>,
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
        let (mut proposal, answer) = Proposal::new(property, value, origin);
        proposal.deadline = deadline;
        self.tx
            .send(proposal)
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
        let (mut proposal, outcome) = Proposal::new(property, value, origin);
        proposal.shadow = shadow;
        self.tx.try_send(proposal).map_err(|error| match error {
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
            LostControllerDropped { error: &error }.emit();
        }
    }

    /// Counts `count` proposals of `origin` that its proposer refused by `rule` before they
    /// reached the gate's queue (a plugin's runner: `writable-list`, `data-type`, `finite`,
    /// `mode-off`, `queue`), beside the gate's own decisions.
    pub fn refused_before_queue(&self, origin: &Origin, rule: &str, count: u64) {
        RefusedBeforeQueue {
            origin,
            rule,
            count,
        }
        .emit(&self.metrics);
    }

    /// Whether the plant is armed now.
    pub fn is_armed(&self) -> bool {
        *self.armed.borrow()
    }

    /// The interlocks the gate checks (to show them: [`interlock::Interlocks::states`]).
    pub fn interlocks(&self) -> &interlock::Interlocks {
        &self.interlocks
    }

    async fn command(&self, command: Command) -> Result<(), ControlError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ControlError::Closed)
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
            metrics: ControlMetrics::default(),
            interlocks: std::sync::Arc::default(),
        }
    }
}
