//! Rendering diagnostics for people: miette's graphical report, colored only on a terminal without `NO_COLOR`.

use std::io::IsTerminal;

use buildit_core::{ConfigDiagnostic, ConfigSource};
use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::exit::Exit;

/// Whether stderr should get colors.
pub(crate) fn stderr_colors() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// One diagnostic, rendered with its source excerpt.
pub(crate) fn render_diagnostic(
    diagnostic: &ConfigDiagnostic,
    source: &ConfigSource,
    colors: bool,
) -> String {
    let theme = if colors {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler
        .render_report(&mut out, &diagnostic.with_source(source))
        .is_err()
    {
        out = format!("{}: {}\n", diagnostic.code, diagnostic.message);
    }
    out
}

/// A one-line error for problems that have no source (missing files, usage).
pub(crate) fn error_line(message: &str, help: Option<&str>) {
    eprintln!("error: {message}");
    if let Some(help) = help {
        eprintln!("  help: {help}");
    }
}

/// Prints why a run could not run (the store, the executor, the secrets, the source), with its help; the
/// exit code it means.
pub(crate) fn runner_error(error: &buildit_core::runner::RunnerError) -> Exit {
    let help = miette::Diagnostic::help(error).map(|help| help.to_string());
    error_line(&error.to_string(), help.as_deref());
    Exit::Infrastructure
}
