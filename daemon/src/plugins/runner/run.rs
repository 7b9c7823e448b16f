//! The run loop of one plugin: its life as an explicit [`State`], calls on the blocking pool,
//! outputs checked into the twin, proposals to the control gate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ReloadOutcome;
use super::events::{self, Refusal, Rejection};
use super::reload::Swap;
use super::resolve::Resolved;
use crate::config::model::PluginConfig;
use crate::control::{ControlHandle, Origin};
use crate::plugins::runtime::{
    ChangeBatch, Limits, Outputs, PluginError, PluginInstance, PluginRuntime,
};
use crate::plugins::wasm::{Quality, quality_byte};
use crate::runtime::Backoff;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::PluginLabels;
use crate::twin::{
    Change, Filter, QualityLevel, QualityReason, Reading, Subscription, Twin, Value,
};

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
        }
    }

    /// Marks every derived property of the plugin bad with `reason`, keeping the last values.
    pub fn mark_outputs(&self, reason: QualityReason) {
        self.twin
            .fail_all(self.resolved.outputs.values().copied(), reason);
    }

    /// Runs `call` on the blocking pool with the instance, and gives the instance back when the
    /// call succeeded (after a fault the instance is discarded). A panic on the host side of the
    /// call is this plugin's fault ([`PluginError::HostPanic`]), never the daemon's end.
    async fn call<I: PluginInstance, R: Send + 'static>(
        &self,
        mut instance: I,
        call: impl FnOnce(&mut I) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<(I, R), PluginError> {
        self.metrics.plugins.calls.get_or_create(&self.labels).inc();
        let fuel_before = instance.fuel_used();
        let joined = tokio::task::spawn_blocking(move || {
            let result = call(&mut instance);
            (instance, result)
        })
        .await;
        let (instance, result) = match joined {
            Ok(done) => done,
            Err(error) => {
                let why = if error.is_panic() {
                    "it panicked"
                } else {
                    "it was cancelled"
                };
                return Err(PluginError::HostPanic(format!(
                    "the blocking call ended without an answer: {why}"
                )));
            }
        };
        self.metrics
            .plugins
            .fuel
            .get_or_create(&self.labels)
            .inc_by(instance.fuel_used() - fuel_before);
        result.map(|outputs| (instance, outputs))
    }

    async fn start<R: PluginRuntime>(
        &self,
        runtime: &R,
        component: &R::Component,
    ) -> Result<R::Instance, PluginError> {
        let instance = runtime.instantiate(&self.config.name, component, self.limits())?;
        let (config, names) = (self.init_config.clone(), self.resolved.input_names.clone());
        let (instance, refusal) = self
            .call(instance, move |i| i.init(&config, &names))
            .await?;
        match refusal {
            Ok(()) => Ok(instance),
            Err(refusal) => Err(PluginError::Trap(format!(
                "init refused its configuration: {refusal}"
            ))),
        }
    }

    fn apply(&self, outputs: Outputs) {
        let stamp = SystemTime::now();
        let mut readings = Vec::with_capacity(outputs.values.len());
        for derived in outputs.values {
            match self.resolved.outputs.get(&derived.property) {
                Some(id) if derived.value.is_finite() => {
                    readings.push(Reading::value(
                        *id,
                        Value::Float(derived.value),
                        Some(stamp),
                    ));
                }
                _ => events::OutputRejected {
                    plugin: &self.config.name,
                    property: &derived.property,
                    why: Rejection::DerivedValue {
                        value: derived.value,
                    },
                }
                .emit(&self.metrics),
            }
        }
        self.twin.apply(&readings);
        for proposal in outputs.proposals {
            let Some(id) = self.twin.model().property_by_path(&proposal.property) else {
                events::OutputRejected {
                    plugin: &self.config.name,
                    property: &proposal.property,
                    why: Rejection::UnknownProposalTarget,
                }
                .emit(&self.metrics);
                continue;
            };
            let origin = Origin::Plugin {
                name: self.config.name.clone(),
            };
            tracing::info!(plugin = %self.config.name, property = %proposal.property, value = proposal.value, reason = %proposal.reason, "Plugin proposes a write");
            if let Err(error) = self
                .control
                .propose(id, Value::Float(proposal.value), origin)
            {
                events::OutputRejected {
                    plugin: &self.config.name,
                    property: &proposal.property,
                    why: Rejection::ProposalNotQueued { error: &error },
                }
                .emit(&self.metrics);
            }
        }
    }

    fn batch(&self, changes: &[Change]) -> ChangeBatch {
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
        batch
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
    fn fail<I>(&self, error: &PluginError, failures: &mut u32, backoff: &mut Backoff) -> State<I> {
        *failures += 1;
        events::CallFailed {
            plugin: &self.config.name,
            error,
            failures: *failures,
        }
        .emit(&self.metrics);
        self.mark_outputs(QualityReason::PluginFailure);
        State::BackingOff {
            until: Instant::now() + backoff.next_delay(),
        }
    }

    /// Runs the plugin until `token` is cancelled: starts an instance of `component` (when there
    /// is one), feeds it changes and ticks, swaps in new versions from `swaps`, restarts it with
    /// backoff after a fault and quarantines it after `quarantine_after` faults in a row.
    pub async fn run<R: PluginRuntime>(
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
                    State::Quarantined
                } else {
                    match self.start(&runtime, loaded).await {
                        Ok(started) => {
                            if failures > 0 {
                                events::Restarted {
                                    plugin: &self.config.name,
                                }
                                .emit(&self.metrics);
                            }
                            pending = self.current(&mut subscription);
                            State::Running(started)
                        }
                        Err(error) => self.fail(&error, &mut failures, &mut backoff),
                    }
                };
            }
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
                        Some(new) => match self.start(&runtime, &new).await {
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
                                ReloadOutcome::Swapped
                            }
                            Err(error) => {
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
            let result = if batch_call {
                let batch = self.batch(&pending);
                pending.clear();
                self.call(instance, move |i| i.on_changes(&batch)).await
            } else {
                let now = now_ms();
                self.call(instance, move |i| i.on_tick(now)).await
            };
            state = match result {
                Ok((instance, outputs)) => {
                    failures = 0;
                    backoff.reset();
                    self.apply(outputs);
                    State::Running(instance)
                }
                Err(error) => self.fail(&error, &mut failures, &mut backoff),
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
