//! The owned model of a system configuration, with BuildIt's embedded defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{ExecutorKind, Pipeline, Template};
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Where runs, stage results and logs are recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// An embedded SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// Connection URL; may use `{env.NAME}`.
        url: Template,
    },
}

/// How the pods of a run reach its workspace claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum WorkspaceAccess {
    #[default]
    /// `ReadWriteOnce`: one node mounts it; every pod of the run is placed on the node of the pod that holds
    /// the workspace (what any storage class offers).
    ReadWriteOnce,
    /// `ReadWriteMany`: pods on any node mount it (NFS, CephFS, EFS and the like).
    ReadWriteMany,
}

impl WorkspaceAccess {
    /// The access mode as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadWriteMany => "ReadWriteMany",
        }
    }

    /// The access mode the API calls `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::ReadWriteOnce, Self::ReadWriteMany]
            .into_iter()
            .find(|access| access.as_str() == name)
    }
}

/// When a Docker executor pulls images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Before every stage.
    Always,
    /// Only when the image is not on the host (the default).
    #[default]
    IfNotPresent,
    /// Never: a missing image is an error.
    Never,
}

impl PullPolicy {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfNotPresent => "if-not-present",
            Self::Never => "never",
        }
    }
}

/// One configured executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExecutorConfig {
    /// Processes on the host.
    Local,
    /// A Docker Engine.
    Docker {
        /// Engine address; `DOCKER_HOST` or the local socket when unset.
        host: Option<String>,
        /// Pull policy.
        pull: PullPolicy,
        /// Network to attach containers to.
        network: Option<String>,
    },
    /// A Kubernetes cluster.
    Kubernetes {
        /// Namespace for stage pods.
        namespace: Option<String>,
        /// The kubeconfig file; unset: `KUBECONFIG`, `~/.kube/config`, or the pod's own service account.
        kubeconfig: Option<PathBuf>,
        /// kubeconfig context.
        context: Option<String>,
        /// Service account of stage pods.
        service_account: Option<String>,
        /// Storage class of a run's workspace claim.
        storage_class: Option<String>,
        /// The size of a run's workspace claim (a Kubernetes quantity).
        workspace_size: Option<String>,
        /// How a run's pods share its workspace claim.
        workspace_access: WorkspaceAccess,
        /// The image of the pod that holds a run's workspace.
        helper_image: Option<String>,
        /// An image with `git`, that checks a run's commit out into its workspace on the cluster.
        git_image: Option<String>,
        /// Secrets for pulling stage images.
        image_pull_secrets: Vec<String>,
        /// How long an image may fail to pull before the attempt fails.
        image_pull_grace: Option<Duration>,
        /// How long a pod may stay unschedulable before the attempt fails.
        unschedulable_limit: Option<Duration>,
    },
}

impl ExecutorConfig {
    /// Which executor this configures.
    pub fn kind(&self) -> ExecutorKind {
        match self {
            Self::Local => ExecutorKind::Local,
            Self::Docker { .. } => ExecutorKind::Docker,
            Self::Kubernetes { .. } => ExecutorKind::Kubernetes,
        }
    }
}

/// Where artifacts are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ArtifactStoreConfig {
    /// A directory.
    Filesystem {
        /// The directory.
        path: PathBuf,
    },
    /// An S3-compatible bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix.
        prefix: Option<String>,
        /// Endpoint URL for S3-compatible services.
        endpoint: Option<String>,
        /// Region.
        region: Option<String>,
    },
}

/// Where secret values come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SecretStoreConfig {
    /// Environment variables: secret `X` is read from `{prefix}X`.
    Env {
        /// Variable name prefix.
        prefix: String,
    },
    /// A KDL file of `NAME "value"` nodes.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// A named deployment target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployerConfig {
    /// Kind of target (`kubernetes`).
    pub kind: String,
    /// Its name, used by pipelines.
    pub name: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// kubeconfig context.
    pub context: Option<String>,
}

/// Limits on uploaded workspace sources (`sources max-upload=... max-entries=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceLimits {
    /// The largest upload accepted, in bytes; also the most an archive may unpack to (its files' sizes added up).
    pub max_upload: u64,
    /// The most entries (files, directories, symlinks) an archive may hold.
    pub max_entries: u64,
}

