//! Sources: the only code that speaks field protocols.
//!
//! Each protocol is one module with one `spawn(section, bound properties, ComponentContext)`; its
//! section is plain data in `crate::config`. [`spawn_one`] is the single registry of running
//! source kinds: adding a protocol means a module beside `modbus`, its section in `config`, and
//! one line there.
//! A running source turns device data into [`crate::twin::Reading`]s and hands them to the twin;
//! it reconnects on its own (see [`crate::runtime::backoff`]) and never stalls other sources.

pub mod modbus;
pub mod opcua;

use std::collections::HashMap;
use std::sync::Arc;

use crate::context::ComponentContext;
use crate::twin::{PropertyId, Value, WriteError};

pub use crate::config::sources::{BindingConfig, SourceConfig, SourceKind};

/// The write side of a running source, as the control gate sees it: one implementation per
/// source kind that can write (a Modbus connection today).
#[async_trait::async_trait]
pub trait DeviceWriter: std::fmt::Debug + Send + Sync {
    /// Writes `value` (engineering units) to `property` and waits for the device's answer.
    ///
    /// Errors: see [`WriteError`]; the source maps its protocol's failures to those kinds.
    async fn write(&self, property: PropertyId, value: Value) -> Result<(), WriteError>;
}

/// The writer of every bound property, by property id. Clones share one table, so a source
/// restarted on reload is seen by every holder (the control gate).
#[derive(Debug, Clone, Default)]
pub struct Writers {
    by_property: Arc<std::sync::RwLock<HashMap<PropertyId, Arc<dyn DeviceWriter>>>>,
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

    fn set(&self, properties: &[PropertyId], writer: &Arc<dyn DeviceWriter>) {
        let mut table = self.by_property.write().unwrap_or_else(|e| e.into_inner());
        for property in properties {
            table.insert(*property, Arc::clone(writer));
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

/// A started source: what the wiring keeps of it.
#[derive(Debug)]
pub struct Spawned {
    /// The properties it serves.
    pub properties: Vec<PropertyId>,
    /// Its write side, for sources that can write.
    pub writer: Option<Arc<dyn DeviceWriter>>,
    /// Cancelling it stops just this source.
    pub token: tokio_util::sync::CancellationToken,
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
/// records its writer in `writers` and its token in `running`. The registry of source kinds: one
/// line per kind.
///
/// Errors: the source cannot be built from its (validated) config.
pub fn spawn_one(
    source: &SourceConfig,
    bindings: &[Bound<BindingConfig>],
    context: ComponentContext<'_>,
    writers: &Writers,
    running: &mut RunningSources,
) -> anyhow::Result<()> {
    let spawned = match source {
        SourceConfig::Modbus(s) => {
            modbus::spawn(s, &of_kind(bindings, BindingConfig::as_modbus), context)?
        }
        SourceConfig::OpcUa(s) => {
            opcua::spawn(s, &of_kind(bindings, BindingConfig::as_opcua), context)?
        }
    };
    if let Some(writer) = &spawned.writer {
        writers.set(&spawned.properties, writer);
    }
    running.tokens.insert(source.id().to_owned(), spawned.token);
    Ok(())
}
