//! A run as its events describe it: what a display or a summary draws, folded from the events alone.

use std::collections::{BTreeMap, HashMap};

use super::{
    FailureKind, PlannedInstance, RunEvent, RunEventKind, RunOutcome, StageCounts, StageOutcome,
    TestSummary,
};

/// One stage instance as far as the events have told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance name.
    pub name: String,
    /// The instances it needs, as indexes into [`RunView::instances`].
    pub needs: Vec<u32>,
    /// Its level in the plan.
    pub level: u32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Whether an attempt is running now.
    pub running: bool,
    /// How it ended, once it has (its last attempt's outcome; a retried attempt's is not final).
    pub outcome: Option<StageOutcome>,
    /// Exit code of its last finished attempt.
    pub exit_code: Option<i32>,
    /// Why its last attempt ended as it did.
    pub reason: Option<String>,
    /// Why its last attempt failed, for machines.
    pub failure: Option<FailureKind>,
    /// When its first attempt started (ms since the epoch).
    pub started_at_ms: Option<u64>,
    /// When it ended (ms since the epoch).
    pub finished_at_ms: Option<u64>,
    /// The outputs its last successful attempt wrote (masked).
    pub outputs: std::collections::BTreeMap<String, String>,
    /// What the test reports of its last attempt that had any counted.
    pub tests: Option<TestSummary>,
}

impl InstanceView {
    fn new(planned: &PlannedInstance) -> Self {
        Self {
            name: planned.name.clone(),
            needs: planned.needs.clone(),
            level: planned.level,
            attempts: 0,
            running: false,
            outcome: None,
            exit_code: None,
            reason: None,
            failure: None,
            started_at_ms: None,
            finished_at_ms: None,
            outputs: std::collections::BTreeMap::new(),
            tests: None,
        }
    }

    /// Wall time from its first attempt's start to its end, in ms; `None` if it never started or has not ended.
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.finished_at_ms?.saturating_sub(self.started_at_ms?))
    }
}

/// How the run ended, from its `run-finished` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnding {
    /// How.
    pub status: RunOutcome,
    /// Wall time in ms.
    pub duration_ms: u64,
    /// Stages by outcome.
    pub counts: StageCounts,
    /// Failed stages by why.
    pub failures: BTreeMap<FailureKind, u32>,
    /// The stages that decided the run's duration, first to last.
    pub critical_path: Vec<String>,
}

impl RunEnding {
    /// Whether the run failed only through the infrastructure (image pulls, lost stages, executor errors): a
    /// retry elsewhere may succeed, and `buildit run` exits 4 rather than 1.
    pub fn failed_by_infrastructure_only(&self) -> bool {
        self.status == RunOutcome::Failed
            && !self.failures.is_empty()
            && self.failures.keys().all(|kind| kind.is_infrastructure())
    }
}

/// A run folded from its events, in order: what any client (the terminal display, a summary, a remote watcher)
/// needs to draw it, without the plan or the executor. Events it cannot place (a stage it was never told of) are
/// ignored, never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunView {
    /// Pipeline name, once the run started.
    pub pipeline: Option<String>,
    /// The instances in the plan's order.
    pub instances: Vec<InstanceView>,
    /// The ending, once the run finished.
    pub ending: Option<RunEnding>,
    /// The sequence number of the last event applied.
    pub last_seq: u64,
    index: HashMap<String, usize>,
}

impl RunView {
    /// A view of a run of which nothing is known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the events given, applied in order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> Self {
        let mut view = Self::new();
        for event in events {
            view.apply(event);
        }
        view
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<&InstanceView> {
        self.index.get(name).and_then(|&at| self.instances.get(at))
    }

    /// Stages that have ended.
    pub fn finished(&self) -> usize {
        self.instances
            .iter()
            .filter(|instance| instance.outcome.is_some())
            .count()
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &RunEvent) {
        self.last_seq = self.last_seq.max(event.seq);
        match &event.kind {
            RunEventKind::RunStarted { pipeline, plan, .. } => {
                self.pipeline = Some(pipeline.clone());
                self.instances = plan.iter().map(InstanceView::new).collect();
                self.index = self
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(at, instance)| (instance.name.clone(), at))
                    .collect();
            }
            RunEventKind::StageStarted { stage, attempt } => {
                if let Some(instance) = self.instance_mut(stage) {
                    instance.attempts = instance.attempts.max(*attempt);
                    instance.running = true;
                    instance.outcome = None;
                    instance.started_at_ms.get_or_insert(event.at_ms);
                }
            }
            RunEventKind::StageOutputs { stage, outputs, .. } => {
                if let Some(instance) = self.instance_mut(stage) {
                    instance.outputs.clone_from(outputs);
                }
            }
            RunEventKind::StageTests { stage, tests, .. } => {
                if let Some(instance) = self.instance_mut(stage) {
                    instance.tests = Some(tests.clone());
                }
            }
            RunEventKind::StageFinished {
                stage,
                outcome,
                exit_code,
                reason,
                failure,
                retrying,
                ..
            } => {
                if let Some(instance) = self.instance_mut(stage) {
                    instance.running = false;
                    instance.exit_code = *exit_code;
                    instance.reason.clone_from(reason);
                    instance.failure = *failure;
                    if !retrying {
                        instance.outcome = Some(*outcome);
                        instance.finished_at_ms = Some(event.at_ms);
                    }
                }
            }
            RunEventKind::RunFinished {
                status,
                duration_ms,
                counts,
                failures,
                critical_path,
            } => {
                self.ending = Some(RunEnding {
                    status: *status,
                    duration_ms: *duration_ms,
                    counts: *counts,
                    failures: failures.clone(),
                    critical_path: critical_path.clone(),
                });
            }
            RunEventKind::StageQueued { .. }
            | RunEventKind::WaitingForGroup { .. }
            | RunEventKind::LogLine { .. } => {}
        }
    }

    fn instance_mut(&mut self, name: &str) -> Option<&mut InstanceView> {
        let at = *self.index.get(name)?;
        self.instances.get_mut(at)
    }
}
