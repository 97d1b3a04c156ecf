//! The `buildit` command: a thin shell over `buildit-core`.

mod cli;
mod commands;
mod exit;
mod git;
mod progress;
mod report;
mod reporter;

fn main() -> std::process::ExitCode {
    let code = commands::main_impl();
    std::process::ExitCode::from(code.code())
}
