//! Wiring: build every component from a validated config, run until asked to stop, drain.

pub mod backup;

pub(crate) mod events;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::context::ComponentContext;
use crate::control::{self, ControlHandle};
use crate::northbound::admin_http;
use crate::northbound::login::{LOGIN_QUEUE, LoginPool, login_threads};
use crate::northbound::opcua_server::{self, OpcUaServer};
use crate::plugins::runner::{PluginHandles, ReloadOutcome};
use crate::runtime::{Readiness, Supervisor};
use crate::sources::{self, BindingConfig, Bound, RunningSources, Writers};
use crate::telemetry::Metrics;
use crate::twin::{Twin, TwinModel};

/// How often the twin looks for stale properties.
pub const STALE_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A running daemon's shared parts, for the CLI and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The twin.
    pub twin: Arc<Twin>,
    /// What `/readyz` reports on: each component's readiness condition.
    pub readiness: Readiness,
    /// The task supervisor.
    pub supervisor: Supervisor,
    /// Writers of every bound property (for the control gate).
    pub writers: Writers,
    /// Metrics registry.
    pub metrics: Metrics,
    /// The control gate (where writes are proposed).
    pub control: ControlHandle,
    /// The OPC UA server, when configured.
    pub opcua: Option<OpcUaServer>,
    /// The admin HTTP address, when configured.
    pub admin_http: Option<std::net::SocketAddr>,
    /// Stop handles of the running sources (for reload).
    pub running: Arc<std::sync::Mutex<RunningSources>>,
    /// The running plugins (for hot reload).
    pub plugins: PluginHandles,
    /// The change log, when `[change_log]` or a consumer of it is configured and it opened.
    pub change_log: Option<crate::change_log::ChangeLog>,
    /// The historian, when `[history]` is configured and it opened.
    pub history: Option<crate::history::Historian>,
}

/// The configured interlocks resolved against the twin model.
///
/// Errors: one that validation let through (a bug; the message names the interlock).
fn interlocks(
    config: &Config,
    model: &TwinModel,
) -> anyhow::Result<control::interlock::Interlocks> {
    let specs =
        config
            .control
            .interlocks
            .iter()
            .map(|interlock| control::interlock::InterlockSpec {
                name: &interlock.name,
                applies_to: &interlock.applies_to,
                condition: &interlock.condition,
            });
    control::interlock::Interlocks::compile(specs, model).map_err(anyhow::Error::msg)
}

/// The control gate's audit journal, `<state dir>/audit`, opened when some property can be
/// written; otherwise, or when it cannot be opened (logged), why there is none: the gate then
/// refuses every write.
fn open_audit(
    twin: &Twin,
    state_dir: &std::path::Path,
    reserve_bytes: u64,
    metrics: &Metrics,
    supervisor: &Supervisor,
) -> Result<crate::runtime::journal::Journal, String> {
    let model = twin.model();
    let writable = model.properties().iter().enumerate().any(|(i, _)| {
        model.decl(crate::twin::PropertyId(i as u32)).access == crate::twin::Access::ReadWrite
    });
    if !writable {
        return Err("no property is writable, so there is no audit log".to_owned());
    }
    let dir = control::audit::dir_in(state_dir);
    let commits = metrics.control.audit_commit.clone();
    match crate::runtime::journal::Journal::open_observed(
        crate::runtime::journal::JournalConfig {
            reserve_bytes,
            ..crate::runtime::journal::JournalConfig::new(&dir)
        },
        supervisor,
        Arc::new(move |took| commits.observe(took.as_secs_f64())),
    ) {
        Ok((journal, opened)) => {
            tracing::info!(dir = %dir.display(), next_seq = opened.next_seq, segments_read = opened.segments_read, cut_bytes = opened.cut_bytes, sealing_key = ?opened.sealing.as_ref().map(|(id, _)| id), "Audit log opened");
            Ok(journal)
        }
        Err(error) => {
            events::AuditUnavailable {
                dir: &dir,
                error: &error,
            }
            .emit();
            Err(error.to_string())
        }
    }
}

