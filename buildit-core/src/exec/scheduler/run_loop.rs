//! The scheduler's loop: ready stages start in the plan's order under the concurrency limit, finished ones release
//! their dependents, and the run ends when nothing is left to start.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::executor::Executor;
use super::super::mask::SecretMasker;
use super::super::options::RunOptions;
use super::super::spec::RunIdentity;
use super::lifecycle;
use super::report::{RunReport, StageReport};
use super::stage::StageTask;
use crate::config::WhenStatus;
use crate::events::{EventBus, FailureKind, RunOutcome, StageOutcome};
use crate::plan::Plan;

/// Runs `plan` on `executor`. `cancel` stops the run gracefully: nothing new starts, running stages are
/// cancelled with the grace period, and the run ends `cancelled`.
pub async fn execute<E: Executor>(
    plan: &Plan,
    executor: Arc<E>,
    run: &RunIdentity,
    options: &RunOptions,
    bus: &EventBus,
    cancel: &CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let stages = plan.stages();
    let count = stages.len();
    let concurrency = options
        .concurrency
        .or_else(|| plan.concurrency().map(|c| c as usize))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // The run's own stop: the user's cancel, or fail-fast.
    let stop = cancel.child_token();
    // Shared by every stage task (a plan's clones share it).
    let shared_plan = plan.clone();
    let run = Arc::new(run.clone());
    let masker = Arc::new(SecretMasker::new(run.secrets.values().map(String::as_str)));
    // Secrets that cannot be masked are never handed to a stage: each stage that asks for one fails before it
    // starts, with the reason (never the value), and the run fails.
    let unmaskable: HashMap<&str, String> = run
        .secrets
        .iter()
        .filter_map(|(name, value)| {
            super::super::mask::unmaskable(value).map(|why| {
                (
                    name.as_str(),
                    format!("secret `{name}` {why}; BuildIt does not hand it to the stage"),
                )
            })
        })
        .collect();
    let order_index: HashMap<usize, usize> = plan
        .order_positions()
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();

    lifecycle::run_started(bus, plan).await;
    let reuse = options.reuse.as_deref();
    // The run's concurrency group, waited for before any stage starts; a run stopped while it waits holds
    // nothing, and its stages end as for any cancel.
    // A run none of whose stages will run (not triggered, nothing selected) has nothing to keep apart.
    let runs_a_stage = stages.iter().any(|stage| !stage.is_skipped());
    let run_group = match (plan.group(), &options.groups) {
        (Some(group), Some(groups)) if runs_a_stage => groups
            .acquire(group, None, bus, &stop)
            .await
            .then(|| (group, Arc::clone(groups))),
        _ => None,
    };

    let mut reports: Vec<Option<StageReport>> = vec![None; count];
    let mut waiting_needs: Vec<usize> = stages.iter().map(|stage| stage.needs().len()).collect();
    // Ready stages, by their place in the plan's order.
    let mut ready: BTreeSet<(usize, usize)> = (0..count)
        .filter(|&p| waiting_needs[p] == 0)
        .map(|p| (order_index[&p], p))
        .collect();
    let mut running: JoinSet<(usize, StageReport)> = JoinSet::new();
    let mut fail_fast_triggered = false;
    let mut task_positions: HashMap<tokio::task::Id, usize> = HashMap::new();
    // Stages whose cache paths or artifacts overlap run one after the other: a ready stage waits in `held`
    // while a running stage holds an overlapping path.
    let mut locks = super::super::exclusion::PathLocks::new(plan, &run, options);
    let mut held: Vec<(usize, usize)> = Vec::new();

    loop {
        while running.len() < concurrency {
            let Some((order, position)) = ready.pop_first() else {
                break;
            };
            let stage = &stages[position];
            let decision = if stop.is_cancelled() {
                Err(if cancel.is_cancelled() {
                    "run cancelled"
                } else {
                    "fail-fast: another stage failed"
                }
                .to_owned())
            } else if let Some(reason) = stage.skip_reason() {
                Err(reason.to_string())
            } else if let Some(reason) = reuse.and_then(|reuse| reuse.left_out.get(stage.name())) {
                Err(reason.clone())
            } else if let Some(reuse) =
                reuse.filter(|reuse| reuse.stages.contains_key(stage.name()))
                && decide(plan, position, &reports).is_ok()
            {
                // Its needs are reused too (a rerun reruns whatever depends on what it reruns). One that could
                // not be reused (its artifacts gone) failed: this stage is then decided as after any failed need.
                let report = super::reuse::reuse_stage(
                    reuse,
                    stage.name(),
                    !plan.definition(stage).artifacts.is_empty(),
                    &run,
                    options,
                    bus,
                    started.elapsed(),
                )
                .await;
                if report.outcome.is_failure() && options.fail_fast && !fail_fast_triggered {
                    fail_fast_triggered = true;
                    stop.cancel();
                }
                complete(
                    plan,
                    position,
                    report,
                    &mut reports,
                    &mut waiting_needs,
                    &mut ready,
                    &order_index,
                );
                continue;
            } else {
                decide(plan, position, &reports)
            };
            let refused = decision
                .is_ok()
                .then(|| {
                    plan.definition(stage)
                        .secrets
                        .iter()
                        .find_map(|secret| unmaskable.get(secret.value.as_str()))
                })
                .flatten();
            if let Some(reason) = refused {
                let report = StageReport::not_run(
                    stage.name(),
                    StageOutcome::Failed,
                    Some(FailureKind::Config),
                    reason.clone(),
                    started.elapsed(),
                );
                lifecycle::not_run(bus, &report).await;
                if options.fail_fast && !fail_fast_triggered {
                    fail_fast_triggered = true;
                    stop.cancel();
                }
                complete(
                    plan,
                    position,
                    report,
                    &mut reports,
                    &mut waiting_needs,
                    &mut ready,
                    &order_index,
                );
                continue;
            }
            match decision {
                Err(reason) => {
                    let report = StageReport::not_run(
                        stage.name(),
                        StageOutcome::Skipped,
                        None,
                        reason.clone(),
                        started.elapsed(),
                    );
                    lifecycle::not_run(bus, &report).await;
                    complete(
                        plan,
                        position,
                        report,
                        &mut reports,
                        &mut waiting_needs,
                        &mut ready,
                        &order_index,
                    );
                }
                // Skips and refusals above never wait: only a stage that is about to run needs its paths.
                Ok(()) if locks.blocked(position) => held.push((order, position)),
                Ok(()) => {
                    let task = StageTask {
                        plan: shared_plan.clone(),
                        position,
                        executor: Arc::clone(&executor),
                        run: Arc::clone(&run),
                        options: options.clone(),
                        bus: bus.clone(),
                        stop: stop.clone(),
                        masker: Arc::clone(&masker),
                        run_started: started,
                    };
                    let handle = running.spawn(async move { (position, task.run().await) });
                    task_positions.insert(handle.id(), position);
                    locks.acquire(position);
                }
            }
        }
        let Some(joined) = running.join_next().await else {
            // Nothing runs, so nothing holds a stage back.
            ready.extend(held.drain(..));
            if ready.is_empty() {
                break;
            }
            continue;
        };
        let (position, report) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                // A stage task panicked: the stage failed for BuildIt's reasons, and the run stops.
                let Some(&position) = task_positions.get(&error.id()) else {
                    stop.cancel();
                    continue;
                };
                let report = StageReport::not_run(
                    plan.stages()[position].name(),
                    StageOutcome::Failed,
                    Some(FailureKind::Infrastructure),
                    format!("internal error: {error}"),
                    started.elapsed(),
                );
                // Every subscriber learns how the stage ended, as for any other stage.
                lifecycle::not_run(bus, &report).await;
                stop.cancel();
                (position, report)
            }
        };
        // The stage's paths are free again (also after a panicked task): what waited for them gets its turn.
        if locks.release(position) {
            ready.extend(held.drain(..));
        }
        if report.outcome.is_failure() && options.fail_fast && !fail_fast_triggered {
            fail_fast_triggered = true;
            stop.cancel();
        }
        complete(
            plan,
            position,
            report,
            &mut reports,
            &mut waiting_needs,
            &mut ready,
            &order_index,
        );
    }

    let stages: Vec<StageReport> = reports
        .into_iter()
        .enumerate()
        .map(|(position, report)| {
            report.unwrap_or_else(|| {
                StageReport::not_run(
                    plan.stages()[position].name(),
                    StageOutcome::Skipped,
                    None,
                    "never became ready".to_owned(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let status = if cancel.is_cancelled() {
        RunOutcome::Cancelled
    } else if stages
        .iter()
        .any(|s| s.outcome.is_failure() || s.outcome == StageOutcome::Cancelled)
    {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    };
    // The files stages wrote their outputs to (those of failed attempts are still there) go with the run.
    if plan
        .pipeline()
        .stages
        .iter()
        .any(|stage| !stage.outputs.is_empty())
    {
        super::outputs::remove_run_outputs(&run.workspace, &run.run_id);
    }
    // What the executor kept for the run (a workspace volume) goes before the run is reported finished.
    let cleanup = executor
        .release_run(&run.run_id)
        .await
        .err()
        .map(|error| format!("cannot remove what the run left: {error}"));
    // The group goes before the run is reported finished: the next run of the group starts at once.
    if let Some((group, groups)) = run_group {
        groups.release(group, None).await;
    }
    let duration = started.elapsed();
    let report = RunReport {
        status,
        stages,
        duration,
        cleanup,
    };
    lifecycle::run_finished(bus, plan, &report).await;
    report
}

/// Records a finished stage and releases the dependents whose needs are now all done.
fn complete(
    plan: &Plan,
    position: usize,
    report: StageReport,
    reports: &mut [Option<StageReport>],
    waiting_needs: &mut [usize],
    ready: &mut BTreeSet<(usize, usize)>,
    order_index: &HashMap<usize, usize>,
) {
    reports[position] = Some(report);
    for dependent in plan.dependents(position) {
        waiting_needs[dependent] -= 1;
        if waiting_needs[dependent] == 0 {
            ready.insert((order_index[&dependent], dependent));
        }
    }
}

/// Whether a stage whose needs are all done runs, from their outcomes and its `when` statuses.
fn decide(plan: &Plan, position: usize, reports: &[Option<StageReport>]) -> Result<(), String> {
    let stage = &plan.stages()[position];
    let outcomes: Vec<StageOutcome> = stage
        .needs()
        .iter()
        .filter_map(|&need| reports[need].as_ref().map(|report| report.outcome))
        .collect();
    let failed = outcomes.iter().any(|outcome| outcome.is_failure());
    let cancelled = outcomes.contains(&StageOutcome::Cancelled);
    let skipped = outcomes.contains(&StageOutcome::Skipped);
    let all_succeeded = !failed && !cancelled && !skipped;
    let runs = stage.run_on().iter().any(|status| match status {
        WhenStatus::Success => all_succeeded,
        WhenStatus::Failure => failed,
        WhenStatus::Always => true,
    });
    if runs {
        return Ok(());
    }
    Err(
        if failed && !stage.run_on().contains(&WhenStatus::Failure) {
            "dependency failed"
        } else if cancelled {
            "dependency cancelled"
        } else if skipped {
            "dependency skipped"
        } else {
            "no dependency failed"
        }
        .to_owned(),
    )
}
