//! The run loop of one plugin: its life as an explicit [`State`], calls on the blocking pool
//! (never awaited past the deadline's grace, never past shutdown), outputs checked into the twin,
//! proposals to the control gate and their outcomes back to the plugin.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ReloadOutcome;
use super::events::{self, Refusal, Rejection};
use super::proposals::{Proposals, rule};
use super::reload::Swap;
use super::resolve::Resolved;
use crate::config::model::{PluginConfig, PluginMode};
use crate::control::{ControlHandle, Origin, policy};
use crate::plugins::contract::{
    DerivedValues, Outcome, OutputCaps, Quality, Setpoint, WriteProposal, quality_byte,
    quality_of_byte,
};
use crate::plugins::runtime::{
    ChangeBatch, Limits, Outputs, PluginError, PluginInstance, PluginRuntime, ProposalOutcome,
};
use crate::runtime::Backoff;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::PluginLabels;
use crate::twin::{
    Change, DataType, Filter, PropertyId, QualityLevel, QualityReason, Reading, Subscription, Twin,
    Value,
};

/// How long past its deadline a call may keep the runner waiting before the instance is given
/// up (its blocking thread is left to finish on its own): the epoch interrupt normally ends a
/// call within a few ticks of the deadline.
pub const CALL_GRACE: Duration = Duration::from_secs(1);

/// Dropped log lines are summarised in one line at most this often.
pub const LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Why a call gave no answer.
enum Unanswered {
    /// The plugin's fault: the instance is gone.
    Fault(PluginError),
    /// The daemon is stopping: the runner returns at once.
    Cancelled,
}

/// Dropped log lines not yet summarised.
#[derive(Debug, Default)]
pub(super) struct DroppedLines {
    since_summary: u64,
    last_summary: Option<Instant>,
}

/// Changes a plugin's subscription queues before coalescing to the latest per property.
pub const PLUGIN_SUBSCRIBER_CAPACITY: usize = 8192;

/// Where a plugin is in its life.
enum State<I> {
    /// No component is loaded (its file was missing or broken at start): it starts when a
    /// loadable version arrives.
    Unloaded,
    /// An instance runs and is called.
    Running(I),
    /// No instance: the next one is made at `until` (at once for the first start).
    BackingOff { until: Instant },
    /// Too many consecutive failures: no instance until the file changes or SIGHUP.
    Quarantined,
}

impl<I> State<I> {
    /// The state's name, as the metric and the status object say it.
    fn name(&self) -> &'static str {
        match self {
            Self::Unloaded => events::STATES[0],
            Self::Running(_) => events::STATES[1],
            Self::BackingOff { .. } => events::STATES[2],
            Self::Quarantined => events::STATES[3],
        }
    }
}

/// What the loop does next.
enum Work<C> {
    Changes,
    Tick,
    Swap(Swap<C>),
    Idle,
}

/// One plugin's runner: its settings, resolved properties and the handles it works with.
pub(super) struct Runner {
    pub config: PluginConfig,
    pub init_config: String,
    pub resolved: Resolved,
    pub twin: Arc<Twin>,
    pub control: ControlHandle,
    pub metrics: Metrics,
    pub labels: PluginLabels,
    pub dropped: std::sync::Mutex<DroppedLines>,
    /// The plugin's status object's properties (`state`, `last_fault`, `failures`), when the
    /// model has them.
    pub status: Option<[PropertyId; 3]>,
    /// Why the plugin's file could not be loaded at start, if it could not.
    pub load_fault: Option<String>,
}

/// What the status object last showed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Shown {
    state: &'static str,
    failures: u32,
    fault: String,
}

/// A proposal's value as the twin's value for a property of `data_type`, or the rule it breaks:
/// a setpoint of another kind than the one `init` gave for the property (the contract's typed
/// setpoints) breaks `data-type`; otherwise the gate's own rules `data-type` and `finite`
/// decide ([`policy::typed`]), here before the proposal is queued.
fn typed(value: &Setpoint, data_type: DataType) -> Result<Value, &'static str> {
    let value = match (value, data_type) {
        (Setpoint::Boolean(b), DataType::Bool) => Value::Bool(*b),
        (Setpoint::Integer(i), DataType::Integer | DataType::Unsigned) => Value::Int(*i),
        (Setpoint::Float(f), DataType::Float) => Value::Float(*f),
        _ => return Err(rule::DATA_TYPE),
    };
    policy::typed(&value, data_type).map_err(|refused| refused.rule().unwrap_or(rule::DATA_TYPE))
}

