//! Wiring: build every component from a validated config, run until asked to stop, drain.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::control::{self, ControlHandle};
use crate::northbound::opcua_server::{self, OpcUaServer};
use crate::runtime::Supervisor;
use crate::sources::{self, Writers};
use crate::telemetry::Metrics;
use crate::twin::{Twin, TwinModel};

/// How often the twin looks for stale properties.
pub const STALE_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A running daemon's shared parts, for the CLI and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The twin.
    pub twin: Arc<Twin>,
    /// The task supervisor.
    pub supervisor: Supervisor,
    /// Writers of every bound property (for the control gate).
    pub writers: Writers,
    /// Metrics registry.
    pub metrics: Metrics,
    /// The control gate (where writes are proposed).
    pub control: ControlHandle,
    /// The OPC UA server, when configured.
    pub opcua: Option<OpcUaServer>,
}

/// The folder for state the daemon writes: `daemon.state_dir`, systemd's `$STATE_DIRECTORY`, or
/// `/var/lib/twinloom`.
pub fn state_dir(config: &Config) -> PathBuf {
    config
        .daemon
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/twinloom"))
}

/// Builds the twin and spawns every component of `config` on the current runtime.
///
/// Errors: a component that cannot be built or bound (all configuration errors were caught
/// before): the OPC UA listen address is taken, the PKI folder cannot be written.
pub async fn start(config: &Config) -> anyhow::Result<Handles> {
    let model = Arc::new(TwinModel::build(config));
    let twin = Arc::new(Twin::new(model, &config.twin));
    let supervisor = Supervisor::new();
    let metrics = Metrics::new();
    let writers = sources::spawn_all(config, &twin, &supervisor, &metrics)?;
    let control = control::spawn(Arc::clone(&twin), writers.clone(), &supervisor);
    let opcua = match &config.opcua_server {
        Some(server) => {
            let started = opcua_server::start(
                server,
                &state_dir(config),
                &twin,
                control.clone(),
                &metrics,
                &supervisor,
            )
            .await;
            match started {
                Ok(server) => Some(server),
                Err(error) => {
                    supervisor.shutdown(config.daemon.shutdown_timeout).await;
                    return Err(error);
                }
            }
        }
        None => None,
    };
    let sweeper = Arc::clone(&twin);
    supervisor.spawn("twin-stale-sweep", move |token| async move {
        let mut tick = tokio::time::interval(STALE_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let marked = sweeper.sweep_stale(Instant::now(), SystemTime::now());
                    if marked > 0 {
                        tracing::warn!(properties = marked, "Properties went stale");
                    }
                }
            }
        }
    });
    tracing::info!(
        assets = twin.model().assets().len(),
        properties = twin.model().properties().len(),
        sources = config.sources.len(),
        "Twinloom started"
    );
    Ok(Handles {
        twin,
        supervisor,
        writers,
        metrics,
        control,
        opcua,
    })
}

/// Runs the daemon until `shutdown` resolves or a task fails, then drains within the configured
/// deadline.
///
/// Errors: a component failed to start, or a task failed while running.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let handles = start(&config).await?;
    tokio::select! {
        () = shutdown => tracing::info!("Shutdown requested; draining"),
        () = handles.supervisor.cancelled() => {}
    }
    let deadline = config.daemon.shutdown_timeout;
    if !handles.supervisor.shutdown(deadline).await {
        tracing::warn!(
            ?deadline,
            "Some tasks did not finish before the shutdown deadline"
        );
    }
    match handles.supervisor.fatal_error() {
        Some(message) => anyhow::bail!(message),
        None => {
            tracing::info!("Twinloom stopped");
            Ok(())
        }
    }
}
