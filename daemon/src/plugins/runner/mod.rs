//! Running plugin instances against the twin: subscriptions in, derived values and write
//! proposals out, faults contained. Split by job: [`resolve`] finds a plugin's inputs, owned and
//! writable properties, [`reload`] watches and reloads files, [`run`] is the run loop with the
//! plugin's life as an explicit state (unloaded, running, backing off, quarantined; shown on the
//! plugin's status object `twinloom/plugins/<name>` and a metric), [`proposals`] follows each
//! write proposal to its outcome, [`events`] reports what happens (log line and metrics from one
//! place); all of it generic over the plugin [`runtime`](crate::plugins::runtime) seam.
//!
//! Each `[[plugins]]` entry gets one task. The task subscribes to its input properties, calls
//! `on-changes` with every change since the previous call at most once per `min_interval`, and
//! `on-tick` every `tick`. Calls run on the blocking pool, so a plugin never holds up the async
//! workers, and the runner never waits on one past its deadline plus [`run::CALL_GRACE`] or past
//! shutdown. Outputs are checked: a derived value must carry an index into the owned list and,
//! unless its quality is bad, be finite; a write proposal must carry an index into the writable
//! list (the plugin's `writes`) and a value of the property's type, and goes to the control gate,
//! which decides; every proposal's outcome reaches the plugin in a later call. A failed call
//! (trap, deadline, blocking import, limit, fuel) discards the instance and marks its derived
//! properties bad (`PluginFailure`); it is re-created after a backoff, and after
//! `quarantine_after` consecutive failures it stays quarantined until its file changes, the daemon
//! gets SIGHUP, or an operator calls the status object's `ClearQuarantine` method.
//!
//! Hot reload: a watcher on the plugin files' folders (and SIGHUP, through
//! [`PluginHandles::reload_all`]) asks the plugin's reloader task to look at its file; a changed
//! file is compiled there, off the plugin's call path, then the runner instantiates and
//! initialises the new version and only then drops the old instance. If the new version does not
//! compile or initialise, the old one keeps running. A new instance starts with fresh state and
//! is first fed the current values of all its inputs.

mod events;
mod proposals;
mod reload;
mod resolve;
mod run;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::model::{AssetConfig, PluginConfig, PluginKind};
use crate::context::ComponentContext;
use crate::control::ControlHandle;
use crate::plugins::native::NativeHost;
use crate::plugins::runtime::{PluginError, PluginRuntime};
use crate::plugins::wasm::WasmHost;
use crate::telemetry::metrics::PluginLabels;
use crate::twin::{PropertyId, QualityReason};
pub use reload::RELOAD_DEBOUNCE;
use reload::{Check, Reloader, fingerprint, watch};
use run::Runner;
pub use run::{
    DerivedVerdict, PLUGIN_SUBSCRIBER_CAPACITY, ProposalVerdict, check_derived, check_proposal,
};

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

/// The running plugins, for reloads.
#[derive(Debug, Clone, Default)]
pub struct PluginHandles {
    checks: Arc<Vec<(String, mpsc::Sender<Check>)>>,
}

impl PluginHandles {
    /// Looks at every plugin's file (a SIGHUP): a changed file is compiled off the hot path,
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

    /// Clears plugin `name`'s quarantine (the OPC UA method `ClearQuarantine`): its file is
    /// looked at as on SIGHUP. Answers whether it was quarantined (or its file had changed) and
    /// now starts again; `false` for an unknown plugin or one that was not quarantined.
    pub async fn clear_quarantine(&self, name: &str) -> bool {
        let Some((_, checks)) = self.checks.iter().find(|(n, _)| n == name) else {
            return false;
        };
        let (reply, outcome) = oneshot::channel();
        let check = Check {
            retry: true,
            reply: Some(reply),
        };
        if checks.send(check).await.is_err() {
            return false;
        }
        matches!(
            outcome.await,
            Ok(ReloadOutcome::Retried | ReloadOutcome::Swapped)
        )
    }
}

/// The properties of plugin `name`'s status object (`state`, `last_fault`, `failures`).
fn status_properties(name: &str, model: &crate::twin::TwinModel) -> Option<[PropertyId; 3]> {
    let path = crate::twin::spec::plugin_status_path(name);
    Some([
        model.property_of(&path, "state")?,
        model.property_of(&path, "last_fault")?,
        model.property_of(&path, "failures")?,
    ])
}

