//! Reading an attempt's test reports once it ended, failed or not (copied out through the executor when its
//! workspace is not on the host), and telling the run what they counted.

use std::sync::Arc;

use super::super::executor::{Executor, StageSpec};
use super::super::reports::collect_reports;
use super::super::spec::report_patterns;
use super::stage::StageTask;
use super::transfer::pattern_roots;
use crate::events::TestSummary;

impl<E: Executor> StageTask<E> {
    /// Reads the reports of attempt `attempt` and emits a `stage-tests` event with what they counted.
    /// Whatever goes wrong (a pattern that renders outside the workspace, a copy that fails, a file that is not
    /// JUnit XML) is a line in the stage's log, never a failure of the stage: its commands decided that.
    pub(super) async fn read_reports(
        &self,
        attempt: u32,
        remote: Option<&StageSpec>,
        began: std::time::SystemTime,
    ) {
        let stage = &self.plan.stages()[self.position];
        if self.plan.definition(stage).reports.is_empty() {
            return;
        }
        // Told on every path, even when nothing could be read: the stage's last word on its tests is then
        // this attempt's, never an earlier attempt's counts.
        let summary = self
            .counted_reports(attempt, remote, began)
            .await
            .unwrap_or_else(|| TestSummary {
                unreadable: 1,
                ..TestSummary::default()
            });
        super::lifecycle::tests_counted(&self.bus, stage.name(), attempt, summary).await;
    }

    /// The counts of the attempt's reports; `None` (with a note in the log) when they could not be read at all.
    async fn counted_reports(
        &self,
        attempt: u32,
        remote: Option<&StageSpec>,
        began: std::time::SystemTime,
    ) -> Option<TestSummary> {
        let stage = &self.plan.stages()[self.position];
        let written = &self.plan.definition(stage).reports;
        let rendered = report_patterns(&self.plan, stage, &self.run);
        let mut patterns = Vec::with_capacity(rendered.len());
        for (written, rendered) in written.iter().zip(rendered) {
            match crate::paths::report_path_problem(written.junit.value.as_str(), &rendered) {
                Some(problem) => {
                    self.note(attempt, format!("buildit: {problem}; it is not read"))
                        .await;
                }
                None => patterns.push(rendered),
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let (staging, root) = match self.host_side(remote) {
            Ok(found) => found,
            Err(error) => {
                self.note(attempt, format!("buildit: reports not read: {error}"))
                    .await;
                return None;
            }
        };
        if let Some(spec) = remote
            && let Err(error) = self
                .executor
                .get_files(spec, &pattern_roots(&patterns), &root)
                .await
        {
            self.note(attempt, format!("buildit: reports not copied out: {error}"))
                .await;
            return None;
        }
        let masker = Arc::clone(&self.masker);
        let collected = tokio::task::spawn_blocking(move || {
            collect_reports(&root, &patterns, Some(began), |name| masker.mask(name))
        })
        .await;
        drop(staging);
        let collected = match collected {
            Ok(collected) => collected,
            Err(error) => {
                self.note(attempt, format!("buildit: reports not read: {error}"))
                    .await;
                return None;
            }
        };
        for note in collected.notes {
            self.note(attempt, note).await;
        }
        Some(collected.summary)
    }
}
