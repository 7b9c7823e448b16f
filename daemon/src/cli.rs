//! The command line: `twinloom run`, `twinloom check`, `twinloom --version`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError};

/// Exit code for an invalid configuration (BSD `sysexits.h` EX_USAGE, which init systems and
/// scripts already treat as "do not restart, fix the input").
pub const EXIT_CONFIG: u8 = 64;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Twinloom: PLCs in, a typed digital twin out over OPC UA.
#[derive(Debug, Parser)]
#[command(name = "twinloom", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the daemon against a simulated plant on free loopback ports (no files needed).
    Demo,
    /// Validate a configuration file: exit 0 when valid, 64 with every error when not.
    Check {
        /// The TOML configuration file.
        path: PathBuf,
    },
}

/// `twinloom check PATH`.
pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!(
                "{}: valid ({} sources, {} types, {} assets, {} plugins)",
                path.display(),
                config.sources.len(),
                config.types.len(),
                config.assets.len(),
                config.plugins.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => report(&error),
    }
}

fn report(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    if let ConfigError::Invalid(diagnostics) = error {
        eprintln!(
            "{} error{} found; nothing was started",
            diagnostics.len(),
            if diagnostics.len() == 1 { "" } else { "s" }
        );
    }
    ExitCode::from(EXIT_CONFIG)
}

/// `twinloom run --config PATH`: validate, then run until SIGTERM or SIGINT.
pub fn run(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => serve(config, |config| crate::app::run(config, shutdown_signal())),
        Err(error) => report(&error),
    }
}

/// `twinloom demo`: the embedded demo config against the simulated plant.
pub fn demo() -> ExitCode {
    match crate::demo::config() {
        Ok(config) => serve(config, |config| crate::demo::run(config, shutdown_signal())),
        Err(error) => report(&error),
    }
}

/// Sets up logging and the runtime, runs `main` to completion, maps the outcome to an exit code.
fn serve<F, Fut>(config: crate::config::Config, main: F) -> ExitCode
where
    F: FnOnce(crate::config::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(&config.daemon.log_level, config.daemon.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "Cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(main(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Twinloom failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
