//! A started run: its record, its live events, its cancellation, and its end.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::RunnerError;
use crate::events::{BusSubscriptions, EventBatch};
use crate::exec::RunReport;
use crate::plan::Plan;
use crate::store::{RecordSummary, RunFollower, RunRecord, Store, StoreError};

/// Joins a run's event stream at any sequence number, while it runs or after: the stored events up to the live
/// edge, then the live ones, with no gap and no duplicate ([`RunFollower`]). Cheap to clone and to hand to
/// other tasks (a daemon's streams); holding it never holds the run up.
#[derive(Debug, Clone)]
pub struct RunJoiner {
    store: Arc<dyn Store>,
    bus: BusSubscriptions,
    recorded: watch::Receiver<u64>,
}

impl RunJoiner {
    pub(super) fn new(
        store: Arc<dyn Store>,
        bus: BusSubscriptions,
        recorded: watch::Receiver<u64>,
    ) -> Self {
        Self {
            store,
            bus,
            recorded,
        }
    }

    /// A follower that receives every event after `after_seq` (0: from the first), to the run's end.
    pub async fn join(&self, after_seq: u64) -> RunFollower {
        RunFollower::join_subscribed(
            Arc::clone(&self.store),
            &self.bus,
            self.recorded.clone(),
            after_seq,
        )
        .await
    }
}

/// A run that has started.
#[derive(Debug)]
pub struct RunHandle {
    record: RunRecord,
    /// For display subscriptions only (it holds no lossless subscriber); the run's own clone sends.
    bus: BusSubscriptions,
    joiner: RunJoiner,
    cancel: CancellationToken,
    kill: CancellationToken,
    execution: JoinHandle<(RunReport, Plan)>,
    recorder: JoinHandle<Result<RecordSummary, StoreError>>,
    /// Cancelled when a cancel asked through the store is what stops the run.
    store_cancel: CancellationToken,
}

impl RunHandle {
    pub(super) fn new(
        record: RunRecord,
        bus: BusSubscriptions,
        joiner: RunJoiner,
        cancel: CancellationToken,
        kill: CancellationToken,
        execution: JoinHandle<(RunReport, Plan)>,
        recorder: JoinHandle<Result<RecordSummary, StoreError>>,
    ) -> Self {
        Self {
            record,
            bus,
            joiner,
            cancel,
            kill,
            execution,
            recorder,
            store_cancel: CancellationToken::new(),
        }
    }

    /// The token cancelled when a cancel asked through the store stops the run.
    pub(super) fn cancelled_through_store(mut self, requested: CancellationToken) -> Self {
        self.store_cancel = requested;
        self
    }

    /// Cancelled when the run is being stopped because another process asked the store to cancel it
    /// ([`crate::store::Store::cancel_running_run`]), just before the run's own cancel token: what a frontend
    /// waits on to say why the run stops.
    pub fn store_cancel(&self) -> CancellationToken {
        self.store_cancel.clone()
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

    /// Joins the run's events after `after_seq` (see [`RunJoiner`]).
    pub async fn follow(&self, after_seq: u64) -> RunFollower {
        self.joiner.join(after_seq).await
    }

    /// What joins the run's events from other tasks.
    pub fn joiner(&self) -> RunJoiner {
        self.joiner.clone()
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
            ..
        } = self;
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
