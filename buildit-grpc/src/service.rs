//! The `buildit.v1.BuildIt` service: each handler checks the caller's token, converts the request, calls the
//! core, and converts the answer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::runner::{check_against_system, new_run_id, plan_for};
use buildit_core::store::{
    FollowError, NewJob, RunFilter, RunFollower, RunRef, Store, StoreError, hash_token,
};
use buildit_core::system::SystemConfig;
use buildit_core::{ConfigError, parse_pipeline};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::jobs::{RUNS_QUEUE, RunJob};
use crate::proto;
use crate::registry::{Phase, Registry};

/// How long a watch stream may be silent before it sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Most events in one streamed message.
const MAX_BATCH_EVENTS: usize = 1000;
/// Most log text in one streamed message (bytes).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

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
    /// The caller's tenant, from `authorization: Bearer TOKEN`.
    async fn tenant<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Status::unauthenticated("an `authorization: Bearer TOKEN` is needed"))?;
        match self.store.tenant_of_token(&hash_token(token)).await {
            Ok(Some(tenant)) => Ok(tenant),
            Ok(None) => Err(Status::unauthenticated("unknown or revoked token")),
            Err(error) => Err(Status::unavailable(format!("the store: {error}"))),
        }
    }

    /// A run of the tenant: this daemon's record of a queued run, else the store's.
    async fn find(&self, tenant: &str, run_id: &str) -> Result<proto::Run, Status> {
        let store = self.store.for_tenant(tenant);
        match store.find_run(&RunRef::Id(run_id.to_owned())).await {
            Ok(record) => Ok(convert::run(&record)),
            Err(StoreError::NoSuchRun(_)) => match self.registry.pending(tenant, run_id) {
                Some(pending) => Ok(proto::Run {
                    id: run_id.to_owned(),
                    pipeline: pending.pipeline,
                    state: if pending.cancelled {
                        "cancelled"
                    } else {
                        "queued"
                    }
                    .to_owned(),
                    created_at_ms: pending.created_at_ms,
                    ..proto::Run::default()
                }),
                // Another tenant's run is not found, never forbidden.
                None => Err(Status::not_found(format!("no run `{run_id}`"))),
            },
            Err(error) => Err(store_status(&error)),
        }
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

#[tonic::async_trait]
impl proto::build_it_server::BuildIt for BuildItService {
    async fn trigger_run(
        &self,
        request: Request<proto::TriggerRunRequest>,
    ) -> Result<Response<proto::TriggerRunResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        let key = Some(request.idempotency_key.as_str()).filter(|key| !key.is_empty());
        if let Some(run_id) = key.and_then(|key| self.registry.run_for_key(&tenant, key)) {
            return Ok(Response::new(proto::TriggerRunResponse {
                run: Some(self.find(&tenant, &run_id).await?),
                existing: true,
            }));
        }
        let file_name = Some(request.file_name.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("buildit.kdl")
            .to_owned();
        let non_empty = |text: String| Some(text).filter(|text| !text.is_empty());
        let job = RunJob {
            run_id: new_run_id(),
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
        let pipeline = parse_pipeline(&job.pipeline, &job.file_name).map_err(|e| invalid(&e))?;
        check_against_system(&pipeline, &self.system).map_err(|error| match error {
            buildit_core::runner::LoadError::Config(error) => invalid(&error),
            other => Status::invalid_argument(other.to_string()),
        })?;
        let context = job.context().map_err(Status::invalid_argument)?;
        let plan = plan_for(pipeline, &self.system, context)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let pipeline_name = plan.pipeline().name.value.clone();
        let payload = serde_json::to_string(&job)
            .map_err(|error| Status::internal(format!("cannot queue the run: {error}")))?;
        let store = self.store.for_tenant(&tenant);
        store
            .enqueue(&NewJob {
                queue: RUNS_QUEUE.to_owned(),
                payload,
                max_attempts: 3,
            })
            .await
            .map_err(|error| store_status(&error))?;
        let created_at_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis()),
        )
        .unwrap_or(i64::MAX);
        self.registry
            .queued(&tenant, &job.run_id, &pipeline_name, created_at_ms, key);
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
        };
        let runs = self
            .store
            .for_tenant(&tenant)
            .list_runs(&filter)
            .await
            .map_err(|error| store_status(&error))?;
        Ok(Response::new(proto::ListRunsResponse {
            runs: runs.iter().map(convert::run).collect(),
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<proto::CancelRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        let tenant = self.tenant(&request).await?;
        let run_id = &request.get_ref().run;
        // Found first: another tenant's run is not found, and cancelling it changes nothing.
        self.find(&tenant, run_id).await?;
        self.registry.cancel(&tenant, run_id);
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
                .stream(&tenant, &request.run, request.after_seq, sender)
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

type Sender = tokio::sync::mpsc::Sender<Result<proto::WatchRunResponse, Status>>;

impl BuildItService {
    /// Feeds one watch stream: waits for a queued run to start, follows it (live, or from the store once it is
    /// over) in batches capped by count and size, with heartbeats, until `run-finished`, the client going away,
    /// or the daemon stopping.
    async fn stream(&self, tenant: &str, run_id: &str, after_seq: u64, sender: Sender) {
        let mut follower = match self.follower(tenant, run_id, after_seq).await {
            Ok(follower) => follower,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        let mut pending: Vec<proto::Event> = Vec::new();
        loop {
            let next = tokio::select! {
                next = follower.next() => next,
                () = tokio::time::sleep(HEARTBEAT) => {
                    let beat = proto::WatchRunResponse {
                        item: Some(proto::watch_run_response::Item::Heartbeat(proto::Heartbeat {
                            seq: follower.delivered(),
                        })),
                    };
                    if sender.send(Ok(beat)).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = self.shutdown.cancelled() => {
                    let _ = sender
                        .send(Err(Status::unavailable(format!(
                            "the daemon is stopping: resume with after_seq {}",
                            follower.delivered()
                        ))))
                        .await;
                    return;
                }
                () = sender.closed() => return,
            };
            match next {
                Ok(Some(events)) => {
                    pending.extend(events.iter().map(convert::event));
                    for batch in batches(std::mem::take(&mut pending)) {
                        let message = proto::WatchRunResponse {
                            item: Some(proto::watch_run_response::Item::Events(proto::Events {
                                events: batch,
                            })),
                        };
                        if sender.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    let _ = sender.send(Err(follow_status(&error))).await;
                    return;
                }
            }
        }
    }

    /// A follower of the run from `after_seq`: joined live while this daemon runs it, else read from the store.
    async fn follower(
        &self,
        tenant: &str,
        run_id: &str,
        after_seq: u64,
    ) -> Result<RunFollower, Status> {
        if let Some(mut phase) = self.registry.watch(tenant, run_id) {
            loop {
                let current = phase.borrow_and_update().clone();
                match current {
                    Phase::Running(joiner) => return Ok(joiner.join(after_seq).await),
                    Phase::Ended => break,
                    Phase::Queued => {
                        tokio::select! {
                            changed = phase.changed() => if changed.is_err() { break },
                            () = self.shutdown.cancelled() => {
                                return Err(Status::unavailable("the daemon is stopping: resume with after_seq 0"));
                            }
                        }
                    }
                }
            }
        }
        Ok(RunFollower::stored(
            self.store.for_tenant(tenant),
            run_id,
            after_seq,
        ))
    }
}

fn follow_status(error: &FollowError) -> Status {
    Status::unavailable(format!("cannot follow the run: {error}"))
}

/// Events cut into messages of at most [`MAX_BATCH_EVENTS`] events and about [`MAX_BATCH_BYTES`] of text.
fn batches(events: Vec<proto::Event>) -> Vec<Vec<proto::Event>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = match &event.kind {
            Some(proto::event::Kind::LogLine(line)) => line.text.len(),
            Some(proto::event::Kind::Json(json)) => json.len(),
            None => 0,
        };
        if !current.is_empty()
            && (current.len() >= MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
