//! Running plugin instances against the twin: subscriptions in, derived values and write
//! proposals out, faults contained.
//!
//! Each `[[plugins]]` entry gets one task. The task subscribes to its input properties, calls
//! `on-changes` with every change since the previous call at most once per `min_interval`, and
//! `on-tick` every `tick`. Calls run on the blocking pool, so a plugin never holds up the async
//! workers. Outputs are checked: a derived value must name a property bound to this plugin and be
//! finite; a write proposal goes to the control gate, which decides. A failed call (trap,
//! deadline, memory cap, fuel) discards the instance and marks its derived properties bad
//! (`PluginFailure`); it is re-created after a backoff, and after `quarantine_after` consecutive
//! failures it stays quarantined until the configuration is reloaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use wasmtime::component::Component;

use crate::config::Config;
use crate::config::model::{PluginConfig, PluginKind};
use crate::control::{ControlHandle, Origin};
use crate::plugins::wasm::{
    ChangeBatch, Instance, Limits, Outputs, PluginError, Quality, WasmHost,
};
use crate::runtime::{Backoff, Supervisor};
use crate::sources::BindingConfig;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{PluginFailureLabels, PluginLabels};
use crate::twin::{Change, Filter, PropertyId, QualityLevel, QualityReason, Reading, Twin, Value};

/// Changes a plugin's subscription queues before coalescing to the latest per property.
pub const PLUGIN_SUBSCRIBER_CAPACITY: usize = 8192;

/// Starts every configured plugin under `supervisor`. A plugin whose file cannot be loaded is
/// logged and its derived properties marked bad; the daemon runs on.
///
/// Errors: the wasm engine cannot be created.
pub fn spawn_all(
    config: &Config,
    twin: &Arc<Twin>,
    control: &ControlHandle,
    supervisor: &Supervisor,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    if config.plugins.is_empty() {
        return Ok(());
    }
    let host = WasmHost::new()?;
    let model = twin.model();
    for plugin in &config.plugins {
        let mut inputs = Vec::new();
        for asset in model.assets() {
            for subscription in plugin.subscribe.iter().filter(|s| s.matches(&asset.path)) {
                for name in &subscription.properties {
                    if let Some(id) = model.property_of(&asset.path, name)
                        && !inputs.contains(&id)
                    {
                        inputs.push(id);
                    }
                }
            }
        }
        let mut outputs = HashMap::new();
        for asset in &config.assets {
            for (name, binding) in &asset.bindings {
                if let BindingConfig::Plugin(b) = binding
                    && b.plugin == plugin.name
                    && let Some(id) = model.property_of(&asset.path, name)
                {
                    outputs.insert(format!("{}/{name}", asset.path), id);
                }
            }
        }
        let labels = PluginLabels {
            plugin: plugin.name.clone(),
        };
        let runner = Runner {
            config: plugin.clone(),
            init_config: plugin
                .config
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            input_names: inputs
                .iter()
                .map(|id| model.property(*id).path.clone())
                .collect(),
            index: inputs
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i as u32))
                .collect(),
            inputs,
            outputs,
            twin: Arc::clone(twin),
            control: control.clone(),
            metrics: metrics.clone(),
            labels,
        };
        if plugin.kind == PluginKind::Native {
            tracing::error!(plugin = %plugin.name, "Native plugins are not supported yet; this plugin does not run");
            runner.mark_outputs(QualityReason::PluginFailure);
            continue;
        }
        let component = std::fs::read(config.resolve(&plugin.file))
            .map_err(|e| PluginError::Load(e.to_string()))
            .and_then(|bytes| host.compile(&bytes));
        match component {
            Ok(component) => {
                let host = host.clone();
                supervisor.spawn(format!("plugin:{}", plugin.name), move |token| {
                    runner.run(host, component, token)
                });
            }
            Err(error) => {
                tracing::error!(plugin = %plugin.name, %error, "Plugin cannot be loaded; it does not run");
                runner.count_failure(&error);
                runner.mark_outputs(QualityReason::PluginFailure);
            }
        }
    }
    Ok(())
}

struct Runner {
    config: PluginConfig,
    init_config: String,
    inputs: Vec<PropertyId>,
    input_names: Vec<String>,
    index: HashMap<PropertyId, u32>,
    outputs: HashMap<String, PropertyId>,
    twin: Arc<Twin>,
    control: ControlHandle,
    metrics: Metrics,
    labels: PluginLabels,
}

