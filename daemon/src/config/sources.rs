//! The registry of source kinds: `[[sources.<kind>]]` sections and the bindings of asset
//! properties, in each kind's terms. Adding a protocol adds a variant here, its section module
//! beside this one, and its running part under `crate::sources`.

use std::time::Duration;

use super::modbus::{ModbusBindingConfig, ModbusSourceConfig};
use super::opcua_source::{OpcUaBindingConfig, OpcUaSourceConfig};
use crate::twin::model::Scaling;

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
}

/// One configured source, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// A Modbus connection.
    Modbus(ModbusSourceConfig),
    /// An OPC UA server.
    OpcUa(OpcUaSourceConfig),
}

impl SourceConfig {
    /// The source id.
    pub fn id(&self) -> &str {
        match self {
            Self::Modbus(c) => &c.id,
            Self::OpcUa(c) => &c.id,
        }
    }

    /// The kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Modbus(_) => SourceKind::Modbus,
            Self::OpcUa(_) => SourceKind::OpcUa,
        }
    }

    /// Device ids behind this source (a source with one device lists it under the source's id).
    pub fn device_ids(&self) -> Vec<String> {
        match self {
            Self::Modbus(c) => c.device_list().into_iter().map(|d| d.id).collect(),
            Self::OpcUa(c) => vec![c.id.clone()],
        }
    }

    /// Exclusive local resources this source needs (serial ports), for "claimed twice" checks.
    pub fn claims(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Modbus(c) => c
                .rtu
                .iter()
                .map(|rtu| ("rtu.port", rtu.port.clone()))
                .collect(),
            Self::OpcUa(_) => Vec::new(),
        }
    }

    /// The poll interval of bindings that set none.
    pub fn default_poll(&self) -> Duration {
        match self {
            Self::Modbus(c) => c.poll,
            Self::OpcUa(c) => c.sampling_interval,
        }
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
    /// Raw → engineering-unit scaling.
    pub fn scaling(&self) -> Scaling {
        match self {
            Self::Modbus(b) => Scaling {
                scale: b.scale.unwrap_or(1.0),
                offset: b.offset.unwrap_or(0.0),
            },
            Self::OpcUa(b) => Scaling {
                scale: b.scale.unwrap_or(1.0),
                offset: b.offset.unwrap_or(0.0),
            },
            Self::Plugin(_) => Scaling::IDENTITY,
        }
    }

    /// The binding's own poll interval, if it sets one.
    pub fn poll(&self) -> Option<Duration> {
        match self {
            Self::Modbus(b) => b.poll,
            Self::OpcUa(b) => b.sampling_interval,
            Self::Plugin(_) => None,
        }
    }

    /// How often the source refreshes this binding even when its value does not change, for
    /// stale detection: a polled binding's poll interval (or `default`); `None` for subscribed
    /// bindings, which hear only of changes (their liveness is the subscription's keep-alive).
    pub fn refresh_interval(&self, default: Duration) -> Option<Duration> {
        match self {
            Self::Modbus(b) => Some(b.poll.unwrap_or(default)),
            Self::OpcUa(_) | Self::Plugin(_) => None,
        }
    }
}
