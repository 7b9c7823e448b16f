//! The registry of source kinds: `[[sources.<kind>]]` sections and the bindings of asset
//! properties, in each kind's terms, one module per kind (`modbus`, `opcua`).
//!
//! Adding a protocol adds its module beside `modbus.rs` (a section type implementing
//! [`SourceSection`], a binding type implementing [`BindingSection`]), a variant in each of the
//! three enums below with its arm in their dispatch functions (all in this file), and its running
//! part under `crate::sources` with one line in `crate::sources::spawn_one`. Nothing else
//! dispatches over kinds: loading asks [`SourceKind`] to parse, validation asks the sections.

pub mod modbus;
pub mod opcua;

use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::DeValue;

use super::Loader;
use super::diagnostic::{KeyPath, Problem};
use super::model::Config;
use crate::twin::model::Scaling;
use crate::twin::spec::PropertyConfig;
use modbus::{ModbusBindingConfig, ModbusSourceConfig};
use opcua::{OpcUaBindingConfig, OpcUaSourceConfig};

/// The kinds of source, as named under `[sources]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `[[sources.modbus]]`: Modbus TCP, RTU or RTU-over-TCP.
    Modbus,
    /// `[[sources.opcua]]`: an OPC UA server, by subscription.
    OpcUa,
}

impl SourceKind {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::Modbus, Self::OpcUa];

    /// The config key under `[sources]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Modbus => "modbus",
            Self::OpcUa => "opcua",
        }
    }

    /// The kind named by a config key.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.key() == key)
    }

    /// Parses the `[[sources.<kind>]]` array of this kind (the shape pass): every entry that
    /// parses, with its key path, and the id of every entry that did not (diagnostics go to
    /// `loader`).
    pub(super) fn parse_sections(
        self,
        loader: &mut Loader<'_, '_>,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) -> (Vec<(SourceConfig, KeyPath)>, Vec<String>) {
        fn of<T: DeserializeOwned>(
            loader: &mut Loader<'_, '_>,
            path: &KeyPath,
            value: &Spanned<DeValue<'_>>,
            wrap: fn(T) -> SourceConfig,
        ) -> (Vec<(SourceConfig, KeyPath)>, Vec<String>) {
            let (parsed, broken) = loader.array::<T>(path, value, "id");
            let parsed = parsed.into_iter().map(|(s, p)| (wrap(s), p)).collect();
            (parsed, broken)
        }
        match self {
            Self::Modbus => of(loader, path, value, SourceConfig::Modbus),
            Self::OpcUa => of(loader, path, value, SourceConfig::OpcUa),
        }
    }

    /// Parses one binding of an asset served by a source of this kind (the shape pass); `None`
    /// when it does not parse (diagnostics go to `loader`).
    pub(super) fn parse_binding(
        self,
        loader: &mut Loader<'_, '_>,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<BindingConfig> {
        match self {
            Self::Modbus => loader.de(path, value).map(BindingConfig::Modbus),
            Self::OpcUa => loader.de(path, value).map(BindingConfig::OpcUa),
        }
    }
}

/// One configured source, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// A Modbus connection.
    Modbus(ModbusSourceConfig),
    /// An OPC UA server.
    OpcUa(OpcUaSourceConfig),
}

/// What every kind of `[[sources.<kind>]]` section says of itself. Each kind implements it beside
/// its section type, so the enums below dispatch in one place ([`SourceConfig::section`]).
pub trait SourceSection {
    /// The source id.
    fn id(&self) -> &str;
    /// Device ids behind this source (a source with one device lists it under the source's id).
    fn device_ids(&self) -> Vec<String>;
    /// Exclusive local resources this source needs (serial ports), for "claimed twice" checks:
    /// (key, resource).
    fn claims(&self) -> Vec<(&'static str, String)>;
    /// The poll (or sampling) interval of bindings that set none.
    fn default_poll(&self) -> Duration;
    /// Checks the section's meaning, pushing every problem found onto `out`.
    fn validate(&self, path: &KeyPath, out: &mut Vec<Problem>);
    /// Checks what only the whole set of this source's bindings can show (two read-write
    /// properties writing one register), pushing every problem found onto `out`; `path` is
    /// the source's key path. Nothing to check by default.
    fn validate_bindings(&self, path: &KeyPath, bindings: &[Bound<'_>], out: &mut Vec<Problem>) {
        let _ = (path, bindings, out);
    }
}

/// One binding of a source, as [`SourceSection::validate_bindings`] sees it.
#[derive(Debug, Clone)]
pub struct Bound<'c> {
    /// The binding's key path (`assets[i].bindings.<property>`).
    pub path: KeyPath,
    /// The binding.
    pub binding: &'c BindingConfig,
    /// The property is `access = "read-write"`: the control gate writes through this binding.
    pub writable: bool,
    /// The asset's `device`, when it names one.
    pub device: Option<&'c str>,
}

/// What every kind of binding says of itself (see [`SourceSection`]).
pub trait BindingSection {
    /// Raw → engineering-unit scaling.
    fn scaling(&self) -> Scaling;
    /// The binding's own poll interval, if it sets one.
    fn poll(&self) -> Option<Duration>;
    /// How often the source refreshes this binding even when its value does not change, for
    /// stale detection: a polled binding's poll interval (or `default`); `None` for subscribed
    /// bindings, which hear only of changes (their liveness is the subscription's keep-alive), and
    /// for derived values.
    fn refresh_interval(&self, default: Duration) -> Option<Duration>;
    /// Checks the binding's meaning for `property` (its declaration in the asset's type) against
    /// the whole `config`, pushing every problem found onto `out`; `path` is the binding's key
    /// path.
    fn validate(
        &self,
        property: &PropertyConfig,
        config: &Config,
        path: &KeyPath,
        out: &mut Vec<Problem>,
    );
}

impl SourceConfig {
    /// The section, whatever its kind: the one place that dispatches over source kinds.
    pub fn section(&self) -> &dyn SourceSection {
        match self {
            Self::Modbus(c) => c,
            Self::OpcUa(c) => c,
        }
    }

