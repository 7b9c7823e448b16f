//! The gate's task: it serves commands (arm, disarm, select, a lost controller), the writes that
//! ended, the setpoints' readings (changes by hand, manual overrides), the `on_loss` writes
//! that waited for their pace, the refusal summary and the proposals, picking fairly among those
//! that are ready (no caller can starve another: a flood of disarms does not hold an
//! operator's write). Each proposal is decided at once by the [`Policy`], in arrival order,
//! and answered with one [`WriteDecided`] event; an accepted one waits for its property's turn
//! ([`PropertyWrites`]) and is carried out by the [`Executor`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};

use super::audit::{AuditLog, REFUSAL_SUMMARY_INTERVAL, Refusals};
use super::events::{
    Armed, AuditRecordLost, ControlStateLost, ControllerLost, Disarmed, ManualOverride, Unaudited,
    WriteDecided,
};
use super::executor::{Carried, Executor, Job, Late, ON_LOSS};
use super::interlock::Interlocks;
use super::policy::{Accepted, Policy};
use super::request::Command;
use super::state::ControlState;
use super::{COMMAND_QUEUE_CAPACITY, CONTROL_QUEUE_CAPACITY, ControlError, ControlHandle};
use super::{Origin, Proposal};
use crate::runtime::Supervisor;
use crate::sources::Writers;
use crate::telemetry::metrics::ControlMetrics;
use crate::twin::spec::OnLoss;
use crate::twin::{PropertyId, Reading, Twin, Value};

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

/// Where the gate keeps its records.
#[derive(Debug)]
pub struct GateRecords {
    /// The audit journal, or why there is none (every write is then refused).
    pub audit: Result<crate::runtime::journal::Journal, String>,
    /// The control state file (armed, manual overrides; [`super::state`]), when kept.
    pub state_file: Option<std::path::PathBuf>,
}

impl GateRecords {
    /// An audit journal (or why there is none) and no control state file.
    pub fn audit_only(audit: Result<crate::runtime::journal::Journal, String>) -> Self {
        Self {
            audit,
            state_file: None,
        }
    }
}

/// Starts the gate under `supervisor`, auditing to `records.audit` (or refusing every write with
/// the reason there is none), with `limits` and `interlocks`, keeping its control state (armed,
/// manual overrides) in `records.state_file` when given ([`super::state`]).
///
/// At start the plant is armed when `limits.armed` says so, with an `arm` record of origin
/// `config` written before any proposal is decided (no record, no arming); a plant that was
/// armed before (the state file says so) and is not armed by the configuration gets a `disarm`
/// record of origin `config`. Manual overrides of the state file stay in force.
///
/// Deciding is synchronous, in arrival order ([`super::policy`]); carrying out is concurrent:
/// each property has at most one write in flight and one waiting, writes to different
/// properties (and so different sources) run side by side, and their audit records share the
/// journal's group commits.
pub fn spawn(
    twin: Arc<Twin>,
    writers: Writers,
    records: GateRecords,
    limits: GateLimits,
    interlocks: Interlocks,
    metrics: &ControlMetrics,
    supervisor: &Supervisor,
) -> ControlHandle {
    let GateRecords {
        audit: journal,
        state_file,
    } = records;
    let interlocks = Arc::new(interlocks);
    let shown_interlocks = Arc::clone(&interlocks);
    let (tx, mut rx) = mpsc::channel::<Proposal>(CONTROL_QUEUE_CAPACITY);
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
        writes: HashMap::new(),
        running: FuturesUnordered::new(),
        late: FuturesUnordered::new(),
        audit_failed: false,
        written: HashMap::new(),
        seen: HashMap::new(),
        on_loss_started: HashMap::new(),
        on_loss_due: HashMap::new(),
        state_file,
        overridden: std::collections::BTreeSet::new(),
    };
    let before = gate.load_state();
    let model = gate.twin.model();
    let setpoints: Vec<PropertyId> = (0..model.properties().len() as u32)
        .map(PropertyId)
        .filter(|&p| model.decl(p).access == crate::twin::Access::ReadWrite)
        .collect();
    let mut readings = gate.twin.subscribe(
        crate::twin::Filter::Properties(setpoints.clone()),
        crate::twin::DEFAULT_SUBSCRIBER_CAPACITY,
    );
    // What the setpoints hold now (sources may have read them before the gate subscribed): a
    // later reading that moves away from it is a change by hand.
    for &property in &setpoints {
        let sample = gate.twin.sample(property);
        if let Some(value) = sample.value.as_ref().and_then(Value::as_f64)
            && sample.quality.is_good()
        {
            gate.seen.insert(property, value);
        }
    }
    let mut changes = Vec::new();
    gate.set_armed(limits.armed);
    for property in &before.1 {
        gate.policy.override_by_hand(*property);
    }
    supervisor.spawn("control-gate", move |token| async move {
        gate.start_up(limits.armed, before.0).await;
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let paced = gate.on_loss_due.values().min().copied();
            let pace = async {
                match paced {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Not `biased`: the branches ready at once are served in random order, so commands
            // cannot starve writes (nor writes commands).
            tokio::select! {
                () = token.cancelled() => {
                    gate.drain().await;
                    gate.summarise(true).await;
                    return Ok(());
                }
                Some(command) = commands_rx.recv() => gate.command(command).await,
                Some((proposal, rule, outcome, late)) = gate.running.next(), if !gate.running.is_empty() => {
                    gate.late.extend(late);
                    gate.finished(proposal, rule, outcome).await;
                }
                Some(()) = gate.late.next(), if !gate.late.is_empty() => {}
                _ = readings.recv(&mut changes) => {
                    for change in changes.drain(..) {
                        gate.observe_setpoint(&change).await;
                    }
                }
                () = pace => gate.paced_on_loss(),
                _ = summary.tick() => gate.summarise(false).await,
                proposal = rx.recv() => {
                    let Some(proposal) = proposal else { return Ok(()) };
                    // The setpoints' readings the twin has already published first: a change by
                    // hand the proposer could see is one the rules count.
                    readings.try_recv(&mut changes);
                    for change in changes.drain(..) {
                        gate.observe_setpoint(&change).await;
                    }
                    gate.decide(proposal).await;
                }
            }
        }
    });
    ControlHandle {
        tx,
        commands,
        armed,
        metrics: metrics.clone(),
        interlocks: shown_interlocks,
    }
}

