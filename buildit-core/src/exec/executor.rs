//! The `Executor` trait: the one seam between the scheduler and where commands run (host, Docker, Kubernetes).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::sweep::{SweepReport, SweepScope};
use crate::config::{ExecutorKind, Resources};
use crate::events::LogStreamKind;
use crate::source::FetchableSource;
// The container executors reach the workspace path rules through here.
#[cfg(any(feature = "docker", feature = "kubernetes"))]
pub(crate) use crate::paths::{inside_workspace, outermost};

/// Everything an executor needs to run one attempt of one stage, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageSpec {
    /// Which kind of executor runs it (the plan's [`PlannedStage::executor`](crate::PlannedStage::executor)):
    /// an executor that holds several kinds routes on it.
    pub executor: ExecutorKind,
    /// Container image, for the container kinds (`docker`, `kubernetes`); a `local` stage has none.
    pub image: Option<String>,
    /// Commands, run in order in one shell session; the first failure stops the stage.
    pub commands: Vec<String>,
    /// The commands as echoed to the log before each runs: with the values of their variables shown where
    /// `commands` refer to them through the environment. Empty: the commands themselves.
    pub echoes: Vec<String>,
    /// The shell words that print those echoes from within the script (`"$ echo ${BUILDIT_BRANCH}"`): a value
    /// is never written into the script, not even into an echo. Empty: the commands themselves, quoted.
    pub echo_words: Vec<String>,
    /// Shell program (`sh`, `bash`).
    pub shell: String,
    /// Working directory (the workspace, plus the stage's `workdir`).
    pub workdir: PathBuf,
    /// The run's workspace (what a container executor mounts or copies).
    pub workspace: PathBuf,
    /// Where the workspace's files came from, when not from a directory of this machine: an executor that
    /// can fetch them where the stage runs (Kubernetes) does that instead of copying `workspace` in.
    pub source: Option<FetchableSource>,
    /// Environment on top of the executor's base environment (pipeline env, stage env, `BUILDIT_*`).
    pub env: BTreeMap<String, String>,
    /// Secrets, injected as environment variables (never written into commands).
    pub secrets: BTreeMap<String, String>,
    /// Variables of the executor's base environment the stage must not see (the secret store's).
    pub env_remove: Vec<String>,
    /// Time limit of the attempt.
    pub timeout: Option<Duration>,
    /// Resource requests.
    pub resources: Option<Resources>,
    /// Labels identifying run, stage and attempt (`buildit.run`, `buildit.stage`, `buildit.attempt`).
    pub labels: BTreeMap<String, String>,
    /// Sidecar containers started before the stage (container executors only).
    pub services: Vec<ServiceSpec>,
    /// Where an executor reports progress while it starts the attempt (image pulls): each note becomes a
    /// line of the stage's log as it happens. `None`: nobody listens.
    pub notes: Option<NoteSender>,
}

/// A channel for lines about starting an attempt. Not part of what a stage is: two specs that differ only in
/// where their notes go are equal.
#[derive(Debug, Clone)]
pub struct NoteSender(mpsc::Sender<String>);

impl NoteSender {
    /// A sender, and the receiver its notes arrive at.
    pub fn channel() -> (Self, mpsc::Receiver<String>) {
        let (sender, receiver) = mpsc::channel(64);
        (Self(sender), receiver)
    }

    /// Sends a note; waits while the receiver is full, and drops it when nobody listens any more.
    pub async fn send(&self, note: String) {
        let _ = self.0.send(note).await;
    }
}

impl PartialEq for NoteSender {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for NoteSender {}

/// A resolved `service`: a container on the stage's network, reachable by `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name and host name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// Its command; empty: the image's default.
    pub command: Vec<String>,
    /// A shell command run inside it until it succeeds, before the stage starts.
    pub ready: Option<ReadyCheck>,
    /// How long `ready` may keep failing before the stage fails.
    pub ready_timeout: Duration,
}

/// How a service's readiness is checked inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// A command line run by `sh -c`.
    Shell(String),
    /// A program and its arguments, run without a shell (images that have none).
    Exec(Vec<String>),
}

impl ReadyCheck {
    /// The argument vector to run.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Self::Shell(command) => vec!["sh".to_owned(), "-c".to_owned(), command.clone()],
            Self::Exec(argv) => argv.clone(),
        }
    }
}

