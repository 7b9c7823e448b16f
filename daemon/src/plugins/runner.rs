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
//! failures it stays quarantined until its file changes or the daemon gets SIGHUP.
//!
//! Hot reload: a watcher on the plugin files' folders (and SIGHUP, through
//! [`PluginHandles::reload_all`]) asks the plugin's reloader task to look at its file; a changed
//! file is compiled there, off the plugin's call path, then the runner instantiates and
//! initialises the new version and only then drops the old instance. If the new version does not
//! compile or initialise, the old one keeps running. A new instance starts with fresh state and
//! is first fed the current values of all its inputs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wasmtime::component::Component;

use crate::config::Config;
use crate::config::model::{PluginConfig, PluginKind};
use crate::config::sources::BindingConfig;
use crate::control::{ControlHandle, Origin};
use crate::plugins::wasm::{
    ChangeBatch, Instance, Limits, Outputs, PluginError, Quality, WasmHost, quality_byte,
};
use crate::runtime::{Backoff, Supervisor};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{PluginFailureLabels, PluginLabels, PluginReloadLabels};
use crate::twin::{
    Change, Filter, PropertyId, QualityLevel, QualityReason, Reading, Subscription, Twin, Value,
};

/// Changes a plugin's subscription queues before coalescing to the latest per property.
pub const PLUGIN_SUBSCRIBER_CAPACITY: usize = 8192;

/// What a running plugin's hot reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file is the one already loaded (or tried); nothing changed.
    Unchanged,
    /// The new version compiled and initialised, and now runs; the old instance is gone.
    Swapped,
    /// The new version did not compile or initialise; the running version stays.
    Refused(String),
    /// The file is unchanged but the plugin was quarantined: it starts again.
    Retried,
}

/// A request to look at a plugin's file again.
#[derive(Debug)]
struct Check {
    /// Also leave quarantine when the file is unchanged (a SIGHUP, not a file event).
    retry: bool,
    reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// A compiled new version (or, with `None`, a request to leave quarantine) for a runner.
#[derive(Debug)]
struct Swap {
    component: Option<Component>,
    replies: Vec<oneshot::Sender<ReloadOutcome>>,
}

enum Work {
    Changes,
    Tick,
    Swap(Swap),
    Idle,
}

/// How long a plugin file must be quiet after a change before it is read: writers that truncate
/// and then write in pieces (`cp`) produce several events.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The running plugins, for reloads.
#[derive(Debug, Clone, Default)]
pub struct PluginHandles {
    checks: Arc<Vec<(String, mpsc::Sender<Check>)>>,
}

impl PluginHandles {
    /// Looks at every Wasm plugin's file (a SIGHUP): a changed file is compiled off the hot path,
    /// initialised and swapped in; a quarantined plugin starts again. Returns each plugin's
    /// outcome, in configuration order.
    pub async fn reload_all(&self) -> Vec<(String, ReloadOutcome)> {
        let mut waiting = Vec::new();
        for (name, checks) in self.checks.iter() {
            let (reply, outcome) = oneshot::channel();
            let check = Check {
                retry: true,
                reply: Some(reply),
            };
            if checks.send(check).await.is_ok() {
                waiting.push((name.clone(), outcome));
            }
        }
        let mut outcomes = Vec::new();
        for (name, outcome) in waiting {
            if let Ok(outcome) = outcome.await {
                outcomes.push((name, outcome));
            }
        }
        outcomes
    }
}

/// Starts every configured plugin under `supervisor`, with a watcher that hot-reloads a plugin
/// when its file changes. A plugin whose file cannot be loaded is logged and its derived
/// properties marked bad; the daemon runs on, and the plugin starts when a loadable file appears.
///
/// Errors: the wasm engine cannot be created.
pub fn spawn_all(
    config: &Config,
    twin: &Arc<Twin>,
    control: &ControlHandle,
    supervisor: &Supervisor,
    metrics: &Metrics,
) -> anyhow::Result<PluginHandles> {
    if config.plugins.is_empty() {
        return Ok(PluginHandles::default());
    }
    // Fuel metering slows every plugin down, so the engine meters only when one asks for it.
    let host = WasmHost::new(config.plugins.iter().any(|p| p.fuel.is_some()))?;
    let model = twin.model();
    let mut checks = Vec::new();
    let mut watched = Vec::new();
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
        let file = std::path::absolute(config.resolve(&plugin.file))
            .unwrap_or_else(|_| config.resolve(&plugin.file));
        let loaded = std::fs::read(&file)
            .map_err(|e| PluginError::Load(format!("{}: {e}", file.display())))
            .and_then(|bytes| Ok((fingerprint(&bytes), host.compile(&bytes)?)));
        let (fingerprint, component) = match loaded {
            Ok((fingerprint, component)) => (Some(fingerprint), Some(component)),
            Err(error) => {
                tracing::error!(plugin = %plugin.name, %error, "Plugin cannot be loaded; it starts when a loadable file appears");
                runner.count_failure(&error);
                runner.mark_outputs(QualityReason::PluginFailure);
                (None, None)
            }
        };
        let (check_tx, check_rx) = mpsc::channel(4);
        let (swap_tx, swap_rx) = mpsc::channel(1);
        let reloader = Reloader {
            plugin: plugin.name.clone(),
            file: file.clone(),
            fingerprint,
            host: host.clone(),
            metrics: metrics.clone(),
        };
        supervisor.spawn(format!("plugin-reload:{}", plugin.name), move |token| {
            reloader.run(check_rx, swap_tx, token)
        });
        let host = host.clone();
        supervisor.spawn(format!("plugin:{}", plugin.name), move |token| {
            runner.run(host, component, swap_rx, token)
        });
        watched.push((file, check_tx.clone()));
        checks.push((plugin.name.clone(), check_tx));
    }
    watch(&watched, supervisor);
    Ok(PluginHandles {
        checks: Arc::new(checks),
    })
}

