//! The typed configuration: what each TOML section deserializes into.
//!
//! Every struct denies unknown fields; durations are humantime strings (`"250ms"`, `"5s"`).
//! Protocol-specific shapes (a Modbus source, a Modbus binding) live beside their protocol in
//! `sources::*::config`; this module holds the protocol-neutral parts.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::sources::SourceConfig;

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
    /// `[[sources.<kind>]]`: connections to PLCs, in file order.
    pub sources: Vec<SourceConfig>,
    /// `[[types]]`: asset types.
    pub types: Vec<TypeConfig>,
    /// `[[assets]]`: asset instances.
    pub assets: Vec<AssetConfig>,
    /// `[[plugins]]`: plugin instances.
    pub plugins: Vec<PluginConfig>,
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

/// `[twin]`: how the twin treats values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// A property whose source has delivered nothing for this many poll intervals becomes
    /// `Uncertain` (stale), keeping its last value. Range 2..=1000, default 3.
    #[serde(default = "default_stale_after_polls")]
    pub stale_after_polls: u32,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            stale_after_polls: default_stale_after_polls(),
        }
    }
}

fn default_stale_after_polls() -> u32 {
    3
}

pub use crate::northbound::opcua_server::config::{OpcUaServerConfig, Role, UserConfig};

pub use crate::northbound::admin_http::AdminHttpConfig;

/// `[[types]]`: an asset type, shared by every asset of that kind (an OPC UA ObjectType).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    /// Type name, unique, e.g. `HydraulicPress`.
    pub name: String,
    /// Free text shown to OPC UA clients.
    #[serde(default)]
    pub description: Option<String>,
    /// The properties every asset of this type has.
    pub properties: Vec<PropertyConfig>,
}

/// One property declared by an asset type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyConfig {
    /// Property name, unique within the type, e.g. `oil_temperature`.
    pub name: String,
    /// Data type of the value in engineering units.
    pub data_type: DataType,
    /// Engineering unit: a UNECE code (`CEL`) or symbol (`°C`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Free text shown to OPC UA clients.
    #[serde(default)]
    pub description: Option<String>,
    /// Engineering-unit range `[low, high]` (OPC UA EURange); values outside it are marked out of range.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// Change filter: `{ absolute = 0.2 }` (engineering units) or `{ percent = 1.0 }` (of the range).
    #[serde(default)]
    pub deadband: Option<DeadbandConfig>,
    /// `read-only` (default) or `read-write` (a setpoint clients and plugins may propose to write).
    #[serde(default)]
    pub access: Access,
    /// Write limits `[low, high]` in engineering units; writes outside are refused by the control gate.
    #[serde(default)]
    pub limits: Option<[f64; 2]>,
}

/// The data type of a property's engineering-unit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// true / false.
    Bool,
    /// Signed 64-bit integer.
    Integer,
    /// Unsigned 64-bit integer.
    Unsigned,
    /// 64-bit IEEE 754 float.
    Float,
    /// UTF-8 text.
    String,
}

impl DataType {
    /// Whether ranges, deadbands and scaling apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Unsigned | Self::Float)
    }
}

/// Who may change a property.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Process value: read only.
    #[default]
    ReadOnly,
    /// Setpoint: writes go through the control gate.
    ReadWrite,
}

/// Deadband as written in the config (OPC UA Part 8 §6.2 DeadbandType Absolute / Percent).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeadbandConfig {
    /// A change is published when it exceeds this many engineering units.
    Absolute(f64),
    /// A change is published when it exceeds this percentage (0..=100) of the EU range.
    Percent(f64),
}

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
    pub bindings: IndexMap<String, crate::sources::BindingConfig>,
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
