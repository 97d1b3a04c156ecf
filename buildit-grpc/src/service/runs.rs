//! GetRun, ListRuns and CancelRun: a tenant's runs, known from their requests until their records exist.

use std::collections::HashSet;

use buildit_core::store::{
    RunCursor, RunFilter, RunRef, RunRequestFilter, RunRequestState, RunState, StoreError,
};
use tonic::{Request, Response, Status};

use super::BuildItService;
use super::paging::{page_size, run_cursor, run_token};
use super::status::store_status;
use crate::{convert, proto};

impl BuildItService {
    /// A run of the tenant: its record once it started, else its request (queued, cancelled before it started,
    /// or failed to start, with why).
    pub(super) async fn find(&self, tenant: &str, run_id: &str) -> Result<proto::Run, Status> {
        let store = self.store.for_tenant(tenant);
        let request = store
            .run_request(run_id)
            .await
            .map_err(|error| store_status(&error))?;
        let mut run = match store.find_run(&RunRef::Id(run_id.to_owned())).await {
            Ok(record) => convert::run(&record),
            Err(StoreError::NoSuchRun(_)) => match &request {
                Some(request) => convert::request(request),
                // Another tenant's run is not found, never forbidden.
                None => return Err(Status::not_found(format!("no run `{run_id}`"))),
            },
            Err(error) => return Err(store_status(&error)),
        };
        if let Some(request) = request {
            run.restart_of = request.restart_of.unwrap_or_default();
            run.restarted_as = request.restarted_as.unwrap_or_default();
        }
        Ok(run)
    }

    /// The last run of the chain `run_id` starts: itself, or the run that started it again after it was
    /// interrupted (and so on).
    async fn latest_restart(&self, tenant: &str, run_id: &str) -> String {
        let store = self.store.for_tenant(tenant);
        let mut current = run_id.to_owned();
        // Bounded: a job is claimed a few times at most, so a chain is short.
        for _ in 0..16 {
            match store.run_request(&current).await {
                Ok(Some(request)) => match request.restarted_as {
                    Some(next) => current = next,
                    None => break,
                },
                _ => break,
            }
        }
        current
    }

    pub(super) async fn get(
        &self,
        request: Request<proto::GetRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let tenant = self.tenant(&request).await?;
        Ok(Response::new(
            self.find(&tenant, &request.get_ref().run).await?,
        ))
    }

    /// A page of runs: the requests without a record (queued, starting, cancelled before they started, failed to
    /// start) merged with the recorded runs, newest first by when they were asked for. A run keeps that place
    /// from its request to its record, so a page token (the last place of a page) never skips nor repeats one.
    pub(super) async fn list(
        &self,
        request: Request<proto::ListRunsRequest>,
    ) -> Result<Response<proto::ListRunsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size);
        let before = run_cursor(&request.page_token)?;
        let wanted = WantedState::parse(&request.state)?;
        let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
        let pipeline = non_empty(request.pipeline);
        let branch = non_empty(request.branch);
        let store = self.store.for_tenant(&tenant);
        // One more than a page from each half: more than a page in all means there is a next page.
        let fetch = limit.saturating_add(1);
        // Requests before records: a run recorded between the two reads is then read twice (and kept once),
        // never missed.
        let requests = match wanted.request {
            Some(state) => store
                .unrecorded_run_requests(&RunRequestFilter {
                    pipeline: pipeline.clone(),
                    state,
                    branch: branch.clone(),
                    before: before.clone(),
                    limit: fetch,
                })
                .await
                .map_err(|error| store_status(&error))?,
            None => Vec::new(),
        };
        let records = match wanted.record {
            Some(state) => store
                .list_runs(&RunFilter {
                    pipeline,
                    state,
                    branch,
                    before,
                    limit: fetch,
                })
                .await
                .map_err(|error| store_status(&error))?,
            None => Vec::new(),
        };
        let recorded: HashSet<&str> = records.iter().map(|run| run.id.as_str()).collect();
        let mut listed: Vec<(RunCursor, proto::Run)> = records
            .iter()
            .map(|record| (record.cursor(), convert::run(record)))
            .collect();
        listed.extend(
            requests
                .iter()
                .filter(|request| !recorded.contains(request.run_id.as_str()))
                .map(|request| (request.cursor(), convert::request(request))),
        );
        listed.sort_by(|(a, _), (b, _)| b.cmp(a));
        let more = listed.len() > limit as usize;
        listed.truncate(limit as usize);
        let next_page_token = match listed.last() {
            Some((last, _)) if more => run_token(last),
            _ => String::new(),
        };
        // A recorded run's restart links are its request's (a page is at most 500 runs: one read each).
        for (_, run) in &mut listed {
            if !recorded.contains(run.id.as_str()) {
                continue;
            }
            if let Ok(Some(request)) = store.run_request(&run.id).await {
                run.restart_of = request.restart_of.unwrap_or_default();
                run.restarted_as = request.restarted_as.unwrap_or_default();
            }
        }
        Ok(Response::new(proto::ListRunsResponse {
            runs: listed.into_iter().map(|(_, run)| run).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn cancel(
        &self,
        request: Request<proto::CancelRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let tenant = self.tenant(&request).await?;
        let run_id = &request.get_ref().run;
        // Found first: another tenant's run is not found, and cancelling it changes nothing.
        let found = self.find(&tenant, run_id).await?;
        let store = self.store.for_tenant(&tenant);
        // An interrupted run that started again is cancelled in its restart.
        let latest = self.latest_restart(&tenant, run_id).await;
        for run in [run_id.as_str(), latest.as_str()] {
            self.registry.cancel(&tenant, run);
            // For the daemon of the store that runs it, which polls its request. A run recorded by `buildit
            // run` on the same store has no request: there is no daemon to tell.
            let _ = store.request_run_cancel(run).await;
        }
        if found.state == "queued" {
            // Not started: it never will (the worker that claims its job sees the request cancelled). A request
            // that started in between keeps its state; the cancel asked above stops the run.
            let _ = store
                .set_run_request_state(
                    run_id,
                    RunRequestState::Cancelled,
                    Some("cancelled before it started"),
                )
                .await;
        }
        Ok(Response::new(self.find(&tenant, run_id).await?))
    }
}

/// Which runs a `state` filter keeps, in each half of the list: `None` leaves a half out, `Some(None)` keeps
/// all of it. A state is matched as a `Run` shows it: a run without a record shows its request's state.
struct WantedState {
    request: Option<Option<RunRequestState>>,
    record: Option<Option<RunState>>,
}

impl WantedState {
    fn parse(state: &str) -> Result<Self, Status> {
        let (request, record) = match state {
            "" => (Some(None), Some(None)),
            "queued" => (Some(Some(RunRequestState::Queued)), None),
            "started" => (Some(Some(RunRequestState::Started)), None),
            "running" => (None, Some(Some(RunState::Running))),
            "succeeded" => (None, Some(Some(RunState::Succeeded))),
            "interrupted" => (None, Some(Some(RunState::Interrupted))),
            // A run that never started and a run that ended alike.
            "failed" => (
                Some(Some(RunRequestState::Failed)),
                Some(Some(RunState::Failed)),
            ),
            "cancelled" => (
                Some(Some(RunRequestState::Cancelled)),
                Some(Some(RunState::Cancelled)),
            ),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown state `{other}`: one of queued, started, running, succeeded, failed, cancelled, \
                     interrupted"
                )));
            }
        };
        Ok(Self { request, record })
    }
}