fn count_reload(metrics: &Metrics, plugin: &str, outcome: &str) {
    metrics
        .plugins
        .reloads
        .get_or_create(&PluginReloadLabels {
            plugin: plugin.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// A cheap fingerprint of a plugin file, to tell a changed file from a touched one.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Watches the folders of the plugin files and asks a plugin's reloader to look when its file
/// is created, written, renamed over or removed. Without a working watcher (inotify limits),
/// SIGHUP still reloads.
fn watch(files: &[(PathBuf, mpsc::Sender<Check>)], supervisor: &Supervisor) {
    use notify::{EventKind, RecursiveMode, Watcher};
    let targets = files.to_vec();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for (file, checks) in &targets {
            if event.paths.iter().any(|p| p == file) {
                let _ = checks.try_send(Check {
                    retry: false,
                    reply: None,
                });
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "Cannot watch plugin files; SIGHUP reloads them");
            return;
        }
    };
    let mut folders: Vec<PathBuf> = files
        .iter()
        .filter_map(|(file, _)| file.parent().map(PathBuf::from))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        if let Err(error) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %folder.display(), %error, "Cannot watch a plugin folder; SIGHUP reloads its plugins");
        }
    }
    supervisor.spawn("plugin-watch", move |token| async move {
        token.cancelled().await;
        drop(watcher);
        Ok(())
    });
}

/// Reads, fingerprints and compiles a plugin's file when asked, off the plugin's call path, and
/// hands a changed version to the runner.
struct Reloader {
    plugin: String,
    file: PathBuf,
    fingerprint: Option<u64>,
    host: WasmHost,
    metrics: Metrics,
}