fn failure_kind(error: &PluginError) -> &'static str {
    match error {
        PluginError::Load(_) => "load",
        PluginError::Deadline(_) => "deadline",
        PluginError::MemoryCap(_) => "memory_cap",
        PluginError::OutOfFuel => "out_of_fuel",
        PluginError::Trap(_) => "trap",
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
        }
    }

    fn mark_outputs(&self, reason: QualityReason) {
        let readings: Vec<_> = self
            .outputs
            .values()
            .map(|id| Reading::failed(*id, reason))
            .collect();
        self.twin.apply(&readings);
    }

    fn count_failure(&self, error: &PluginError) {
        self.metrics
            .plugins
            .failures
            .get_or_create(&PluginFailureLabels {
                plugin: self.labels.plugin.clone(),
                kind: failure_kind(error).to_owned(),
            })
            .inc();
    }

    /// Runs `call` on the blocking pool with the instance, and gives the instance back.
    async fn call<R: Send + 'static>(
        &self,
        mut instance: Instance,
        call: impl FnOnce(&mut Instance) -> Result<R, PluginError> + Send + 'static,
    ) -> (Instance, Result<R, PluginError>) {
        self.metrics.plugins.calls.get_or_create(&self.labels).inc();
        let fuel_before = instance.fuel_used();
        let (instance, result) = tokio::task::spawn_blocking(move || {
            let result = call(&mut instance);
            (instance, result)
        })
        .await
        .expect("plugin calls do not panic the host");
        self.metrics
            .plugins
            .fuel
            .get_or_create(&self.labels)
            .inc_by(instance.fuel_used() - fuel_before);
        (instance, result)
    }

    async fn start(&self, host: &WasmHost, component: &Component) -> Result<Instance, PluginError> {
        let instance = host.instantiate(&self.config.name, component, self.limits())?;
        let (config, names) = (self.init_config.clone(), self.input_names.clone());
        let (instance, result) = self.call(instance, move |i| i.init(&config, &names)).await;
        match result? {
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
            match self.outputs.get(&derived.property) {
                Some(id) if derived.value.is_finite() => {
                    readings.push(Reading::value(
                        *id,
                        Value::Float(derived.value),
                        Some(stamp),
                    ));
                }
                _ => {
                    self.metrics
                        .plugins
                        .rejected_outputs
                        .get_or_create(&self.labels)
                        .inc();
                    tracing::warn!(plugin = %self.config.name, property = %derived.property, value = derived.value, "Rejected a derived value: not a property of this plugin, or not finite");
                }
            }
        }
        self.twin.apply(&readings);
        for proposal in outputs.proposals {
            let Some(id) = self.twin.model().property_by_path(&proposal.property) else {
                self.metrics
                    .plugins
                    .rejected_outputs
                    .get_or_create(&self.labels)
                    .inc();
                tracing::warn!(plugin = %self.config.name, property = %proposal.property, "Rejected a write proposal for an unknown property");
                continue;
            };
            let control = self.control.clone();
            let origin = Origin::Plugin {
                name: self.config.name.clone(),
            };
            tracing::info!(plugin = %self.config.name, property = %proposal.property, value = proposal.value, reason = %proposal.reason, "Plugin proposes a write");
            tokio::spawn(async move {
                let _ = control
                    .write(id, Value::Float(proposal.value), origin)
                    .await;
            });
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
            let Some(index) = self.index.get(&change.property) else {
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
            batch.qualities.push(match change.sample.quality.level {
                QualityLevel::Good => Quality::Good,
                QualityLevel::Uncertain => Quality::Uncertain,
                QualityLevel::Bad => Quality::Bad,
            });
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

    async fn run(
        self,
        host: WasmHost,
        component: Component,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut subscription = self.twin.subscribe(
            Filter::Properties(self.inputs.clone()),
            PLUGIN_SUBSCRIBER_CAPACITY,
        );
        let mut ticker = self.config.tick.map(|period| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failures = 0u32;
        let mut instance: Option<Instance> = None;
        let mut changes = Vec::new();
        // Start from the current values of every input.
        let current = self.twin.samples(&self.inputs);
        let mut pending: Vec<Change> = self
            .inputs
            .iter()
            .zip(current)
            .map(|(property, sample)| Change {
                property: *property,
                sample,
            })
            .collect();
        loop {
            if instance.is_none() {
                if failures >= self.config.quarantine_after {
                    self.metrics
                        .plugins
                        .quarantined
                        .get_or_create(&self.labels)
                        .set(1);
                    tracing::error!(plugin = %self.config.name, failures, "Plugin quarantined after consecutive failures; reload the configuration to try again");
                    self.mark_outputs(QualityReason::PluginFailure);
                    token.cancelled().await;
                    return Ok(());
                }
                match self.start(&host, &component).await {
                    Ok(started) => {
                        if failures > 0 {
                            self.metrics
                                .plugins
                                .restarts
                                .get_or_create(&self.labels)
                                .inc();
                        }
                        instance = Some(started);
                    }
                    Err(error) => {
                        failures += 1;
                        self.fail(&error, failures);
                        let delay = backoff.next_delay();
                        tokio::select! {
                            () = token.cancelled() => return Ok(()),
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
            let Some(current) = instance.take() else {
                continue;
            };
            enum Work {
                Changes,
                Tick,
            }
            let work = if !pending.is_empty() {
                Work::Changes
            } else {
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    _ = subscription.recv(&mut changes) => {
                        pending.append(&mut changes);
                        Work::Changes
                    }
                    () = tick => Work::Tick,
                }
            };
            let started = tokio::time::Instant::now();
            let was_changes = matches!(work, Work::Changes);
            let (back, result) = match work {
                Work::Changes => {
                    let batch = self.batch(&pending);
                    pending.clear();
                    self.call(current, move |i| i.on_changes(&batch)).await
                }
                Work::Tick => {
                    let now = now_ms();
                    self.call(current, move |i| i.on_tick(now)).await
                }
            };
            match result {
                Ok(outputs) => {
                    failures = 0;
                    backoff.reset();
                    self.apply(outputs);
                    instance = Some(back);
                }
                Err(error) => {
                    failures += 1;
                    self.fail(&error, failures);
                    drop(back);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            // At most one on-changes per min_interval: later changes wait and are batched.
            if was_changes {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(started + self.config.min_interval) => {}
                }
            }
        }
    }

    fn fail(&self, error: &PluginError, failures: u32) {
        self.count_failure(error);
        tracing::warn!(plugin = %self.config.name, %error, failures, "Plugin call failed; the instance is discarded");
        self.mark_outputs(QualityReason::PluginFailure);
    }
}