/// One derived value of a call, checked against the plugin's owned list.
#[derive(Debug, Clone, PartialEq)]
pub enum DerivedVerdict {
    /// Taken: the reading for the twin (a bad quality fails the property with `InputsNotGood`,
    /// an uncertain one carries that reason with the value).
    Taken(Reading),
    /// An index outside the owned list: rejected.
    OwnedIndex {
        /// The index the plugin gave.
        index: u32,
    },
    /// A value that is not finite while its quality is not bad: rejected.
    NotFinite {
        /// The owned property it was for.
        property: PropertyId,
        /// The value.
        value: f64,
    },
}

/// One write proposal of a call, checked against the plugin's writable list.
#[derive(Debug, Clone, PartialEq)]
pub enum ProposalVerdict {
    /// For the control gate: the property and the value typed for its data type.
    Typed {
        /// The writable property.
        property: PropertyId,
        /// The setpoint as a value of the property's data type (a finite float for `float`).
        value: Value,
    },
    /// An index outside the writable list: refused by rule `writable_list`.
    WritableIndex,
    /// A value that does not fit the property's data type (rule `data_type`) or is not finite
    /// (rule `finite`): refused.
    Value {
        /// The writable property.
        property: PropertyId,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Checks a call's derived values (their columns already of one length,
/// [`OutputCaps::check`]) against the `owned` list, one verdict per value in the plugin's
/// order; a taken value's reading is stamped `stamp`. Public for the fuzz targets
/// (`twinloom::fuzzing::plugin_outputs`).
pub fn check_derived<'a>(
    values: &'a DerivedValues,
    owned: &'a [PropertyId],
    stamp: SystemTime,
) -> impl Iterator<Item = DerivedVerdict> + 'a {
    values
        .indices
        .iter()
        .zip(&values.values)
        .zip(&values.qualities)
        .map(move |((index, value), quality)| {
            let Some(id) = owned.get(*index as usize).copied() else {
                return DerivedVerdict::OwnedIndex { index: *index };
            };
            DerivedVerdict::Taken(match quality_of_byte(*quality) {
                Quality::Bad => Reading::failed(id, QualityReason::InputsNotGood),
                _ if !value.is_finite() => {
                    return DerivedVerdict::NotFinite {
                        property: id,
                        value: *value,
                    };
                }
                Quality::Uncertain => Reading::uncertain(
                    id,
                    Value::Float(*value),
                    Some(stamp),
                    QualityReason::InputsNotGood,
                ),
                Quality::Good => Reading::value(id, Value::Float(*value), Some(stamp)),
            })
        })
}

