//! Northbound services: how the twin is served to the outside.
//!
//! Each service is a module with one `start(section, …, ComponentContext)` that binds what it
//! serves on, spawns its tasks under the supervisor and registers its own readiness condition.

pub mod admin_http;
pub mod opcua_server;
