//! Sources: the only code that speaks field protocols.
//!
//! Each protocol is one module with one typed config. [`SourceConfig`] is the single registry of
//! source kinds; adding a protocol means adding a variant here and a module beside `modbus`.
//! A running source turns device data into [`crate::twin::Reading`]s and hands them to the twin;
//! it reconnects on its own (see [`crate::runtime::backoff`]) and never stalls other sources.

pub mod modbus;

use std::time::Duration;

use crate::twin::model::Scaling;
use modbus::config::{ModbusBindingConfig, ModbusSourceConfig};

/// The kinds of source, as named under `[sources]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `[[sources.modbus]]`: Modbus TCP, RTU or RTU-over-TCP.
    Modbus,
}

impl SourceKind {
    /// Every kind.
    pub const ALL: [Self; 1] = [Self::Modbus];

    /// The config key under `[sources]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Modbus => "modbus",
        }
    }

    /// The kind named by a config key.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.key() == key)
    }
}

/// One configured source, of any kind.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A Modbus connection.
    Modbus(ModbusSourceConfig),
}

impl SourceConfig {
    /// The source id.
    pub fn id(&self) -> &str {
        match self {
            Self::Modbus(c) => &c.id,
        }
    }

    /// The kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Modbus(_) => SourceKind::Modbus,
        }
    }

    /// Device ids behind this source (a source with one device lists it under the source's id).
    pub fn device_ids(&self) -> Vec<String> {
        match self {
            Self::Modbus(c) => c.device_list().into_iter().map(|d| d.id).collect(),
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
        }
    }

    /// The poll interval of bindings that set none.
    pub fn default_poll(&self) -> Duration {
        match self {
            Self::Modbus(c) => c.poll,
        }
    }
}

/// Where one property's value comes from, in its source's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingConfig {
    /// A Modbus register, register bit or coil.
    Modbus(ModbusBindingConfig),
}

impl BindingConfig {
    /// Raw → engineering-unit scaling.
    pub fn scaling(&self) -> Scaling {
        match self {
            Self::Modbus(b) => Scaling {
                scale: b.scale.unwrap_or(1.0),
                offset: b.offset.unwrap_or(0.0),
            },
        }
    }

    /// The binding's own poll interval, if it sets one.
    pub fn poll(&self) -> Option<Duration> {
        match self {
            Self::Modbus(b) => b.poll,
        }
    }
}

/// Spawns the running form of `source` under `supervisor`, feeding `twin`.
///
/// Errors: the source cannot be built from its (validated) config.
pub fn spawn(
    source: &SourceConfig,
    config: &crate::config::Config,
    twin: &std::sync::Arc<crate::twin::Twin>,
    supervisor: &crate::runtime::Supervisor,
) -> anyhow::Result<()> {
    match source {
        SourceConfig::Modbus(modbus) => modbus::spawn(modbus, config, twin, supervisor),
    }
}
