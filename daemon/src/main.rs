//! The `twinloom` binary: parse arguments, dispatch. The recipe lives in `twinloom::cli`.

use std::process::ExitCode;

use clap::Parser;
use twinloom::cli::{self, Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check(args) => cli::check(&args),
        Command::Run(file) => cli::run(file.path()),
        #[cfg(feature = "demo")]
        Command::Demo => cli::demo(),
        Command::HashPassword => cli::hash_password(),
        Command::Audit { action } => cli::audit(&action),
        Command::ChangeLog { action } => cli::change_log(&action),
        Command::Backup { to, state } => cli::backup(&to, state.as_deref()),
        Command::Restore { from, state } => cli::restore(&from, state.as_deref()),
        #[cfg(feature = "plugin-tools")]
        Command::Plugin { action } => cli::plugin(&action),
        Command::Pki { config, action } => cli::pki(&config, &action),
    }
}
