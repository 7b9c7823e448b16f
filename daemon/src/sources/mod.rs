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

/// Called by a source immediately before a write goes on the wire; an `Err` (why) stops it there
/// ([`WriteError::Held`]). The control gate passes the property's interlocks as one.
pub type SendGuard = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One write for a device, as the control gate hands it to the property's source.
#[derive(Clone)]
pub struct DeviceWrite {
    /// The property.
    pub property: PropertyId,
    /// The value, in engineering units.
    pub value: Value,
    /// After this instant the request must not go on the wire: its proposer has been answered.
    pub deadline: std::time::Instant,
    /// Checked immediately before sending (see [`SendGuard`]); `None` for writes no rule may
    /// stop (an `on_loss` value).
    pub guard: Option<SendGuard>,
}

impl std::fmt::Debug for DeviceWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWrite")
            .field("property", &self.property)
            .field("value", &self.value)
            .field("deadline", &self.deadline)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

impl DeviceWrite {
    /// A write with no guard that may go on the wire for `within` from now (the gate's `on_loss`
    /// writes, and tests that write to a source directly).
    pub fn unguarded(property: PropertyId, value: Value, within: std::time::Duration) -> Self {
        Self {
            property,
            value,
            deadline: std::time::Instant::now() + within,
            guard: None,
        }
    }

    /// Whether the request may still go on the wire at `now`: before its deadline. (A source also
    /// checks that its caller still waits.)
    pub fn is_due(&self, now: std::time::Instant) -> bool {
        now < self.deadline
    }

    /// Runs the guard, if any: the last check before sending.
    ///
    /// Errors: [`WriteError::Held`] with the guard's reason.
    pub fn check_guard(&self) -> Result<(), WriteError> {
        match &self.guard {
            Some(guard) => guard().map_err(|detail| WriteError::Held { detail }),
            None => Ok(()),
        }
    }
}

/// The write side of a running source, as the control gate sees it: one implementation per
/// source kind that can write (a Modbus connection today).
///
/// The contract every writer keeps, so that what the proposer and the audit are told is what
/// the device got:
/// - a request whose [`DeviceWrite::deadline`] has passed, or whose caller no longer waits (the
///   future was dropped), is never put on the wire: [`WriteError::Expired`];
/// - [`DeviceWrite::check_guard`] is called immediately before the request goes on the wire, as
///   the last step: its refusal is [`WriteError::Held`];
/// - a request on the wire is completed (bounded by the source's own protocol timeout) and its
///   answer returned even after the deadline: the caller audits a late answer as `unknown`;
/// - `Ok(Some(value))` is what the device holds after the write when the source read it back
///   (engineering units), `Ok(None)` when it did not read back.
#[async_trait::async_trait]
pub trait DeviceWriter: std::fmt::Debug + Send + Sync {
    /// Writes `write.value` to `write.property` and waits for the device's answer.
    ///
    /// Errors: see [`WriteError`]; the source maps its protocol's failures to those kinds.
    async fn write(&self, write: DeviceWrite) -> Result<Option<Value>, WriteError>;
}

/// The writer of every bound property, by property id. Clones share one table, so a source
/// restarted on reload is seen by every holder (the control gate).
#[derive(Debug, Clone, Default)]
pub struct Writers {
    by_property: Arc<std::sync::RwLock<HashMap<PropertyId, Arc<dyn DeviceWriter>>>>,
}

impl Writers {
    /// Writes through the property's source, under the [`DeviceWriter`] contract; returns what
    /// the device holds afterwards when the source read it back.
    ///
    /// Errors: [`WriteError::NotBound`] for a property no source serves, else the source's error.
    pub async fn write(&self, write: DeviceWrite) -> Result<Option<Value>, WriteError> {
        let writer = self
            .by_property
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&write.property)
            .cloned();
        match writer {
            Some(writer) => writer.write(write).await,
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
