//! Northbound services: how the twin is served to the outside.
//!
//! Each service is a module with one `start(section, …, ComponentContext)` that binds what it
//! serves on, spawns its tasks under the supervisor and registers its own readiness condition.
//! The OPC UA server and admin HTTP check logins through [`login`]: one per-address throttle
//! type and one password pool for the daemon. The Sparkplug B edge node ([`sparkplug`]) is a
//! client: it publishes to an MQTT broker from the change log and takes commands from it.

pub mod admin_http;
pub mod login;
pub mod opcua_server;
pub mod sparkplug;

/// Clears plugin `name`'s quarantine (given by the daemon's wiring, which owns the plugins; the
/// OPC UA `ClearQuarantine` methods and admin HTTP's `POST /control/clear-quarantine` call it):
/// answers `true` when the plugin was quarantined and starts again, `false` when it was not.
pub type ClearQuarantine =
    std::sync::Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;
