//! The store as the API and its streams see it when they are served below the runs' priority: what they read
//! comes through a store of their own, and every write runs on the runs' runtime through the runs' store, so
//! that no write (and no lock a write holds) ever waits for a thread of the serving priority.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use buildit_core::events::RunEvent;
use buildit_core::store::{
    AttemptRecord, ClaimedJob, GroupAcquire, GroupClaim, JobRecord, Lease, LogPage, LogQuery,
    NewJob, NewPipeline, NewRun, NewRunRequest, PipelineFilter, PipelineRecord, RecordBatch,
    RunFilter, RunOwner, RunRecord, RunRef, RunRequest, RunRequestFilter, RunRequestOutcome,
    RunRequestState, RunState, Store, StoreError, TokenRecord,
};
use tokio::runtime::Handle;

/// Reads through `reads`; writes through `writes`, on `runs`.
#[derive(Debug)]
pub struct RoutedStore {
    reads: Arc<dyn Store>,
    writes: Arc<dyn Store>,
    runs: Handle,
}

impl RoutedStore {
    /// Reads through `reads` (a store opened for the serving side: its connections are its own), writes
    /// through `writes` (the runs' store) as tasks of `runs`.
    pub fn new(reads: Arc<dyn Store>, writes: Arc<dyn Store>, runs: Handle) -> Self {
        Self {
            reads,
            writes,
            runs,
        }
    }
}

/// Runs `$body` with `$store` (the writes' store) as a task of the runs' runtime; everything `$body` uses is
/// moved into it.
macro_rules! on_runs {
    ($self:ident, |$store:ident| $body:expr) => {{
        let $store = Arc::clone(&$self.writes);
        match $self.runs.spawn(async move { $body }).await {
            Ok(result) => result,
            Err(error) => Err(StoreError::Query(format!(
                "the store's task failed: {error}"
            ))),
        }
    }};
}

