//! A fake executor for tests and benchmarks: every attempt ends at once, with the exit code it is told.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::executor::{ExecError, Executor, ExitStatus, LogStream, StageSpec, StageStatus};

/// Runs nothing: each attempt "exits" immediately with the code configured for its stage (0 by default) and
/// no output. It measures the scheduler alone and checks its decisions without processes. It is an extra, not a
/// replacement: the real executors have their own tests.
#[derive(Debug, Clone, Default)]
pub struct NoopExecutor {
    exit_codes: HashMap<String, i32>,
}

impl NoopExecutor {
    /// Every stage succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every attempt of the stage instance named `stage` exit with `code`.
    pub fn with_exit_code(mut self, stage: impl Into<String>, code: i32) -> Self {
        self.exit_codes.insert(stage.into(), code);
        self
    }
}

/// A finished fake attempt.
#[derive(Debug)]
pub struct NoopHandle {
    code: i32,
}

impl Executor for NoopExecutor {
    type Handle = NoopHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<NoopHandle, ExecError> {
        let stage = spec
            .labels
            .get("buildit.instance")
            .map(String::as_str)
            .unwrap_or_default();
        Ok(NoopHandle {
            code: self.exit_codes.get(stage).copied().unwrap_or(0),
        })
    }

    async fn logs(&self, _handle: &NoopHandle) -> Result<LogStream, ExecError> {
        let (_, receiver) = mpsc::channel(1);
        Ok(LogStream::new(receiver))
    }

    async fn status(&self, handle: &NoopHandle) -> Result<StageStatus, ExecError> {
        Ok(StageStatus::Exited(exit(handle.code)))
    }

    async fn wait(&self, handle: &NoopHandle) -> Result<ExitStatus, ExecError> {
        Ok(exit(handle.code))
    }

    async fn cancel(&self, _handle: &NoopHandle, _grace: Duration) -> Result<(), ExecError> {
        Ok(())
    }
}

fn exit(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
        oom_killed: false,
    }
}