/// How long a stopping gate waits for the sources' answers to the writes under way (the sources
/// stop at the same time and answer at once).
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// How many recent written values per setpoint a reading is compared with: a poll that read a
/// value just before a newer write still matches one of them.
const WRITTEN_HISTORY: usize = 8;

/// The least time between two `on_loss` writes to one setpoint: a controller lost again within
/// it (a plugin crashing in a loop, repeated reloads) gets its `on_loss` written once, at the
/// end of it.
pub const ON_LOSS_PACE: Duration = Duration::from_secs(1);

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
            let value = match safe {
                crate::twin::spec::SafeValue::Bool(b) => Value::Bool(b),
                crate::twin::spec::SafeValue::Number(v) => Value::from_number(v, decl.data_type),
            };
            Some((id, value))
        })
        .collect()
}

/// A property's writes: whether one is in flight, and the one waiting (a newer accepted
/// proposal replaces it: `superseded`).
#[derive(Debug, Default)]
struct PropertyWrites {
    busy: bool,
    pending: Option<Job>,
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
    writes: HashMap<PropertyId, PropertyWrites>,
    running: FuturesUnordered<Carried>,
    /// Writes whose proposers were answered at their deadline, waiting for the source's answer
    /// to audit it (at a stop, for at most [`STOP_DRAIN`]).
    late: FuturesUnordered<Late>,
    /// An intent could not be audited since the last one that could (`on_loss` applied once).
    audit_failed: bool,
    /// The last [`WRITTEN_HISTORY`] values the gate started writing to each setpoint (as
    /// numbers): a reading that matches one of them is the gate's own.
    written: HashMap<PropertyId, VecDeque<f64>>,
    /// The last Good reading of each setpoint (as a number): a reading that moves away from it
    /// and matches none of the gate's writes is a change by hand.
    seen: HashMap<PropertyId, f64>,
    /// When each setpoint's last `on_loss` write started ([`ON_LOSS_PACE`]).
    on_loss_started: HashMap<PropertyId, Instant>,
    /// `on_loss` writes waiting for their pace, and when they are due.
    on_loss_due: HashMap<PropertyId, Instant>,
    /// Where the control state is kept, when it is.
    state_file: Option<std::path::PathBuf>,
    /// Setpoints changed by hand, as the state file keeps them (the policy holds the same set).
    overridden: std::collections::BTreeSet<PropertyId>,
}

