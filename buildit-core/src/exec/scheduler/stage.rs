//! One stage instance: its attempts in turn (retries, `allow-failure`), each announced and ended through
//! `lifecycle`.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::super::cache::ResolvedCache;
use super::super::executor::Executor;
use super::super::mask::SecretMasker;
use super::super::options::RunOptions;
use super::super::spec::{RunIdentity, retries, stage_spec};
use super::lifecycle;
use super::outcome::Attempt;
use super::report::StageReport;
use crate::events::{EventBus, FailureKind, LogStreamKind, RunEventKind, StageOutcome};
use crate::plan::Plan;

/// One stage instance, with everything its attempts need.
pub(super) struct StageTask<E> {
    pub(super) plan: Plan,
    pub(super) position: usize,
    pub(super) executor: Arc<E>,
    pub(super) run: Arc<RunIdentity>,
    pub(super) options: RunOptions,
    pub(super) bus: EventBus,
    pub(super) stop: CancellationToken,
    pub(super) masker: Arc<SecretMasker>,
    pub(super) run_started: Instant,
}

impl<E: Executor> StageTask<E> {
    pub(super) async fn run(self) -> StageReport {
        let stage = &self.plan.stages()[self.position];
        let name = stage.name().to_owned();
        let attempts_allowed = 1 + retries(&self.plan, stage);
        let allow_failure = self.plan.definition(stage).allow_failure;
        let first_start = self.run_started.elapsed();
        let mut last = Attempt {
            outcome: StageOutcome::Cancelled,
            exit_code: None,
            reason: Some("run cancelled".to_owned()),
            failure: Some(FailureKind::Cancelled),
        };
        let mut attempts = 0;
        let mut caches: Vec<ResolvedCache> = Vec::new();
        // The stage's concurrency group is held across its attempts; the wait for it is before the first one,
        // outside every attempt's timeout. Stopped while it waits, the stage never starts.
        let held = match (stage.group(), &self.options.groups) {
            (Some(group), Some(groups)) if !self.stop.is_cancelled() => groups
                .acquire(group, Some(&name), &self.bus, &self.stop)
                .await
                .then(|| (group, Arc::clone(groups))),
            _ => None,
        };
        for attempt in 1..=attempts_allowed {
            // A retry that was announced (`retrying` on the last attempt's end) always starts: stopped now, it
            // ends `cancelled` while starting, so that the stage's last event is a final one.
            if attempt == 1 && self.stop.is_cancelled() {
                break;
            }
            attempts = attempt;
            lifecycle::attempt_started(&self.bus, &name, attempt).await;
            let attempt_started = Instant::now();
            last = match stage_spec(&self.plan, stage, &self.run, attempt) {
                // Boxed: an attempt's future is large, and the stage task's own future, moved into the task
                // set for every stage, stays small.
                Ok(spec) => Box::pin(self.attempt(attempt, spec, &mut caches)).await,
                Err(error) => Attempt::failed(FailureKind::Config, error.0),
            };
            let retrying = last.outcome.is_failure()
                && attempt < attempts_allowed
                && !self.stop.is_cancelled();
            if last.outcome.is_failure() && !retrying && allow_failure {
                last.outcome = StageOutcome::FailedAllowed;
            }
            last.reason = last.reason.map(|reason| self.masker.mask(&reason));
            lifecycle::attempt_finished(
                &self.bus,
                &name,
                attempt,
                &last,
                attempt_started.elapsed(),
                retrying,
            )
            .await;
            if !retrying {
                break;
            }
        }
        if let Some((group, groups)) = held {
            groups.release(group, Some(&name)).await;
        }
        if attempts == 0 {
            // Stopped before its first attempt: still reported, so that every queued stage finishes.
            lifecycle::never_started(&self.bus, &name, last.reason.clone()).await;
            last.outcome = StageOutcome::Skipped;
            last.failure = None;
        }
        StageReport {
            name,
            outcome: last.outcome,
            attempts,
            exit_code: last.exit_code,
            reason: last.reason,
            failure: last.failure,
            started: (attempts > 0).then_some(first_start),
            finished: self.run_started.elapsed(),
        }
    }

    /// A line in the stage's log from BuildIt itself (cache hits and misses), on stderr.
    pub(super) async fn note(&self, attempt: u32, text: String) {
        self.bus
            .emit(RunEventKind::LogLine {
                stage: self.plan.stages()[self.position].name().to_owned(),
                attempt,
                stream: LogStreamKind::Stderr,
                text: self.masker.mask(&text),
            })
            .await;
    }
}
