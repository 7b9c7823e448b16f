//! What every running component (a source, a northbound service) is given to start, besides its
//! own section: the shared parts of the daemon it works with.

use std::path::Path;
use std::sync::Arc;

use crate::runtime::{Readiness, Supervisor};
use crate::telemetry::Metrics;
use crate::twin::Twin;

/// The shared parts a component starts with. Cheap to copy (references).
#[derive(Debug, Clone, Copy)]
pub struct ComponentContext<'a> {
    /// The twin: where a source's readings go, what a service serves.
    pub twin: &'a Arc<Twin>,
    /// Where the component's tasks are spawned.
    pub supervisor: &'a Supervisor,
    /// The metrics registry.
    pub metrics: &'a Metrics,
    /// Where the component registers its readiness condition for `/readyz`.
    pub readiness: &'a Readiness,
    /// The daemon's state folder (PKI, for components that need one).
    pub state_dir: &'a Path,
}
