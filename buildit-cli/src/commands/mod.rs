//! Dispatch from the parsed command line to the core library.

mod load;
mod plan;
mod run;
mod runs;
mod store;
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
    }
}
