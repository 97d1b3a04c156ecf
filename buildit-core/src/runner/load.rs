//! Reading a pipeline with its system configuration, checking one against the other, and planning the run: the
//! same steps for `buildit run`, `buildit plan` and the daemon. Nothing here prints; warnings are returned.

use std::path::{Path, PathBuf};

use crate::Pipeline;
use crate::config::{ReadFileError, read_config_file};
use crate::diagnostic::{ConfigDiagnostic, ConfigError, ConfigSource};
use crate::plan::{Plan, PlanError, RunContext};
use crate::system::{SystemConfig, SystemLocation, discover_system};

/// Why a pipeline could not be loaded and planned.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum LoadError {
    /// The pipeline file could not be read.
    #[error("pipeline file {source}")]
    #[diagnostic(code(buildit::config::unreadable))]
    PipelineFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ReadFileError,
    },
    /// The system configuration file could not be read.
    #[error("system configuration {source}")]
    #[diagnostic(code(buildit::config::unreadable))]
    SystemFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ReadFileError,
    },
    /// The pipeline, the system configuration, or the two together are invalid: every diagnostic, with spans.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(ConfigError),
    /// The run the context describes cannot be planned (an unknown `--stage`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(PlanError),
}

/// A pipeline planned for a run, with the system configuration it runs under.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The plan.
    pub plan: Plan,
    /// The system configuration.
    pub system: SystemConfig,
    /// Warnings, each with the text it points into: the pipeline's, the system configuration's, and those of
    /// checking one against the other.
    pub warnings: Vec<(ConfigSource, Vec<ConfigDiagnostic>)>,
}

/// Reads and parses the pipeline file at `path`; its warnings are in [`Pipeline::warnings`].
pub fn read_pipeline(path: &Path) -> Result<Pipeline, LoadError> {
    let text = read_config_file(path).map_err(|source| LoadError::PipelineFile {
        path: path.to_path_buf(),
        source,
    })?;
    // Included files are read from the pipeline's directory, by their paths relative to it.
    let base = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    crate::config::parse_pipeline_with_includes(
        &text,
        &path.display().to_string(),
        &mut |relative| crate::config::read_included_file(&base, relative),
    )
    .map_err(LoadError::Config)
}

/// Finds (as [`discover_system`] does), reads and parses the system configuration, its paths resolved against
/// its own directory and `workspace`; the defaults when there is no file. Returns it with its text (for its
/// warnings, in [`SystemConfig::warnings`]).
pub fn read_system(
    explicit: Option<&Path>,
    env_value: Option<&str>,
    workspace: &Path,
    home: Option<&Path>,
) -> Result<(SystemConfig, Option<ConfigSource>), LoadError> {
    let SystemLocation::File(path) = discover_system(explicit, env_value, workspace, home) else {
        return Ok((SystemConfig::defaults(workspace), None));
    };
    let text = read_config_file(&path).map_err(|source| LoadError::SystemFile {
        path: path.clone(),
        source,
    })?;
    let name = path.display().to_string();
    let mut config = crate::parse_system(&text, &name).map_err(LoadError::Config)?;
    let base = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    config.resolve_paths(base, workspace);
    Ok((config, Some(ConfigSource::new(name, text))))
}

/// Checks `pipeline` against `system` (the executors it enables); returns the check's warnings, or every
/// diagnostic when one is an error.
pub fn check_against_system(
    pipeline: &Pipeline,
    system: &SystemConfig,
) -> Result<Vec<ConfigDiagnostic>, LoadError> {
    let diagnostics = system.check_pipeline(pipeline);
    if diagnostics.iter().any(ConfigDiagnostic::is_error) {
        return Err(LoadError::Config(ConfigError {
            input: pipeline.source.clone(),
            diagnostics,
        }));
    }
    Ok(diagnostics)
}

/// Plans the run `context` describes, with the system's default executor for stages with an image (check the
/// pipeline against `system` first: [`check_against_system`]).
pub fn plan_for(
    pipeline: Pipeline,
    system: &SystemConfig,
    mut context: RunContext,
) -> Result<Plan, LoadError> {
    context.default_image_executor = system.default_executor;
    Plan::from_pipeline(pipeline, &context).map_err(LoadError::Plan)
}

/// Every step at once: the pipeline at `path`, the system configuration found from `system` (`--system`),
/// `system_env` (`$BUILDIT_SYSTEM`), `workspace` and `home`, checked and planned for `context`.
pub fn load_plan(
    path: &Path,
    system: Option<&Path>,
    system_env: Option<&str>,
    workspace: &Path,
    home: Option<&Path>,
    context: RunContext,
) -> Result<Loaded, LoadError> {
    let mut pipeline = read_pipeline(path)?;
    let mut warnings = Vec::new();
    let pipeline_warnings = std::mem::take(&mut pipeline.warnings);
    if !pipeline_warnings.is_empty() {
        warnings.push((pipeline.source.clone(), pipeline_warnings));
    }
    let (mut config, system_source) = read_system(system, system_env, workspace, home)?;
    if let Some(source) = system_source
        && !config.warnings.is_empty()
    {
        warnings.push((source, std::mem::take(&mut config.warnings)));
    }
    let checked = check_against_system(&pipeline, &config)?;
    if !checked.is_empty() {
        warnings.push((pipeline.source.clone(), checked));
    }
    let plan = plan_for(pipeline, &config, context)?;
    Ok(Loaded {
        plan,
        system: config,
        warnings,
    })
}