/// For each live plugin of `old`, the setpoints of its `writes` that no live plugin of `new`
/// writes (the plugin was removed, switched to shadow or off, or dropped them).
fn unloaded_controls(old: &Config, new: &Config) -> Vec<(String, Vec<String>)> {
    use crate::config::model::PluginMode;
    let live = |config: &Config| -> std::collections::HashSet<String> {
        config
            .plugins
            .iter()
            .filter(|p| p.mode == PluginMode::Live)
            .flat_map(|p| p.writes.iter().cloned())
            .collect()
    };
    let still = live(new);
    old.plugins
        .iter()
        .filter(|p| p.mode == PluginMode::Live)
        .map(|p| {
            let lost: Vec<String> = p
                .writes
                .iter()
                .filter(|w| !still.contains(*w))
                .cloned()
                .collect();
            (p.name.clone(), lost)
        })
        .filter(|(_, lost)| !lost.is_empty())
        .collect()
}

/// The way of the OPC UA `ClearQuarantine` methods and admin HTTP's clear-quarantine to the
/// plugins.
fn clear_quarantine(plugins: &PluginHandles) -> crate::northbound::ClearQuarantine {
    let plugins = plugins.clone();
    Arc::new(move |name: String| {
        let plugins = plugins.clone();
        Box::pin(async move { plugins.clear_quarantine(&name).await })
    })
}

/// Every property bound to source `id`, resolved against the twin's model: what that source is
/// handed instead of the whole configuration.
fn bound_to(config: &Config, model: &TwinModel, id: &str) -> Vec<Bound<BindingConfig>> {
    config
        .bindings_of(id)
        .filter_map(|(asset, name, binding)| {
            Some(Bound {
                property: model.property_of(&asset.path, name)?,
                device: asset.device.clone(),
                binding: binding.clone(),
            })
        })
        .collect()
}

/// Spawns every source of `config` under `context.supervisor`, feeding `context.twin`; returns
/// their writers and their stop handles.
///
/// Errors: a source cannot be built from its (validated) config.
fn spawn_sources(
    config: &Config,
    context: ComponentContext<'_>,
) -> anyhow::Result<(Writers, RunningSources)> {
    let writers = Writers::default();
    let mut running = RunningSources::default();
    for source in &config.sources {
        let bindings = bound_to(config, context.twin.model(), source.id());
        sources::spawn_one(source, &bindings, context, &writers, &mut running)?;
    }
    Ok((writers, running))
}

