//! Logging setup (tracing), metrics (Prometheus text format) and the throttle of repeated warnings.

pub mod metrics;
pub mod throttle;

pub use metrics::Metrics;
pub use throttle::Throttle;

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: `RUST_LOG` when set, else `level` (EnvFilter syntax);
/// plain lines on stderr, or one JSON object per line when `json`. Calling it twice is harmless
/// (the second call does nothing).
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
