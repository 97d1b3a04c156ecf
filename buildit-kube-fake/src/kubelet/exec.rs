//! Commands run for `pods/exec`: a Docker exec in a running container, attached to the streams the client
//! asked for, and the exit code it ended with.

use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::Stream;
use tokio::io::AsyncWrite;

/// How long the engine may take, once the output has ended, to record the exit code.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(5);
const EXIT_CODE_POLL: Duration = Duration::from_millis(50);

/// Why an exec could not be run or its end not learnt.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The container stopped (or went) between the check of the pod's status and the exec.
    #[error("container `{container}` is not running")]
    NotRunning { container: String },
    #[error("failed to create an exec in container `{container}`: {source}")]
    Create {
        container: String,
        source: bollard::errors::Error,
    },
    #[error("failed to start exec `{exec}`: {source}")]
    Start {
        exec: String,
        source: bollard::errors::Error,
    },
    #[error("exec `{exec}` started detached although it was asked attached")]
    Detached { exec: String },
    #[error("failed to inspect exec `{exec}`: {source}")]
    Inspect {
        exec: String,
        source: bollard::errors::Error,
    },
    #[error("exec `{exec}` did not report an exit code within {EXIT_CODE_WAIT:?}")]
    NoExitCode { exec: String },
}

/// Which standard streams of the command are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttachedStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An exec created in a container, not started yet.
#[derive(Debug)]
pub(crate) struct CreatedExec {
    docker: Docker,
    id: String,
}

/// The engine's multiplexed stdout and stderr of a started exec.
pub(crate) type ExecOutput =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The command's stdin; shutting it down half-closes the connection, which the engine passes on as EOF.
pub(crate) type ExecInput = Pin<Box<dyn AsyncWrite + Send>>;

/// A started exec: its streams, and a handle to learn how it ended.
pub(crate) struct RunningExec {
    pub output: ExecOutput,
    pub input: ExecInput,
    pub end: ExecEnd,
}

impl std::fmt::Debug for RunningExec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RunningExec")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Where to ask how a started exec ended.
#[derive(Debug, Clone)]
pub(crate) struct ExecEnd {
    docker: Docker,
    id: String,
}

/// Creates an exec of `command` in the running container `container_id`.
pub(crate) async fn create_exec(
    docker: &Docker,
    container_id: &str,
    command: &[String],
    streams: AttachedStreams,
) -> Result<CreatedExec, ExecError> {
    let options = CreateExecOptions {
        cmd: Some(command.to_vec()),
        attach_stdin: Some(streams.stdin),
        attach_stdout: Some(streams.stdout),
        attach_stderr: Some(streams.stderr),
        tty: Some(false),
        ..CreateExecOptions::default()
    };
    match docker.create_exec(container_id, options).await {
        Ok(created) => Ok(CreatedExec {
            docker: docker.clone(),
            id: created.id,
        }),
        // 409: the container is not running; 404: it is gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Err(ExecError::NotRunning {
            container: container_id.to_owned(),
        }),
        Err(source) => Err(ExecError::Create {
            container: container_id.to_owned(),
            source,
        }),
    }
}

impl CreatedExec {
    /// The engine's id of the exec.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Starts the command with its streams attached.
    pub(crate) async fn start(self) -> Result<RunningExec, ExecError> {
        let started = self
            .docker
            .start_exec(&self.id, None)
            .await
            .map_err(|source| ExecError::Start {
                exec: self.id.clone(),
                source,
            })?;
        match started {
            StartExecResults::Attached { output, input } => Ok(RunningExec {
                output,
                input,
                end: ExecEnd {
                    docker: self.docker,
                    id: self.id,
                },
            }),
            StartExecResults::Detached => Err(ExecError::Detached { exec: self.id }),
        }
    }
}

impl ExecEnd {
    /// The exit code, once the engine has recorded it (the attached output may end a moment before).
    pub(crate) async fn exit_code(&self) -> Result<i64, ExecError> {
        let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
        loop {
            let inspected =
                self.docker
                    .inspect_exec(&self.id)
                    .await
                    .map_err(|source| ExecError::Inspect {
                        exec: self.id.clone(),
                        source,
                    })?;
            if inspected.running != Some(true)
                && let Some(code) = inspected.exit_code
            {
                return Ok(code);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::NoExitCode {
                    exec: self.id.clone(),
                });
            }
            tokio::time::sleep(EXIT_CODE_POLL).await;
        }
    }
}