/// Builds the twin and spawns every component of `config` on the current runtime.
///
/// Errors: a component that cannot be built or bound (all configuration errors were caught
/// before): the OPC UA listen address is taken, the PKI folder cannot be written.
pub async fn start(config: &Config) -> anyhow::Result<Handles> {
    let model = Arc::new(config.twin_model());
    let twin = Arc::new(Twin::new(model, &config.twin));
    let supervisor = Supervisor::new();
    let metrics = Metrics::new();
    metrics.register_twin(&twin);
    let state_dir = config.state_dir();
    let readiness = Readiness::default();
    let context = ComponentContext {
        twin: &twin,
        supervisor: &supervisor,
        metrics: &metrics,
        readiness: &readiness,
        state_dir: &state_dir,
    };
    // Before any source: the log's tap sees every change from the first.
    // Runs when configured, or when a consumer of it is (`Config::change_log_config`).
    let change_log = config.change_log_config().and_then(|log| {
        crate::change_log::start(&log, config.control.audit_reserve.as_u64(), context)
    });
    let history = match (&config.history, &change_log) {
        (Some(history), Some(log)) => crate::history::start(history, log, context),
        _ => None,
    };
    let interlocks = interlocks(config, twin.model())?;
    // One password pool for every service's logins, off the blocking pool plugins run on.
    let logins = LoginPool::start(login_threads(), LOGIN_QUEUE, metrics.set())
        .map_err(|e| anyhow::anyhow!("cannot start the login threads: {e}"))?;
    let (writers, running) = spawn_sources(config, context)?;
    let journal = open_audit(
        &twin,
        &state_dir,
        config.control.audit_reserve.as_u64(),
        &metrics,
        &supervisor,
    );
    let control = control::spawn(
        Arc::clone(&twin),
        writers.clone(),
        control::GateRecords {
            // Kept with the audit: without one (nothing writable) there is no control state.
            state_file: journal.is_ok().then(|| control::state::path_in(&state_dir)),
            audit: journal,
        },
        control::GateLimits {
            writes_per_origin_per_minute: config.control.max_writes_per_origin_per_minute,
            write_timeout: config.control.write_timeout,
            armed: config.control.armed,
        },
        interlocks,
        &metrics.control,
        &supervisor,
    );
    let plugins = crate::plugins::runner::spawn_all(
        &config.plugins,
        &config.assets,
        config.base_dir(),
        &control,
        context,
    )?;
    let opcua = match &config.opcua_server {
        Some(server) => match opcua_server::start(
            server,
            control.clone(),
            Some(clear_quarantine(&plugins)),
            &logins,
            match (&history, &config.history) {
                (Some(historian), Some(section)) => Some(opcua_server::HistoryService {
                    historian: historian.clone(),
                    config: section.clone(),
                }),
                _ => None,
            },
            context,
        )
        .await
        {
            Ok(server) => Some(server),
            Err(error) => {
                supervisor.shutdown(config.daemon.shutdown_timeout).await;
                return Err(error);
            }
        },
        None => None,
    };
    let admin_http = match &config.admin_http {
        Some(admin) => {
            let shown = admin_http::WebViewParts {
                sources: config.sources.iter().map(|s| s.id().to_owned()).collect(),
                plugins: config.plugins.iter().map(|p| p.name.clone()).collect(),
                clear_quarantine: Some(clear_quarantine(&plugins)),
                history: history.clone(),
            };
            match admin_http::start(
                admin,
                config.base_dir(),
                control.clone(),
                &logins,
                shown,
                context,
            )
            .await
            {
                Ok(addr) => Some(addr),
                Err(error) => {
                    supervisor.shutdown(config.daemon.shutdown_timeout).await;
                    return Err(error);
                }
            }
        }
        None => None,
    };
    if let Some(sparkplug) = &config.northbound.sparkplug
        && let Err(error) = crate::northbound::sparkplug::start(
            sparkplug,
            config.base_dir(),
            control.clone(),
            change_log.clone(),
            context,
        )
    {
        supervisor.shutdown(config.daemon.shutdown_timeout).await;
        return Err(error);
    }
    let sweeper = Arc::clone(&twin);
    supervisor.spawn("twin-stale-sweep", move |token| async move {
        let mut tick = tokio::time::interval(STALE_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let marked = sweeper.sweep_stale(Instant::now(), SystemTime::now());
                    if marked > 0 {
                        events::PropertiesStale { count: marked }.emit();
                    }
                }
            }
        }
    });
    tracing::info!(
        assets = twin.model().assets().len(),
        properties = twin.model().properties().len(),
        sources = config.sources.len(),
        "Twinloom started"
    );
    Ok(Handles {
        twin,
        readiness,
        supervisor,
        writers,
        metrics,
        control,
        opcua,
        admin_http,
        running: Arc::new(std::sync::Mutex::new(running)),
        plugins,
        change_log,
        history,
    })
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new configuration equals the running one, and so do the plugin files.
    Unchanged,
    /// The configuration is unchanged; these plugins' files changed and their new versions now
    /// run (a new version that fails to load or initialise is logged and the old one stays).
    PluginsReloaded(Vec<String>),
    /// Only these sources changed; they were restarted, everything else kept running (OPC UA
    /// sessions, other connections, the twin's values).
    SourcesRestarted(Vec<String>),
    /// Types, assets or services changed: every component was restarted with the new config.
    Restarted,
}

/// A running daemon and the configuration it runs.
#[derive(Debug)]
pub struct Daemon {
    /// The configuration in force.
    pub config: Config,
    /// Its components.
    pub handles: Handles,
}

