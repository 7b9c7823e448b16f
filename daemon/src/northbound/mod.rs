//! Northbound services: how the twin is served to the outside.
//!
//! Each service is a module with one `start(section, …, ServiceContext)` that binds what it
//! serves on, spawns its tasks under the supervisor and registers its own readiness condition.

pub mod admin_http;
pub mod opcua_server;

use std::path::Path;
use std::sync::Arc;

use crate::runtime::{Readiness, Supervisor};
use crate::telemetry::Metrics;
use crate::twin::Twin;

/// What every northbound service is given to start, besides its own section.
#[derive(Debug, Clone, Copy)]
pub struct ServiceContext<'a> {
    /// The twin it serves.
    pub twin: &'a Arc<Twin>,
    /// The metrics registry.
    pub metrics: &'a Metrics,
    /// Where its tasks are spawned.
    pub supervisor: &'a Supervisor,
    /// Where it registers its readiness condition for `/readyz`.
    pub readiness: &'a Readiness,
    /// The daemon's state folder (PKI).
    pub state_dir: &'a Path,
}
