//! The system configuration (`buildit-system.kdl`): which store, executors, artifact store, secret store,
//! deployers and source limits a runner uses, and how a command finds it.

mod discover;
mod model;
mod parse;
mod secrets;

pub use discover::{
    LoadError, SYSTEM_ENV_VAR, SYSTEM_FILE_NAME, SystemLocation, discover_system, load_system,
};
pub use model::{
    ArtifactStoreConfig, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_UPLOAD, DeployerConfig, ExecutorConfig,
    PullPolicy, SecretStoreConfig, SourceLimits, StoreConfig, SystemConfig, WorkspaceAccess,
};
pub use parse::parse_system;
pub use secrets::SecretError;
