//! Metrics: one registry, families with bounded label sets, exposed in Prometheus text format.
//!
//! Label values come from the configuration (source and device ids) or from fixed enums (error
//! kinds), never from data, so every family has a bounded number of series.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-source series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Source id from the config.
    pub source: String,
}

/// OPC UA server metrics (each source kind registers its own families: see [`MetricSet`]).
#[derive(Debug, Clone, Default)]
pub struct OpcUaMetrics {
    /// Session activations refused by the server (unknown user, wrong password, anonymous when disabled).
    pub failed_logins: Counter,
}

/// A component's own metric families (a source kind's, from its `events.rs`), registered in the
/// daemon's registry the first time the component asks for them ([`Metrics::set`]), so the
/// families of a kind live beside its events and the registry names no component.
pub trait MetricSet: Clone + Send + Sync + 'static {
    /// Makes the families and registers them in `registry`.
    fn register(registry: &mut Registry) -> Self;
}

/// Labels of the control gate's decision series (bounded: fixed sets of values).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `opcua` or `plugin`.
    pub origin: String,
    /// The deciding rule: `accepted`, `clamped-to-bounds`, or the refusing rule's name.
    pub rule: String,
    /// `written`, `device-error`, `refused`, `shadow`.
    pub outcome: String,
}

/// Control gate metrics.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    /// Decisions by origin kind, rule and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds from a write's intent on disk to the device's answer.
    pub write_latency: Histogram,
    /// 1 while the plant is armed (plugins may write).
    pub armed: Gauge,
    /// Seconds per audit-log group commit (write, `fdatasync`, head).
    pub audit_commit: Histogram,
    /// Setpoints seen changed by hand (not by the gate): the rate rules count from each.
    pub changes_by_hand: Counter,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            write_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            armed: Gauge::default(),
            audit_commit: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            changes_by_hand: Counter::default(),
        }
    }
}

/// Labels of per-plugin series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin instance name from the config.
    pub plugin: String,
}

/// Labels of per-plugin failure series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailureLabels {
    /// Plugin instance name from the config.
    pub plugin: String,
    /// `trap`, `deadline`, `memory_cap`, `out_of_fuel`, `load`, `init_refused`.
    pub kind: String,
}

/// Labels of per-plugin reload series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginReloadLabels {
    /// Plugin instance name from the config.
    pub plugin: String,
    /// `swapped` (the new version runs) or `refused` (it did not load or initialise; the
    /// running version stays).
    pub outcome: String,
}

/// Labels of the per-plugin state series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginStateLabels {
    /// Plugin instance name from the config.
    pub plugin: String,
    /// `unloaded`, `running`, `backing-off` or `quarantined`.
    pub state: String,
}

/// Plugin metrics.
#[derive(Debug, Clone, Default)]
pub struct PluginMetrics {
    /// Calls into plugins (init, on-changes, on-tick).
    pub calls: Family<PluginLabels, Counter>,
    /// Seconds the plugin's calls that came back ran on the blocking pool (with `calls`: the
    /// mean call time the web view shows).
    pub call_seconds: Family<PluginLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Failed calls by kind.
    pub failures: Family<PluginFailureLabels, Counter>,
    /// Instances re-created after a failure.
    pub restarts: Family<PluginLabels, Counter>,
    /// 1 while quarantined.
    pub quarantined: Family<PluginLabels, Gauge>,
    /// Fuel used (≈ wasm instructions).
    pub fuel: Family<PluginLabels, Counter>,
    /// Outputs rejected (unknown property, not finite).
    pub rejected_outputs: Family<PluginLabels, Counter>,
    /// Hot reloads of a changed plugin file, by outcome.
    pub reloads: Family<PluginReloadLabels, Counter>,
    /// Log lines (the `log` import, stdout, stderr) dropped by the plugin's rate limit.
    pub log_lines_dropped: Family<PluginLabels, Counter>,
    /// 1 for the state the plugin is in, 0 for the others (a state set).
    pub state: Family<PluginStateLabels, Gauge>,
}

