//! Sources: the only code that speaks field protocols.
//!
//! Each protocol is one module with one typed config. [`SourceConfig`] is the single registry of
//! source kinds; adding a protocol means adding a variant here and a module beside `modbus`.
//! A running source turns device data into [`crate::twin::Reading`]s and hands them to the twin;
//! it reconnects on its own (see [`crate::runtime::backoff`]) and never stalls other sources.

pub mod modbus;
pub mod opcua;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::runtime::Supervisor;
use crate::telemetry::Metrics;
use crate::twin::{PropertyId, Twin, Value};

use crate::twin::model::Scaling;
use modbus::config::{ModbusBindingConfig, ModbusSourceConfig};
use opcua::config::{OpcUaBindingConfig, OpcUaSourceConfig};

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

/// Why a write did not reach the device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// The property is not bound to a source.
    #[error("property is not bound to a source")]
    NotBound,
    /// The binding's table cannot be written (input registers, discrete inputs).
    #[error("the {0} table cannot be written")]
    NotWritable(&'static str),
    /// The value does not fit the binding's encoding.
    #[error("cannot encode value: {0}")]
    Encode(#[from] crate::sources::modbus::codec::CodecError),
    /// The device answered with an exception.
    #[error("device answered with exception {0}")]
    Exception(String),
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The connection is down.
    #[error("not connected")]
    Disconnected,
    /// The source has stopped.
    #[error("the source is not running")]
    Closed,
}

/// Sends writes to the source that owns a property. Only the control gate holds one.
#[derive(Debug, Clone)]
pub enum SourceWriter {
    /// A Modbus connection.
    Modbus(modbus::poller::ModbusWriter),
}

impl SourceWriter {
    /// Writes `value` (engineering units) to `property` and waits for the device's answer.
    ///
    /// Errors: see [`WriteError`].
    pub async fn write(&self, property: PropertyId, value: Value) -> Result<(), WriteError> {
        match self {
            Self::Modbus(writer) => writer.write(property, value).await,
        }
    }
}

/// The writer of every bound property, by property id. Clones share one table, so a source
/// restarted on reload is seen by every holder (the control gate).
#[derive(Debug, Clone, Default)]
pub struct Writers {
    by_property: Arc<std::sync::RwLock<HashMap<PropertyId, SourceWriter>>>,
}

impl Writers {
    /// Writes `value` (engineering units) to `property` through its source.
    ///
    /// Errors: [`WriteError::NotBound`] for a property no source serves, else the source's error.
    pub async fn write(&self, property: PropertyId, value: Value) -> Result<(), WriteError> {
        let writer = self
            .by_property
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&property)
            .cloned();
        match writer {
            Some(writer) => writer.write(property, value).await,
            None => Err(WriteError::NotBound),
        }
    }

    fn set(&self, properties: &[PropertyId], writer: &SourceWriter) {
        let mut table = self.by_property.write().unwrap_or_else(|e| e.into_inner());
        for property in properties {
            table.insert(*property, writer.clone());
        }
    }
}

/// The running sources, by id: what reload needs to restart one of them.
#[derive(Debug, Default)]
pub struct RunningSources {
    tokens: HashMap<String, tokio_util::sync::CancellationToken>,
}

impl RunningSources {
    /// Stops the source `id` (its task ends; its properties keep their last samples until the
    /// replacement reads them).
    pub fn stop(&mut self, id: &str) {
        if let Some(token) = self.tokens.remove(id) {
            token.cancel();
        }
    }
}

/// Spawns one source and records its writer in `writers` and its token in `running`.
///
/// Errors: the source cannot be built from its (validated) config.
pub fn spawn_one(
    source: &SourceConfig,
    config: &Config,
    twin: &Arc<Twin>,
    supervisor: &Supervisor,
    metrics: &Metrics,
    writers: &Writers,
    running: &mut RunningSources,
) -> anyhow::Result<()> {
    match source {
        SourceConfig::Modbus(modbus) => {
            let (writer, properties, token) =
                modbus::spawn(modbus, config, twin, supervisor, metrics)?;
            writers.set(&properties, &SourceWriter::Modbus(writer));
            running.tokens.insert(modbus.id.clone(), token);
        }
        SourceConfig::OpcUa(opcua) => {
            // Read-only for now: validation refuses read-write properties on OPC UA sources,
            // so no writer is registered and the gate answers NotBound.
            let (_properties, token) = opcua::spawn(opcua, config, twin, supervisor, metrics)?;
            running.tokens.insert(opcua.id.clone(), token);
        }
    }
    Ok(())
}

/// Spawns every source of `config` under `supervisor`, feeding `twin`; returns their writers
/// and their stop handles.
///
/// Errors: a source cannot be built from its (validated) config.
pub fn spawn_all(
    config: &Config,
    twin: &Arc<Twin>,
    supervisor: &Supervisor,
    metrics: &Metrics,
) -> anyhow::Result<(Writers, RunningSources)> {
    let writers = Writers::default();
    let mut running = RunningSources::default();
    for source in &config.sources {
        spawn_one(
            source,
            config,
            twin,
            supervisor,
            metrics,
            &writers,
            &mut running,
        )?;
    }
    Ok((writers, running))
}
