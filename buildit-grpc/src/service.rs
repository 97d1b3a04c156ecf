//! The `buildit.v1.BuildIt` service: each handler checks the caller's token, converts the request, calls the
//! core, and converts the answer.

use std::pin::Pin;
use std::sync::Arc;

use buildit_core::ConfigError;
use buildit_core::runner::{LoadError, new_run_id};
use buildit_core::store::{
    NewJob, NewRunRequest, RunFilter, RunRef, RunRequestOutcome, RunRequestState, Store,
    StoreError, hash_token,
};
use buildit_core::system::SystemConfig;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::jobs::{RUNS_QUEUE, Refusal, RunJob};
use crate::proto;
use crate::registry::{Phase, Registry};

/// Numbers the calls in the log.
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The service's state: the store, the daemon's system configuration, its runs.
#[derive(Debug, Clone)]
pub struct BuildItService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) system: Arc<SystemConfig>,
    pub(crate) registry: Arc<Registry>,
    /// Where uploads are kept (`sources/<tenant>`).
    pub(crate) data_dir: std::path::PathBuf,
    /// Cancelled when the daemon stops: open streams end with UNAVAILABLE and where to resume.
    pub(crate) shutdown: CancellationToken,
}

impl BuildItService {
    /// The caller's tenant, from `authorization: Bearer TOKEN`; logs the call with a request id (never the token).
    async fn tenant<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let tenant = self.authenticate(request).await;
        let id = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rpc = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map_or("?", |method| method.method());
        match &tenant {
            Ok(tenant) => tracing::info!(request_id = id, rpc, tenant = tenant.as_str(), "call"),
            Err(status) => tracing::warn!(
                request_id = id,
                rpc,
                code = ?status.code(),
                reason = status.message(),
                "call refused"
            ),
        }
        tenant
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                // The scheme is case-insensitive (RFC 7235).
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Status::unauthenticated("an `authorization: Bearer TOKEN` is needed"))?;
        match self.store.tenant_of_token(&hash_token(token)).await {
            Ok(Some(tenant)) => Ok(tenant),
            Ok(None) => Err(Status::unauthenticated("unknown or revoked token")),
            Err(error) => Err(Status::unavailable(format!("the store: {error}"))),
        }
    }

    /// A run of the tenant: its record once it started, else its request (queued, cancelled before it started,
    /// or failed to start, with why).
    async fn find(&self, tenant: &str, run_id: &str) -> Result<proto::Run, Status> {
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
}

fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::NoSuchRun(run) => Status::not_found(format!("no run `{run}`")),
        other => Status::unavailable(format!("the store: {other}")),
    }
}

fn invalid(error: &ConfigError) -> Status {
    convert::invalid_pipeline(&error.to_string(), &error.records())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchRunResponse, Status>> + Send>>;
type LogsStream = Pin<Box<dyn Stream<Item = Result<proto::StreamLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::build_it_server::BuildIt for BuildItService {
    async fn trigger_run(
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
        let file_name = Some(request.file_name.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("buildit.kdl")
            .to_owned();
        let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
        let job = RunJob {
            run_id: new_run_id(),
            name: String::new(),
            pipeline: request.pipeline,
            file_name,
            branch: non_empty(request.branch),
            sha: non_empty(request.sha),
            tag: non_empty(request.tag),
            event: non_empty(request.event),
            env: request.env.into_iter().collect(),
            stages: request.stages,
            source: non_empty(request.source_sha256),
        };
        if let Some(digest) = &job.source {
            let digest = buildit_core::source::ArchiveDigest::parse(digest)
                .map_err(|error| Status::invalid_argument(format!("source_sha256: {error}")))?;
            if !crate::jobs::sources(&self.data_dir, &tenant, &self.system).contains(&digest) {
                return Err(Status::not_found(format!("no uploaded source `{digest}`")));
            }
        }
        // Everything `buildit validate` and `buildit plan` would refuse is refused here, before anything queues.
        let plan = job.plan(&self.system).map_err(|refusal| match refusal {
            Refusal::Load(LoadError::Config(error)) => invalid(&error),
            other => Status::invalid_argument(other.to_string()),
        })?;
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
        }))
    }

    async fn get_run(
        &self,
        request: Request<proto::GetRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let tenant = self.tenant(&request).await?;
        Ok(Response::new(
            self.find(&tenant, &request.get_ref().run).await?,
        ))
    }

    async fn list_runs(
        &self,
        request: Request<proto::ListRunsRequest>,
    ) -> Result<Response<proto::ListRunsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        let filter = RunFilter {
            pipeline: Some(request.pipeline).filter(|pipeline| !pipeline.is_empty()),
            limit: match request.page_size {
                0 => 50,
                size => size.min(500),
            },
            ..RunFilter::default()
        };
        let store = self.store.for_tenant(&tenant);
        let runs = store
            .list_runs(&filter)
            .await
            .map_err(|error| store_status(&error))?;
        // Runs still queued come first (they are the newest), then the recorded ones.
        let mut queued = store
            .queued_run_requests(filter.limit)
            .await
            .map_err(|error| store_status(&error))?;
        queued.retain(|request| {
            filter
                .pipeline
                .as_ref()
                .is_none_or(|pipeline| *pipeline == request.pipeline)
        });
        queued.reverse();
        let mut listed: Vec<proto::Run> = queued.iter().map(convert::request).collect();
        listed.extend(runs.iter().map(convert::run));
        listed.truncate(filter.limit as usize);
        Ok(Response::new(proto::ListRunsResponse { runs: listed }))
    }

    async fn cancel_run(
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

    async fn upload_source(
        &self,
        request: Request<tonic::Streaming<proto::UploadSourceRequest>>,
    ) -> Result<Response<proto::UploadSourceResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let chunks = request.into_inner();
        let bytes = tokio_stream::StreamExt::map(chunks, |chunk| {
            chunk
                .map(|chunk| bytes::Bytes::from(chunk.chunk))
                .map_err(std::io::Error::other)
        });
        let reader = tokio_util::io::StreamReader::new(bytes);
        let store = crate::jobs::sources(&self.data_dir, &tenant, &self.system);
        let digest = store.put(reader).await.map_err(|error| match error {
            buildit_core::source::SourceError::UploadTooLarge { .. } => {
                Status::resource_exhausted(error.to_string())
            }
            other => Status::invalid_argument(other.to_string()),
        })?;
        let size = std::fs::metadata(store.path(&digest)).map_or(0, |meta| meta.len());
        Ok(Response::new(proto::UploadSourceResponse {
            sha256: digest.to_string(),
            size,
        }))
    }

    type StreamLogsStream = LogsStream;

    async fn stream_logs(
        &self,
        request: Request<proto::StreamLogsRequest>,
    ) -> Result<Response<LogsStream>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        self.find(&tenant, &request.run).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move { service.logs_stream(&tenant, request, sender).await });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type WatchRunStream = WatchStream;

    async fn watch_run(
        &self,
        request: Request<proto::WatchRunRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        self.find(&tenant, &request.run).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move {
            service
                .watch_stream(&tenant, &request.run, request.after_seq, sender)
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