/// Starts every plugin of `plugins` under the context's supervisor, with a watcher that
/// hot-reloads a plugin when its file changes. `assets` are the configured assets (their bindings
/// name the plugin that computes a property); relative plugin files resolve against `base_dir`.
/// Wasm components run on one shared [`WasmHost`], native libraries on a [`NativeHost`] whose
/// copies go to `<state_dir>/native/`. A plugin whose file cannot be loaded is logged and its
/// derived properties marked bad; the daemon runs on, and the plugin starts when a loadable file
/// appears.
///
/// Errors: the wasm engine cannot be created.
pub fn spawn_all(
    plugins: &[PluginConfig],
    assets: &[AssetConfig],
    base_dir: &Path,
    control: &ControlHandle,
    context: ComponentContext<'_>,
) -> anyhow::Result<PluginHandles> {
    let wasm = plugins
        .iter()
        .any(|p| p.kind == PluginKind::Wasm)
        // Fuel metering slows every plugin down, so the engine meters only when one asks for it.
        .then(|| WasmHost::new(plugins.iter().any(|p| p.fuel.is_some())))
        .transpose()?;
    let native = NativeHost::new(context.state_dir);
    let mut checks = Vec::new();
    let mut watched = Vec::new();
    for plugin in plugins {
        let file = base_dir.join(&plugin.file);
        let file = std::path::absolute(&file).unwrap_or(file);
        let check = match (&wasm, plugin.kind) {
            (Some(wasm), PluginKind::Wasm) => {
                spawn_one(wasm, plugin, assets, &file, control, context)
            }
            _ => {
                tracing::info!(
                    plugin = %plugin.name,
                    file = %file.display(),
                    "Native plugin: runs unsandboxed inside the daemon, with its rights (trusted code only)"
                );
                spawn_one(&native, plugin, assets, &file, control, context)
            }
        };
        watched.push((file, check.clone()));
        checks.push((plugin.name.clone(), check));
    }
    watch(&watched, context.supervisor);
    Ok(PluginHandles {
        checks: Arc::new(checks),
    })
}

