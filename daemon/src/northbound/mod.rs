//! Northbound services: how the twin is served to the outside.

pub mod admin_http;
pub mod opcua_server;
