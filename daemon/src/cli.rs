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
    /// valid, 64 with every error when not. With `--online`, also connect to every OPC UA
    /// source's server and check each binding against it.
    Check(CheckArgs),
    /// Read a password on standard input and print its argon2id hash for `password_hash`.
    HashPassword,
    /// Check the control gate's audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Read or check the change log (every change the twin accepted, in order).
    ChangeLog {
        #[command(subcommand)]
        action: ChangeLogAction,
    },
    /// Copy the state that cannot be rebuilt (history, audit log, PKI, control state, the change
    /// log's cursors) into a new folder, while the daemon runs: `twinloom backup --to DIR`.
    Backup {
        /// The new (or empty) folder to write the backup into.
        #[arg(long)]
        to: PathBuf,
        /// The state folder (default: `$STATE_DIRECTORY` or `/var/lib/twinloom`).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Copy a backup into the state folder of a stopped daemon: `twinloom restore --from DIR`.
    Restore {
        /// The backup folder.
        #[arg(long)]
        from: PathBuf,
        /// The state folder (default: `$STATE_DIRECTORY` or `/var/lib/twinloom`).
        #[arg(long)]
        state: Option<PathBuf>,
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

/// `twinloom check`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[command(flatten)]
    pub file: ConfigFile,
    /// Also connect to every OPC UA source's server (one session each, closed at once) and
    /// report, at each binding's line:col, unknown namespaces, browse paths that do not resolve,
    /// missing nodes and nodes whose DataType does not fit the property. Without it, `check`
    /// opens no socket.
    #[arg(long)]
    pub online: bool,
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
    /// Check the chain of records and the head file (a missing head fails), and list the void
    /// sequence numbers (commits refused after an I/O error, recoveries) and the intents without
    /// an outcome (writes under way when the daemon stopped). With `--key`, also check every seal
    /// and the head's seal: without it the check is of the chain only, which anyone who can write
    /// the folder can rewrite. Reads record by record (memory does not grow with the log). Exit 0
    /// when intact, 1 with the first damaged record (or the head or seal that does not match)
    /// otherwise.
    Verify {
        /// The audit folder (default: `audit` in the state folder, `$STATE_DIRECTORY` or
        /// `/var/lib/twinloom`).
        dir: Option<PathBuf>,
        /// A verification key as `setup-keys` printed it (`xxxxxxxx-…/<start>-<interval>`);
        /// give it more than once when the key was replaced.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
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
    /// Set up forward-secure sealing: write the first epoch's sealing key into the audit folder
    /// (`sealing-key.json`, mode 0600; the daemon moves it on every epoch and erases the old
    /// one) and print the verification key, once. Keep that key off this machine; `verify --key`
    /// needs it. Run it as the daemon's user, with the daemon stopped.
    SetupKeys {
        /// The audit folder (default as for `verify`).
        dir: Option<PathBuf>,
        /// The epoch length: each epoch is sealed when it ends (humantime, ≥ 1 s).
        #[arg(long, default_value = "15min", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Replace an existing sealing key (seals made with it then verify only with its own
        /// verification key).
        #[arg(long)]
        force: bool,
    },
    /// Move whole segments whose records are all older than DATE out of the audit folder, after
    /// recording the archive point in the chain (`verify` of the folder then starts there; the
    /// archive folder verifies on its own). Run it with the daemon stopped. Exit 0 when done (or
    /// nothing was old enough), 1 when the log does not verify or moving failed.
    Archive {
        /// The audit folder (default as for `verify`).
        dir: Option<PathBuf>,
        /// RFC 3339 time or date (`2026-01-31`, `2026-01-31T12:00:00Z`), UTC.
        #[arg(long, value_name = "DATE")]
        before: String,
        /// Where the segments go (default: `archive` in the audit folder).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

/// `twinloom change-log` actions. Both read the folder while the daemon writes it (a batch still
/// being written is not shown), in constant memory.
#[derive(Debug, Subcommand)]
pub enum ChangeLogAction {
    /// Print the records from an offset on, one line each: `<offset> change <path> <value>
    /// <quality> source=<time> server=<time>`, `<offset> gap <reason> lost=<n|unknown>
    /// void=<first>..<end> at=<time>`, `<offset> started|stopped at=<time>`. Exit 0, or 1 when
    /// the newest segment is damaged before its end.
    Dump {
        /// The log folder (default: `change-log` in the state folder, `$STATE_DIRECTORY` or
        /// `/var/lib/twinloom`).
        dir: Option<PathBuf>,
        /// The first offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Check every batch's CRC-32C and that offsets rise across segments; list gap records and
    /// damaged segment tails. Exit 0 when every segment is intact up to its tail and offsets
    /// rise; 1 otherwise.
    Verify {
        /// The log folder (default as for `dump`).
        dir: Option<PathBuf>,
    },
}

fn default_state(state: Option<&Path>) -> PathBuf {
    state.map_or_else(
        || {
            std::env::var_os("STATE_DIRECTORY")
                .map_or_else(|| PathBuf::from("/var/lib/twinloom"), PathBuf::from)
        },
        Path::to_path_buf,
    )
}

/// `twinloom backup --to DIR [--state DIR]`: exit 0 with the number of files copied, 1 on an
/// error (named on stderr).
pub fn backup(to: &Path, state: Option<&Path>) -> ExitCode {
    let state = default_state(state);
    match crate::app::backup::backup(&state, to) {
        Ok(files) => {
            println!(
                "backed up {files} files of {} into {}",
                state.display(),
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("backup: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `twinloom restore --from DIR [--state DIR]`: exit 0 with the number of files copied, 1 on an
/// error (a daemon running on the state folder included).
pub fn restore(from: &Path, state: Option<&Path>) -> ExitCode {
    let state = default_state(state);
    match crate::app::backup::restore(from, &state) {
        Ok(files) => {
            println!(
                "restored {files} files from {} into {}",
                from.display(),
                state.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("restore: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `twinloom change-log dump|verify [DIR]`.
pub fn change_log(action: &ChangeLogAction) -> ExitCode {
    let (ChangeLogAction::Dump { dir, .. } | ChangeLogAction::Verify { dir }) = action;
    let dir = dir.clone().unwrap_or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .map_or_else(|| PathBuf::from("/var/lib/twinloom"), PathBuf::from)
            .join(crate::change_log::DIR_NAME)
    });
    match action {
        ChangeLogAction::Dump { from, .. } => change_log_dump(&dir, *from),
        ChangeLogAction::Verify { .. } => change_log_verify(&dir),
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// `twinloom change-log dump [DIR] [--from N]`.
fn change_log_dump(dir: &Path, from: u64) -> ExitCode {
    use crate::change_log::{Reader, Record};
    use std::io::Write;
    let paths = match crate::change_log::SeriesTable::load(dir) {
        Ok(table) => table.paths(),
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut reader = Reader::new(dir, from);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let entry = match reader.try_next() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(error) => {
                let _ = out.flush();
                eprintln!("{}: {error}", dir.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let line = match &entry.record {
            Record::Change {
                series,
                value,
                quality,
                source_time,
                server_time,
                late,
            } => format!(
                "{} {} {} {} {} source={} server={}",
                entry.offset,
                if *late { "late" } else { "change" },
                paths.get(series).map_or("?", String::as_str),
                value
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), ToString::to_string),
                quality.to_string().replace(' ', "_"),
                source_time.map_or_else(|| "none".to_owned(), rfc3339),
                rfc3339(*server_time),
            ),
            Record::Gap {
                reason,
                lost,
                void,
                at,
            } => format!(
                "{} gap {} lost={} void={}..{} at={}",
                entry.offset,
                reason.as_str(),
                lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                void.start,
                void.end,
                rfc3339(*at)
            ),
            Record::Started { at } => format!("{} started at={}", entry.offset, rfc3339(*at)),
            Record::Stopped { at } => format!("{} stopped at={}", entry.offset, rfc3339(*at)),
        };
        if writeln!(out, "{line}").is_err() {
            // A closed pipe (`| head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// `twinloom change-log verify [DIR]`.
fn change_log_verify(dir: &Path) -> ExitCode {
    let verified = match crate::change_log::verify(dir) {
        Ok(verified) => verified,
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    println!(
        "{}: {} records in {} segments, offsets {}..{}",
        dir.display(),
        verified.records,
        verified.segments,
        verified.offsets.start,
        verified.offsets.end
    );
    for (offset, reason, lost, void) in &verified.gaps {
        let lost = lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        println!(
            "gap at {offset}: {} (changes lost: {lost}; void offsets {}..{})",
            reason.as_str(),
            void.start,
            void.end
        );
    }
    for (segment, bytes, damage) in &verified.damaged_tails {
        println!("damaged tail: {segment}: {bytes} bytes after the last intact batch ({damage})");
    }
    for problem in &verified.out_of_order {
        eprintln!("out of order: {problem}");
    }
    if verified.out_of_order.is_empty() {
        println!("every batch's checksum holds and offsets rise");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// `twinloom audit verify|recover|setup-keys|archive [DIR]`.
pub fn audit(action: &AuditAction) -> ExitCode {
    let (AuditAction::Verify { dir, .. }
    | AuditAction::Recover { dir }
    | AuditAction::SetupKeys { dir, .. }
    | AuditAction::Archive { dir, .. }) = action;
    let dir = dir.clone().unwrap_or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .map_or_else(|| PathBuf::from("/var/lib/twinloom"), PathBuf::from)
            .join("audit")
    });
    match action {
        AuditAction::Recover { .. } => audit_recover(&dir),
        AuditAction::SetupKeys {
            interval, force, ..
        } => audit_setup_keys(&dir, *interval, *force),
        AuditAction::Archive { before, to, .. } => {
            let to = to.clone().unwrap_or_else(|| dir.join("archive"));
            audit_archive(&dir, before, &to)
        }
        AuditAction::Verify { keys, .. } => audit_verify(&dir, keys),
    }
}

/// `twinloom audit verify [DIR] [--key KEY]...`.
fn audit_verify(dir: &Path, keys: &[String]) -> ExitCode {
    let keys: Result<Vec<crate::control::audit::VerifyKey>, _> =
        keys.iter().map(|k| k.parse()).collect();
    let keys = match keys {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("--key: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match crate::control::audit::verify(dir, &keys) {
        Ok(report) => {
            let start = if report.start == 0 {
                String::new()
            } else {
                format!(" (from record {}: older records archived)", report.start)
            };
            println!(
                "{}: {} records in {} segments{start}; the chain and the head hold",
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
            print_sealing(&report, &keys);
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

/// The seals part of `verify`'s report.
fn print_sealing(
    report: &crate::control::audit::AuditReport,
    keys: &[crate::control::audit::VerifyKey],
) {
    let Some(sealing) = &report.sealing else {
        println!(
            "chain only: {} seal records not checked (`--key` checks them); a chain can be rewritten by anyone who can write the folder",
            report.seal_records
        );
        return;
    };
    let at = |epoch: u64| {
        keys.first().map_or_else(String::new, |k| {
            humantime::format_rfc3339_seconds(k.epoch_start(epoch)).to_string()
        })
    };
    if let Some((first, last)) = sealing.epochs {
        println!(
            "sealed: {} seals hold, epochs {first}..={last} (until {}); the head's seal holds (epoch {})",
            sealing.seals,
            at(last + 1),
            sealing.head_epoch
        );
    } else {
        println!(
            "sealed: no epoch has ended yet; the head's seal holds (epoch {})",
            sealing.head_epoch
        );
    }
    for (from, to) in &sealing.gaps {
        println!(
            "no seal for epochs {from}..{to} ({} to {}): the daemon was not running, or records were removed by someone holding a later key",
            at(*from),
            at(*to)
        );
    }
    if sealing.more_gaps > 0 {
        println!("and {} more gaps", sealing.more_gaps);
    }
    if sealing.unsealed_tail > 0 {
        println!(
            "unsealed tail: {} records after the last seal (the current epoch's, sealed when it ends; the head's seal vouches for them)",
            sealing.unsealed_tail
        );
    }
}

/// `twinloom audit setup-keys [DIR] [--interval D] [--force]`.
fn audit_setup_keys(dir: &Path, interval: std::time::Duration, force: bool) -> ExitCode {
    match crate::control::audit::setup_keys(dir, interval, std::time::SystemTime::now(), force) {
        Ok(key) => {
            eprintln!(
                "{}: sealing key written (key id {}, epochs of {}); the daemon seals each epoch as it ends",
                dir.display(),
                key.id(),
                humantime::format_duration(std::time::Duration::from_secs(interval.as_secs()))
            );
            eprintln!(
                "The verification key follows, printed only this once. Keep it off this machine (a password safe, paper): whoever has it can check the seals, not make them."
            );
            println!("{key}");
            eprintln!(
                "Check with: twinloom audit verify --key <the key> {}",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `twinloom audit archive [DIR] --before DATE [--to DIR]`.
fn audit_archive(dir: &Path, before: &str, to: &Path) -> ExitCode {
    let parsed = humantime::parse_rfc3339_weak(before)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{before}T00:00:00Z")));
    let Ok(before) = parsed else {
        eprintln!(
            "--before {before}: not an RFC 3339 time or date (2026-01-31, 2026-01-31T12:00:00Z)"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    match crate::control::audit::archive(dir, before, to) {
        Ok(archived) => {
            match archived.seq {
                None => println!(
                    "{}: no segment before the last holds only records older than {}; nothing moved",
                    dir.display(),
                    humantime::format_rfc3339_seconds(before)
                ),
                Some(seq) => println!(
                    "{}: {} segments (records {}..{}) moved to {}; record {seq} states the archive point",
                    dir.display(),
                    archived.segments,
                    archived.records.0,
                    archived.records.1,
                    to.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", dir.display());
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

/// `twinloom check [--online] PATH`: exit 0 when valid (and, online, every binding fits its
/// server), 64 with every error otherwise; online, 1 when a server could not be asked and nothing
/// else was wrong.
pub fn check(args: &CheckArgs) -> ExitCode {
    let path = args.file.path();
    if !args.online {
        return check_offline(path);
    }
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return report(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let found = runtime.block_on(crate::app::check_online(&config));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let problems = found.problems.len();
    let unreachable = found.unreachable.len();
    let mut all = found.problems;
    all.extend(found.unreachable);
    for diagnostic in config::locate(path, &text, all) {
        eprintln!("{diagnostic}");
    }
    if problems > 0 {
        eprintln!(
            "{problems} binding{} do{} not fit the server{}",
            if problems == 1 { "" } else { "s" },
            if problems == 1 { "es" } else { "" },
            if unreachable > 0 {
                format!("; {unreachable} server(s) not reached")
            } else {
                String::new()
            }
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if unreachable > 0 {
        eprintln!("{unreachable} server(s) not reached; their bindings are not checked");
        return ExitCode::from(EXIT_FAILURE);
    }
    println!(
        "{}: valid, and every OPC UA binding fits its server",
        path.display()
    );
    ExitCode::SUCCESS
}

fn check_offline(path: &Path) -> ExitCode {
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
