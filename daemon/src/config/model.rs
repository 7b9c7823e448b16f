//! The typed configuration: what each TOML section deserializes into.
//!
//! Every struct denies unknown fields; durations are humantime strings (`"250ms"`, `"5s"`).
//! Each component's section has its own module beside this one (`opcua_server`, `admin_http`,
//! and `sources/` for the registry of source kinds with one module per kind); the twin's
//! declarations (`[twin]`, `[[types]]`) are `crate::twin::spec`. This module holds the whole
//! file's shape and the protocol-neutral sections.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use super::sources::{BindingConfig, SourceConfig};

/// The whole configuration file after both validation passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from; relative paths inside resolve against its folder.
    pub file: PathBuf,
    /// `[daemon]`: process-wide settings.
    pub daemon: DaemonConfig,
    /// `[twin]`: twin behaviour.
    pub twin: TwinConfig,
    /// `[opcua_server]`: the northbound OPC UA server, when present.
    pub opcua_server: Option<OpcUaServerConfig>,
    /// `[admin_http]`: health and metrics endpoint, when present.
    pub admin_http: Option<AdminHttpConfig>,
    /// `[change_log]`: the change log, when present.
    pub change_log: Option<ChangeLogConfig>,
    /// `[history]`: the embedded historian, when present.
    pub history: Option<HistoryConfig>,
    /// `[northbound.*]`: northbound services configured under `[northbound]` (Sparkplug B).
    pub northbound: NorthboundConfig,
    /// `[[sources.<kind>]]`: connections to PLCs, in file order.
    pub sources: Vec<SourceConfig>,
    /// `[[types]]`: asset types.
    pub types: Vec<TypeConfig>,
    /// `[[assets]]`: asset instances.
    pub assets: Vec<AssetConfig>,
    /// `[[plugins]]`: plugin instances.
    pub plugins: Vec<PluginConfig>,
    /// `[control]`: the control gate's limits.
    pub control: ControlConfig,
}

/// `[control]`: limits of the control gate that hold for every property.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Writes the gate accepts per origin (an OPC UA user, a plugin) in any minute, 1 or more.
    /// Default 600.
    #[serde(default = "default_writes_per_minute")]
    pub max_writes_per_origin_per_minute: u32,
    /// Longest a device write may take; past it the write counts as timed out (whether the
    /// device took the value is then unknown until it is read back). Default 10 s.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Whether plugins may write from the start. Default false: after a (re)start the plant is
    /// disarmed and plugins' proposals are refused (`disarmed`) until it is armed.
    #[serde(default)]
    pub armed: bool,
    /// `[[control.interlocks]]`: conditions that must hold for writes to some properties.
    #[serde(default)]
    pub interlocks: Vec<InterlockConfig>,
    /// Free space the audit log's file system must keep for a record to be written (`"64MiB"`;
    /// binary or decimal units), at least 64 KiB. Below it the journal refuses, and so does the
    /// gate. The change log keeps twice it free on the same file system, so a filling disk stops
    /// the change log first. Lower it only for a small, dedicated state disk. Default 64 MiB.
    #[serde(default = "default_audit_reserve")]
    pub audit_reserve: bytesize::ByteSize,
}

/// Smallest `[control] audit_reserve`: room for a few hundred audit records.
pub const MIN_AUDIT_RESERVE: u64 = 64 * 1024;

fn default_audit_reserve() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            max_writes_per_origin_per_minute: default_writes_per_minute(),
            write_timeout: default_write_timeout(),
            armed: false,
            interlocks: Vec::new(),
            audit_reserve: default_audit_reserve(),
        }
    }
}

/// `[[control.interlocks]]`: an operational interlock (not a safety function: Twinloom is not
/// an IEC 61511 safety system). A write to any of `applies_to` is refused (rule `interlock`)
/// unless `condition` holds, checked when the write is decided and again just before it is
/// carried out; an input of the condition whose quality is not Good refuses too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterlockConfig {
    /// Name, unique among interlocks, shown in refusals and the audit log, e.g. `tank1-dry-run`.
    pub name: String,
    /// The read-write properties it guards, as `<asset path>/<property>`.
    pub applies_to: Vec<String>,
    /// A condition over twin properties (`crate::twin::condition`), e.g.
    /// `"tank1/level > 20 and pump1/running"`.
    pub condition: String,
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_writes_per_minute() -> u32 {
    600
}

