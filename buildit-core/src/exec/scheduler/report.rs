//! What a run did, stage by stage: the report `execute` returns, and the chain of needs that decided its length.

use std::time::Duration;

use crate::events::{FailureKind, RunOutcome, StageOutcome};
use crate::plan::Plan;

/// What happened to one stage instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// Instance name.
    pub name: String,
    /// Final outcome.
    pub outcome: StageOutcome,
    /// Attempts made (0 if it never started).
    pub attempts: u32,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Why, for skips, timeouts and errors.
    pub reason: Option<String>,
    /// Why it failed, for machines (see [`RunEventKind::StageFinished`]).
    pub failure: Option<FailureKind>,
    /// When its first attempt started, from the start of the run.
    pub started: Option<Duration>,
    /// When it finished, from the start of the run.
    pub finished: Duration,
}

impl StageReport {
    /// A stage that made no attempt (skipped, or lost to an internal error), with why.
    pub(super) fn not_run(
        name: &str,
        outcome: StageOutcome,
        failure: Option<FailureKind>,
        reason: String,
        finished: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            outcome,
            attempts: 0,
            exit_code: None,
            reason: Some(reason),
            failure,
            started: None,
            finished,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub status: RunOutcome,
    /// Every stage, in plan order of positions ([`Plan::stages`]).
    pub stages: Vec<StageReport>,
    /// Wall time.
    pub duration: Duration,
    /// What the executor could not release when the run ended (left for the next run's sweep, or `buildit gc`).
    pub cleanup: Option<String>,
}

impl RunReport {
    /// The chain of needs that ended last: the stages that decided the run's duration.
    pub fn critical_path(&self, plan: &Plan) -> Vec<usize> {
        let ran = |position: usize| self.stages[position].started.is_some();
        let Some(mut current) = (0..self.stages.len())
            .filter(|&p| ran(p))
            .max_by_key(|&p| self.stages[p].finished)
        else {
            return Vec::new();
        };
        let mut path = vec![current];
        while let Some(previous) = plan.stages()[current]
            .needs()
            .iter()
            .copied()
            .filter(|&need| ran(need))
            .max_by_key(|&need| self.stages[need].finished)
        {
            path.push(previous);
            current = previous;
        }
        path.reverse();
        path
    }
}