impl Gate {
    /// Answers `proposal` with `outcome` (`accepted_by` names the rule that accepted it, when
    /// one did): counts a refusal for the audit summary, reports the decision (its metric and
    /// log line), replies.
    fn answer(
        &mut self,
        proposal: Proposal,
        accepted_by: &'static str,
        outcome: Result<(), ControlError>,
    ) {
        if let Some(rule) = outcome.as_ref().err().and_then(ControlError::rule) {
            self.refusals.count(&proposal.origin, rule);
        }
        WriteDecided {
            property: &self.twin.model().property(proposal.property).path,
            proposal: &proposal,
            accepted_by,
            outcome: &outcome,
        }
        .emit(&self.executor.metrics);
        let _ = proposal.reply.send(outcome);
    }

    /// Stopping: the waiting writes are never started (answered `closed`); the writes under way
    /// end with the sources' answers (the sources stop at the same time and answer `stopped`),
    /// and those answers are audited, so a clean stop leaves no intent without its outcome.
    /// Waits at most [`STOP_DRAIN`].
    async fn drain(&mut self) {
        let waiting: Vec<Job> = self
            .writes
            .values_mut()
            .filter_map(|writes| writes.pending.take())
            .collect();
        for job in waiting {
            self.answer(job.proposal, "", Err(ControlError::Closed));
        }
        let stopping = async {
            while let Some((proposal, rule, outcome, late)) = self.running.next().await {
                self.late.extend(late);
                self.answer(proposal, rule, outcome);
            }
            while self.late.next().await.is_some() {}
        };
        let _ = tokio::time::timeout(STOP_DRAIN, stopping).await;
    }

    /// Reads the control state file: whether the plant was armed, and the overridden setpoints
    /// that still exist in the model (also kept in `self.overridden`). A file that cannot be read
    /// is reported and counts as empty.
    fn load_state(&mut self) -> (bool, Vec<PropertyId>) {
        let Some(path) = &self.state_file else {
            return (false, Vec::new());
        };
        let state = match ControlState::load(path) {
            Ok(state) => state,
            Err(error) => {
                ControlStateLost {
                    error: &error,
                    saving: false,
                }
                .emit();
                ControlState::default()
            }
        };
        let model = self.twin.model();
        let overridden: Vec<PropertyId> = state
            .manual_overrides
            .iter()
            .filter_map(|path| model.property_by_path(path))
            .collect();
        self.overridden.extend(overridden.iter().copied());
        (state.armed, overridden)
    }

    /// Saves the armed flag and the overridden setpoints to the state file, when there is one.
    fn save_state(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let model = self.twin.model();
        let state = ControlState {
            armed: *self.armed.borrow(),
            manual_overrides: self
                .overridden
                .iter()
                .map(|&p| model.property(p).path.clone())
                .collect(),
        };
        if let Err(error) = state.save(path) {
            ControlStateLost {
                error: &error,
                saving: true,
            }
            .emit();
        }
    }

    /// The start's arming, before any proposal is decided: a configuration that arms the plant
    /// writes an `arm` record of origin `config` (when it cannot, the plant stays disarmed); a
    /// plant that was armed and is not any more gets a `disarm` record of origin `config`.
    async fn start_up(&mut self, config_arms: bool, was_armed: bool) {
        let by = Origin::Config;
        if config_arms {
            let outcome = self.executor.audit.armed(&by, true, 0).await;
            if outcome.is_err() {
                self.set_armed(false);
            }
            Armed {
                by: &by,
                outcome: &outcome,
            }
            .emit();
        } else if was_armed {
            let audited = self.executor.audit.armed(&by, false, 0).await;
            Disarmed {
                by: &by,
                dropped: 0,
                audited: &audited,
            }
            .emit();
        }
        self.save_state();
    }

    /// Writes the refusals counted since the last summary to the audit log (`last`: at
    /// shutdown).
    async fn summarise(&mut self, last: bool) {
        if let Err(error) = self.executor.audit.summarise(&mut self.refusals).await {
            AuditRecordLost {
                record: Unaudited::RefusalSummary { last },
                error: &error,
            }
            .emit();
        }
    }

