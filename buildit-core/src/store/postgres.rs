//! The PostgreSQL backend: for servers and for many workers sharing one job queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::api::Store;
use super::batch::RecordBatch;
use super::groups::{GroupAcquire, GroupClaim};
use super::groups_sql::GroupSql;
use super::manage_sql::ManageSql;
use super::model::{
    AttemptRecord, ClaimedJob, DEFAULT_TENANT, JobRecord, LOST, Lease, LogPage, LogQuery, NewJob,
    NewPipeline, NewRun, NewRunRequest, PipelineFilter, PipelineRecord, RunFilter, RunOwner,
    RunRecord, RunRef, RunRequest, RunRequestFilter, RunRequestOutcome, RunRequestState, RunState,
    StoreError, TokenRecord, millis,
};
use super::open::redact;
use super::pipeline_sql::PipelineSql;
use super::request_sql::RequestSql;
use super::rows;
use super::sql::Shared;
use super::token_sql::TokenSql;
use super::tokens::check_tenant_name;
use super::{interrupted_reason, now_ms, pick_run};
use crate::events::RunEvent;

/// What makes a text comparison byte by byte whatever the database's collation (which may sort by language
/// rules): listings page by run ids and names, and their order must be the one cursors and the memory store use.
const BYTE_ORDER: &str = " COLLATE \"C\"";

/// How long to wait for a connection (an unreachable server fails after this, never hangs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database's clock in ms since the epoch: leases and heartbeats of workers on many hosts are compared on
/// one clock.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// A PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    tenant: Arc<str>,
}

impl PostgresStore {
    /// Connects to `url` and migrates the database, in the `default` tenant. Safe when several processes
    /// connect at once (migrations take an advisory lock).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, 8).await
    }

    /// Like [`PostgresStore::connect`], with at most `connections` connections.
    pub async fn connect_with(url: &str, connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(|error| StoreError::Open {
                location: redact(url),
                message: error.to_string(),
            })?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migrate(error.to_string()))?;
        Ok(Self {
            pool,
            tenant: Arc::from(DEFAULT_TENANT),
        })
    }

    /// The same database, working in `tenant` (create it first with [`Store::create_tenant`]).
    pub fn with_tenant(&self, tenant: &str) -> Self {
        Self {
            tenant: Arc::from(tenant),
            ..self.clone()
        }
    }

    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        self.pool.acquire().await.map_err(StoreError::query)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::query)
    }

    async fn db_now(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {DB_NOW}")))
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query)
    }
}

