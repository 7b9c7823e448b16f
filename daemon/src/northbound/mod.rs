//! Northbound services: how the twin is served to the outside.
//!
//! Each service is a module with one `start(section, …, ComponentContext)` that binds what it
//! serves on, spawns its tasks under the supervisor and registers its own readiness condition.
//! Both check logins through [`login`]: one per-address throttle type and one password pool for
//! the daemon.

pub mod admin_http;
pub mod login;
pub mod opcua_server;
pub mod sparkplug;
