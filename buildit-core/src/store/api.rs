//! The `Store` trait: the one contract every backend (SQLite, PostgreSQL) implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use super::batch::RecordBatch;
use super::groups::{GroupAcquire, GroupClaim};
use super::model::{
    AttemptRecord, ClaimedJob, JobRecord, Lease, LogPage, LogQuery, NewJob, NewPipeline, NewRun,
    NewRunRequest, PipelineFilter, PipelineRecord, RunFilter, RunOwner, RunRecord, RunRef,
    RunRequest, RunRequestFilter, RunRequestOutcome, RunRequestState, RunState, StoreError,
    TokenRecord,
};
use crate::events::RunEvent;

/// Outputs by instance, then by name, as [`Store::stage_outputs`] gives them.
pub type StageOutputs =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// What the test reports of each instance counted (its last attempt that had any), as [`Store::stage_tests`]
/// gives them.
pub type StageTests = std::collections::BTreeMap<String, crate::events::TestSummary>;

/// Where runs, their stages, their logs and the job queue live. Every call works within the store's tenant.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The tenant this handle works in.
    fn tenant(&self) -> &str;

    /// The same store, working in `tenant` (create it first with [`Store::create_tenant`]).
    fn for_tenant(&self, tenant: &str) -> std::sync::Arc<dyn Store>;

    /// Adds a tenant (idempotent).
    async fn create_tenant(&self, tenant: &str) -> Result<(), StoreError>;

    /// Records a new run as `running` and gives it the next number of its pipeline (race-free). A run the
    /// tenant has a request for keeps the request's time as its place in listings ([`RunRecord::cursor`]), and
    /// the request is marked recorded (no longer listed by [`Store::unrecorded_run_requests`]), in one
    /// transaction.
    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError>;

    /// Writes a batch of a run's events in one transaction.
    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError>;

    /// Tells the store the run's owner is alive.
    async fn heartbeat_run(&self, run_id: &str) -> Result<(), StoreError>;

    /// Marks as `interrupted` every running run whose owner is gone: a process of this host (`here`) that no
    /// longer exists, or any owner whose heartbeat is older than `stale_after`. Returns the ids marked.
    async fn mark_interrupted(
        &self,
        here: &RunOwner,
        stale_after: Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Runs matching `filter`, newest first: by when they were asked for, then by id, both descending
    /// ([`RunRecord::cursor`]); after `filter.before` when given, at most `filter.limit`.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// One run by id or number.
    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError>;

    /// Every attempt of a run, by stage and attempt.
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    /// A page of a run's log lines, in the order they were written.
    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError>;

    /// The run's stored events with a sequence number above `after_seq`, in sequence order, at most `limit`:
    /// equal to what its event bus emitted (log lines included). Fewer than `limit` means these were the last
    /// ones stored so far. [`StoreError::NoSuchRun`] for a run this tenant does not have.
    async fn events_after(
        &self,
        run_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError>;

    /// What the run's instances wrote as outputs (masked, as their `stage-outputs` events hold them), by
    /// instance. By default read from the run's events; SQL stores select those events alone.
    async fn stage_outputs(&self, run_id: &str) -> Result<StageOutputs, StoreError> {
        let mut outputs = std::collections::BTreeMap::new();
        for_each_event(self, run_id, |kind| {
            if let crate::events::RunEventKind::StageOutputs {
                stage,
                outputs: written,
                ..
            } = kind
            {
                outputs.insert(stage, written);
            }
        })
        .await?;
        Ok(outputs)
    }

    /// What the test reports of the run's instances counted (masked, as their `stage-tests` events hold it), by
    /// instance: its last attempt that had any. By default read from the run's events; SQL stores select those
    /// events alone.
    async fn stage_tests(&self, run_id: &str) -> Result<StageTests, StoreError> {
        let mut tests = std::collections::BTreeMap::new();
        for_each_event(self, run_id, |kind| {
            if let crate::events::RunEventKind::StageTests {
                stage,
                tests: counted,
                ..
            } = kind
            {
                tests.insert(stage, counted);
            }
        })
        .await?;
        Ok(tests)
    }

    /// Adds a job to a queue; returns its id.
    async fn enqueue(&self, job: &NewJob) -> Result<i64, StoreError>;

    /// Claims the oldest claimable job of `queue` (queued, or running with an expired lease and claims left) for
    /// `lease`. Jobs whose leases expired `max_attempts` times are failed as lost on the way.
    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError>;

    /// Extends a held lease by `lease` from now; returns the new end (ms since the epoch).
    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<i64, StoreError>;

    /// Completes a held job. Fails with [`StoreError::LeaseLost`] if the lease is no longer held.
    async fn complete(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Fails a held job for good, with why.
    async fn fail(&self, lease: &Lease, error: &str) -> Result<(), StoreError>;

    /// This tenant's jobs of `queue` held under a lease, expired or not, by id.
    async fn leased_jobs(&self, queue: &str) -> Result<Vec<JobRecord>, StoreError>;

    /// Ends `lease` now, so that its job can be claimed again at once (its worker is known to be gone). A lease
    /// that no longer holds its job changes nothing.
    async fn expire_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// One job.
    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError>;

    /// Records a run the daemon was asked for, as `queued`, in this tenant (which must exist). Atomic: of two
    /// requests with one idempotency key, however concurrent, one is [`RunRequestOutcome::Created`] and the
    /// other gets the first one's record as [`RunRequestOutcome::Existing`] (whatever its own run id and
    /// pipeline). [`StoreError::DuplicateRun`] for a run id this tenant has already requested under another key
    /// or none.
    async fn create_run_request(
        &self,
        request: &NewRunRequest,
    ) -> Result<RunRequestOutcome, StoreError>;

    /// This tenant's request for `run_id`.
    async fn run_request(&self, run_id: &str) -> Result<Option<RunRequest>, StoreError>;

    /// Sets a request's state and reason, if its state leads there ([`RunRequestState::can_become`]): a started
    /// request is never queued again, a cancelled or failed one is over ([`StoreError::RunRequestTransition`]);
    /// the state it already has is left as it is, first reason included. [`StoreError::NoSuchRun`] for a run id
    /// this tenant has not requested.
    async fn set_run_request_state(
        &self,
        run_id: &str,
        state: RunRequestState,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` of this tenant's queued requests, oldest first (ties by run id).
    async fn queued_run_requests(&self, limit: u32) -> Result<Vec<RunRequest>, StoreError>;

    /// This tenant's requests whose run has no record (queued, started but not recorded yet, cancelled before
    /// it started, failed to start) matching `filter`, newest first in the order [`Store::list_runs`] uses
    /// ([`RunRequest::cursor`]): merged with the runs it lists, they are every run a daemon knows, and a run
    /// keeps its place from its request to its record.
    async fn unrecorded_run_requests(
        &self,
        filter: &RunRequestFilter,
    ) -> Result<Vec<RunRequest>, StoreError>;

    /// Registers a pipeline's text under its name in this tenant (which must exist), or replaces the text
    /// registered under that name. Whether anything changed: a new pipeline, another text or another file name.
    /// The same text and file name again change nothing, times and registrant included.
    async fn register_pipeline(&self, pipeline: &NewPipeline) -> Result<bool, StoreError>;

    /// This tenant's registered pipeline `name`.
    async fn get_pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError>;

    /// This tenant's registered pipelines by name (byte order), after `filter.after`, at most `filter.limit`.
    /// A pipeline that has run without being registered is not one.
    async fn list_pipelines(
        &self,
        filter: &PipelineFilter,
    ) -> Result<Vec<PipelineRecord>, StoreError>;

    /// Notes that a cancel of `run_id` was asked for, so that whichever daemon of the store runs it (it polls
    /// its request) stops it; the first time counts. [`StoreError::NoSuchRun`] for a run id this tenant has not
    /// requested.
    async fn request_run_cancel(&self, run_id: &str) -> Result<(), StoreError>;

    /// Asks whoever runs the recorded run `run_id` to cancel it: a run that is running notes the request (the
    /// first one counts) and its runner, which polls [`Store::run_cancel_requested`], stops it as a first Ctrl-C
    /// would. Returns the run's state: [`RunState::Running`] when the request was noted, else the state of the
    /// run that has already ended (nothing noted). [`StoreError::NoSuchRun`] for a run this tenant does not have.
    async fn cancel_running_run(&self, run_id: &str) -> Result<RunState, StoreError>;

    /// Whether a cancel of the run `run_id` was asked for through [`Store::cancel_running_run`]; `false` for a run
    /// this tenant does not have.
    async fn run_cancel_requested(&self, run_id: &str) -> Result<bool, StoreError>;

    /// Takes the concurrency group `claim.group` for its run (or its instance) if the group is free, held by a
    /// run that is no longer running (ended, or marked interrupted: [`Store::mark_interrupted`]), handed to the
    /// claimant, or held by the claimant already; else says who holds it and, for a pending claim, queues it as
    /// the group's one pending run ([`GroupClaim::pending`]). Atomic: of two claims of a free group, one gets it.
    async fn acquire_group(&self, claim: &GroupClaim) -> Result<GroupAcquire, StoreError>;

    /// Lets the group `group` go if the run `run_id` (its instance `stage`, `None` for the run) holds it: to the
    /// group's pending run when it has one. A run that only waited as the pending run stops being it. Nothing
    /// else changes: a run never lets go of what it does not hold.
    async fn release_group(
        &self,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Deletes the ended run `run_id` with everything recorded of it (attempts, log lines, events, its request),
    /// in one transaction. Its pipeline keeps counting: a later run never takes a deleted run's number.
    /// [`StoreError::RunStillRunning`] for a run that is running (mark dead runners' runs first:
    /// [`Store::mark_interrupted`]); [`StoreError::NoSuchRun`] for a run this tenant does not have.
    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError>;

    /// This tenant's runs that ended before `before_ms` (ms since the epoch), the earliest end first: what
    /// pruning by age deletes.
    async fn runs_ended_before(&self, before_ms: i64) -> Result<Vec<RunRecord>, StoreError>;

    /// Records that the interrupted run `run_id` starts again as `restart`: a new request, `started`, whose
    /// `restart_of` is `run_id`, and `run_id`'s `restarted_as`. Atomic, and the first restart wins: for a run
    /// restarted already it answers that restart's request, unchanged. [`StoreError::NoSuchRun`] for a run id
    /// this tenant has not requested.
    async fn restart_run_request(
        &self,
        run_id: &str,
        restart: &str,
    ) -> Result<RunRequest, StoreError>;

    /// Every tenant's name, sorted.
    async fn list_tenants(&self) -> Result<Vec<String>, StoreError>;

    /// Records an API token of `tenant` (created if missing; its name must pass
    /// [`check_tenant_name`](super::check_tenant_name)) labelled `name`, by the hash of the token
    /// ([`hash_token`](super::hash_token)): the token itself never reaches the store. Works whatever this handle's
    /// tenant.
    async fn create_token(
        &self,
        tenant: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenRecord, StoreError>;

    /// The tenant of the token whose hash is `token_hash`; `None` for a token that is unknown or revoked. Works
    /// whatever this handle's tenant (a token is what says the tenant). Updates the token's `last_used_at_ms`,
    /// at most once a minute.
    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError>;

    /// The unrevoked token whose hash is `token_hash`, whatever this handle's tenant; unlike
    /// [`Store::tenant_of_token`] it leaves its last use as it is.
    async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// This tenant's tokens (revoked ones included), oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes one of this tenant's tokens (idempotent: a revoked token keeps its first revocation time).
    /// [`StoreError::NoSuchToken`] for an id this tenant does not have.
    async fn revoke_token(&self, id: i64) -> Result<(), StoreError>;

    /// Closes the store's connections, once the process is done with it. SQLite then folds its write-ahead log
    /// into the database file; a process that exits with connections open leaves the log to the next opener,
    /// who reads all of it again (up to 1,000 pages) before its first query.
    async fn close(&self) {}
}

/// Every event of a run, oldest first and a page at a time, handed to `each`.
async fn for_each_event<S: Store + ?Sized>(
    store: &S,
    run_id: &str,
    mut each: impl FnMut(crate::events::RunEventKind) + Send,
) -> Result<(), StoreError> {
    let mut after = 0;
    loop {
        let page = store.events_after(run_id, after, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        for event in page {
            each(event.kind);
        }
    }
}