impl Daemon {
    /// Starts every component of `config`.
    ///
    /// Errors: see [`start`].
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let handles = start(&config).await?;
        Ok(Self { config, handles })
    }

    /// Switches to `new` (already validated), restarting as little as possible: when only
    /// sources differ, just those sources; otherwise everything.
    ///
    /// Errors: a component of the new configuration cannot start (after a full restart the
    /// daemon then has no components running and the caller should stop).
    pub async fn apply(&mut self, new: Config) -> anyhow::Result<Reloaded> {
        if new == self.config {
            let swapped: Vec<String> = self
                .handles
                .plugins
                .reload_all()
                .await
                .into_iter()
                .filter(|(_, outcome)| {
                    matches!(outcome, ReloadOutcome::Swapped | ReloadOutcome::Retried)
                })
                .map(|(name, _)| name)
                .collect();
            return Ok(if swapped.is_empty() {
                Reloaded::Unchanged
            } else {
                Reloaded::PluginsReloaded(swapped)
            });
        }
        let same_ids = new.sources.len() == self.config.sources.len()
            && new.sources.iter().all(|s| {
                self.config
                    .source(s.id())
                    .is_some_and(|old| old.kind() == s.kind())
            });
        let rest_equal = {
            let (mut a, mut b) = (new.clone(), self.config.clone());
            a.sources.clear();
            b.sources.clear();
            a == b
        };
        if same_ids && rest_equal {
            let restarted = self.restart_changed_sources(&new)?;
            self.handles.plugins.reload_all().await;
            self.config = new;
            return Ok(Reloaded::SourcesRestarted(restarted));
        }
        self.handles
            .supervisor
            .shutdown(self.config.daemon.shutdown_timeout)
            .await;
        // The historian's files close before the new components open them again (redb opens a
        // file once per process; the old OPC UA server may still hold the old historian).
        if let Some(history) = self.handles.history.take() {
            history.close();
        }
        self.handles = start(&new).await?;
        // Setpoints a live plugin controlled and no live plugin controls any more: their
        // controller was unloaded, so their `on_loss` applies (through the new gate).
        for (plugin, paths) in unloaded_controls(&self.config, &new) {
            let model = self.handles.twin.model();
            let properties = paths
                .iter()
                .filter_map(|path| model.property_by_path(path))
                .collect();
            self.handles
                .control
                .controller_lost(format!("plugin `{plugin}` unloaded"), properties);
        }
        self.config = new;
        Ok(Reloaded::Restarted)
    }

    /// Stops and respawns the sources of `new` that differ from the running ones; returns their ids.
    fn restart_changed_sources(&self, new: &Config) -> anyhow::Result<Vec<String>> {
        let mut restarted = Vec::new();
        let mut running = self
            .handles
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for source in &new.sources {
            if self.config.source(source.id()) == Some(source) {
                continue;
            }
            running.stop(source.id());
            let bindings = bound_to(new, self.handles.twin.model(), source.id());
            let state_dir = new.state_dir();
            let context = ComponentContext {
                twin: &self.handles.twin,
                supervisor: &self.handles.supervisor,
                metrics: &self.handles.metrics,
                state_dir: &state_dir,
                readiness: &self.handles.readiness,
            };
            sources::spawn_one(
                source,
                &bindings,
                context,
                &self.handles.writers,
                &mut running,
            )?;
            restarted.push(source.id().to_owned());
        }
        Ok(restarted)
    }

    /// Re-reads the configuration file, validates it and applies it. An invalid file changes
    /// nothing: the running configuration stays.
    ///
    /// Errors: the file is invalid ([`crate::config::ConfigError`] inside), or applying failed.
    pub async fn reload(&mut self) -> anyhow::Result<Reloaded> {
        let new = crate::config::load(&self.config.file)?;
        self.apply(new).await
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        events::SystemdNotifyFailed { error: &error }.emit();
    }
}