impl std::fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shell(command) => f.write_str(command),
            Self::Exec(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

/// How long a service's `ready` command may keep failing, unless the service says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl StageSpec {
    /// A spec for `commands` run by `sh` in `workdir`, on the host (`local`).
    pub fn new(commands: Vec<String>, workdir: impl Into<PathBuf>) -> Self {
        let workdir = workdir.into();
        Self {
            executor: ExecutorKind::Local,
            image: None,
            commands,
            echoes: Vec::new(),
            echo_words: Vec::new(),
            shell: "sh".to_owned(),
            workspace: workdir.clone(),
            source: None,
            workdir,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            env_remove: Vec::new(),
            timeout: None,
            resources: None,
            labels: BTreeMap::new(),
            services: Vec::new(),
            notes: None,
        }
    }

    /// The shell script that runs the commands in one session, echoing each as `$ cmd` before it runs and
    /// stopping at the first that fails (with its exit code). The echo of the first command is not in it: the
    /// executor writes that line itself ([`StageSpec::first_echo`]), which saves the shell a write and keeps
    /// one-command stages as cheap as a bare `sh -c` (a stage of `true` is the hot path of large DAGs).
    pub fn script(&self) -> String {
        let mut script = String::new();
        // A stage that declares outputs writes them to a file whose directory it may not have yet.
        if self.env.contains_key("BUILDIT_OUTPUT") {
            script.push_str(
                "mkdir -p \"${BUILDIT_OUTPUT%/*}\" && : > \"$BUILDIT_OUTPUT\" || exit 1\n",
            );
        }
        for (index, command) in self.commands.iter().enumerate() {
            if index > 0 {
                // Stop at the first failure, with its exit code; the last command's status is the shell's.
                script.push_str("__buildit_status=$?; [ \"$__buildit_status\" -eq 0 ] || exit \"$__buildit_status\"\n");
                let echo = match self.echo_words.get(index) {
                    Some(word) => word.clone(),
                    None => crate::config::quote_for_shell(&format!("$ {command}")).into_owned(),
                };
                script.push_str(&format!("printf '%s\\n' {echo}\n"));
            }
            script.push_str(command);
            script.push('\n');
        }
        script
    }

    /// The `$ cmd` line of the first command, which the executor writes to the stage's stdout before starting
    /// the shell.
    pub fn first_echo(&self) -> Option<String> {
        (!self.commands.is_empty()).then(|| format!("$ {}\n", self.echo(0)))
    }

    /// How command `index` is shown in the log.
    fn echo(&self, index: usize) -> &str {
        self.echoes
            .get(index)
            .or_else(|| self.commands.get(index))
            .map_or("", String::as_str)
    }
}

/// A chunk of raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub stream: LogStreamKind,
    /// The bytes, as read.
    pub bytes: Vec<u8>,
}

/// The output of a running stage, in the order each stream produced it; ends when every stream is closed.
#[derive(Debug)]
pub struct LogStream {
    receiver: mpsc::Receiver<OutputChunk>,
}

impl LogStream {
    /// Wraps a channel that executors fill.
    pub fn new(receiver: mpsc::Receiver<OutputChunk>) -> Self {
        Self { receiver }
    }

    /// The next chunk, or `None` once all output has been read.
    pub async fn next(&mut self) -> Option<OutputChunk> {
        self.receiver.recv().await
    }
}

/// How a stage's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Killed for using too much memory.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Where a stage is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    /// Still running.
    Running,
    /// Finished.
    Exited(ExitStatus),
}

/// An executor could not do its job: an infrastructure error, never "the command failed".
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ExecError {
    /// The process could not be started.
    #[error("failed to start `{program}` in `{}`: {source}", workdir.display())]
    #[diagnostic(code(buildit::exec::spawn))]
    Spawn {
        /// The program.
        program: String,
        /// Its working directory.
        workdir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("failed to signal stage process group {pid}: {message}")]
    #[diagnostic(code(buildit::exec::signal))]
    Signal {
        /// The process group.
        pid: i32,
        /// Why.
        message: String,
    },
    /// Waiting for the process failed.
    #[error("failed to wait for the stage process: {0}")]
    #[diagnostic(code(buildit::exec::wait))]
    Wait(String),
    /// The backend is unavailable or refused the request.
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::backend))]
    Backend(String),
    /// The stage's kind of executor is not among those this runner has.
    #[error("this stage runs on the `{kind}` executor, and {why}")]
    #[diagnostic(code(buildit::exec::no_executor))]
    NoExecutor {
        /// The stage's kind.
        kind: ExecutorKind,
        /// Why there is none (`no Docker Engine is connected`).
        why: String,
    },
    /// The stage's image is missing and could not (or may not) be pulled.
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::image_pull))]
    ImagePull(String),
    /// The attempt disappeared: its container or pod was removed by someone else.
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::lost))]
    Lost(String),
    /// The attempt's machine took it away (a Kubernetes eviction or disruption).
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::evicted))]
    Evicted(String),
    /// The attempt's definition cannot be run as it is (a container the cluster cannot create from it).
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::config))]
    Config(String),
    /// The backend stopped the attempt at its deadline.
    #[error("{0}")]
    #[diagnostic(code(buildit::exec::timed_out))]
    TimedOut(String),
}

