//! Reading configuration files with clear errors, and printing their diagnostics.

use std::path::{Path, PathBuf};

use buildit_core::config::ReadFileError;
use buildit_core::runner::{LoadError, read_pipeline, read_system};
use buildit_core::system::SYSTEM_ENV_VAR;
use buildit_core::{
    ConfigDiagnostic, ConfigError, ConfigSource, DiagnosticRecord, Pipeline, SystemConfig,
};

use crate::exit::Exit;
use crate::report::{error_line, render_diagnostic, stderr_colors};

/// A configuration file that could not be read (exit 3).
pub(crate) struct FileProblem {
    message: String,
    help: Option<String>,
    code: &'static str,
    /// The valid text before the problem (the first invalid UTF-8 byte), when there is one.
    before: Option<String>,
}

impl FileProblem {
    /// Reports it: a JSON record when records are collected, else a line on stderr.
    fn report(self, path: &Path, records: Option<&mut Vec<DiagnosticRecord>>) -> Exit {
        match records {
            Some(records) => {
                let (line, column) = self.before.map_or((1, 1), |text| {
                    buildit_core::diagnostic::line_column(&text, text.len())
                });
                records.push(DiagnosticRecord {
                    file: path.display().to_string(),
                    code: self.code,
                    severity: buildit_core::DiagnosticSeverity::Error,
                    message: self.message,
                    line,
                    column,
                    help: self.help,
                });
            }
            None => error_line(&self.message, self.help.as_deref()),
        }
        Exit::InvalidConfig
    }
}

/// How a configuration file that could not be read is reported.
fn file_problem(path: &Path, error: &ReadFileError, what: &str) -> FileProblem {
    let help = miette::Diagnostic::help(error).map(|help| help.to_string());
    let problem = |help: Option<String>| FileProblem {
        message: format!("{what} {error}"),
        help,
        code: "buildit::config::unreadable",
        before: None,
    };
    match error {
        ReadFileError::NotFound { .. } => {
            let help = if path == Path::new("buildit.kdl") {
                "run this in a directory with a `buildit.kdl`, or pass the file: `buildit validate path/to/buildit.kdl`".to_owned()
            } else {
                format!(
                    "check the path; the current directory is `{}`",
                    std::env::current_dir().unwrap_or_default().display()
                )
            };
            problem(Some(help))
        }
        ReadFileError::TooLarge { .. } => FileProblem {
            code: "buildit::config::limit",
            ..problem(help)
        },
        ReadFileError::NotUtf8 { valid, .. } => FileProblem {
            before: Some(valid.clone()),
            ..problem(help)
        },
        ReadFileError::Io { source, .. } => FileProblem {
            message: format!("cannot read {what} `{}`: {source}", path.display()),
            ..problem(help)
        },
        _ => problem(help),
    }
}

/// Reports why a pipeline could not be loaded; the exit code it means.
pub(crate) fn report_load_error(
    error: LoadError,
    records: Option<&mut Vec<DiagnosticRecord>>,
) -> Exit {
    match error {
        LoadError::PipelineFile { path, source } => {
            file_problem(&path, &source, "pipeline file").report(&path, records)
        }
        LoadError::SystemFile { path, source } => {
            file_problem(&path, &source, "system configuration").report(&path, records)
        }
        LoadError::Config(error) => {
            report_error(&error, records);
            Exit::InvalidConfig
        }
        LoadError::Plan(error) => {
            let help = match &error {
                buildit_core::PlanError::UnknownStage { help, .. } => help.clone(),
                _ => None,
            };
            error_line(&error.to_string(), help.as_deref());
            Exit::Usage
        }
        other => {
            error_line(&other.to_string(), None);
            Exit::InvalidConfig
        }
    }
}

/// Checks the pipeline against the runner's system configuration (executors it enables); false on errors.
pub(crate) fn check_against_system(
    pipeline: &Pipeline,
    system: &SystemConfig,
    records: Option<&mut Vec<DiagnosticRecord>>,
) -> bool {
    match buildit_core::runner::check_against_system(pipeline, system) {
        Ok(warnings) => {
            report(&warnings, &pipeline.source, records);
            true
        }
        Err(LoadError::Config(error)) => {
            // As warnings are: every diagnostic with its excerpt, no summary line after them.
            report(&error.diagnostics, &error.input, records);
            false
        }
        Err(other) => {
            report_load_error(other, records);
            false
        }
    }
}

/// Most diagnostics rendered with source excerpts; each one rescans the source, and nobody reads thousands.
const MAX_RENDERED: usize = 100;

/// Prints diagnostics for people, to stderr.
pub(crate) fn print_diagnostics(diagnostics: &[ConfigDiagnostic], source: &ConfigSource) {
    let colors = stderr_colors();
    for diagnostic in diagnostics.iter().take(MAX_RENDERED) {
        eprint!("{}", render_diagnostic(diagnostic, source, colors));
        eprintln!();
    }
    if diagnostics.len() > MAX_RENDERED {
        eprintln!(
            "... and {} more; `buildit validate --format json` lists them all\n",
            diagnostics.len() - MAX_RENDERED
        );
    }
}

/// A pipeline read and parsed; on failure, its diagnostics are already printed (text) or collected (JSON).
pub(crate) fn load_pipeline(
    path: &Path,
    records: Option<&mut Vec<DiagnosticRecord>>,
) -> Result<Pipeline, Exit> {
    match read_pipeline(path) {
        Ok(pipeline) => {
            report(&pipeline.warnings, &pipeline.source, records);
            Ok(pipeline)
        }
        Err(error) => Err(report_load_error(error, records)),
    }
}

/// The system configuration, found as every command finds it; `None` means the defaults.
pub(crate) fn load_system_config(
    explicit: Option<&Path>,
    workspace: &Path,
    records: Option<&mut Vec<DiagnosticRecord>>,
) -> Result<SystemConfig, Exit> {
    let env_value = std::env::var(SYSTEM_ENV_VAR).ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match read_system(explicit, env_value.as_deref(), workspace, home.as_deref()) {
        Ok((config, source)) => {
            if let Some(source) = source {
                report(&config.warnings, &source, records);
            }
            Ok(config)
        }
        Err(error) => Err(report_load_error(error, records)),
    }
}

fn report(
    diagnostics: &[ConfigDiagnostic],
    source: &ConfigSource,
    records: Option<&mut Vec<DiagnosticRecord>>,
) {
    match records {
        Some(records) => {
            let index = source.line_index();
            records.extend(
                diagnostics
                    .iter()
                    .map(|d| DiagnosticRecord::with_index(d, source, &index)),
            );
        }
        None => print_diagnostics(diagnostics, source),
    }
}

fn report_error(error: &ConfigError, records: Option<&mut Vec<DiagnosticRecord>>) {
    match records {
        Some(records) => records.extend(error.records()),
        None => {
            print_diagnostics(&error.diagnostics, &error.input);
            eprintln!("error: {error}");
        }
    }
}