#[async_trait]
impl Store for RoutedStore {
    fn backend(&self) -> &'static str {
        self.writes.backend()
    }

    fn tenant(&self) -> &str {
        self.writes.tenant()
    }

    fn for_tenant(&self, tenant: &str) -> Arc<dyn Store> {
        Arc::new(Self {
            reads: self.reads.for_tenant(tenant),
            writes: self.writes.for_tenant(tenant),
            runs: self.runs.clone(),
        })
    }

    async fn create_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let tenant = tenant.to_owned();
        on_runs!(self, |store| store.create_tenant(&tenant).await)
    }

    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let run = run.clone();
        on_runs!(self, |store| store.create_run(&run).await)
    }

    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        let (run_id, batch) = (run_id.to_owned(), batch.clone());
        on_runs!(self, |store| store.write_batch(&run_id, &batch).await)
    }

    async fn heartbeat_run(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        on_runs!(self, |store| store.heartbeat_run(&run_id).await)
    }

    async fn mark_interrupted(
        &self,
        here: &RunOwner,
        stale_after: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let here = here.clone();
        on_runs!(self, |store| store
            .mark_interrupted(&here, stale_after)
            .await)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.reads.list_runs(filter).await
    }

    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError> {
        self.reads.find_run(run).await
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.reads.attempts(run_id).await
    }

    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        self.reads.logs(query).await
    }

    async fn events_after(
        &self,
        run_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError> {
        self.reads.events_after(run_id, after_seq, limit).await
    }

    async fn stage_outputs(
        &self,
        run_id: &str,
    ) -> Result<buildit_core::store::StageOutputs, StoreError> {
        self.reads.stage_outputs(run_id).await
    }

    async fn stage_tests(
        &self,
        run_id: &str,
    ) -> Result<buildit_core::store::StageTests, StoreError> {
        self.reads.stage_tests(run_id).await
    }

    async fn enqueue(&self, job: &NewJob) -> Result<i64, StoreError> {
        let job = job.clone();
        on_runs!(self, |store| store.enqueue(&job).await)
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        on_runs!(self, |store| store.claim(&queue, &worker, lease).await)
    }

    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<i64, StoreError> {
        let lease = *lease;
        on_runs!(self, |store| store.heartbeat(&lease, duration).await)
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = *lease;
        on_runs!(self, |store| store.complete(&lease).await)
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<(), StoreError> {
        let (lease, error) = (*lease, error.to_owned());
        on_runs!(self, |store| store.fail(&lease, &error).await)
    }

    async fn leased_jobs(&self, queue: &str) -> Result<Vec<JobRecord>, StoreError> {
        self.reads.leased_jobs(queue).await
    }

    async fn expire_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = *lease;
        on_runs!(self, |store| store.expire_lease(&lease).await)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        self.reads.job(id).await
    }

    async fn create_run_request(
        &self,
        request: &NewRunRequest,
    ) -> Result<RunRequestOutcome, StoreError> {
        let request = request.clone();
        on_runs!(self, |store| store.create_run_request(&request).await)
    }

    async fn run_request(&self, run_id: &str) -> Result<Option<RunRequest>, StoreError> {
        self.reads.run_request(run_id).await
    }

    async fn set_run_request_state(
        &self,
        run_id: &str,
        state: RunRequestState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let (run_id, reason) = (run_id.to_owned(), reason.map(str::to_owned));
        on_runs!(self, |store| store
            .set_run_request_state(&run_id, state, reason.as_deref())
            .await)
    }

    async fn queued_run_requests(&self, limit: u32) -> Result<Vec<RunRequest>, StoreError> {
        self.reads.queued_run_requests(limit).await
    }

    async fn unrecorded_run_requests(
        &self,
        filter: &RunRequestFilter,
    ) -> Result<Vec<RunRequest>, StoreError> {
        self.reads.unrecorded_run_requests(filter).await
    }

    async fn register_pipeline(&self, pipeline: &NewPipeline) -> Result<bool, StoreError> {
        let pipeline = pipeline.clone();
        on_runs!(self, |store| store.register_pipeline(&pipeline).await)
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        self.reads.get_pipeline(name).await
    }

    async fn list_pipelines(
        &self,
        filter: &PipelineFilter,
    ) -> Result<Vec<PipelineRecord>, StoreError> {
        self.reads.list_pipelines(filter).await
    }

    async fn request_run_cancel(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        on_runs!(self, |store| store.request_run_cancel(&run_id).await)
    }

    async fn cancel_running_run(&self, run_id: &str) -> Result<RunState, StoreError> {
        let run_id = run_id.to_owned();
        on_runs!(self, |store| store.cancel_running_run(&run_id).await)
    }

    async fn run_cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        self.reads.run_cancel_requested(run_id).await
    }

    async fn acquire_group(&self, claim: &GroupClaim) -> Result<GroupAcquire, StoreError> {
        let claim = claim.clone();
        on_runs!(self, |store| store.acquire_group(&claim).await)
    }

    async fn release_group(
        &self,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<(), StoreError> {
        let (group, run_id, stage) = (
            group.to_owned(),
            run_id.to_owned(),
            stage.map(str::to_owned),
        );
        on_runs!(self, |store| store
            .release_group(&group, &run_id, stage.as_deref())
            .await)
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        on_runs!(self, |store| store.delete_run(&run_id).await)
    }

    async fn runs_ended_before(&self, before_ms: i64) -> Result<Vec<RunRecord>, StoreError> {
        self.reads.runs_ended_before(before_ms).await
    }

    async fn restart_run_request(
        &self,
        run_id: &str,
        restart: &str,
    ) -> Result<RunRequest, StoreError> {
        let (run_id, restart) = (run_id.to_owned(), restart.to_owned());
        on_runs!(self, |store| store
            .restart_run_request(&run_id, &restart)
            .await)
    }

    async fn list_tenants(&self) -> Result<Vec<String>, StoreError> {
        self.reads.list_tenants().await
    }

    async fn create_token(
        &self,
        tenant: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        let (tenant, name, token_hash) =
            (tenant.to_owned(), name.to_owned(), token_hash.to_owned());
        on_runs!(self, |store| store
            .create_token(&tenant, &name, &token_hash)
            .await)
    }

    // A token's check records when it was last used: a write.
    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let token_hash = token_hash.to_owned();
        on_runs!(self, |store| store.tenant_of_token(&token_hash).await)
    }

    async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.reads.find_token(token_hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.reads.list_tokens().await
    }

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
        on_runs!(self, |store| store.revoke_token(id).await)
    }

    async fn close(&self) {
        self.reads.close().await;
    }
}