/// `[daemon]`: logging and process behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Log filter in `tracing` EnvFilter syntax (`info`, `twinloom=debug,warn`). `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Log line format: `plain` (human) or `json` (one object per line, for journald or a collector).
    #[serde(default)]
    pub log_format: LogFormat,
    /// How long a graceful shutdown may take before remaining tasks are abandoned. Default 5 s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Folder for state the daemon writes (PKI, audit log). Default `/var/lib/twinloom`, or
    /// systemd's `$STATE_DIRECTORY` when set.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            log_level: default_log_level(),
            log_format: LogFormat::default(),
            shutdown_timeout: default_shutdown_timeout(),
            state_dir: None,
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

pub use super::admin_http::AdminHttpConfig;
pub use super::change_log::ChangeLogConfig;
pub use super::history::HistoryConfig;
pub use super::opcua_server::{OpcUaServerConfig, Role, UserConfig};
pub use super::sparkplug::NorthboundConfig;
/// The `[twin]` and `[[types]]` sections are the twin's own declarations; they are defined there.
pub use crate::twin::spec::{
    Access, DataType, DeadbandConfig, PropertyConfig, TwinConfig, TypeConfig,
};

/// `[[assets]]`: one asset instance.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetConfig {
    /// Hierarchical path, `/`-separated, e.g. `plant-a/line1/press1`.
    pub path: String,
    /// Name of its asset type.
    pub type_name: String,
    /// Id of the source that serves its bindings.
    pub source: Option<String>,
    /// Device id inside the source, needed when the source has more than one device.
    pub device: Option<String>,
    /// Free text shown to OPC UA clients.
    pub description: Option<String>,
    /// Where each property's value comes from, by property name, in file order.
    pub bindings: IndexMap<String, BindingConfig>,
}

/// The protocol-neutral fields of an `[[assets]]` entry; bindings are read once the source's kind is known.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssetHead {
    pub path: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "read separately once the source kind is known")]
    pub bindings: Option<serde::de::IgnoredAny>,
}

/// `[[plugins]]`: one plugin instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Instance name, unique, e.g. `line1-oee`. Derived properties name it in their binding
    /// (`{ plugin = "line1-oee" }`).
    pub name: String,
    /// `wasm` (sandboxed component, the default) or `native` (trusted shared library).
    #[serde(default)]
    pub kind: PluginKind,
    /// The component (`.wasm`) or library (`.so`) file; relative paths resolve against the config file's folder.
    pub file: PathBuf,
    /// Plugin-specific settings, handed to the plugin's `init` as TOML text.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Which twin properties the plugin receives: asset path patterns (`*` matches one path
    /// segment) and property names.
    #[serde(default)]
    pub subscribe: Vec<SubscribeConfig>,
    /// The setpoints the plugin may propose writes to: full property paths
    /// (`<asset path>/<property>`) of read-write properties bound to a source, e.g.
    /// `["tank1/heater_power"]`. The plugin addresses them by their index in this list; it can
    /// propose to nothing else.
    #[serde(default)]
    pub writes: Vec<String>,
    /// `live` (the default: proposals go to the gate and, while the plant is armed, to the
    /// devices), `shadow` (decided and audited, nothing written) or `off` (proposals refused at
    /// once).
    #[serde(default)]
    pub mode: PluginMode,
    /// Shortest time between two `on-changes` calls; changes in between are batched. Default 1 s.
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// Period of `on-tick` calls; none when absent.
    #[serde(default, with = "humantime_serde")]
    pub tick: Option<Duration>,
    /// Memory cap of the instance in MiB, 1..=4096. Default 64.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall-clock time one call may take. Default 100 ms.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// Fuel (≈ wasm instructions) one call may use; unmetered when absent.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Consecutive failures (trap, deadline, memory cap, refused init) after which the instance is
    /// quarantined: no longer re-created until the configuration is reloaded. Default 5.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
}

fn default_min_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_memory_mib() -> u32 {
    64
}
fn default_deadline() -> Duration {
    Duration::from_millis(100)
}
fn default_quarantine_after() -> u32 {
    5
}

/// What becomes of a plugin's proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginMode {
    /// To the gate and, while armed, to the devices.
    #[default]
    Live,
    /// Decided and audited, never written.
    Shadow,
    /// Refused at once (`mode-off`).
    Off,
}

/// One subscription of a plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeConfig {
    /// Asset path pattern; `*` matches one segment (`plant-a/*/filler`).
    pub assets: String,
    /// Property names of those assets.
    pub properties: Vec<String>,
}

impl SubscribeConfig {
    /// Whether `asset_path` matches the pattern (segment by segment; `*` matches any one segment).
    pub fn matches(&self, asset_path: &str) -> bool {
        let pattern: Vec<&str> = self.assets.split('/').collect();
        let path: Vec<&str> = asset_path.split('/').collect();
        pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
    }
}

/// How a plugin runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// WebAssembly component, sandboxed.
    #[default]
    Wasm,
    /// Native shared library, trusted and unsandboxed.
    Native,
}