/// Every metric of the daemon.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Plugins.
    pub plugins: PluginMetrics,
    /// The control gate.
    pub control: ControlMetrics,
    registry: Arc<Mutex<Registry>>,
    /// The components' own families, by type ([`MetricSet`]).
    sets: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
    /// OPC UA server.
    pub opcua: OpcUaMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twinloom");
        let opcua = OpcUaMetrics::default();
        let sub = registry.sub_registry_with_prefix("opcua");
        sub.register(
            "failed_logins",
            "OPC UA session activations refused",
            opcua.failed_logins.clone(),
        );
        let control = ControlMetrics::default();
        let sub = registry.sub_registry_with_prefix("control");
        sub.register(
            "decisions",
            "Write decisions by origin kind, deciding rule and outcome",
            control.decisions.clone(),
        );
        sub.register(
            "write_latency_seconds",
            "From a write's intent on disk to the device's answer",
            control.write_latency.clone(),
        );
        sub.register(
            "armed",
            "1 while the plant is armed (plugins may write)",
            control.armed.clone(),
        );
        sub.register(
            "audit_commit_seconds",
            "One audit-log group commit: write, fdatasync, head",
            control.audit_commit.clone(),
        );
        sub.register(
            "changes_by_hand",
            "Setpoints seen changed by hand, not by the gate (the rate rules count from each)",
            control.changes_by_hand.clone(),
        );
        let plugins = PluginMetrics::default();
        let sub = registry.sub_registry_with_prefix("plugin");
        sub.register("calls", "Calls into plugins", plugins.calls.clone());
        sub.register(
            "call_seconds",
            "Time plugin calls that came back spent running, seconds",
            plugins.call_seconds.clone(),
        );
        sub.register(
            "failures",
            "Failed plugin calls, by kind",
            plugins.failures.clone(),
        );
        sub.register(
            "restarts",
            "Plugin instances re-created after a failure",
            plugins.restarts.clone(),
        );
        sub.register(
            "quarantined",
            "1 while a plugin is quarantined",
            plugins.quarantined.clone(),
        );
        sub.register(
            "fuel",
            "Fuel used by plugin calls (about one per wasm instruction)",
            plugins.fuel.clone(),
        );
        sub.register(
            "rejected_outputs",
            "Plugin outputs rejected (a derived value for an index outside the owned list or not finite, a proposal for an index outside the writable list or of the wrong type)",
            plugins.rejected_outputs.clone(),
        );
        sub.register(
            "reloads",
            "Hot reloads of a changed plugin file, by outcome (swapped, refused)",
            plugins.reloads.clone(),
        );
        sub.register(
            "state",
            "1 for the state a plugin is in (unloaded, running, backing-off, quarantined), 0 for the others",
            plugins.state.clone(),
        );
        sub.register(
            "log_lines_dropped",
            "Plugin log lines (log import, stdout, stderr) dropped by the per-plugin rate limit",
            plugins.log_lines_dropped.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            sets: Arc::default(),
            opcua,
            plugins,
            control,
        }
    }

    /// The families of `S`, registered on first use; every later call gets clones of the same
    /// families (a source restarted on reload counts on in the same series).
    pub fn set<S: MetricSet>(&self) -> S {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = sets
            .get(&TypeId::of::<S>())
            .and_then(|set| set.downcast_ref::<S>())
        {
            return set.clone();
        }
        let set = S::register(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()));
        sets.insert(TypeId::of::<S>(), Box::new(set.clone()));
        set
    }

    /// Adds a collector read at every scrape.
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(collector);
    }

    /// Adds the twin's counters (read at every scrape from `Twin::stats`).
    pub fn register_twin(&self, twin: &std::sync::Arc<crate::twin::Twin>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(Box::new(TwinCollector(std::sync::Arc::clone(twin))));
    }

    /// Everything in Prometheus text exposition format (with the OpenMetrics `# EOF` trailer).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Exposes `Twin::stats` as counters and gauges at scrape time.
#[derive(Debug)]
struct TwinCollector(std::sync::Arc<crate::twin::Twin>);

impl prometheus_client::collector::Collector for TwinCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let (good, uncertain, bad) = self.0.quality_counts();
        encode_counters(
            &mut encoder,
            &[
                (
                    "twin_readings",
                    "Readings applied to the twin",
                    stats.readings,
                ),
                (
                    "twin_updates",
                    "Changes published by the twin (value beyond deadband, or quality changed)",
                    stats.changes,
                ),
                (
                    "twin_filtered",
                    "Readings that changed nothing (same value or within the deadband)",
                    stats.filtered,
                ),
                (
                    "twin_coalesced",
                    "Changes coalesced away for slow subscribers",
                    stats.coalesced,
                ),
                (
                    "twin_late_samples",
                    "Values older (by source timestamp) than the one the twin held: to the change log only, never the current value",
                    stats.late,
                ),
            ],
        )?;
        encode_gauges(
            &mut encoder,
            &[
                (
                    "twin_subscribers",
                    "Live subscriptions to the twin's changes",
                    stats.subscribers as i64,
                ),
                (
                    "twin_properties_good",
                    "Properties with good quality",
                    good as i64,
                ),
                (
                    "twin_properties_uncertain",
                    "Properties with uncertain quality",
                    uncertain as i64,
                ),
                (
                    "twin_properties_bad",
                    "Properties with bad quality",
                    bad as i64,
                ),
            ],
        )
    }
}

/// Encodes `(name, help, value)` triples as counters, for collectors read at scrape time.
pub fn encode_counters(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    counters: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    for (name, help, value) in counters {
        let counter = prometheus_client::metrics::counter::ConstCounter::new(*value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}

/// Encodes one counter family `name` with one label `label`, a `(label value, count)` pair per
/// series, for collectors read at scrape time.
pub fn encode_labelled_counters(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    counters: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::counter::ConstCounter;
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, count) in counters {
        let labels = [(label, *value)];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes `(name, help, value)` triples as gauges, for collectors read at scrape time.
pub fn encode_gauges(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    gauges: &[(&str, &str, i64)],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    for (name, help, value) in gauges {
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(*value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}