impl Reloader {
    async fn run(
        mut self,
        mut checks: mpsc::Receiver<Check>,
        swaps: mpsc::Sender<Swap>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let first = tokio::select! {
                () = token.cancelled() => return Ok(()),
                check = checks.recv() => match check {
                    Some(check) => check,
                    None => return Ok(()),
                },
            };
            let mut retry = first.retry;
            let mut replies: Vec<_> = first.reply.into_iter().collect();
            // Wait until the file has been quiet for a moment.
            while let Ok(Some(more)) = tokio::time::timeout(RELOAD_DEBOUNCE, checks.recv()).await {
                retry |= more.retry;
                replies.extend(more.reply);
            }
            let outcome = match std::fs::read(&self.file) {
                Err(error) => {
                    tracing::warn!(plugin = %self.plugin, file = %self.file.display(), %error, "Cannot read the plugin file; the running version stays");
                    ReloadOutcome::Refused(error.to_string())
                }
                Ok(bytes) if Some(fingerprint(&bytes)) == self.fingerprint => {
                    if retry {
                        let swap = Swap {
                            component: None,
                            replies,
                        };
                        if swaps.send(swap).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    ReloadOutcome::Unchanged
                }
                Ok(bytes) => {
                    self.fingerprint = Some(fingerprint(&bytes));
                    tracing::info!(plugin = %self.plugin, file = %self.file.display(), "Plugin file changed; compiling the new version");
                    let host = self.host.clone();
                    let compiled = tokio::task::spawn_blocking(move || host.compile(&bytes))
                        .await
                        .unwrap_or_else(|e| Err(PluginError::Load(e.to_string())));
                    match compiled {
                        Ok(component) => {
                            let swap = Swap {
                                component: Some(component),
                                replies,
                            };
                            if swaps.send(swap).await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(error) => {
                            tracing::error!(plugin = %self.plugin, %error, "The new plugin version does not compile; the running version stays");
                            count_reload(&self.metrics, &self.plugin, "refused");
                            ReloadOutcome::Refused(error.to_string())
                        }
                    }
                }
            };
            for reply in replies {
                let _ = reply.send(outcome.clone());
            }
        }
    }
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
        self.twin.fail_all(self.outputs.values().copied(), reason);
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
            let control = &self.control;
            let origin = Origin::Plugin {
                name: self.config.name.clone(),
            };
            tracing::info!(plugin = %self.config.name, property = %proposal.property, value = proposal.value, reason = %proposal.reason, "Plugin proposes a write");
            if let Err(error) = control.propose(id, Value::Float(proposal.value), origin) {
                self.metrics
                    .plugins
                    .rejected_outputs
                    .get_or_create(&self.labels)
                    .inc();
                tracing::warn!(plugin = %self.config.name, property = %proposal.property, %error, "Write proposal not queued");
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
        self.inputs
            .iter()
            .zip(self.twin.samples(&self.inputs))
            .map(|(property, sample)| Change {
                property: *property,
                sample,
            })
            .collect()
    }

    fn set_quarantined(&self, quarantined: bool) {
        self.metrics
            .plugins
            .quarantined
            .get_or_create(&self.labels)
            .set(i64::from(quarantined));
    }

    fn count_reload(&self, outcome: &str) {
        count_reload(&self.metrics, &self.config.name, outcome);
    }

    async fn run(
        self,
        host: WasmHost,
        mut component: Option<Component>,
        mut swaps: mpsc::Receiver<Swap>,
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
        let mut quarantined = false;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut instance: Option<Instance> = None;
        let mut changes = Vec::new();
        let mut pending: Vec<Change> = Vec::new();
        loop {
            // (Re)start when there is a component, no instance, and the backoff has passed.
            if instance.is_none()
                && !quarantined
                && let Some(loaded) = &component
                && retry_at.is_none_or(|at| at <= tokio::time::Instant::now())
            {
                if failures >= self.config.quarantine_after {
                    quarantined = true;
                    self.set_quarantined(true);
                    tracing::error!(plugin = %self.config.name, failures, "Plugin quarantined after consecutive failures; replace its file or reload the configuration to try again");
                    self.mark_outputs(QualityReason::PluginFailure);
                } else {
                    match self.start(&host, loaded).await {
                        Ok(started) => {
                            if failures > 0 {
                                self.metrics
                                    .plugins
                                    .restarts
                                    .get_or_create(&self.labels)
                                    .inc();
                            }
                            retry_at = None;
                            pending = self.current(&mut subscription);
                            instance = Some(started);
                        }
                        Err(error) => {
                            failures += 1;
                            self.fail(&error, failures);
                            retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                        }
                    }
                }
            }
            let running = instance.is_some();
            let work = if running && !pending.is_empty() {
                Work::Changes
            } else {
                let waiting = !running && !quarantined && component.is_some();
                let retry = async {
                    match (waiting, retry_at) {
                        (true, Some(at)) => tokio::time::sleep_until(at).await,
                        (true, None) => {}
                        (false, _) => std::future::pending().await,
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
            let started = tokio::time::Instant::now();
            let (current, batch_call) = match work {
                Work::Idle => continue,
                Work::Swap(swap) => {
                    let outcome = match swap.component {
                        Some(new) => match self.start(&host, &new).await {
                            Ok(started) => {
                                tracing::info!(plugin = %self.config.name, "Plugin reloaded: the new version runs");
                                self.count_reload("swapped");
                                instance = Some(started);
                                component = Some(new);
                                (failures, quarantined, retry_at) = (0, false, None);
                                self.set_quarantined(false);
                                backoff.reset();
                                pending = self.current(&mut subscription);
                                ReloadOutcome::Swapped
                            }
                            Err(error) => {
                                tracing::error!(plugin = %self.config.name, %error, "The new plugin version failed to initialise; the running version stays");
                                self.count_reload("refused");
                                ReloadOutcome::Refused(error.to_string())
                            }
                        },
                        None if quarantined => {
                            tracing::info!(plugin = %self.config.name, "Leaving quarantine on reload; starting the plugin again");
                            (failures, quarantined, retry_at) = (0, false, None);
                            self.set_quarantined(false);
                            backoff.reset();
                            ReloadOutcome::Retried
                        }
                        None => ReloadOutcome::Unchanged,
                    };
                    for reply in swap.replies {
                        let _ = reply.send(outcome.clone());
                    }
                    continue;
                }
                Work::Changes => match instance.take() {
                    Some(current) => (current, true),
                    None => continue,
                },
                Work::Tick => match instance.take() {
                    Some(current) => (current, false),
                    None => continue,
                },
            };
            let (back, result) = if batch_call {
                let batch = self.batch(&pending);
                pending.clear();
                self.call(current, move |i| i.on_changes(&batch)).await
            } else {
                let now = now_ms();
                self.call(current, move |i| i.on_tick(now)).await
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
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                }
            }
            // At most one on-changes per min_interval: later changes wait and are batched.
            if batch_call {
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
