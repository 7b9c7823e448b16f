//! The command line: `twinloom run`, `twinloom check`, `twinloom --version`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError};
#[cfg(feature = "plugin-tools")]
use crate::plugins::build;

/// Exit code for an invalid configuration (BSD `sysexits.h` EX_USAGE, which init systems and
/// scripts already treat as "do not restart, fix the input").
pub const EXIT_CONFIG: u8 = 64;

/// Exit code for bad command-line input (same as clap's).
pub const EXIT_USAGE: u8 = 2;

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
    /// Run the daemon with a configuration file: `twinloom run FILE` (or `--config FILE`).
    Run(ConfigFile),
    /// Run the daemon against a simulated plant on free loopback ports (no files needed).
    #[cfg(feature = "demo")]
    Demo,
    /// Validate a configuration file (`twinloom check FILE`, or `--config FILE`): exit 0 when
    /// valid, 64 with every error when not.
    Check(ConfigFile),
    /// Read a password on standard input and print its argon2id hash for `password_hash`.
    HashPassword,
    /// Check the control gate's audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Build or create WebAssembly plugins.
    #[cfg(feature = "plugin-tools")]
    Plugin {
        /// What to do.
        #[command(subcommand)]
        action: PluginAction,
    },
    /// List, trust or reject OPC UA client certificates.
    Pki {
        /// The configuration file (its OPC UA server's PKI folder is used).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: PkiAction,
    },
}

/// The configuration file of `run` and `check`: given as the argument, or with `--config` (the
/// form installed units use); exactly one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ConfigFile {
    /// The TOML configuration file.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The TOML configuration file, as an option.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigFile {
    /// The file, however it was given.
    pub fn path(&self) -> &Path {
        self.file
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or(Path::new("twinloom.toml"))
    }
}

/// `twinloom pki` actions.
#[derive(Debug, Subcommand)]
pub enum PkiAction {
    /// List trusted and rejected client certificates.
    List,
    /// Trust a rejected client certificate (by the start of its file name).
    Trust {
        /// Start of the certificate's file name, as `list` prints it.
        name: String,
    },
    /// Reject a trusted client certificate (by the start of its file name).
    Reject {
        /// Start of the certificate's file name, as `list` prints it.
        name: String,
    },
}

/// `twinloom audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the chain of records and the head file, and list the void sequence numbers (commits
    /// refused after an I/O error, recoveries) and the intents without an outcome (writes under
    /// way when the daemon stopped). Exit 0 when intact, 1 with the first damaged record (or the
    /// head that does not match) otherwise.
    Verify {
        /// The audit folder (default: `audit` in the state folder, `$STATE_DIRECTORY` or
        /// `/var/lib/twinloom`).
        dir: Option<PathBuf>,
    },
    /// After `verify` (and the daemon) refused the journal — a head the records do not reach or
    /// match, damage that no record explains, an unreadable head — accept the intact records as
    /// they are: append a `journal-recovered` record stating the decision, chained to the last
    /// intact record, and rewrite the head. Run it with the daemon stopped. Exit 0 when
    /// recovered, 1 when there is nothing to recover or it failed.
    Recover {
        /// The audit folder (default as for `verify`).
        dir: Option<PathBuf>,
    },
}

