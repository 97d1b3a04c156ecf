//! A rerun's reused stages: taken as the earlier run left them (succeeded, its artifacts and outputs) instead of
//! running again, and the stages a rerun leaves out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::options::RunOptions;
use super::super::spec::RunIdentity;
use super::lifecycle;
use super::report::StageReport;
use crate::events::{EventBus, FailureKind, StageOutcome};

/// What a rerun takes from an earlier run, by stage instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reuse {
    /// The earlier run's id: its artifacts are copied from there.
    pub run_id: String,
    /// Its number, for the reason its reused stages show.
    pub run_number: u64,
    /// The instances taken from it, with the outputs they wrote there (as its `stage-outputs` events hold them).
    pub stages: BTreeMap<String, BTreeMap<String, String>>,
    /// The instances the rerun leaves out (skipped), with why.
    pub left_out: BTreeMap<String, String>,
}

impl Reuse {
    /// Takes `stages` (instance and outputs) from run `run_id`, number `run_number`.
    pub fn new(
        run_id: impl Into<String>,
        run_number: u64,
        stages: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            run_number,
            stages,
            left_out: BTreeMap::new(),
        }
    }

    /// Also leaves these instances out, each skipped for its reason.
    #[must_use]
    pub fn leaving_out(mut self, left_out: BTreeMap<String, String>) -> Self {
        self.left_out = left_out;
        self
    }

    /// The reason a reused stage shows (`reused from run #3`).
    pub fn reason(&self) -> String {
        format!("reused from run #{}", self.run_number)
    }
}

/// Takes instance `stage` from the earlier run: its artifacts copied into this run's, its outputs handed to the
/// stages that need them (and told, as a `stage-outputs` event of attempt 0), and it finishes `succeeded` with
/// attempt 0 and the reason `reused from run #N`. Artifacts that cannot be copied fail it, for BuildIt's reasons,
/// and so do artifacts that are gone: the earlier run has none left though this stage `declares_artifacts`.
pub(super) async fn reuse_stage(
    reuse: &Reuse,
    stage: &str,
    declares_artifacts: bool,
    run: &Arc<RunIdentity>,
    options: &RunOptions,
    bus: &EventBus,
    at: Duration,
) -> StageReport {
    if let Some(artifacts) = options.artifacts.clone() {
        let (from, to, name) = (reuse.run_id.clone(), run.run_id.clone(), stage.to_owned());
        // A stage may succeed having collected no file (an empty directory), so nothing copied says little
        // alone; an earlier run with no artifacts left at all had them removed since (`buildit gc`), and reusing
        // the stage would hand its dependents nothing in place of its files.
        let copied = tokio::task::spawn_blocking(move || {
            let copied = artifacts.copy_stage(&from, &to, &name)?;
            let gone = copied == 0 && declares_artifacts && !artifacts.holds_run(&from)?;
            Ok::<_, crate::exec::ArtifactError>(gone)
        })
        .await;
        let problem = match copied {
            Ok(Ok(true)) => Some(
                "it has none left (`buildit gc` removes them); rerun without reusing stages (`buildit runs retry RUN` without `--failed`, or `buildit run`)"
                    .to_owned(),
            ),
            Ok(Ok(false)) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(join) => Some(join.to_string()),
        };
        if let Some(problem) = problem {
            let report = StageReport::not_run(
                stage,
                StageOutcome::Failed,
                Some(FailureKind::Infrastructure),
                format!(
                    "cannot reuse the artifacts of run #{}: {problem}",
                    reuse.run_number
                ),
                at,
            );
            lifecycle::not_run(bus, &report).await;
            return report;
        }
    }
    if let Some(outputs) = reuse
        .stages
        .get(stage)
        .filter(|outputs| !outputs.is_empty())
    {
        run.outputs.set(stage, outputs.clone());
        lifecycle::outputs_written(bus, stage, 0, outputs.clone()).await;
    }
    let report = StageReport::not_run(stage, StageOutcome::Succeeded, None, reuse.reason(), at);
    lifecycle::not_run(bus, &report).await;
    report
}
