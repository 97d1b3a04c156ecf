//! TriggerRun: a pipeline (the text sent, or a registered one's) checked as `buildit validate` checks it, its
//! request recorded with its idempotency key, and its job queued.

use buildit_core::runner::new_run_id;
use buildit_core::store::{NewJob, NewRunRequest, RunRequestOutcome, RunRequestState};
use tonic::{Request, Response, Status};

use super::BuildItService;
use super::status::{planned, store_status};
use crate::jobs::{JobChanges, RUNS_QUEUE, RunJob};
use crate::proto;
use crate::registry::Phase;

/// The file name of a pipeline sent without one.
pub(super) const DEFAULT_FILE_NAME: &str = "buildit.kdl";

impl BuildItService {
    pub(super) async fn trigger(
        &self,
        request: Request<proto::TriggerRunRequest>,
    ) -> Result<Response<proto::TriggerRunResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        if self.shutdown.is_cancelled() {
            return Err(Status::unavailable(
                "the daemon is stopping: trigger the run again once it is back",
            ));
        }
        let request = request.into_inner();
        let key = Some(request.idempotency_key.clone()).filter(|key| !key.is_empty());
        let (pipeline, file_name) = self
            .pipeline_text(
                &tenant,
                request.pipeline,
                request.file_name,
                request.registered,
            )
            .await?;
        let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
        let job = RunJob {
            run_id: new_run_id(),
            name: String::new(),
            pipeline,
            file_name,
            branch: non_empty(request.branch),
            sha: non_empty(request.sha),
            tag: non_empty(request.tag),
            event: non_empty(request.event),
            env: request.env.into_iter().collect(),
            stages: request.stages,
            source: non_empty(request.source_sha256),
            match_triggers: request.match_triggers,
            changes: request.changes.map(job_changes).transpose()?,
            includes: job_includes(request.includes)?,
        };
        if let Some(digest) = &job.source {
            let digest = buildit_core::source::ArchiveDigest::parse(digest)
                .map_err(|error| Status::invalid_argument(format!("source_sha256: {error}")))?;
            if !crate::jobs::sources(&self.data_dir, &tenant, &self.system).contains(&digest) {
                return Err(Status::not_found(format!("no uploaded source `{digest}`")));
            }
        }
        // Everything `buildit validate` and `buildit plan` would refuse is refused here, before anything queues.
        let plan = planned(&job, &self.system)?;
        // As `buildit run --event` does: a run none of whose triggers matches is not started.
        if let Some(reason) = plan.not_triggered() {
            return Ok(Response::new(proto::TriggerRunResponse {
                run: None,
                existing: false,
                not_triggered: reason,
            }));
        }
        let mut job = job;
        job.name = plan.pipeline().name.value.clone();
        let payload = serde_json::to_string(&job)
            .map_err(|error| Status::internal(format!("cannot queue the run: {error}")))?;
        let store = self.store.for_tenant(&tenant);
        // The request is recorded, with its key, before the job can be claimed: a second trigger with the same
        // key (here or on another daemon of the store, before or after a restart) finds this run.
        let requested = store
            .create_run_request(&NewRunRequest {
                run_id: job.run_id.clone(),
                pipeline: job.name.clone(),
                idempotency_key: key.clone(),
                branch: job.branch.clone(),
            })
            .await
            .map_err(|error| store_status(&error))?;
        if let RunRequestOutcome::Existing(existing) = requested {
            return Ok(Response::new(proto::TriggerRunResponse {
                run: Some(self.find(&tenant, &existing.run_id).await?),
                existing: true,
                not_triggered: String::new(),
            }));
        }
        self.registry.ensure(&tenant, &job.run_id);
        let queued = store
            .enqueue(&NewJob {
                queue: RUNS_QUEUE.to_owned(),
                payload,
                max_attempts: 3,
            })
            .await;
        if let Err(error) = queued {
            let _ = store
                .set_run_request_state(
                    &job.run_id,
                    RunRequestState::Failed,
                    Some(&format!("cannot queue the run: {error}")),
                )
                .await;
            self.registry.set(&tenant, &job.run_id, Phase::Ended);
            return Err(store_status(&error));
        }
        Ok(Response::new(proto::TriggerRunResponse {
            run: Some(self.find(&tenant, &job.run_id).await?),
            existing: false,
            not_triggered: String::new(),
        }))
    }

    /// The text and file name of the pipeline to run: the text sent, or the registered pipeline `registered` of
    /// the tenant (its stored text and file name). One of the two, never both nor neither.
    async fn pipeline_text(
        &self,
        tenant: &str,
        text: String,
        file_name: String,
        registered: String,
    ) -> Result<(String, String), Status> {
        match (text.is_empty(), registered.is_empty()) {
            (false, true) => {
                let file_name = Some(file_name)
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned());
                Ok((text, file_name))
            }
            (true, false) => {
                let stored = self
                    .store
                    .for_tenant(tenant)
                    .get_pipeline(&registered)
                    .await
                    .map_err(|error| store_status(&error))?
                    // Another tenant's pipeline is not found, never forbidden.
                    .ok_or_else(|| {
                        Status::not_found(format!("no registered pipeline `{registered}`"))
                    })?;
                Ok((stored.source, stored.file_name))
            }
            (false, false) => Err(Status::invalid_argument(
                "give `pipeline` (a pipeline's text) or `registered` (a registered pipeline's name), not both",
            )),
            (true, true) => Err(Status::invalid_argument(
                "give `pipeline` (a pipeline's text) or `registered` (a registered pipeline's name)",
            )),
        }
    }
}

/// The most changed paths a trigger may send, and the longest path.
const MAX_CHANGED_PATHS: usize = 10_000;
const MAX_CHANGED_PATH_BYTES: usize = 4096;

/// A request's changed files, checked: bounded, relative, no NUL.
fn job_changes(changes: proto::ChangedFiles) -> Result<JobChanges, Status> {
    if changes.paths.len() > MAX_CHANGED_PATHS {
        return Err(Status::invalid_argument(format!(
            "changes: {} paths, at most {MAX_CHANGED_PATHS} (leave `changes` out when more changed)",
            changes.paths.len()
        )));
    }
    if changes.base.len() > MAX_CHANGED_PATH_BYTES {
        return Err(Status::invalid_argument("changes.base is too long"));
    }
    if let Some(bad) = changes.paths.iter().position(|path| {
        path.is_empty() || path.len() > MAX_CHANGED_PATH_BYTES || path.contains('\0')
    }) {
        return Err(Status::invalid_argument(format!(
            "changes.paths[{bad}] is empty, longer than {MAX_CHANGED_PATH_BYTES} bytes or holds NUL"
        )));
    }
    Ok(JobChanges {
        base: changes.base,
        paths: changes.paths,
    })
}

/// A request's included files, bounded as the files themselves are: at most as many as a pipeline may include,
/// and no more text together than a pipeline file may hold.
fn job_includes(
    includes: std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, Status> {
    use buildit_core::config::{MAX_FILE_BYTES, MAX_INCLUDED_FILES};
    if includes.len() > MAX_INCLUDED_FILES {
        return Err(Status::invalid_argument(format!(
            "includes: {} files, at most {MAX_INCLUDED_FILES}",
            includes.len()
        )));
    }
    let total: usize = includes
        .iter()
        .map(|(path, text)| path.len() + text.len())
        .sum();
    if total > MAX_FILE_BYTES {
        return Err(Status::invalid_argument(format!(
            "includes: {total} bytes together, at most {MAX_FILE_BYTES}"
        )));
    }
    Ok(includes.into_iter().collect())
}
