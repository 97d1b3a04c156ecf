//! Why a run could not be started or recorded: the runner's failures, never a stage's.

use crate::exec::ExecError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::system::SecretError;

/// A run that could not start, or whose record is incomplete. A stage that fails is not one of these: it is the
/// run's outcome.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum RunnerError {
    /// The store could not record the run.
    #[error(transparent)]
    #[diagnostic(code(buildit::runner::store))]
    Store(#[from] StoreError),
    /// The run's source (a git commit, an uploaded archive) could not be prepared.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Source(#[from] SourceError),
    /// The secret store could not give the run's secrets.
    #[error(transparent)]
    #[diagnostic(code(buildit::runner::secrets))]
    Secrets(#[from] SecretError),
    /// The executor a stage needs cannot be reached.
    #[error(transparent)]
    #[diagnostic(
        code(buildit::runner::executor),
        help(
            "start Docker, or set `DOCKER_HOST` or `executor \"docker\" host=...` in the system configuration"
        )
    )]
    Executor(#[from] ExecError),
    /// A stage needs an executor this build of BuildIt cannot run.
    #[error(
        "stage `{stage}` needs the `{executor}` executor, which this version of BuildIt cannot run yet"
    )]
    #[diagnostic(
        code(buildit::runner::unsupported_executor),
        help("stages run on the host, or in Docker with `image` and the `docker` executor")
    )]
    UnsupportedExecutor {
        /// The stage.
        stage: String,
        /// The executor's name.
        executor: String,
    },
    /// The system configuration names an artifact store this build cannot use.
    #[error("the `{store}` artifact store is not supported by this version of BuildIt yet")]
    #[diagnostic(
        code(buildit::runner::artifact_store),
        help("use `artifacts \"filesystem\"` in the system configuration")
    )]
    UnsupportedArtifactStore {
        /// The store's kind.
        store: String,
    },
    /// The run's task ended without a report (it panicked).
    #[error("the run ended unexpectedly: {0}")]
    #[diagnostic(code(buildit::runner::task))]
    Task(String),
}
