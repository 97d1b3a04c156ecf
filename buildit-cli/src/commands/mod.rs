//! Dispatch from the parsed command line to the core library.

mod daemon;
mod daemon_runtimes;
mod follow_remote;
mod gc;
mod load;
mod login;
mod pipelines;
mod plan;
mod prune;
mod registered;
mod remote;
mod run;
mod runs;
mod runs_manage;
mod runs_remote;
mod runs_retry;
mod show_command;
mod store;
mod tokens;
mod validate;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

/// Parses the command line and runs the command.
pub(crate) fn main_impl() -> Exit {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let exit = if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = error.print();
            return exit;
        }
    };
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Runs(command) => runs::run(&command),
        Command::Gc(args) => gc::run(&args),
        Command::Tokens(command) => tokens::run(&command),
        Command::Daemon(args) => daemon::run(&args),
        Command::Pipelines(command) => pipelines::run(&command),
        Command::Login(args) => login::login(&args),
        Command::Logout => login::logout(),
    }
}

/// The async runtime of a command: one thread, which starts fastest and keeps a run's scheduling on one core
/// (cross-thread wake-ups between a stage's end and the next start cost more than they bring).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    quiet_runtime().map_err(|error| runtime_error(&error))
}

/// [`runtime`] without reporting a failure, for a caller that reports it in its own order.
pub(crate) fn quiet_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Reports that the runtime could not start.
pub(crate) fn runtime_error(error: &std::io::Error) -> Exit {
    crate::report::error_line(&format!("cannot start the async runtime: {error}"), None);
    Exit::Infrastructure
}
