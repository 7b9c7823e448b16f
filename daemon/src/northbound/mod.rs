//! Northbound services: how the twin is served to the outside.

pub mod opcua_server;
