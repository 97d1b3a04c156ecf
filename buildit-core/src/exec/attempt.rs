//! What every executor's handle keeps: the attempt's exit, watched by whoever asks, and its output, taken once.

use std::sync::Mutex;

use tokio::sync::{mpsc, watch};

use super::executor::{ExecError, ExitStatus, LogStream, OutputChunk, StageStatus};

/// The exit of an attempt, set once by the task that watches it; `Err` is the watcher's own failure.
pub(crate) type ExitReport = Option<Result<ExitStatus, WaitFailure>>;

/// Why the watcher could not say how the attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum WaitFailure {
    /// Watching failed.
    Failed(String),
    /// The attempt disappeared (its container was removed by someone else).
    #[cfg_attr(
        not(any(feature = "docker", feature = "kubernetes")),
        expect(
            dead_code,
            reason = "only a container can be removed behind BuildIt's back"
        )
    )]
    Lost(String),
    /// The machine took the attempt away (evicted).
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "only pods are evicted")
    )]
    Evicted(String),
    /// Its image could not be pulled.
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "seen while a pod waits")
    )]
    ImagePull(String),
    /// Its definition could not be run.
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "seen while a pod waits")
    )]
    Config(String),
    /// The backend stopped it at its deadline.
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "a Job's deadline")
    )]
    TimedOut(String),
}

impl WaitFailure {
    /// The error it is.
    pub(crate) fn to_error(&self) -> ExecError {
        match self {
            Self::Failed(message) => ExecError::Wait(message.clone()),
            Self::Lost(message) => ExecError::Lost(message.clone()),
            Self::Evicted(message) => ExecError::Evicted(message.clone()),
            Self::ImagePull(message) => ExecError::ImagePull(message.clone()),
            Self::Config(message) => ExecError::Config(message.clone()),
            Self::TimedOut(message) => ExecError::TimedOut(message.clone()),
        }
    }
}

/// The reading side of an attempt's exit.
#[derive(Debug)]
pub(crate) struct ExitWatch(watch::Receiver<ExitReport>);

impl ExitWatch {
    /// A watch and the sender its watcher task reports through.
    pub(crate) fn new() -> (watch::Sender<ExitReport>, Self) {
        let (sender, receiver) = watch::channel(None);
        (sender, Self(receiver))
    }

    /// Whether the attempt has ended.
    pub(crate) fn ended(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Running, or how it ended.
    pub(crate) fn status(&self) -> Result<StageStatus, ExecError> {
        match self.0.borrow().as_ref() {
            None => Ok(StageStatus::Running),
            Some(Ok(status)) => Ok(StageStatus::Exited(*status)),
            Some(Err(failure)) => Err(failure.to_error()),
        }
    }

    /// Waits until it ends.
    pub(crate) async fn wait(&self) -> Result<ExitStatus, ExecError> {
        let mut exit = self.0.clone();
        let result = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecError::Wait("the attempt's watcher stopped".to_owned()))?;
        match result.as_ref() {
            Some(Ok(status)) => Ok(*status),
            Some(Err(failure)) => Err(failure.to_error()),
            None => Err(ExecError::Wait("no exit status".to_owned())),
        }
    }
}

/// An attempt's output, which one reader may take.
#[derive(Debug)]
pub(crate) struct OutputOnce(Mutex<Option<mpsc::Receiver<OutputChunk>>>);

impl OutputOnce {
    pub(crate) fn new(receiver: mpsc::Receiver<OutputChunk>) -> Self {
        Self(Mutex::new(Some(receiver)))
    }

    /// The output, the first time; an error afterwards.
    pub(crate) fn take(&self) -> Result<LogStream, ExecError> {
        let receiver = self
            .0
            .lock()
            .map_err(|_| ExecError::Backend("log state poisoned".to_owned()))?
            .take()
            .ok_or_else(|| {
                ExecError::Backend("the logs of this attempt were already taken".to_owned())
            })?;
        Ok(LogStream::new(receiver))
    }
}