fn query_error(error: sqlx::Error) -> StoreError {
    StoreError::query(error)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn for_tenant(&self, tenant: &str) -> Arc<dyn Store> {
        Arc::new(self.with_tenant(tenant))
    }

    async fn create_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenants (id, created_at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error)?;
        Ok(())
    }

    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (tenant_id, name, next_run_number, created_at_ms) VALUES ($1, $2, 2, $3)
             ON CONFLICT (tenant_id, name) DO UPDATE SET next_run_number = pipelines.next_run_number + 1
             RETURNING next_run_number - 1",
        )
        .bind(&*self.tenant)
        .bind(&run.pipeline)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error)?;
        let requested = RequestSql::<Postgres>::mark_recorded(&mut tx, &self.tenant, &run.id, now)
            .await?
            .unwrap_or(now);
        sqlx::query(
            "INSERT INTO pipeline_runs (tenant_id, id, pipeline, number, status, created_at_ms, owner_host,
                 owner_pid, heartbeat_at_ms, sha, branch, event, requested_at_ms, inputs, retry_of)
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7,
                 (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&*self.tenant)
        .bind(&run.id)
        .bind(&run.pipeline)
        .bind(number)
        .bind(now)
        .bind(&run.owner.host)
        .bind(i64::from(run.owner.pid))
        .bind(&run.sha)
        .bind(&run.branch)
        .bind(&run.event)
        .bind(requested)
        .bind(run.inputs.as_ref().map(super::model::RunInputs::to_text))
        .bind(&run.retry_of)
        .execute(&mut *tx)
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        self.find_run(&RunRef::Id(run.id.clone())).await
    }

    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Shared::<Postgres>::write_batch(&mut tx, &self.tenant, run_id, batch)
            .await
            .map_err(query_error)?;
        tx.commit().await.map_err(query_error)
    }

    async fn heartbeat_run(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pipeline_runs SET heartbeat_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&*self.tenant)
        .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    async fn mark_interrupted(
        &self,
        here: &RunOwner,
        stale_after: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let now = self.db_now().await?;
        let running =
            Shared::<Postgres>::running_runs(&mut *self.connection().await?, &self.tenant).await?;
        let mut marked = Vec::new();
        for (id, owner, heartbeat) in running {
            let Some(reason) = interrupted_reason(&owner, here, heartbeat, now, stale_after) else {
                continue;
            };
            let mut tx = self.begin().await?;
            if Shared::<Postgres>::interrupt(&mut tx, &self.tenant, &id, &reason, now, heartbeat)
                .await?
            {
                marked.push(id);
            }
            tx.commit().await.map_err(query_error)?;
        }
        Ok(marked)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        Shared::<Postgres>::list_runs(
            &mut *self.connection().await?,
            &self.tenant,
            filter,
            BYTE_ORDER,
        )
        .await
    }

    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError> {
        let found =
            Shared::<Postgres>::find_runs(&mut *self.connection().await?, &self.tenant, run)
                .await?;
        pick_run(run, found)
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        Shared::<Postgres>::attempts(&mut *self.connection().await?, &self.tenant, run_id).await
    }

    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        Shared::<Postgres>::logs(&mut *self.connection().await?, &self.tenant, query).await
    }

    async fn events_after(
        &self,
        run_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError> {
        // One snapshot for the rows and the chunks: never from either side of a batch being committed (a line
        // without the events around it would be a gap).
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(query_error)?;
        let events =
            Shared::<Postgres>::events_after(&mut tx, &self.tenant, run_id, after_seq, limit).await;
        tx.rollback().await.map_err(query_error)?;
        events
    }

    async fn stage_outputs(&self, run_id: &str) -> Result<crate::store::StageOutputs, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(query_error)?;
        let outputs = Shared::<Postgres>::stage_outputs(&mut tx, &self.tenant, run_id).await;
        tx.rollback().await.map_err(query_error)?;
        outputs
    }

    async fn stage_tests(&self, run_id: &str) -> Result<crate::store::StageTests, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(query_error)?;
        let tests = Shared::<Postgres>::stage_tests(&mut tx, &self.tenant, run_id).await;
        tx.rollback().await.map_err(query_error)?;
        tests
    }

    async fn enqueue(&self, job: &NewJob) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO job_queue (tenant_id, queue, payload, status, attempts, max_attempts, created_at_ms,
                 updated_at_ms)
             VALUES ($1, $2, $3, 'queued', 0, $4, $5, $5) RETURNING id",
        )
        .bind(&*self.tenant)
        .bind(&job.queue)
        .bind(&job.payload)
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(query_error)
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        // One statement: fail the jobs whose leases ran out too often, then take the job whose lease expired
        // longest ago, else the oldest queued one, that no other claimer holds locked (SKIP LOCKED: claimers never wait for each other).
        let claimed = sqlx::query(
            "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS now),
             lost AS (
                 UPDATE job_queue SET status = 'failed', error = $4, lease_until_ms = NULL,
                     updated_at_ms = (SELECT now FROM clock)
                 WHERE tenant_id = $1 AND queue = $2 AND status = 'running'
                     AND lease_until_ms < (SELECT now FROM clock) AND attempts >= max_attempts
                 RETURNING id),
             next AS (
                 SELECT COALESCE(
                     (SELECT id FROM job_queue WHERE tenant_id = $1 AND queue = $2 AND status = 'running'
                         AND lease_until_ms < (SELECT now FROM clock) AND attempts < max_attempts
                         ORDER BY lease_until_ms LIMIT 1 FOR UPDATE SKIP LOCKED),
                     (SELECT id FROM job_queue WHERE tenant_id = $1 AND queue = $2 AND status = 'queued'
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 ) AS id)
             UPDATE job_queue AS job SET status = 'running', attempts = job.attempts + 1, worker = $3,
                 lease_until_ms = (SELECT now FROM clock) + $5, updated_at_ms = (SELECT now FROM clock)
             FROM next WHERE job.id = next.id
             RETURNING job.id, job.payload, job.attempts, job.max_attempts, job.lease_until_ms",
        )
        .bind(&*self.tenant)
        .bind(queue)
        .bind(worker)
        .bind(LOST)
        .bind(millis(lease))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error)?;
        claimed
            .map(|row| rows::claimed_job(&row).map_err(query_error))
            .transpose()
    }

    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<i64, StoreError> {
        let until: Option<i64> = sqlx::query_scalar(
            "UPDATE job_queue SET lease_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT + $4,
                 updated_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
             WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND status = 'running'
             RETURNING lease_until_ms",
        )
        .bind(&*self.tenant)
        .bind(lease.job)
        .bind(lease.attempt)
        .bind(millis(duration))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error)?;
        until.ok_or(StoreError::LeaseLost {
            job: lease.job,
            attempt: lease.attempt,
        })
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let now = now_ms();
        Shared::<Postgres>::finish_job(
            &mut *self.connection().await?,
            &self.tenant,
            lease,
            "completed",
            None,
            now,
        )
        .await
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<(), StoreError> {
        let now = now_ms();
        Shared::<Postgres>::finish_job(
            &mut *self.connection().await?,
            &self.tenant,
            lease,
            "failed",
            Some(error),
            now,
        )
        .await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        Shared::<Postgres>::job(&mut *self.connection().await?, &self.tenant, id).await
    }

    async fn leased_jobs(&self, queue: &str) -> Result<Vec<JobRecord>, StoreError> {
        Shared::<Postgres>::leased_jobs(&mut *self.connection().await?, &self.tenant, queue).await
    }

    async fn expire_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        Shared::<Postgres>::expire_lease(
            &mut *self.connection().await?,
            &self.tenant,
            lease,
            now_ms(),
        )
        .await
    }

    async fn request_run_cancel(&self, run_id: &str) -> Result<(), StoreError> {
        RequestSql::<Postgres>::request_cancel(
            &mut *self.connection().await?,
            &self.tenant,
            run_id,
            now_ms(),
        )
        .await
    }

    async fn cancel_running_run(&self, run_id: &str) -> Result<RunState, StoreError> {
        ManageSql::<Postgres>::request_cancel(
            &mut *self.connection().await?,
            &self.tenant,
            run_id,
            now_ms(),
        )
        .await
    }

    async fn run_cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        ManageSql::<Postgres>::cancel_requested(
            &mut *self.connection().await?,
            &self.tenant,
            run_id,
        )
        .await
    }

    async fn acquire_group(&self, claim: &GroupClaim) -> Result<GroupAcquire, StoreError> {
        let mut tx = self.begin().await?;
        let answer =
            GroupSql::<Postgres>::acquire(&mut tx, &self.tenant, claim, now_ms(), " FOR UPDATE")
                .await?;
        tx.commit().await.map_err(query_error)?;
        Ok(answer)
    }

    async fn release_group(
        &self,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        GroupSql::<Postgres>::release(
            &mut tx,
            &self.tenant,
            group,
            run_id,
            stage,
            now_ms(),
            " FOR UPDATE",
        )
        .await?;
        tx.commit().await.map_err(query_error)
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Dropped without a commit on an error: nothing is deleted.
        ManageSql::<Postgres>::delete(&mut tx, &self.tenant, run_id).await?;
        tx.commit().await.map_err(query_error)
    }

    async fn runs_ended_before(&self, before_ms: i64) -> Result<Vec<RunRecord>, StoreError> {
        ManageSql::<Postgres>::ended_before(&mut *self.connection().await?, &self.tenant, before_ms)
            .await
    }

    async fn restart_run_request(
        &self,
        run_id: &str,
        restart: &str,
    ) -> Result<RunRequest, StoreError> {
        let mut tx = self.begin().await?;
        let request =
            RequestSql::<Postgres>::restart(&mut tx, &self.tenant, run_id, restart, now_ms())
                .await?;
        tx.commit().await.map_err(query_error)?;
        Ok(request)
    }

    async fn list_tenants(&self) -> Result<Vec<String>, StoreError> {
        TokenSql::<Postgres>::tenants(&mut *self.connection().await?).await
    }

    async fn create_token(
        &self,
        tenant: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        check_tenant_name(tenant)?;
        let mut tx = self.begin().await?;
        let record =
            TokenSql::<Postgres>::insert(&mut tx, tenant, name, token_hash, now_ms()).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(record)
    }

    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let mut connection = self.connection().await?;
        let found = TokenSql::<Postgres>::lookup(&mut connection, token_hash, now).await?;
        let Some((id, tenant, stale)) = found else {
            return Ok(None);
        };
        if stale {
            TokenSql::<Postgres>::touch(&mut connection, id, now).await?;
        }
        Ok(Some(tenant))
    }

    async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        TokenSql::<Postgres>::find(&mut *self.connection().await?, token_hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        TokenSql::<Postgres>::list(&mut *self.connection().await?, &self.tenant).await
    }

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
        TokenSql::<Postgres>::revoke(&mut *self.connection().await?, &self.tenant, id, now_ms())
            .await
    }

    async fn create_run_request(
        &self,
        request: &NewRunRequest,
    ) -> Result<RunRequestOutcome, StoreError> {
        // Read committed: an insert that conflicts with a concurrent one waits for its commit and does nothing;
        // the read after it, a statement with a new snapshot, sees the committed winner.
        let mut tx = self.begin().await?;
        let outcome =
            RequestSql::<Postgres>::create(&mut tx, &self.tenant, request, now_ms()).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(outcome)
    }

    async fn run_request(&self, run_id: &str) -> Result<Option<RunRequest>, StoreError> {
        RequestSql::<Postgres>::get(&mut *self.connection().await?, &self.tenant, run_id).await
    }

    async fn set_run_request_state(
        &self,
        run_id: &str,
        state: RunRequestState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        RequestSql::<Postgres>::set_state(&mut tx, &self.tenant, run_id, state, reason, now_ms())
            .await?;
        tx.commit().await.map_err(query_error)
    }

    async fn queued_run_requests(&self, limit: u32) -> Result<Vec<RunRequest>, StoreError> {
        RequestSql::<Postgres>::queued(&mut *self.connection().await?, &self.tenant, limit).await
    }

    async fn unrecorded_run_requests(
        &self,
        filter: &RunRequestFilter,
    ) -> Result<Vec<RunRequest>, StoreError> {
        RequestSql::<Postgres>::unrecorded(
            &mut *self.connection().await?,
            &self.tenant,
            filter,
            BYTE_ORDER,
        )
        .await
    }

    async fn register_pipeline(&self, pipeline: &NewPipeline) -> Result<bool, StoreError> {
        PipelineSql::<Postgres>::register(
            &mut *self.connection().await?,
            &self.tenant,
            pipeline,
            now_ms(),
        )
        .await
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        PipelineSql::<Postgres>::get(&mut *self.connection().await?, &self.tenant, name).await
    }

    async fn list_pipelines(
        &self,
        filter: &PipelineFilter,
    ) -> Result<Vec<PipelineRecord>, StoreError> {
        PipelineSql::<Postgres>::list(
            &mut *self.connection().await?,
            &self.tenant,
            filter,
            BYTE_ORDER,
        )
        .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