/// `twinloom audit verify|recover [DIR]`.
pub fn audit(action: &AuditAction) -> ExitCode {
    let (AuditAction::Verify { dir } | AuditAction::Recover { dir }) = action;
    let dir = dir.clone().unwrap_or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .map_or_else(|| PathBuf::from("/var/lib/twinloom"), PathBuf::from)
            .join("audit")
    });
    if let AuditAction::Recover { .. } = action {
        return audit_recover(&dir);
    }
    match crate::control::audit::verify(&dir) {
        Ok(report) => {
            println!(
                "{}: {} records in {} segments; the chain and the head hold",
                dir.display(),
                report.records,
                report.segments
            );
            for void in &report.void {
                println!(
                    "void: sequence numbers {}..{}, named by record {} ({}: {})",
                    void.from, void.to, void.to, void.kind, void.why
                );
            }
            if report.open_intents.is_empty() {
                println!("every intent has its outcome");
            } else {
                let list: Vec<String> = report.open_intents.iter().map(u64::to_string).collect();
                println!(
                    "intents without an outcome (writes under way when the daemon stopped): {}",
                    list.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
            if let crate::control::audit::JournalError::Corrupted(_) = error {
                eprintln!(
                    "`twinloom audit recover {}` accepts the intact records as they are and records that decision in the chain (the daemon refuses every write until then)",
                    dir.display()
                );
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `twinloom audit recover [DIR]`.
fn audit_recover(dir: &Path) -> ExitCode {
    match crate::control::audit::recover(dir) {
        Ok(recovered) => {
            println!("{}: {}", dir.display(), recovered.problem);
            println!(
                "recovered: the records before {} are accepted as they are, sequence numbers {}..{} are void; record {} states the decision and the head matches it",
                recovered.void.0, recovered.void.0, recovered.void.1, recovered.seq
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `twinloom plugin` actions.
#[cfg(feature = "plugin-tools")]
#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Build a plugin crate as a WebAssembly component (or, with --native, a native library),
    /// check that it loads, print its path.
    Build {
        /// The plugin crate's folder (with its Cargo.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Build a native shared library for this machine (`kind = "native"`: trusted,
        /// unsandboxed) from the same source instead of a WebAssembly component.
        #[arg(long)]
        native: bool,
        /// Also install the component here (replaced in one step, for hot reload).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Cargo's target folder (cargo's default when not given).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Which toolchain builds the component.
        #[arg(long, value_enum, default_value_t)]
        toolchain: build::Toolchain,
    },
    /// Create a plugin crate from the template: a working plugin with unit tests.
    New {
        /// Crate name: lowercase letters, digits, `-`, `_`.
        name: String,
        /// Where to create it (default: a folder named after it, here).
        #[arg(long)]
        path: Option<PathBuf>,
        /// The guest SDK crate (`plugin-api/rust`); defaults to the one in this source tree.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a plugin component (or native library) over a recorded change stream and print its
    /// outputs and proposals, one JSON line per call (the format: docs/plugins.md, "Replay").
    /// Same inputs, same output.
    Test {
        /// The component (`.wasm`) or native library (`.so`).
        component: PathBuf,
        /// The recorded changes: JSON lines of `time_ms`, `property`, `value`, `quality`.
        #[arg(long)]
        replay: PathBuf,
        /// The plugin's settings: a TOML file (what its `config` table holds).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An owned property, in index order (repeat for each).
        #[arg(long)]
        owned: Vec<String>,
        /// A writable property, `path` or `path:boolean|integer|float`, in index order (repeat).
        #[arg(long = "writes", value_parser = crate::plugins::replay::writable_arg)]
        writes: Vec<crate::plugins::contract::WritableProperty>,
        /// Period of `on-tick`, e.g. `1s`; none without.
        #[arg(long, value_parser = humantime::parse_duration)]
        tick: Option<std::time::Duration>,
        /// Changes within this much of a batch's first one go into one call.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        min_interval: std::time::Duration,
        /// The instance name, which seeds its random source.
        #[arg(long, default_value = "replay")]
        name: String,
    },
}

/// `twinloom plugin build|new|test`.
#[cfg(feature = "plugin-tools")]
pub fn plugin(action: &PluginAction) -> ExitCode {
    let outcome = match action {
        PluginAction::Build {
            dir,
            native,
            out,
            target_dir,
            toolchain,
        } => {
            let options = build::BuildOptions {
                target_dir: target_dir.clone(),
                toolchain: *toolchain,
                out: out.clone(),
                native: *native,
            };
            build::build(dir, &options).map(|component| println!("{}", component.display()))
        }
        PluginAction::New { name, path, sdk } => {
            let dir = path.clone().unwrap_or_else(|| PathBuf::from(name));
            match sdk.clone().or_else(build::sdk_in_source_tree) {
                Some(sdk) => build::new(name, &dir, &sdk).map(|()| {
                    println!(
                        "created {}: `cargo test` checks it, `twinloom plugin build {}` builds it",
                        dir.display(),
                        dir.display()
                    );
                }),
                None => Err(anyhow::anyhow!(
                    "cannot find the guest SDK (plugin-api/rust); pass --sdk"
                )),
            }
        }
        PluginAction::Test {
            component,
            replay,
            config,
            owned,
            writes,
            tick,
            min_interval,
            name,
        } => {
            let options = crate::plugins::replay::ReplayOptions {
                name: name.clone(),
                settings: String::new(),
                owned: owned.clone(),
                writable: writes.clone(),
                tick: *tick,
                min_interval: *min_interval,
            };
            plugin_test(component, replay, config.as_deref(), options)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `twinloom plugin test COMPONENT --replay FILE`: reads the files, replays, prints to stdout.
#[cfg(feature = "plugin-tools")]
fn plugin_test(
    component: &Path,
    replay: &Path,
    settings: Option<&Path>,
    mut options: crate::plugins::replay::ReplayOptions,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let read =
        |file: &Path| std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()));
    let bytes = read(component)?;
    let text = String::from_utf8_lossy(&read(replay)?).into_owned();
    let records = crate::plugins::replay::read_records(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", replay.display()))?;
    if let Some(file) = settings {
        options.settings = String::from_utf8_lossy(&read(file)?).into_owned();
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = crate::plugins::replay::replay(&bytes, &records, &options, &mut out);
    out.flush()?;
    result
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

/// `twinloom demo`: builds the demo plugins, then runs the embedded demo config against the
/// simulated plant.
#[cfg(feature = "demo")]
pub fn demo() -> ExitCode {
    eprintln!("Building the demo plugins (the first time takes a minute or two)…");
    if let Err(error) = crate::demo::build_plugins() {
        eprintln!("cannot build the demo plugins: {error:#}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match crate::demo::config() {
        Ok(config) => serve(config, |config| crate::demo::run(config, shutdown_signal())),
        Err(error) => report(&error),
    }
}

/// `twinloom hash-password`: one line from stdin → argon2id PHC string on stdout.
pub fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("expected a password on standard input");
        return ExitCode::from(EXIT_USAGE);
    }
    match crate::northbound::login::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot hash the password: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `twinloom pki --config PATH list|trust|reject`.
pub fn pki(path: &Path, action: &PkiAction) -> ExitCode {
    use crate::northbound::opcua_server::pki::{self, Trust};
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return report(&error),
    };
    let Some(server) = &config.opcua_server else {
        eprintln!("{}: has no [opcua_server] section", path.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let dir = crate::northbound::opcua_server::pki_dir(server, &config.state_dir());
    let outcome = match action {
        PkiAction::List => pki::list(&dir).map(|entries| {
            if entries.is_empty() {
                println!("no client certificates in {}", dir.display());
            }
            for entry in entries {
                let trust = if entry.trust == Trust::Trusted {
                    "trusted "
                } else {
                    "rejected"
                };
                println!("{trust}  {}", entry.name);
            }
        }),
        PkiAction::Trust { name } => {
            pki::set_trust(&dir, name, Trust::Trusted).map(|p| println!("trusted: {}", p.display()))
        }
        PkiAction::Reject { name } => pki::set_trust(&dir, name, Trust::Rejected)
            .map(|p| println!("rejected: {}", p.display())),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Sets up logging and the runtime, runs `main` to completion, maps the outcome to an exit code.
fn serve<F, Fut>(config: crate::config::Config, main: F) -> ExitCode
where
    F: FnOnce(crate::config::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(
        &config.daemon.log_level,
        config.daemon.log_format == crate::config::model::LogFormat::Json,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::app::events::RuntimeUnavailable { error: &error }.emit();
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(main(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            crate::app::events::DaemonFailed { error: &error }.emit();
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
                crate::app::events::NoSigterm { error: &error }.emit();
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