/// Starts `plugin` (its file `file`) on `runtime`: its reloader and its runner. Returns where
/// to ask the reloader to look at the file.
fn spawn_one<R: PluginRuntime>(
    runtime: &R,
    plugin: &PluginConfig,
    assets: &[AssetConfig],
    file: &Path,
    control: &ControlHandle,
    context: ComponentContext<'_>,
) -> mpsc::Sender<Check> {
    let ComponentContext {
        twin,
        supervisor,
        metrics,
        ..
    } = context;
    let mut runner = Runner {
        config: plugin.clone(),
        init_config: plugin
            .config
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        resolved: resolve::resolve(plugin, assets, twin.model()),
        twin: Arc::clone(twin),
        control: control.clone(),
        metrics: metrics.clone(),
        labels: PluginLabels {
            plugin: plugin.name.clone(),
        },
        dropped: Default::default(),
        status: status_properties(&plugin.name, twin.model()),
        load_fault: None,
    };
    let loaded = std::fs::read(file)
        .map_err(|e| PluginError::Load(format!("{}: {e}", file.display())))
        .and_then(|bytes| Ok((fingerprint(&bytes), runtime.load(&bytes)?)));
    let (fingerprint, component) = match loaded {
        Ok((fingerprint, component)) => (Some(fingerprint), Some(component)),
        Err(error) => {
            events::LoadFailed {
                plugin: &plugin.name,
                error: &error,
            }
            .emit(metrics);
            runner.mark_outputs(QualityReason::PluginFailure);
            runner.controller_lost("could not be loaded");
            runner.load_fault = Some(error.to_string());
            (None, None)
        }
    };
    let (check_tx, check_rx) = mpsc::channel(4);
    let (swap_tx, swap_rx) = mpsc::channel(1);
    let reloader = Reloader {
        plugin: plugin.name.clone(),
        file: file.to_owned(),
        fingerprint,
        runtime: runtime.clone(),
        metrics: metrics.clone(),
    };
    supervisor.spawn(format!("plugin-reload:{}", plugin.name), move |token| {
        reloader.run(check_rx, swap_tx, token)
    });
    let runtime = runtime.clone();
    supervisor.spawn(format!("plugin:{}", plugin.name), move |token| {
        runner.run(runtime, component, swap_rx, token)
    });
    check_tx
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::control::ControlError;
    use crate::control::interlock::{InterlockSpec, Interlocks};
    use crate::plugins::runtime::{
        ChangeBatch, Limits, Outputs, PluginInstance, Properties, ProposalOutcome,
    };
    use crate::runtime::Supervisor;
    use crate::telemetry::Metrics;
    use crate::twin::{Quality, Twin, Value};

    /// A runtime of probe instances: with `panics`, every `on-changes` call panics on the host
    /// side (what a defect in the engine or in a host function looks like to the runner);
    /// without, every call derives its first owned property as 1.0, Good.
    #[derive(Debug, Clone)]
    struct ProbeRuntime {
        panics: bool,
    }

    struct ProbeInstance {
        panics: bool,
    }

    impl PluginRuntime for ProbeRuntime {
        type Component = ();
        type Instance = ProbeInstance;

        fn load(&self, _bytes: &[u8]) -> Result<(), PluginError> {
            Ok(())
        }

        fn instantiate(
            &self,
            _name: &str,
            _component: &(),
            _limits: Limits,
        ) -> Result<ProbeInstance, PluginError> {
            Ok(ProbeInstance {
                panics: self.panics,
            })
        }
    }

    impl PluginInstance for ProbeInstance {
        fn init(
            &mut self,
            _now_ms: i64,
            _config: &str,
            _properties: &Properties,
        ) -> Result<Result<(), String>, PluginError> {
            Ok(Ok(()))
        }

        fn on_changes(
            &mut self,
            _now_ms: i64,
            _batch: &Arc<ChangeBatch>,
            _outcomes: &Arc<[ProposalOutcome]>,
            outputs: &mut Outputs,
        ) -> Result<(), PluginError> {
            assert!(
                !self.panics,
                "a deliberate host-side panic in a plugin call"
            );
            *outputs = Outputs::default();
            outputs.values.indices.push(0);
            outputs.values.values.push(1.0);
            outputs
                .values
                .qualities
                .push(crate::plugins::contract::quality_byte(
                    crate::plugins::contract::Quality::Good,
                ));
            Ok(())
        }

        fn on_tick(
            &mut self,
            _now_ms: i64,
            _outcomes: &Arc<[ProposalOutcome]>,
            _outputs: &mut Outputs,
        ) -> Result<(), PluginError> {
            unreachable!("the probe has no tick")
        }

        fn fuel_used(&self) -> u64 {
            0
        }

        fn log_dropped(&mut self) -> u64 {
            0
        }
    }

    /// The probe plugin `p` deriving `site/probe/derived` from `site/probe/input` (quarantined
    /// after two faults), an interlock over the derived value guarding `site/probe/setpoint`,
    /// and a twin of it with the input read once.
    fn probe() -> (crate::config::Config, Arc<Twin>, tempfile::TempDir) {
        // The file only has to exist for validation: this runtime never reads it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let config = crate::config::parse(
            &dir.path().join("test.toml"),
            r#"
[[sources.modbus]]
id = "plc"
tcp = "127.0.0.1:502"

[[types]]
name = "Probe"
properties = [
  { name = "input", data_type = "float" },
  { name = "derived", data_type = "float" },
  { name = "setpoint", data_type = "float", access = "read-write" },
]

[[assets]]
path = "site/probe"
type = "Probe"
source = "plc"
bindings.input = { table = "holding", address = 0 }
bindings.derived = { plugin = "p" }
bindings.setpoint = { table = "holding", address = 1 }

[[plugins]]
name = "p"
file = "p.wasm"
subscribe = [{ assets = "site/probe", properties = ["input"] }]
quarantine_after = 2

[[control.interlocks]]
name = "derived-low"
applies_to = ["site/probe/setpoint"]
condition = "not (site/probe/derived > 5)"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let twin = Arc::new(Twin::new(Arc::new(config.twin_model()), &config.twin));
        let input = twin.model().property_by_path("site/probe/input").unwrap();
        twin.apply(&[crate::twin::Reading::value(input, Value::Float(2.0), None)]);
        (config, twin, dir)
    }

    /// Starts plugin `p` of `config` on `runtime` under `supervisor`.
    fn run_probe(
        config: &crate::config::Config,
        twin: &Arc<Twin>,
        runtime: ProbeRuntime,
        metrics: &Metrics,
        supervisor: &Supervisor,
    ) {
        let plugin = &config.plugins[0];
        let runner = Runner {
            config: plugin.clone(),
            init_config: String::new(),
            resolved: resolve::resolve(plugin, &config.assets, twin.model()),
            twin: Arc::clone(twin),
            control: ControlHandle::detached(),
            metrics: metrics.clone(),
            labels: PluginLabels { plugin: "p".into() },
            dropped: Default::default(),
            status: status_properties("p", twin.model()),
            load_fault: None,
        };
        let (swaps, swap_rx) = mpsc::channel(1);
        supervisor.spawn("plugin:p", move |token| async move {
            let _swaps = swaps;
            runner.run(runtime, Some(()), swap_rx, token).await
        });
    }

    /// The interlocks of `config`, and whether the one over the derived value holds now.
    fn interlock_holds(config: &crate::config::Config, twin: &Twin) -> Result<(), ControlError> {
        let specs = config.control.interlocks.iter().map(|i| InterlockSpec {
            name: &i.name,
            applies_to: &i.applies_to,
            condition: &i.condition,
        });
        let interlocks = Interlocks::compile(specs, twin.model()).unwrap();
        let setpoint = twin
            .model()
            .property_by_path("site/probe/setpoint")
            .unwrap();
        interlocks.check(twin, setpoint)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interlock_over_a_plugins_output_holds_writes_once_the_plugin_stops() {
        let (config, twin, _dir) = probe();
        let (metrics, supervisor) = (Metrics::new(), Supervisor::new());
        run_probe(
            &config,
            &twin,
            ProbeRuntime { panics: false },
            &metrics,
            &supervisor,
        );
        let derived = twin.model().property_by_path("site/probe/derived").unwrap();
        let mut subscription = twin.subscribe(crate::twin::Filter::Properties(vec![derived]), 16);
        let mut changes = Vec::new();
        while !twin.sample(derived).quality.is_good() {
            subscription.recv(&mut changes).await;
        }
        interlock_holds(&config, &twin).expect("the plugin runs: the interlock holds");
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        assert_eq!(
            twin.sample(derived).quality,
            Quality::bad(QualityReason::PluginFailure)
        );
        let held = interlock_holds(&config, &twin).unwrap_err();
        assert!(held.to_string().contains("not Good"), "{held}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_panic_in_a_plugin_call_is_a_plugin_fault_not_the_daemons_end() {
        let (config, twin, _dir) = probe();
        let (metrics, supervisor) = (Metrics::new(), Supervisor::new());
        run_probe(
            &config,
            &twin,
            ProbeRuntime { panics: true },
            &metrics,
            &supervisor,
        );
        // A fresh instance is fed the current input at once: every call panics, each panic is
        // counted as the plugin's fault, and after two the plugin is quarantined.
        let quarantined = r#"twinloom_plugin_quarantined{plugin="p"} 1"#;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !metrics.encode().contains(quarantined) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never quarantined:\n{}",
                metrics.encode()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"twinloom_plugin_failures_total{plugin="p",kind="host_panic"} 2"#),
            "{text}"
        );
        let derived = twin.model().property_by_path("site/probe/derived").unwrap();
        assert_eq!(
            twin.sample(derived).quality,
            Quality::bad(QualityReason::PluginFailure)
        );
        assert_eq!(twin.sample(derived).value, None::<Value>);
        // An interlock over the quarantined plugin's output holds the writes it guards, however
        // its condition is written (`not (derived > 5)` would be true of an unknown value).
        let held = interlock_holds(&config, &twin).unwrap_err();
        assert!(held.to_string().contains("not Good"), "{held}");
        // The daemon runs on: no task failed, nothing was cancelled.
        assert_eq!(supervisor.fatal_error(), None);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
    }
}