/// Default upload limit: 100 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 100 * 1024 * 1024;
/// Default entry limit of an uploaded archive.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            max_upload: DEFAULT_MAX_UPLOAD,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// A runner's system configuration.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SystemConfig {
    /// The store.
    pub store: StoreConfig,
    /// Configured executors.
    pub executors: Vec<ExecutorConfig>,
    /// Executor for stages with an image that name none.
    pub default_executor: Option<ExecutorKind>,
    /// The artifact store.
    pub artifacts: ArtifactStoreConfig,
    /// The secret store.
    pub secrets: SecretStoreConfig,
    /// Deployment targets.
    pub deployers: Vec<DeployerConfig>,
    /// Limits on uploaded workspace sources.
    pub sources: SourceLimits,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// Warnings found while parsing.
    #[serde(skip)]
    pub warnings: Vec<ConfigDiagnostic>,
    /// Which paths were written in the file (resolved against it) rather than defaulted (against the workspace).
    #[serde(skip)]
    pub(crate) written_paths: WrittenPaths,
}

/// Which relative paths of a system configuration came from its file.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WrittenPaths {
    pub(crate) store: bool,
    pub(crate) artifacts: bool,
}

/// Default SQLite file, relative to the workspace.
pub const DEFAULT_DATABASE: &str = ".buildit/buildit.db";
/// Default artifact directory, relative to the workspace.
pub const DEFAULT_ARTIFACTS: &str = ".buildit/artifacts";
/// Default prefix of secret environment variables.
pub const DEFAULT_SECRET_PREFIX: &str = "BUILDIT_SECRET_";

impl SystemConfig {
    /// The embedded defaults: SQLite and filesystem artifacts under `.buildit/` in `workspace`, local and docker
    /// executors, secrets from `BUILDIT_SECRET_*` environment variables.
    pub fn defaults(workspace: &Path) -> Self {
        Self {
            store: StoreConfig::Sqlite {
                path: workspace.join(DEFAULT_DATABASE),
            },
            executors: vec![
                ExecutorConfig::Local,
                ExecutorConfig::Docker {
                    host: None,
                    pull: PullPolicy::default(),
                    network: None,
                },
            ],
            default_executor: None,
            artifacts: ArtifactStoreConfig::Filesystem {
                path: workspace.join(DEFAULT_ARTIFACTS),
            },
            secrets: SecretStoreConfig::Env {
                prefix: DEFAULT_SECRET_PREFIX.to_owned(),
            },
            deployers: Vec::new(),
            sources: SourceLimits::default(),
            file: None,
            warnings: Vec::new(),
            written_paths: WrittenPaths::default(),
        }
    }

    /// The configuration of one executor kind, if it is enabled.
    pub fn executor(&self, kind: ExecutorKind) -> Option<&ExecutorConfig> {
        self.executors
            .iter()
            .find(|executor| executor.kind() == kind)
    }

    /// Makes relative paths absolute: those written in the file against `file_dir` (the file's directory),
    /// defaulted ones against `workspace`.
    pub fn resolve_paths(&mut self, file_dir: &Path, workspace: &Path) {
        let written = self.written_paths;
        let resolve = |path: &mut PathBuf, from_file: bool| {
            if path.is_relative() {
                *path = if from_file { file_dir } else { workspace }.join(&*path);
            }
        };
        if let StoreConfig::Sqlite { path } = &mut self.store {
            resolve(path, written.store);
        }
        if let ArtifactStoreConfig::Filesystem { path } = &mut self.artifacts {
            resolve(path, written.artifacts);
        }
        if let SecretStoreConfig::File { path } = &mut self.secrets {
            resolve(path, true);
        }
    }

    /// Problems of `pipeline` on this runner: stages sent to an executor that is not enabled here.
    pub fn check_pipeline(&self, pipeline: &Pipeline) -> Vec<ConfigDiagnostic> {
        let mut diagnostics = Vec::new();
        let file = self.file.as_ref().map_or_else(
            || "the default system configuration".to_owned(),
            |f| format!("`{}`", f.display()),
        );
        for stage in &pipeline.stages {
            let has_image = stage.image.is_some() || pipeline.defaults.image.is_some();
            let (kind, span) = match &stage.executor {
                Some(executor) => (executor.value, executor.span),
                None if has_image => (
                    self.default_executor.unwrap_or(ExecutorKind::Docker),
                    stage
                        .image
                        .as_ref()
                        .or(pipeline.defaults.image.as_ref())
                        .map_or(stage.name.span, |i| i.span),
                ),
                None => (ExecutorKind::Local, stage.name.span),
            };
            if self.executor(kind).is_none() {
                let enabled: Vec<&str> = self.executors.iter().map(|e| e.kind().as_str()).collect();
                diagnostics.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!(
                            "stage `{}` runs on `{kind}`, which {file} does not enable",
                            stage.name.value
                        ),
                        span,
                        format!("needs executor `{kind}`"),
                    )
                    .with_help(format!(
                        "add `executor \"{kind}\"` to the system configuration (enabled: {})",
                        enabled.join(", ")
                    )),
                );
            }
        }
        diagnostics
    }
}
