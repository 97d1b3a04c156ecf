//! Finding the system configuration: `--system`, `$BUILDIT_SYSTEM`, the workspace, the user's config, defaults.

use std::path::{Path, PathBuf};

use super::model::SystemConfig;
use super::parse::parse_system;
use crate::config::{ReadFileError, read_config_file};
use crate::diagnostic::ConfigError;

/// Name of the file looked for in the workspace.
pub const SYSTEM_FILE_NAME: &str = "buildit-system.kdl";
/// Environment variable naming the file.
pub const SYSTEM_ENV_VAR: &str = "BUILDIT_SYSTEM";

/// Where the system configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemLocation {
    /// A file (from `--system`, `$BUILDIT_SYSTEM`, the workspace or the user's config directory).
    File(PathBuf),
    /// No file: the embedded defaults.
    Defaults,
}

/// Finds the system configuration the way every command does: `explicit` (`--system`), else `env_value`
/// (`$BUILDIT_SYSTEM`), else `buildit-system.kdl` in `workspace`, else `~/.config/buildit/system.kdl` under
/// `home`, else the defaults. An explicit or environment path is returned even when missing, so that the
/// caller reports it instead of silently using defaults.
pub fn discover_system(
    explicit: Option<&Path>,
    env_value: Option<&str>,
    workspace: &Path,
    home: Option<&Path>,
) -> SystemLocation {
    if let Some(path) = explicit {
        return SystemLocation::File(path.to_path_buf());
    }
    if let Some(value) = env_value.filter(|value| !value.is_empty()) {
        return SystemLocation::File(PathBuf::from(value));
    }
    let in_workspace = workspace.join(SYSTEM_FILE_NAME);
    if in_workspace.is_file() {
        return SystemLocation::File(in_workspace);
    }
    if let Some(home) = home {
        let user = home.join(".config").join("buildit").join("system.kdl");
        if user.is_file() {
            return SystemLocation::File(user);
        }
    }
    SystemLocation::Defaults
}

/// Why a system configuration could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read as text within the size limit.
    #[error("system configuration {0}")]
    #[diagnostic(transparent)]
    Read(#[from] ReadFileError),
    /// The file is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] ConfigError),
}

/// Loads the system configuration from `location`; relative paths in a file are made relative to the file,
/// defaults are under `workspace`.
pub fn load_system(location: &SystemLocation, workspace: &Path) -> Result<SystemConfig, LoadError> {
    match location {
        SystemLocation::Defaults => Ok(SystemConfig::defaults(workspace)),
        SystemLocation::File(path) => {
            let text = read_config_file(path)?;
            let mut config = parse_system(&text, &path.display().to_string())?;
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            config.resolve_paths(base, workspace);
            config.file = Some(path.clone());
            Ok(config)
        }
    }
}
