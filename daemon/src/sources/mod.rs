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

use std::path::Path;

use crate::runtime::Supervisor;
use crate::telemetry::Metrics;
use crate::twin::{PropertyId, Twin, Value, WriteError};

pub use crate::config::sources::{BindingConfig, SourceConfig, SourceKind};

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

/// One property bound to a source, resolved by the wiring (`app`): the twin's id for it, the
/// device it is on (for sources with several devices; `None` for the first) and its binding in
/// the source's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound<B> {
    /// The property the binding feeds.
    pub property: PropertyId,
    /// The device id inside the source, when the asset names one.
    pub device: Option<String>,
    /// The binding.
    pub binding: B,
}

/// What every source is given to start, besides its own section and bound properties.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext<'a> {
    /// The twin its readings go to.
    pub twin: &'a Arc<Twin>,
    /// Where its task is spawned.
    pub supervisor: &'a Supervisor,
    /// The metrics registry.
    pub metrics: &'a Metrics,
    /// The daemon's state folder (client PKI, for sources that need one).
    pub state_dir: &'a Path,
}

/// The bindings of `kind` among `bindings`.
fn of_kind<B: Clone>(
    bindings: &[Bound<BindingConfig>],
    kind: impl Fn(&BindingConfig) -> Option<&B>,
) -> Vec<Bound<B>> {
    bindings
        .iter()
        .filter_map(|b| {
            kind(&b.binding).map(|binding| Bound {
                property: b.property,
                device: b.device.clone(),
                binding: binding.clone(),
            })
        })
        .collect()
}

/// Spawns one source with its bound properties (every binding of the assets it serves) and
/// records its writer in `writers` and its token in `running`.
///
/// Errors: the source cannot be built from its (validated) config.
pub fn spawn_one(
    source: &SourceConfig,
    bindings: &[Bound<BindingConfig>],
    context: SourceContext<'_>,
    writers: &Writers,
    running: &mut RunningSources,
) -> anyhow::Result<()> {
    match source {
        SourceConfig::Modbus(modbus) => {
            let bindings = of_kind(bindings, |b| match b {
                BindingConfig::Modbus(b) => Some(b),
                _ => None,
            });
            let (writer, properties, token) = modbus::spawn(modbus, &bindings, context)?;
            writers.set(&properties, &SourceWriter::Modbus(writer));
            running.tokens.insert(modbus.id.clone(), token);
        }
        SourceConfig::OpcUa(opcua) => {
            let bindings = of_kind(bindings, |b| match b {
                BindingConfig::OpcUa(b) => Some(b),
                _ => None,
            });
            // Read-only for now: validation refuses read-write properties on OPC UA sources,
            // so no writer is registered and the gate answers NotBound.
            let (_properties, token) = opcua::spawn(opcua, &bindings, context)?;
            running.tokens.insert(opcua.id.clone(), token);
        }
    }
    Ok(())
}
