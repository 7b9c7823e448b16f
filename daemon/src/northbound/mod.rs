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
