//! Twinloom: an industrial integration daemon.
//!
//! PLCs (Modbus, OPC UA) → [`sources`] → [`twin`] (typed digital twin: assets, properties,
//! engineering units, quality, timestamps) → northbound services and plugins. See
//! `ARCHITECTURE.md` at the repository root for the data flow, code map and invariants.

pub mod app;
pub mod change_log;
pub mod cli;
pub mod config;
pub mod context;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod history;
pub mod northbound;
pub mod opcua_values;
pub mod plugins;
pub mod runtime;
pub mod sources;
pub mod telemetry;
pub mod twin;
