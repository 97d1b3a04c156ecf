//! A started run: its record, its live events, its cancellation, and its end.

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::RunnerError;
use crate::events::{EventBatch, EventBus};
use crate::exec::RunReport;
use crate::plan::Plan;
use crate::store::{RecordSummary, RunRecord, StoreError};

/// A run that has started.
#[derive(Debug)]
pub struct RunHandle {
    record: RunRecord,
    /// Kept for display subscriptions only; it sends nothing (the run's own clone does).
    bus: EventBus,
    cancel: CancellationToken,
    kill: CancellationToken,
    execution: JoinHandle<(RunReport, Plan)>,
    recorder: JoinHandle<Result<RecordSummary, StoreError>>,
}

impl RunHandle {
    pub(super) fn new(
        record: RunRecord,
        bus: EventBus,
        cancel: CancellationToken,
        kill: CancellationToken,
        execution: JoinHandle<(RunReport, Plan)>,
        recorder: JoinHandle<Result<RecordSummary, StoreError>>,
    ) -> Self {
        Self {
            record,
            bus,
            cancel,
            kill,
            execution,
            recorder,
        }
    }

    /// The run as the store recorded it when it started (its id, pipeline and number).
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.record.id
    }

    /// A display subscriber from now on (it misses what was sent before; see [`super::Runner::subscribe_display`]).
    pub fn subscribe_display(&self) -> broadcast::Receiver<EventBatch> {
        self.bus.subscribe_display()
    }

    /// Stops the run gracefully (idempotent).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cuts the grace period of stopping stages short.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Waits until the run has executed. Its last events may still be on their way to the store:
    /// [`Executed::recorded`] waits for them.
    pub async fn wait(self) -> Result<Executed, RunnerError> {
        let Self {
            execution,
            recorder,
            bus,
            ..
        } = self;
        drop(bus);
        let (report, plan) = match execution.await {
            Ok(executed) => executed,
            Err(error) => {
                recorder.abort();
                return Err(RunnerError::Task(error.to_string()));
            }
        };
        Ok(Executed {
            report,
            plan,
            recorder: Some(recorder),
        })
    }
}

/// A run that has executed.
#[derive(Debug)]
pub struct Executed {
    /// How it went.
    pub report: RunReport,
    /// The plan it ran, back from the run.
    pub plan: Plan,
    recorder: Option<JoinHandle<Result<RecordSummary, StoreError>>>,
}

impl Executed {
    /// Waits until every event is in the store; an error means the run's record is incomplete. Called again,
    /// it has nothing more to wait for.
    pub async fn recorded(&mut self) -> Result<RecordSummary, RunnerError> {
        let Some(recorder) = self.recorder.take() else {
            return Ok(RecordSummary::default());
        };
        match recorder.await {
            Ok(recorded) => Ok(recorded?),
            Err(error) => Err(RunnerError::Task(error.to_string())),
        }
    }
}