    /// Arms or disarms the plant: the policy, the handles' view, the gauge and the twin's
    /// `twinloom/control/armed`.
    fn set_armed(&mut self, armed: bool) {
        self.policy.set_armed(armed);
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
        let writes = self.writes.entry(job.proposal.property).or_default();
        if !writes.busy {
            writes.busy = true;
            self.start(job);
        } else if let Some(old) = writes.pending.replace(job) {
            self.answer(old.proposal, "", Err(ControlError::Superseded));
        }
    }

    /// Carries `job` out, remembering its value among the setpoint's recent writes; the policy
    /// counts it from now ([`Policy::started`]).
    fn start(&mut self, job: Job) {
        let origin = (!job.forced).then_some(&job.proposal.origin);
        self.policy.started(
            job.proposal.property,
            origin,
            &job.accepted.value,
            Instant::now(),
        );
        if let Some(value) = job.accepted.value.as_f64() {
            let history = self.written.entry(job.proposal.property).or_default();
            if history.len() == WRITTEN_HISTORY {
                history.pop_front();
            }
            history.push_back(value);
        }
        self.running.push(Box::pin(self.executor.clone().run(job)));
    }

    /// Decides `proposal` by the policy's rules: a refusal is answered at once, a shadow
    /// decision audited and answered, an accepted write scheduled.
    async fn decide(&mut self, proposal: Proposal) {
        match self.policy.decide(&self.twin, &proposal, Instant::now()) {
            Ok(accepted) if proposal.shadow => {
                let path = &self.twin.model().property(proposal.property).path;
                let outcome = self
                    .executor
                    .audit
                    .shadow(&proposal, path, &accepted.value)
                    .await;
                self.answer(proposal, "accepted", outcome.and(Err(ControlError::Shadow)));
            }
            Ok(accepted) => self.schedule(Job {
                proposal,
                accepted,
                forced: false,
            }),
            Err(refused) => self.answer(proposal, "", Err(refused)),
        }
    }