/// Runs the daemon until `shutdown` resolves or a task fails, then drains within the configured
/// deadline. Tells systemd READY, WATCHDOG (at half the watchdog interval) and STOPPING; SIGHUP
/// reloads the configuration file (validated first; on error the running configuration stays).
///
/// Errors: a component failed to start, or a task failed while running.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before anything reports ready: a SIGHUP sent once `/readyz` answers must reload,
    // not end the process (the default action).
    let mut hangup = signal(SignalKind::hangup())?;
    // One daemon per state folder, before anything is opened or bound; held until `run` returns.
    let _state_lock = crate::runtime::state_lock::lock(&config.state_dir())?;
    let mut daemon = Daemon::start(config).await?;
    notify(&[sd_notify::NotifyState::Ready]);
    // The systemd watchdog has a supervisor of its own: it must keep being fed while the
    // components restart on reload (each start makes a new component supervisor).
    let process = Supervisor::new();
    if let Some(interval) = sd_notify::watchdog_enabled() {
        process.spawn("systemd-watchdog", move |token| async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    _ = tick.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
                }
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("Shutdown requested; draining");
                break;
            }
            () = daemon.handles.supervisor.cancelled() => break,
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match daemon.reload().await {
                    Ok(outcome) => tracing::info!(?outcome, "Configuration reloaded"),
                    Err(error) => match error.downcast_ref::<crate::config::ConfigError>() {
                        Some(invalid) => events::ReloadRefused { errors: invalid }.emit(),
                        None => {
                            events::ReloadFailed { error: &error }.emit();
                            notify(&[sd_notify::NotifyState::Stopping]);
                            return Err(error);
                        }
                    },
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    process.shutdown(Duration::from_secs(1)).await;
    let handles = &daemon.handles;
    let deadline = daemon.config.daemon.shutdown_timeout;
    // A deadline overrun is logged by the supervisor.
    handles.supervisor.shutdown(deadline).await;
    match handles.supervisor.fatal_error() {
        Some(message) => anyhow::bail!(message),
        None => {
            tracing::info!("Twinloom stopped");
            Ok(())
        }
    }
}

/// What `twinloom check --online` found: problems of bindings against the servers, and the
/// sources it could not reach (each a problem at the source's key path).
#[derive(Debug, Default)]
pub struct OnlineCheck {
    /// A binding that does not fit its server (unknown namespace, unresolvable browse path,
    /// missing node, a DataType that does not fit the property).
    pub problems: Vec<crate::config::Problem>,
    /// A source whose server could not be asked.
    pub unreachable: Vec<crate::config::Problem>,
}

/// Connects to the server of every OPC UA source of the (valid) `config`, one after the other,
/// and checks every binding against its address space ([`sources::opcua::probe`]); problems are
/// at the bindings' key paths (`assets[i].bindings.<property>`), unreachable servers at the
/// sources' (`sources.opcua[k]`). Uses each source's client PKI folder (the daemon's, so that a
/// server trusting the daemon trusts the check).
pub async fn check_online(config: &Config) -> OnlineCheck {
    use crate::config::KeyPath;
    let mut out = OnlineCheck::default();
    let opcua_sources = config.sources.iter().filter_map(|s| match s {
        sources::SourceConfig::OpcUa(section) => Some(section),
        _ => None,
    });
    for (k, section) in opcua_sources.enumerate() {
        let mut probed = Vec::new();
        for (i, asset) in config.assets.iter().enumerate() {
            if asset.source.as_deref() != Some(section.id.as_str()) {
                continue;
            }
            let declared = config.types.iter().find(|t| t.name == asset.type_name);
            for (name, binding) in &asset.bindings {
                let (Some(binding), Some(property)) = (
                    binding.as_opcua(),
                    declared.and_then(|t| t.properties.iter().find(|p| p.name == *name)),
                ) else {
                    continue;
                };
                probed.push(sources::opcua::ProbedBinding {
                    path: KeyPath::root()
                        .key("assets")
                        .index(i)
                        .key("bindings")
                        .key(name.as_str()),
                    binding: binding.clone(),
                    data_type: property.data_type,
                });
            }
        }
        let pki_dir = section
            .pki_dir
            .clone()
            .unwrap_or_else(|| config.state_dir().join("pki-client"));
        match sources::opcua::probe(section, &pki_dir, &probed).await {
            Ok(problems) => out.problems.extend(problems),
            Err(error) => out.unreachable.push(crate::config::Problem::new(
                KeyPath::root().key("sources").key("opcua").index(k),
                format!("cannot check against `{}`: {error:#}", section.endpoint),
            )),
        }
    }
    out
}