impl ExecError {
    /// Why the attempt failed, for machines: every executor error is the infrastructure's, and some say which.
    pub fn failure_kind(&self) -> crate::events::FailureKind {
        use std::io::ErrorKind;
        match self {
            Self::ImagePull(_) => crate::events::FailureKind::ImagePull,
            Self::Lost(_) => crate::events::FailureKind::Lost,
            Self::Evicted(_) => crate::events::FailureKind::Evicted,
            Self::Config(_) => crate::events::FailureKind::Config,
            Self::TimedOut(_) => crate::events::FailureKind::Timeout,
            // A `workdir` that does not exist or a `shell` that is not installed is the stage's definition:
            // running it again cannot help.
            Self::Spawn { source, .. }
                if matches!(
                    source.kind(),
                    ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::PermissionDenied
                ) =>
            {
                crate::events::FailureKind::Config
            }
            _ => crate::events::FailureKind::Infrastructure,
        }
    }
}

/// Runs stage attempts somewhere. Docker and Kubernetes backends implement the same five operations; those that
/// leave things outside the process (containers, volumes) also label them with their owner and sweep them.
pub trait Executor: Send + Sync + 'static {
    /// A running attempt.
    type Handle: Send + Sync + 'static;

    /// Starts an attempt.
    fn spawn(
        &self,
        spec: StageSpec,
    ) -> impl Future<Output = Result<Self::Handle, ExecError>> + Send;

    /// Its output; may be taken once.
    fn logs(
        &self,
        handle: &Self::Handle,
    ) -> impl Future<Output = Result<LogStream, ExecError>> + Send;

    /// Whether it is still running.
    fn status(
        &self,
        handle: &Self::Handle,
    ) -> impl Future<Output = Result<StageStatus, ExecError>> + Send;

    /// Waits until it ends.
    fn wait(
        &self,
        handle: &Self::Handle,
    ) -> impl Future<Output = Result<ExitStatus, ExecError>> + Send;

    /// Stops it: a graceful signal first, then a kill after `grace`. Returns once it has ended.
    fn cancel(
        &self,
        handle: &Self::Handle,
        grace: Duration,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// Whether the attempt's workspace is the host directory `spec.workspace`. When it is not (a container
    /// executor's per-run volume), the scheduler moves artifacts and caches in and out through
    /// [`Executor::put_files`] and [`Executor::get_files`].
    fn workspace_on_host(&self, _spec: &StageSpec) -> bool {
        true
    }

    /// Copies the tree under the host directory `from` into the attempt's workspace, over what is there.
    /// Only called when the workspace is not on the host.
    fn put_files(
        &self,
        _spec: &StageSpec,
        _from: &Path,
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        async { Err(workspace_is_on_host()) }
    }

    /// Copies `paths` (relative to the workspace; missing ones are skipped) from the attempt's workspace into
    /// the host directory `into`, at the same relative places. Only called when the workspace is not on the host.
    fn get_files(
        &self,
        _spec: &StageSpec,
        _paths: &[PathBuf],
        _into: &Path,
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        async { Err(workspace_is_on_host()) }
    }

    /// The run has ended: releases what the executor kept or left for it (a workspace volume, containers of
    /// attempts interrupted while starting).
    fn release_run(&self, _run_id: &str) -> impl Future<Output = Result<(), ExecError>> + Send {
        async { Ok(()) }
    }

    /// Removes what this executor's kind left behind and `scope` says may go: what a gone owner created
    /// ([`LeftoverOwner::is_gone`](crate::owner::LeftoverOwner::is_gone), judged against this executor's own
    /// owner), and everything of `scope.run`. Never what a live owner is using, nor anything not BuildIt's.
    /// An executor whose attempts leave nothing behind (the host's: a runner that dies takes its stages with
    /// it) has nothing to sweep.
    fn sweep(
        &self,
        _scope: &SweepScope,
    ) -> impl Future<Output = Result<SweepReport, ExecError>> + Send {
        async { Ok(SweepReport::default()) }
    }
}

fn workspace_is_on_host() -> ExecError {
    ExecError::Backend("this executor keeps the workspace on the host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_echo_later_commands_and_stop_at_failures() {
        let one = StageSpec::new(vec!["true".into()], "/w");
        assert_eq!(
            one.script(),
            "true\n",
            "a one-command stage is a bare command"
        );
        assert_eq!(one.first_echo().as_deref(), Some("$ true\n"));
        let two = StageSpec::new(vec!["make".into(), "make test".into()], "/w");
        assert_eq!(
            two.script(),
            "make\n__buildit_status=$?; [ \"$__buildit_status\" -eq 0 ] || exit \"$__buildit_status\"\nprintf '%s\\n' '$ make test'\nmake test\n"
        );
    }
}
