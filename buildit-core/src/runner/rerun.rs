//! Which stages a rerun runs again and which it takes from an earlier run: `buildit runs retry --failed` and
//! `buildit run --from STAGE`.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::StageOutcome;
use crate::exec::Reuse;
use crate::plan::Plan;
use crate::store::{AttemptState, RunCursor, RunFilter, RunRecord, RunState, Store, StoreError};

/// Runs read per page while looking for an earlier run to reuse stages from.
const RUN_PAGE: u32 = 50;

/// Why a rerun cannot start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum RerunError {
    /// `--failed` of a run none of whose stages failed or was cancelled.
    #[error("nothing to rerun: no stage of {run} failed or was cancelled")]
    #[diagnostic(
        code(buildit::rerun::nothing_to_rerun),
        help("`buildit runs retry RUN` without `--failed` runs every stage again")
    )]
    NothingToRerun {
        /// The run (`pipeline#3`).
        run: String,
    },
    /// `--from` names no stage of the pipeline.
    #[error("`--from {stage}` names no stage of pipeline `{pipeline}`{}", suggestion.as_ref().map(|name| format!("; did you mean `{name}`?")).unwrap_or_default())]
    #[diagnostic(
        code(buildit::rerun::no_such_stage),
        help(
            "name a stage, or one matrix instance of it (`test (os=linux)`); `buildit plan` lists them"
        )
    )]
    NoSuchStage {
        /// What was named.
        stage: String,
        /// The pipeline.
        pipeline: String,
        /// The closest name, when one is close.
        suggestion: Option<String>,
    },
    /// No earlier run has every stage `--from` needs succeeded.
    #[error("no earlier run of `{pipeline}` has what `{stage}` needs succeeded: {}", needs.join(", "))]
    #[diagnostic(
        code(buildit::rerun::no_earlier_run),
        help("run the pipeline once without `--from`")
    )]
    NoEarlierRun {
        /// What `--from` named.
        stage: String,
        /// The pipeline.
        pipeline: String,
        /// The instances it needs.
        needs: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),
}

/// What a rerun takes from an earlier run; `reuse` is `None` when it takes nothing (every stage runs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rerun {
    /// The earlier run whose stages are reused, when any are.
    pub earlier: Option<RunRecord>,
    /// The stages taken from it and those left out, for [`RunOptions::reuse`](crate::exec::RunOptions::reuse).
    pub reuse: Option<Reuse>,
    /// The instances that run again, in the plan's order.
    pub reruns: Vec<String>,
}

/// `--failed`: the instances of `earlier` that failed, timed out, were cancelled or interrupted (or did not run
/// for another reason than the plan's: a failed need, the run's cancel) run again with everything that depends on them; the rest, succeeded, is
/// taken from `earlier`. `plan` is the plan of the same pipeline text and flags as `earlier`'s.
pub async fn rerun_failed(
    store: &dyn Store,
    plan: &Plan,
    earlier: &RunRecord,
) -> Result<Rerun, RerunError> {
    let outcomes = last_outcomes(store, &earlier.id).await?;
    let seeds: Vec<usize> = plan
        .stages()
        .iter()
        .enumerate()
        .filter(|(_, stage)| {
            !stage.is_skipped()
                && outcomes.get(stage.name())
                    != Some(&AttemptState::Finished(StageOutcome::Succeeded))
        })
        .map(|(position, _)| position)
        .collect();
    let rerun = dependents_closure(plan, &seeds);
    let reruns = names_in_order(plan, &rerun);
    if reruns.is_empty() || earlier.state == RunState::Succeeded {
        return Err(RerunError::NothingToRerun {
            run: format!("{}#{}", earlier.pipeline, earlier.number),
        });
    }
    let reused: BTreeSet<usize> = (0..plan.stages().len())
        .filter(|position| {
            !rerun.contains(position)
                && outcomes.get(plan.stages()[*position].name())
                    == Some(&AttemptState::Finished(StageOutcome::Succeeded))
        })
        .collect();
    let reuse = reuse_of(store, plan, earlier, &reused, BTreeMap::new()).await?;
    Ok(Rerun {
        earlier: Some(earlier.clone()),
        reuse: Some(reuse),
        reruns,
    })
}