    /// The kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Modbus(_) => SourceKind::Modbus,
            Self::OpcUa(_) => SourceKind::OpcUa,
        }
    }

    /// The source id.
    pub fn id(&self) -> &str {
        self.section().id()
    }

    /// See [`SourceSection::device_ids`].
    pub fn device_ids(&self) -> Vec<String> {
        self.section().device_ids()
    }

    /// See [`SourceSection::claims`].
    pub fn claims(&self) -> Vec<(&'static str, String)> {
        self.section().claims()
    }

    /// See [`SourceSection::default_poll`].
    pub fn default_poll(&self) -> Duration {
        self.section().default_poll()
    }
}

/// Where one property's value comes from, in its source's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingConfig {
    /// A Modbus register, register bit or coil.
    Modbus(ModbusBindingConfig),
    /// An OPC UA variable.
    OpcUa(OpcUaBindingConfig),
    /// A derived value computed by a plugin.
    Plugin(PluginBindingConfig),
}

/// A property whose value a plugin computes: `{ plugin = "line1-oee" }`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBindingConfig {
    /// The plugin instance's name.
    pub plugin: String,
}

impl BindingConfig {
    /// The Modbus binding, when it is one.
    pub fn as_modbus(&self) -> Option<&ModbusBindingConfig> {
        match self {
            Self::Modbus(b) => Some(b),
            _ => None,
        }
    }

    /// The OPC UA binding, when it is one.
    pub fn as_opcua(&self) -> Option<&OpcUaBindingConfig> {
        match self {
            Self::OpcUa(b) => Some(b),
            _ => None,
        }
    }

    /// The binding, whatever its kind: the one place that dispatches over binding kinds.
    pub fn section(&self) -> &dyn BindingSection {
        match self {
            Self::Modbus(b) => b,
            Self::OpcUa(b) => b,
            Self::Plugin(b) => b,
        }
    }

    /// See [`BindingSection::scaling`].
    pub fn scaling(&self) -> Scaling {
        self.section().scaling()
    }

    /// See [`BindingSection::poll`].
    pub fn poll(&self) -> Option<Duration> {
        self.section().poll()
    }

    /// See [`BindingSection::refresh_interval`].
    pub fn refresh_interval(&self, default: Duration) -> Option<Duration> {
        self.section().refresh_interval(default)
    }

    /// See [`BindingSection::validate`].
    pub fn validate(
        &self,
        property: &PropertyConfig,
        config: &Config,
        path: &KeyPath,
        out: &mut Vec<Problem>,
    ) {
        self.section().validate(property, config, path, out);
    }
}

impl BindingSection for PluginBindingConfig {
    fn scaling(&self) -> Scaling {
        Scaling::IDENTITY
    }

    fn poll(&self) -> Option<Duration> {
        None
    }

    fn refresh_interval(&self, _default: Duration) -> Option<Duration> {
        None
    }

    fn validate(
        &self,
        _property: &PropertyConfig,
        config: &Config,
        path: &KeyPath,
        out: &mut Vec<Problem>,
    ) {
        if !config.plugins.iter().any(|p| p.name == self.plugin) {
            out.push(Problem::new(
                path.key("plugin"),
                format!("unknown plugin `{}`", self.plugin),
            ));
        }
    }
}