    /// A write ended: answer it, start its property's waiting write; an intent that could not
    /// be audited applies every `on_loss` (once, until an intent can be audited again).
    async fn finished(
        &mut self,
        proposal: Proposal,
        rule: &'static str,
        outcome: Result<(), ControlError>,
    ) {
        let property = proposal.property;
        let reached_device = outcome
            .as_ref()
            .err()
            .is_none_or(ControlError::reached_device);
        let origin = (rule != ON_LOSS).then_some(&proposal.origin);
        self.policy
            .ended(property, origin, reached_device, Instant::now());
        match &outcome {
            Err(ControlError::AuditUnavailable(why)) if !self.audit_failed => {
                self.audit_failed = true;
                let why = format!("the audit log cannot be written: {why}");
                self.apply_on_loss(&why, self.on_loss.keys().copied().collect())
                    .await;
            }
            Ok(()) | Err(ControlError::Source(_)) if rule != ON_LOSS => self.audit_failed = false,
            _ => {}
        }
        self.answer(proposal, rule, outcome);
        let writes = self.writes.entry(property).or_default();
        match writes.pending.take() {
            Some(job) => self.start(job),
            None => writes.busy = false,
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Arm { by, reply } => {
                let outcome = self.executor.audit.armed(&by, true, 0).await;
                if outcome.is_ok() {
                    // Arming by hand lifts every manual override.
                    self.set_armed(true);
                    self.overridden.clear();
                    self.save_state();
                }
                Armed {
                    by: &by,
                    outcome: &outcome,
                }
                .emit();
                let _ = reply.send(outcome);
            }
            // Disarming a disarmed plant writes nothing and applies nothing: a flood of disarms
            // costs no audit record, no `on_loss` write and no fsync.
            Command::Disarm { reply, .. } if !*self.armed.borrow() => {
                let _ = reply.send(Ok(()));
            }
            Command::Disarm { by, reply } => {
                self.set_armed(false);
                let mut dropped = Vec::new();
                for writes in self.writes.values_mut() {
                    if writes
                        .pending
                        .as_ref()
                        .is_some_and(|job| job.proposal.origin.is_plugin())
                    {
                        dropped.extend(writes.pending.take());
                    }
                }
                let count = dropped.len();
                for job in dropped {
                    self.answer(job.proposal, "", Err(ControlError::Disarmed));
                }
                let audited = self.executor.audit.armed(&by, false, count).await;
                self.save_state();
                Disarmed {
                    by: &by,
                    dropped: count,
                    audited: &audited,
                }
                .emit();
                self.apply_on_loss("disarmed", self.on_loss.keys().copied().collect())
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
            Command::Lost { why, properties } => self.apply_on_loss(&why, properties).await,
        }
    }

    /// Records a select of `property` by `by` (audited), unless the policy refuses it.
    async fn select(&mut self, property: PropertyId, by: Origin) -> Result<(), ControlError> {
        let now = Instant::now();
        let lasts = self.policy.may_select(&self.twin, property, &by, now)?;
        let path = self.twin.model().property(property).path.clone();
        self.executor.audit.selected(&by, &path, lasts).await?;
        self.policy.select(property, by, now + lasts);
        Ok(())
    }

    /// A setpoint's new reading. One that matches none of the values the gate recently started
    /// writing to it (beyond the property's deadband and at least one raw step, `|scale|`) is a
    /// change by hand when the gate wrote the setpoint before, or when it moved away from the
    /// last Good reading: the policy's interval and rate rules count from it. On a setpoint the
    /// gate wrote, it is also a manual override: audited, and the policy refuses plugins'
    /// proposals to it until the plant is armed again.
    async fn observe_setpoint(&mut self, change: &crate::twin::Change) {
        let property = change.property;
        let sample = &change.sample;
        let Some(read) = sample.value.as_ref().and_then(Value::as_f64) else {
            return;
        };
        if !sample.quality.is_good() {
            return;
        }
        let model = self.twin.model();
        let decl = model.decl(property);
        let tolerance = decl
            .deadband
            .threshold(decl.range)
            .max(model.property(property).scaling.scale.abs());
        let previous = self.seen.insert(property, read);
        let history = self.written.get(&property);
        if history.is_some_and(|h| h.iter().any(|w| (read - w).abs() <= tolerance)) {
            return;
        }
        let moved = previous.is_some_and(|p| (read - p).abs() > tolerance);
        if !moved && history.is_none() {
            return;
        }
        self.policy.changed_by_hand(property, read, Instant::now());
        self.executor.metrics.changes_by_hand.inc();
        let Some(written) = history.and_then(|h| h.back().copied()) else {
            return;
        };
        if self.policy.is_overridden(property) {
            return;
        }
        self.policy.override_by_hand(property);
        self.overridden.insert(property);
        self.save_state();
        let path = model.property(property).path.clone();
        ManualOverride {
            property: &path,
            written,
            read,
        }
        .emit();
        if let Err(error) = self
            .executor
            .audit
            .manual_override(&path, written, read)
            .await
        {
            AuditRecordLost {
                record: Unaudited::ManualOverride,
                error: &error,
            }
            .emit();
        }
    }

    /// The `on_loss` writes whose pace has passed: each is written now.
    fn paced_on_loss(&mut self) {
        let now = Instant::now();
        let due: Vec<PropertyId> = self
            .on_loss_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for property in due {
            self.on_loss_due.remove(&property);
            self.write_on_loss(property, now);
        }
    }

    /// Writes `property`'s `on_loss` value as its next write (replacing a waiting one), without
    /// the rules.
    fn write_on_loss(&mut self, property: PropertyId, now: Instant) {
        self.on_loss_started.insert(property, now);
        let value = self.on_loss[&property].clone();
        let (proposal, _) = Proposal::new(property, value.clone(), Origin::OnLoss);
        self.schedule(Job {
            proposal,
            accepted: Accepted {
                value,
                clamped: false,
            },
            forced: true,
        });
    }

    /// Applies the `on_loss` of `properties` (those that write a value): each value is written
    /// as the property's next write, replacing a waiting one, without the rules; paced per
    /// setpoint ([`ON_LOSS_PACE`]: one started less than that ago puts this one off until the
    /// pace has passed, and several put off are written once).
    async fn apply_on_loss(&mut self, why: &str, mut properties: Vec<PropertyId>) {
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
        ControllerLost {
            why,
            properties: &paths,
        }
        .emit();
        let names: Vec<&str> = paths.iter().map(String::as_str).collect();
        if let Err(error) = self.executor.audit.controller_lost(why, &names).await {
            AuditRecordLost {
                record: Unaudited::ControllerLost,
                error: &error,
            }
            .emit();
        }
        let now = Instant::now();
        for property in properties {
            match self.on_loss_started.get(&property) {
                Some(&last) if now < last + ON_LOSS_PACE => {
                    self.on_loss_due.insert(property, last + ON_LOSS_PACE);
                }
                _ => self.write_on_loss(property, now),
            }
        }
    }
}