/// `--from STAGE`: every instance of `stage` (or the one instance it names) and what depends on them run; what
/// they need is taken from the latest earlier run of the pipeline that has all of it succeeded and that
/// `same_origin` accepts (the front end's: the same file and workspace); the other stages are left out.
pub async fn rerun_from(
    store: &dyn Store,
    plan: &Plan,
    stage: &str,
    same_origin: &(dyn Fn(&RunRecord) -> bool + Sync),
) -> Result<Rerun, RerunError> {
    let pipeline = plan.pipeline().name.value.clone();
    let seeds: Vec<usize> = plan
        .stages()
        .iter()
        .enumerate()
        .filter(|(_, planned)| {
            planned.name() == stage || plan.definition(planned).name.value == stage
        })
        .map(|(position, _)| position)
        .collect();
    if seeds.is_empty() {
        let mut names: Vec<&str> = plan
            .pipeline()
            .stages
            .iter()
            .map(|definition| definition.name.value.as_str())
            .collect();
        names.extend(plan.stages().iter().map(crate::plan::PlannedStage::name));
        return Err(RerunError::NoSuchStage {
            stage: stage.to_owned(),
            pipeline,
            suggestion: crate::suggest::closest(stage, names).map(str::to_owned),
        });
    }
    let rerun = dependents_closure(plan, &seeds);
    let needed = needs_closure(plan, &rerun);
    let left_out: BTreeMap<String, String> = (0..plan.stages().len())
        .filter(|position| !rerun.contains(position) && !needed.contains(position))
        .map(|position| {
            (
                plan.stages()[position].name().to_owned(),
                format!("not rerun: `--from {stage}` runs `{stage}` and what depends on it"),
            )
        })
        .collect();
    let reruns = names_in_order(plan, &rerun);
    // What the plan skips is not needed from an earlier run: it is skipped again.
    let wanted: Vec<&str> = needed
        .iter()
        .map(|&position| &plan.stages()[position])
        .filter(|planned| !planned.is_skipped())
        .map(crate::plan::PlannedStage::name)
        .collect();
    if wanted.is_empty() {
        return Ok(Rerun {
            earlier: None,
            reuse: Some(Reuse::new("", 0, BTreeMap::new()).leaving_out(left_out)),
            reruns,
        });
    }
    let mut before: Option<RunCursor> = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                pipeline: Some(pipeline.clone()),
                before: before.take(),
                limit: RUN_PAGE,
                ..RunFilter::default()
            })
            .await?;
        for earlier in &page {
            if earlier.state == RunState::Running || !same_origin(earlier) {
                continue;
            }
            let outcomes = last_outcomes(store, &earlier.id).await?;
            let has_all = wanted.iter().all(|name| {
                outcomes.get(*name) == Some(&AttemptState::Finished(StageOutcome::Succeeded))
            });
            if has_all {
                let reused: BTreeSet<usize> = needed
                    .iter()
                    .copied()
                    .filter(|&position| !plan.stages()[position].is_skipped())
                    .collect();
                let reuse = reuse_of(store, plan, earlier, &reused, left_out).await?;
                return Ok(Rerun {
                    earlier: Some(earlier.clone()),
                    reuse: Some(reuse),
                    reruns,
                });
            }
        }
        match page.last() {
            Some(last) if page.len() == RUN_PAGE as usize => before = Some(last.cursor()),
            _ => break,
        }
    }
    Err(RerunError::NoEarlierRun {
        stage: stage.to_owned(),
        pipeline,
        needs: wanted.iter().map(|name| (*name).to_owned()).collect(),
    })
}

/// The instances at `reused` taken from `earlier`, with their outputs, and `left_out` left out.
async fn reuse_of(
    store: &dyn Store,
    plan: &Plan,
    earlier: &RunRecord,
    reused: &BTreeSet<usize>,
    left_out: BTreeMap<String, String>,
) -> Result<Reuse, StoreError> {
    let mut outputs = store.stage_outputs(&earlier.id).await?;
    let stages = reused
        .iter()
        .map(|&position| {
            let name = plan.stages()[position].name();
            (name.to_owned(), outputs.remove(name).unwrap_or_default())
        })
        .collect();
    Ok(Reuse::new(earlier.id.clone(), earlier.number, stages).leaving_out(left_out))
}

/// How each instance of run `run_id` ended: the state of its last attempt.
async fn last_outcomes(
    store: &dyn Store,
    run_id: &str,
) -> Result<BTreeMap<String, AttemptState>, StoreError> {
    let mut last: BTreeMap<String, (u32, AttemptState)> = BTreeMap::new();
    for attempt in store.attempts(run_id).await? {
        let entry = last
            .entry(attempt.stage)
            .or_insert((attempt.attempt, attempt.state));
        if attempt.attempt >= entry.0 {
            *entry = (attempt.attempt, attempt.state);
        }
    }
    Ok(last
        .into_iter()
        .map(|(stage, (_, state))| (stage, state))
        .collect())
}

/// `seeds` and every instance that depends on them, directly or not.
fn dependents_closure(plan: &Plan, seeds: &[usize]) -> BTreeSet<usize> {
    let mut found: BTreeSet<usize> = BTreeSet::new();
    let mut todo: Vec<usize> = seeds.to_vec();
    while let Some(position) = todo.pop() {
        if found.insert(position) {
            todo.extend(plan.dependents(position));
        }
    }
    found
}

/// Every instance that `from` need, directly or not, that is not in `from` itself.
fn needs_closure(plan: &Plan, from: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut found: BTreeSet<usize> = BTreeSet::new();
    let mut todo: Vec<usize> = from
        .iter()
        .flat_map(|&position| plan.stages()[position].needs().iter().copied())
        .collect();
    while let Some(position) = todo.pop() {
        if !from.contains(&position) && found.insert(position) {
            todo.extend(plan.stages()[position].needs().iter().copied());
        }
    }
    found
}

/// The names of the instances at `positions`, in the plan's order.
fn names_in_order(plan: &Plan, positions: &BTreeSet<usize>) -> Vec<String> {
    plan.order_positions()
        .iter()
        .filter(|position| positions.contains(position))
        .map(|&position| plan.stages()[position].name().to_owned())
        .collect()
}