/// Checks one write proposal against the `writable` list (property and data type by index).
/// Public for the fuzz targets (`twinloom::fuzzing::plugin_outputs`).
pub fn check_proposal(
    proposal: &WriteProposal,
    writable: &[(PropertyId, DataType)],
) -> ProposalVerdict {
    let Some((property, data_type)) = writable.get(proposal.index as usize).copied() else {
        return ProposalVerdict::WritableIndex;
    };
    match typed(&proposal.value, data_type) {
        Ok(value) => ProposalVerdict::Typed { property, value },
        Err(rule) => ProposalVerdict::Value { property, rule },
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Runner {
    fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.config.memory_mib as usize * 1024 * 1024,
            deadline: self.config.deadline,
            fuel: self.config.fuel,
            outputs: OutputCaps::default(),
        }
    }

    /// Tells the gate this plugin no longer controls its writable properties (`what` happened to
    /// it): their `on_loss` applies. Only a live plugin controls anything.
    pub fn controller_lost(&self, what: &str) {
        if self.config.mode == crate::config::model::PluginMode::Live
            && !self.resolved.writable.is_empty()
        {
            let properties = self.resolved.writable.iter().map(|(id, _)| *id).collect();
            self.control
                .controller_lost(format!("plugin `{}` {what}", self.config.name), properties);
        }
    }

    /// Marks every derived property of the plugin bad with `reason`, keeping the last values.
    pub fn mark_outputs(&self, reason: QualityReason) {
        self.twin
            .fail_all(self.resolved.owned.iter().copied(), reason);
    }

    /// Runs `call` on the blocking pool with the instance, and gives the instance back when the
    /// call succeeded (after a fault the instance is discarded). A panic on the host side of the
    /// call is this plugin's fault ([`PluginError::HostPanic`]), never the daemon's end. The
    /// runner waits at most the deadline plus [`CALL_GRACE`], and not at all once `token` is
    /// cancelled: a call that does not come back is abandoned on its thread.
    async fn call<I: PluginInstance, R: Send + 'static>(
        &self,
        mut instance: I,
        token: &CancellationToken,
        call: impl FnOnce(&mut I) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<(I, R), Unanswered> {
        self.metrics.plugins.calls.get_or_create(&self.labels).inc();
        let fuel_before = instance.fuel_used();
        let task = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = call(&mut instance);
            (instance, result, started.elapsed())
        });
        let waited = tokio::select! {
            () = token.cancelled() => return Err(Unanswered::Cancelled),
            waited = tokio::time::timeout(self.config.deadline + CALL_GRACE, task) => waited,
        };
        let (mut instance, result) = match waited {
            Ok(Ok((instance, result, took))) => {
                self.metrics
                    .plugins
                    .call_seconds
                    .get_or_create(&self.labels)
                    .inc_by(took.as_secs_f64());
                (instance, result)
            }
            Ok(Err(error)) => {
                let why = if error.is_panic() {
                    "it panicked"
                } else {
                    "it was cancelled"
                };
                return Err(Unanswered::Fault(PluginError::HostPanic(format!(
                    "the blocking call ended without an answer: {why}"
                ))));
            }
            Err(_) => {
                return Err(Unanswered::Fault(PluginError::Deadline(
                    self.config.deadline,
                )));
            }
        };
        self.metrics
            .plugins
            .fuel
            .get_or_create(&self.labels)
            .inc_by(instance.fuel_used() - fuel_before);
        let dropped = instance.log_dropped();
        self.log_dropped(dropped);
        result
            .map(|outputs| (instance, outputs))
            .map_err(Unanswered::Fault)
    }

    /// Counts log lines the instance's rate limit dropped, and summarises them in one line at
    /// most every [`LOG_SUMMARY_INTERVAL`].
    fn log_dropped(&self, now: u64) {
        let mut dropped = self
            .dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dropped.since_summary += now;
        let due = dropped.since_summary > 0
            && dropped
                .last_summary
                .is_none_or(|at| at.elapsed() >= LOG_SUMMARY_INTERVAL);
        let summary = due.then(|| {
            let interval = dropped
                .last_summary
                .map_or(Duration::ZERO, |at| at.elapsed());
            dropped.last_summary = Some(Instant::now());
            (std::mem::take(&mut dropped.since_summary), interval)
        });
        drop(dropped);
        if now > 0 || summary.is_some() {
            events::LogLinesDropped {
                plugin: &self.config.name,
                now,
                summary,
            }
            .emit(&self.metrics);
        }
    }

    async fn start<R: PluginRuntime>(
        &self,
        runtime: &R,
        component: &R::Component,
        token: &CancellationToken,
    ) -> Result<R::Instance, Unanswered> {
        let instance = runtime
            .instantiate(&self.config.name, component, self.limits())
            .map_err(Unanswered::Fault)?;
        let (config, properties) = (self.init_config.clone(), self.resolved.properties.clone());
        let now = now_ms();
        let (instance, refusal) = self
            .call(instance, token, move |i| i.init(now, &config, &properties))
            .await?;
        match refusal {
            Ok(()) => Ok(instance),
            Err(refusal) => Err(Unanswered::Fault(PluginError::Trap(format!(
                "init refused its configuration: {refusal}"
            )))),
        }
    }

    /// Takes a call's outputs: derived values into the twin (by owned index, with the quality
    /// the plugin gives), proposals to the control gate (by writable index, typed). What does not
    /// fit is rejected, one event per call; every proposal's outcome is recorded in `proposals`.
    fn apply(&self, outputs: &Outputs, proposals: &mut Proposals) {
        let stamp = SystemTime::now();
        let mut rejected = 0u64;
        let mut first: Option<Rejection> = None;
        let mut reject = |why: Rejection| {
            rejected += 1;
            first.get_or_insert(why);
        };
        let mut readings = Vec::with_capacity(outputs.values.indices.len());
        for verdict in check_derived(&outputs.values, &self.resolved.owned, stamp) {
            match verdict {
                DerivedVerdict::Taken(reading) => readings.push(reading),
                DerivedVerdict::OwnedIndex { index } => reject(Rejection::OwnedIndex { index }),
                DerivedVerdict::NotFinite { property, value } => reject(Rejection::NotFinite {
                    property: self.twin.model().property(property).path.clone(),
                    value,
                }),
            }
        }
        self.twin.apply(&readings);
        let mark = proposals.known();
        for proposal in &outputs.proposals {
            let number = proposals.number();
            let (id, value) = match check_proposal(proposal, &self.resolved.writable) {
                ProposalVerdict::Typed { property, value } => (property, value),
                ProposalVerdict::WritableIndex => {
                    reject(Rejection::WritableIndex {
                        index: proposal.index,
                    });
                    proposals.decided(
                        number,
                        proposal.index,
                        Outcome::Refused(rule::WRITABLE_LIST.into()),
                    );
                    continue;
                }
                ProposalVerdict::Value { property, rule } => {
                    reject(Rejection::ProposalValue {
                        property: self.twin.model().property(property).path.clone(),
                    });
                    proposals.decided(number, proposal.index, Outcome::Refused(rule.into()));
                    continue;
                }
            };
            let shadow = match self.config.mode {
                PluginMode::Off => {
                    proposals.decided(
                        number,
                        proposal.index,
                        Outcome::Refused(rule::MODE_OFF.into()),
                    );
                    continue;
                }
                PluginMode::Shadow => true,
                PluginMode::Live => false,
            };
            let origin = Origin::Plugin {
                name: self.config.name.clone(),
            };
            match self.control.propose(id, value, origin, shadow) {
                Ok(answer) => proposals.sent(number, proposal.index, answer),
                Err(error) => proposals.decided(
                    number,
                    proposal.index,
                    super::proposals::outcome_of(Err(error)),
                ),
            }
        }
        // Refusals decided here (the writable list, the data type, mode off, the gate's full
        // queue) count beside the gate's own decisions.
        let mut refused: std::collections::HashMap<&str, u64> = Default::default();
        for rule in proposals.refused_since(mark) {
            *refused.entry(rule).or_default() += 1;
        }
        if !refused.is_empty() {
            let origin = Origin::Plugin {
                name: self.config.name.clone(),
            };
            for (rule, count) in refused {
                self.control.refused_before_queue(&origin, rule, count);
            }
        }
        if let Some(first) = &first {
            events::OutputsRejected {
                plugin: &self.config.name,
                count: rejected,
                first,
            }
            .emit(&self.metrics);
        }
    }

    fn batch(&self, changes: &[Change]) -> Arc<ChangeBatch> {
        let mut batch = ChangeBatch {
            properties: Vec::with_capacity(changes.len()),
            values: Vec::with_capacity(changes.len()),
            qualities: Vec::with_capacity(changes.len()),
            source_times_ms: Vec::with_capacity(changes.len()),
        };
        for change in changes {
            let Some(index) = self.resolved.index.get(&change.property) else {
                continue;
            };
            batch.properties.push(*index);
            batch.values.push(
                change
                    .sample
                    .value
                    .as_ref()
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN),
            );
            batch
                .qualities
                .push(quality_byte(match change.sample.quality.level {
                    QualityLevel::Good => Quality::Good,
                    QualityLevel::Uncertain => Quality::Uncertain,
                    QualityLevel::Bad => Quality::Bad,
                }));
            batch.source_times_ms.push(
                change
                    .sample
                    .source_time
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64),
            );
        }
        Arc::new(batch)
    }

    /// Current values of every input: what a fresh instance starts from. Changes still queued
    /// on `subscription` are older than these values and are dropped first, so that a new
    /// instance never sees an input go back in time.
    fn current(&self, subscription: &mut Subscription) -> Vec<Change> {
        let mut older = Vec::new();
        subscription.try_recv(&mut older);
        let inputs = &self.resolved.inputs;
        inputs
            .iter()
            .zip(self.twin.samples(inputs))
            .map(|(property, sample)| Change {
                property: *property,
                sample,
            })
            .collect()
    }

    /// A call or a start failed: counts it, marks the outputs bad, and returns the state to back
    /// off in (the instance, if any, is gone).
    fn fail<I>(
        &self,
        error: &PluginError,
        failures: &mut u32,
        backoff: &mut Backoff,
        fault: &mut String,
    ) -> State<I> {
        *failures += 1;
        *fault = error.to_string();
        events::CallFailed {
            plugin: &self.config.name,
            error,
            failures: *failures,
        }
        .emit(&self.metrics);
        self.mark_outputs(QualityReason::PluginFailure);
        if error.quarantines_at_once() {
            // Quarantined when the loop next looks, without a backoff first.
            *failures = (*failures).max(self.config.quarantine_after);
            return State::BackingOff {
                until: Instant::now(),
            };
        }
        State::BackingOff {
            until: Instant::now() + backoff.next_delay(),
        }
    }

    /// Shows the plugin's state, consecutive failures and last fault on its status object and
    /// the state metric, when they changed since `shown`.
    fn show<I>(&self, state: &State<I>, failures: u32, fault: &str, shown: &mut Option<Shown>) {
        let now = Shown {
            state: state.name(),
            failures,
            fault: fault.to_owned(),
        };
        if shown.as_ref() == Some(&now) {
            return;
        }
        if shown.as_ref().is_none_or(|s| s.state != now.state) {
            events::StateEntered {
                plugin: &self.config.name,
                state: now.state,
            }
            .emit(&self.metrics);
        }
        if let Some([state_id, fault_id, failures_id]) = self.status {
            let text = |s: &str| Value::String(std::sync::Arc::from(s));
            self.twin.apply(&[
                Reading::value(state_id, text(now.state), None),
                Reading::value(fault_id, text(&now.fault), None),
                Reading::value(failures_id, Value::UInt(u64::from(now.failures)), None),
            ]);
        }
        *shown = Some(now);
    }

    /// Runs the plugin until `token` is cancelled: starts an instance of `component` (when there
    /// is one), feeds it changes and ticks, swaps in new versions from `swaps`, restarts it with
    /// backoff after a fault and quarantines it after `quarantine_after` faults in a row. When
    /// it stops, its outputs go Bad (`PluginFailure`): nothing computes them any more, so an
    /// interlock over one of them holds the writes it guards (fail safe).
    pub async fn run<R: PluginRuntime>(
        self,
        runtime: R,
        component: Option<R::Component>,
        swaps: mpsc::Receiver<Swap<R::Component>>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let (twin, owned) = (Arc::clone(&self.twin), self.resolved.owned.clone());
        let ended = self.serve(runtime, component, swaps, token).await;
        twin.fail_all(owned, QualityReason::PluginFailure);
        ended
    }

    /// [`Self::run`]'s loop.
    async fn serve<R: PluginRuntime>(
        self,
        runtime: R,
        mut component: Option<R::Component>,
        mut swaps: mpsc::Receiver<Swap<R::Component>>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut subscription = self.twin.subscribe(
            Filter::Properties(self.resolved.inputs.clone()),
            PLUGIN_SUBSCRIBER_CAPACITY,
        );
        let mut ticker = self.config.tick.map(|period| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failures = 0u32;
        let mut state: State<R::Instance> = match component {
            Some(_) => State::BackingOff {
                until: Instant::now(),
            },
            None => State::Unloaded,
        };
        let mut changes = Vec::new();
        let mut pending: Vec<Change> = Vec::new();
        let mut proposals = Proposals::default();
        // The calls' outputs, one buffer from call to call (a native plugin's are copied into
        // it, so its capacity is reused); a fault loses it and the next call starts a new one.
        let mut buffer = Outputs::default();
        let mut fault = self.load_fault.clone().unwrap_or_default();
        let mut shown: Option<Shown> = None;
        loop {
            // A new instance when the backoff has passed, or quarantine after too many faults.
            if let (State::BackingOff { until }, Some(loaded)) = (&state, &component)
                && *until <= Instant::now()
            {
                state = if failures >= self.config.quarantine_after {
                    events::Quarantined {
                        plugin: &self.config.name,
                        failures,
                    }
                    .emit(&self.metrics);
                    self.mark_outputs(QualityReason::PluginFailure);
                    self.controller_lost("quarantined");
                    State::Quarantined
                } else {
                    match self.start(&runtime, loaded, &token).await {
                        Ok(started) => {
                            if failures > 0 {
                                events::Restarted {
                                    plugin: &self.config.name,
                                }
                                .emit(&self.metrics);
                            }
                            pending = self.current(&mut subscription);
                            proposals.reset();
                            State::Running(started)
                        }
                        Err(Unanswered::Cancelled) => return Ok(()),
                        Err(Unanswered::Fault(error)) => {
                            self.fail(&error, &mut failures, &mut backoff, &mut fault)
                        }
                    }
                };
            }
            // Every change of state comes back here before the loop waits: show it.
            self.show(&state, failures, &fault, &mut shown);
            let running = matches!(state, State::Running(_));
            let work = if running && !pending.is_empty() {
                Work::Changes
            } else {
                let retry_at = match state {
                    State::BackingOff { until } if component.is_some() => Some(until),
                    _ => None,
                };
                let retry = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) if running => {
                            t.tick().await;
                        }
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    Some(swap) = swaps.recv() => Work::Swap(swap),
                    _ = subscription.recv(&mut changes) => {
                        // Without an instance the changes are dropped: a new one starts from
                        // the current values.
                        if running {
                            pending.append(&mut changes);
                        }
                        changes.clear();
                        Work::Idle
                    }
                    () = tick => Work::Tick,
                    () = retry => Work::Idle,
                }
            };
            let started = Instant::now();
            let batch_call = match work {
                Work::Idle => continue,
                Work::Swap(swap) => {
                    let outcome = match swap.component {
                        Some(new) => match self.start(&runtime, &new, &token).await {
                            Ok(instance) => {
                                events::VersionSwapped {
                                    plugin: &self.config.name,
                                }
                                .emit(&self.metrics);
                                // The old instance, if any, is dropped only now.
                                state = State::Running(instance);
                                component = Some(new);
                                failures = 0;
                                backoff.reset();
                                pending = self.current(&mut subscription);
                                proposals.reset();
                                ReloadOutcome::Swapped
                            }
                            Err(Unanswered::Cancelled) => return Ok(()),
                            Err(Unanswered::Fault(error)) => {
                                events::VersionRefused {
                                    plugin: &self.config.name,
                                    why: Refusal::Init(&error),
                                }
                                .emit(&self.metrics);
                                ReloadOutcome::Refused(error.to_string())
                            }
                        },
                        None if matches!(state, State::Quarantined) => {
                            events::QuarantineLifted {
                                plugin: &self.config.name,
                            }
                            .emit(&self.metrics);
                            failures = 0;
                            backoff.reset();
                            state = State::BackingOff {
                                until: Instant::now(),
                            };
                            ReloadOutcome::Retried
                        }
                        None => ReloadOutcome::Unchanged,
                    };
                    for reply in swap.replies {
                        let _ = reply.send(outcome.clone());
                    }
                    continue;
                }
                Work::Changes => true,
                Work::Tick => false,
            };
            let instance = match std::mem::replace(&mut state, State::Unloaded) {
                State::Running(instance) => instance,
                other => {
                    state = other;
                    continue;
                }
            };
            let outcomes: Arc<[ProposalOutcome]> = proposals.deliver();
            let now = now_ms();
            let mut outputs = std::mem::take(&mut buffer);
            let result = if batch_call {
                let batch = self.batch(&pending);
                pending.clear();
                self.call(instance, &token, move |i| {
                    i.on_changes(now, &batch, &outcomes, &mut outputs)
                        .map(|()| outputs)
                })
                .await
            } else {
                self.call(instance, &token, move |i| {
                    i.on_tick(now, &outcomes, &mut outputs).map(|()| outputs)
                })
                .await
            };
            state = match result {
                Ok((instance, outputs)) => {
                    failures = 0;
                    backoff.reset();
                    self.apply(&outputs, &mut proposals);
                    buffer = outputs;
                    State::Running(instance)
                }
                Err(Unanswered::Cancelled) => return Ok(()),
                Err(Unanswered::Fault(error)) => {
                    self.fail(&error, &mut failures, &mut backoff, &mut fault)
                }
            };
            // At most one on-changes per min_interval: later changes wait and are batched.
            if batch_call {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(started + self.config.min_interval) => {}
                }
            }
        }
    }
}
