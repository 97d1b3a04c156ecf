//! Every stage and run lifecycle event of a run comes from here: what `run-started`, `stage-started`,
//! `stage-outputs`, `stage-tests`, `stage-finished` and `run-finished` say, in one place.

use std::time::Duration;

use super::outcome::Attempt;
use super::report::{RunReport, StageReport};
use crate::events::{
    EventBus, FailureKind, PlannedInstance, RunEventKind, StageCounts, StageOutcome,
};
use crate::plan::Plan;

/// The run began: its plan, then every stage queued.
pub(super) async fn run_started(bus: &EventBus, plan: &Plan) {
    bus.emit(RunEventKind::RunStarted {
        pipeline: plan.pipeline().name.value.clone(),
        stages: u32::try_from(plan.stages().len()).unwrap_or(u32::MAX),
        plan: planned_instances(plan),
    })
    .await;
    bus.emit_all(plan.order().map(|stage| RunEventKind::StageQueued {
        stage: stage.name().to_owned(),
    }))
    .await;
}

/// An attempt of `stage` begins.
pub(super) async fn attempt_started(bus: &EventBus, stage: &str, attempt: u32) {
    bus.emit(RunEventKind::StageStarted {
        stage: stage.to_owned(),
        attempt,
    })
    .await;
}

/// A successful attempt of `stage` wrote `outputs` (masked).
pub(super) async fn outputs_written(
    bus: &EventBus,
    stage: &str,
    attempt: u32,
    outputs: std::collections::BTreeMap<String, String>,
) {
    bus.emit(RunEventKind::StageOutputs {
        stage: stage.to_owned(),
        attempt,
        outputs,
    })
    .await;
}

/// The test reports of an attempt of `stage` counted `tests` (names masked).
pub(super) async fn tests_counted(
    bus: &EventBus,
    stage: &str,
    attempt: u32,
    tests: crate::events::TestSummary,
) {
    bus.emit(RunEventKind::StageTests {
        stage: stage.to_owned(),
        attempt,
        tests,
    })
    .await;
}

/// An attempt of `stage` ended, and whether another follows.
pub(super) async fn attempt_finished(
    bus: &EventBus,
    stage: &str,
    attempt: u32,
    ended: &Attempt,
    took: Duration,
    retrying: bool,
) {
    bus.emit(RunEventKind::StageFinished {
        stage: stage.to_owned(),
        attempt,
        outcome: ended.outcome,
        exit_code: ended.exit_code,
        duration_ms: millis(took),
        reason: ended.reason.clone(),
        failure: ended.failure,
        retrying,
    })
    .await;
}

/// A stage stopped before its first attempt (the run was cancelled): it is skipped, so that every queued stage
/// finishes.
pub(super) async fn never_started(bus: &EventBus, stage: &str, reason: Option<String>) {
    bus.emit(RunEventKind::StageFinished {
        stage: stage.to_owned(),
        attempt: 0,
        outcome: StageOutcome::Skipped,
        exit_code: None,
        duration_ms: 0,
        reason,
        failure: None,
        retrying: false,
    })
    .await;
}

/// A stage the loop ended without an attempt (skipped, refused, lost to an internal error), as its report says.
pub(super) async fn not_run(bus: &EventBus, report: &StageReport) {
    bus.emit(RunEventKind::StageFinished {
        stage: report.name.clone(),
        attempt: 0,
        outcome: report.outcome,
        exit_code: None,
        duration_ms: 0,
        reason: report.reason.clone(),
        failure: report.failure,
        retrying: false,
    })
    .await;
}

/// The run ended: its status, its stages counted by outcome and failed ones by why, and its critical path.
pub(super) async fn run_finished(bus: &EventBus, plan: &Plan, report: &RunReport) {
    let mut counts = StageCounts::default();
    let mut failures = std::collections::BTreeMap::new();
    for stage in &report.stages {
        counts.add(stage.outcome);
        if stage.outcome.is_failure() {
            let kind = stage.failure.unwrap_or(FailureKind::Infrastructure);
            *failures.entry(kind).or_insert(0u32) += 1;
        }
    }
    bus.emit(RunEventKind::RunFinished {
        status: report.status,
        duration_ms: millis(report.duration),
        counts,
        failures,
        critical_path: report
            .critical_path(plan)
            .into_iter()
            .filter_map(|position| report.stages.get(position))
            .map(|stage| stage.name.clone())
            .collect(),
    })
    .await;
}

/// The plan's instances as events carry them: in the plan's order, needs as indexes into that order.
fn planned_instances(plan: &Plan) -> Vec<PlannedInstance> {
    let order = plan.order_positions();
    let mut index_of = vec![0u32; plan.stages().len()];
    for (index, &position) in order.iter().enumerate() {
        index_of[position] = u32::try_from(index).unwrap_or(u32::MAX);
    }
    plan.order()
        .map(|stage| PlannedInstance {
            name: stage.name().to_owned(),
            needs: stage.needs().iter().map(|&need| index_of[need]).collect(),
            level: u32::try_from(stage.level()).unwrap_or(u32::MAX),
        })
        .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
