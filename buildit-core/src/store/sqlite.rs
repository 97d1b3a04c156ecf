//! The SQLite backend: the embedded default (`.buildit/buildit.db`), WAL, one writer connection and a pool of
//! readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

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
use super::pipeline_sql::PipelineSql;
use super::request_sql::RequestSql;
use super::rows;
use super::sql::Shared;
use super::token_sql::TokenSql;
use super::tokens::check_tenant_name;
use super::{interrupted_reason, now_ms, pick_run};
use crate::events::RunEvent;

/// What makes a text comparison byte by byte: nothing, SQLite compares text so (BINARY) unless told otherwise.
const BYTE_ORDER: &str = "";

/// How long a writer waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages of write-ahead log (4 KiB each) after which a commit folds the log into the file (SQLite's default:
/// 1,000).
const WAL_CHECKPOINT_PAGES: u32 = 128;

/// A SQLite store.
///
/// Every write goes through one connection. SQLite lets one writer at a time into a database anyway, and a
/// connection keeps its page cache only while no other connection writes: two connections taking turns at a
/// run's batches re-read every page they touch (about 3,700 page reads on a 1,000-stage run). Reads that
/// belong to a write (the scan for dead runners' runs, the new run's record) use the writer too; the others
/// use a pool of readers, opened when first needed, which WAL lets run beside the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    tenant: Arc<str>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`, in the `default`
    /// tenant. Safe when several processes open the same file at once.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |message: String| StoreError::Open {
            location: path.display().to_string(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| open_error(error.to_string()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL never corrupts the file; a power loss may lose the last transactions, a killed
            // process loses nothing it committed.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The log is folded into the file in small steps while a run is recorded (by the writer's own
            // thread, after its commits), so that closing the store at the end has little left to fold.
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string());
        // A connection to a local file does not go stale: testing it would cost a round trip to its thread on
        // every write.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Writes queue for the one connection, and each may wait up to `BUSY_TIMEOUT` for another process's
            // lock: a queued write waits for those, not only for its own.
            .acquire_timeout(4 * BUSY_TIMEOUT)
            .test_before_acquire(false)
            // The connection opened here is kept for the store's life: its thread (SQLite connections each have
            // one) has the priority of the thread that opens the store, not that of whichever task writes first
            // after an idle spell (a daemon serves streams on threads of lower priority than runs).
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|error| open_error(error.to_string()))?;
        migrate(&writer, path).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self {
            writer,
            readers,
            tenant: Arc::from(DEFAULT_TENANT),
            path: path.to_path_buf(),
        })
    }

    /// The same database, working in `tenant` (create it first with [`Store::create_tenant`]).
    pub fn with_tenant(&self, tenant: &str) -> Self {
        Self {
            tenant: Arc::from(tenant),
            ..self.clone()
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection for reading.
    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
        self.readers.acquire().await.map_err(StoreError::query)
    }

    /// The writer connection, for a write of one statement or a read that belongs to a write.
    async fn writer(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
        self.writer.acquire().await.map_err(StoreError::query)
    }

    async fn immediate(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // Writers take the lock up front: a deferred transaction that upgrades later fails at once with
        // SQLITE_BUSY under WAL instead of waiting its turn.
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::query)
    }
}

/// Applies the embedded migrations, one process at a time (SQLite has no advisory locks: a lock file stands in).
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("../migrations/sqlite");
    // The common case, a store already up to date, is one query: no lock file, no migrator round trips.
    if up_to_date(pool, &migrator).await {
        return Ok(());
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".migrate-lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| error.to_string())?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno.to_string())
    })
    .await
    .map_err(|error| StoreError::Migrate(error.to_string()))?
    .map_err(StoreError::Migrate)?;
    let result = migrator
        .run(pool)
        .await
        .map_err(|error| StoreError::Migrate(error.to_string()));
    drop(lock);
    result
}

/// Whether exactly the embedded migrations have been applied, unchanged (anything else, a missing table
/// included, is for the migrator to handle or report).
async fn up_to_date(pool: &SqlitePool, migrator: &sqlx::migrate::Migrator) -> bool {
    // Failed ones included: a failed (dirty) migration is the migrator's to report.
    let applied: Vec<(i64, Vec<u8>, bool)> = match sqlx::query_as(
        "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(applied) => applied,
        Err(_) => return false,
    };
    let mut embedded = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration());
    let mut applied = applied.iter();
    loop {
        match (embedded.next(), applied.next()) {
            (None, None) => return true,
            (Some(migration), Some((version, checksum, true)))
                if migration.version == *version && *migration.checksum == **checksum => {}
            _ => return false,
        }
    }
}

fn query_error(error: sqlx::Error) -> StoreError {
    StoreError::query(error)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn for_tenant(&self, tenant: &str) -> Arc<dyn Store> {
        Arc::new(self.with_tenant(tenant))
    }

    async fn create_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO tenants (id, created_at_ms) VALUES (?1, ?2)")
            .bind(tenant)
            .bind(now_ms())
            .execute(&self.writer)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.immediate().await?;
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (tenant_id, name, next_run_number, created_at_ms) VALUES (?1, ?2, 2, ?3)
             ON CONFLICT (tenant_id, name) DO UPDATE SET next_run_number = pipelines.next_run_number + 1
             RETURNING next_run_number - 1",
        )
        .bind(&*self.tenant)
        .bind(&run.pipeline)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error)?;
        let requested = RequestSql::<Sqlite>::mark_recorded(&mut tx, &self.tenant, &run.id, now)
            .await?
            .unwrap_or(now);
        sqlx::query(
            "INSERT INTO pipeline_runs (tenant_id, id, pipeline, number, status, created_at_ms, owner_host,
                 owner_pid, heartbeat_at_ms, sha, branch, event, requested_at_ms, inputs, retry_of)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?5, ?8, ?9, ?10, ?11, ?12, ?13)",
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
        let found =
            Shared::<Sqlite>::find_runs(&mut tx, &self.tenant, &RunRef::Id(run.id.clone())).await;
        tx.commit().await.map_err(query_error)?;
        pick_run(&RunRef::Id(run.id.clone()), found?)
    }

    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut tx = self.immediate().await?;
        Shared::<Sqlite>::write_batch(&mut tx, &self.tenant, run_id, batch)
            .await
            .map_err(query_error)?;
        tx.commit().await.map_err(query_error)
    }

    async fn heartbeat_run(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pipeline_runs SET heartbeat_at_ms = ?3 WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(&*self.tenant)
        .bind(run_id)
        .bind(now_ms())
        .execute(&self.writer)
        .await
        .map_err(query_error)?;
        Ok(())
    }

    async fn mark_interrupted(
        &self,
        here: &RunOwner,
        stale_after: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let running =
            Shared::<Sqlite>::running_runs(&mut *self.writer().await?, &self.tenant).await?;
        let mut marked = Vec::new();
        for (id, owner, heartbeat) in running {
            let Some(reason) = interrupted_reason(&owner, here, heartbeat, now, stale_after) else {
                continue;
            };
            let mut tx = self.immediate().await?;
            if Shared::<Sqlite>::interrupt(&mut tx, &self.tenant, &id, &reason, now, heartbeat)
                .await?
            {
                marked.push(id);
            }
            tx.commit().await.map_err(query_error)?;
        }
        Ok(marked)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        Shared::<Sqlite>::list_runs(&mut *self.reader().await?, &self.tenant, filter, BYTE_ORDER)
            .await
    }

    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError> {
        let found =
            Shared::<Sqlite>::find_runs(&mut *self.reader().await?, &self.tenant, run).await?;
        pick_run(run, found)
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        Shared::<Sqlite>::attempts(&mut *self.reader().await?, &self.tenant, run_id).await
    }

    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        Shared::<Sqlite>::logs(&mut *self.reader().await?, &self.tenant, query).await
    }

    async fn events_after(
        &self,
        run_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError> {
        // One read transaction: the rows and the chunks are read from one snapshot, never from either side of
        // a batch being committed (a line without the events around it would be a gap).
        let mut tx = self
            .readers
            .begin_with("BEGIN DEFERRED")
            .await
            .map_err(query_error)?;
        let events =
            Shared::<Sqlite>::events_after(&mut tx, &self.tenant, run_id, after_seq, limit).await;
        tx.rollback().await.map_err(query_error)?;
        events
    }

    async fn stage_outputs(&self, run_id: &str) -> Result<crate::store::StageOutputs, StoreError> {
        let mut tx = self
            .readers
            .begin_with("BEGIN DEFERRED")
            .await
            .map_err(query_error)?;
        let outputs = Shared::<Sqlite>::stage_outputs(&mut tx, &self.tenant, run_id).await;
        tx.rollback().await.map_err(query_error)?;
        outputs
    }

    async fn stage_tests(&self, run_id: &str) -> Result<crate::store::StageTests, StoreError> {
        let mut tx = self
            .readers
            .begin_with("BEGIN DEFERRED")
            .await
            .map_err(query_error)?;
        let tests = Shared::<Sqlite>::stage_tests(&mut tx, &self.tenant, run_id).await;
        tx.rollback().await.map_err(query_error)?;
        tests
    }

    async fn enqueue(&self, job: &NewJob) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO job_queue (tenant_id, queue, payload, status, attempts, max_attempts, created_at_ms,
                 updated_at_ms)
             VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?5) RETURNING id",
        )
        .bind(&*self.tenant)
        .bind(&job.queue)
        .bind(&job.payload)
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(now_ms())
        .fetch_one(&self.writer)
        .await
        .map_err(query_error)
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = now_ms();
        let mut tx = self.immediate().await?;
        sqlx::query(
            "UPDATE job_queue SET status = 'failed', error = ?4, lease_until_ms = NULL, updated_at_ms = ?3
             WHERE tenant_id = ?1 AND queue = ?2 AND status = 'running' AND lease_until_ms < ?3
             AND attempts >= max_attempts",
        )
        .bind(&*self.tenant)
        .bind(queue)
        .bind(now)
        .bind(LOST)
        .execute(&mut *tx)
        .await
        .map_err(query_error)?;
        let claimed = sqlx::query(
            "UPDATE job_queue SET status = 'running', attempts = attempts + 1, worker = ?4,
                 lease_until_ms = ?3 + ?5, updated_at_ms = ?3
             WHERE id = COALESCE(
                 (SELECT id FROM job_queue WHERE tenant_id = ?1 AND queue = ?2 AND status = 'running'
                     AND lease_until_ms < ?3 AND attempts < max_attempts ORDER BY lease_until_ms LIMIT 1),
                 (SELECT id FROM job_queue WHERE tenant_id = ?1 AND queue = ?2 AND status = 'queued'
                     ORDER BY id LIMIT 1))
             RETURNING id, payload, attempts, max_attempts, lease_until_ms",
        )
        .bind(&*self.tenant)
        .bind(queue)
        .bind(now)
        .bind(worker)
        .bind(millis(lease))
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        claimed
            .map(|row| rows::claimed_job(&row).map_err(query_error))
            .transpose()
    }

    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<i64, StoreError> {
        let now = now_ms();
        let until: Option<i64> = sqlx::query_scalar(
            "UPDATE job_queue SET lease_until_ms = ?4 + ?5, updated_at_ms = ?4
             WHERE tenant_id = ?1 AND id = ?2 AND attempts = ?3 AND status = 'running'
             RETURNING lease_until_ms",
        )
        .bind(&*self.tenant)
        .bind(lease.job)
        .bind(lease.attempt)
        .bind(now)
        .bind(millis(duration))
        .fetch_optional(&self.writer)
        .await
        .map_err(query_error)?;
        until.ok_or(StoreError::LeaseLost {
            job: lease.job,
            attempt: lease.attempt,
        })
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let now = now_ms();
        Shared::<Sqlite>::finish_job(
            &mut *self.writer().await?,
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
        Shared::<Sqlite>::finish_job(
            &mut *self.writer().await?,
            &self.tenant,
            lease,
            "failed",
            Some(error),
            now,
        )
        .await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        Shared::<Sqlite>::job(&mut *self.reader().await?, &self.tenant, id).await
    }

    async fn leased_jobs(&self, queue: &str) -> Result<Vec<JobRecord>, StoreError> {
        Shared::<Sqlite>::leased_jobs(&mut *self.reader().await?, &self.tenant, queue).await
    }

    async fn expire_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        Shared::<Sqlite>::expire_lease(&mut *self.writer().await?, &self.tenant, lease, now_ms())
            .await
    }

    async fn request_run_cancel(&self, run_id: &str) -> Result<(), StoreError> {
        RequestSql::<Sqlite>::request_cancel(
            &mut *self.writer().await?,
            &self.tenant,
            run_id,
            now_ms(),
        )
        .await
    }

    async fn cancel_running_run(&self, run_id: &str) -> Result<RunState, StoreError> {
        ManageSql::<Sqlite>::request_cancel(
            &mut *self.writer().await?,
            &self.tenant,
            run_id,
            now_ms(),
        )
        .await
    }

    async fn run_cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        ManageSql::<Sqlite>::cancel_requested(&mut *self.reader().await?, &self.tenant, run_id)
            .await
    }

    async fn acquire_group(&self, claim: &GroupClaim) -> Result<GroupAcquire, StoreError> {
        let mut tx = self.immediate().await?;
        let answer =
            GroupSql::<Sqlite>::acquire(&mut tx, &self.tenant, claim, now_ms(), "").await?;
        tx.commit().await.map_err(query_error)?;
        Ok(answer)
    }

    async fn release_group(
        &self,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.immediate().await?;
        GroupSql::<Sqlite>::release(&mut tx, &self.tenant, group, run_id, stage, now_ms(), "")
            .await?;
        tx.commit().await.map_err(query_error)
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let mut tx = self.immediate().await?;
        // Dropped without a commit on an error: nothing is deleted.
        ManageSql::<Sqlite>::delete(&mut tx, &self.tenant, run_id).await?;
        tx.commit().await.map_err(query_error)
    }

    async fn runs_ended_before(&self, before_ms: i64) -> Result<Vec<RunRecord>, StoreError> {
        ManageSql::<Sqlite>::ended_before(&mut *self.reader().await?, &self.tenant, before_ms).await
    }

    async fn restart_run_request(
        &self,
        run_id: &str,
        restart: &str,
    ) -> Result<RunRequest, StoreError> {
        let mut tx = self.immediate().await?;
        let request =
            RequestSql::<Sqlite>::restart(&mut tx, &self.tenant, run_id, restart, now_ms()).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(request)
    }

    async fn list_tenants(&self) -> Result<Vec<String>, StoreError> {
        TokenSql::<Sqlite>::tenants(&mut *self.reader().await?).await
    }

    async fn create_token(
        &self,
        tenant: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        check_tenant_name(tenant)?;
        let mut tx = self.immediate().await?;
        let record =
            TokenSql::<Sqlite>::insert(&mut tx, tenant, name, token_hash, now_ms()).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(record)
    }

    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        // A read on the readers; the writer only when the last use is due to be written.
        let found = TokenSql::<Sqlite>::lookup(&mut *self.reader().await?, token_hash, now).await?;
        let Some((id, tenant, stale)) = found else {
            return Ok(None);
        };
        if stale {
            TokenSql::<Sqlite>::touch(&mut *self.writer().await?, id, now).await?;
        }
        Ok(Some(tenant))
    }

    async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        TokenSql::<Sqlite>::find(&mut *self.reader().await?, token_hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        TokenSql::<Sqlite>::list(&mut *self.reader().await?, &self.tenant).await
    }

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
        TokenSql::<Sqlite>::revoke(&mut *self.writer().await?, &self.tenant, id, now_ms()).await
    }

    async fn create_run_request(
        &self,
        request: &NewRunRequest,
    ) -> Result<RunRequestOutcome, StoreError> {
        // One immediate transaction on the one writer: the insert and the read of the winner see one state.
        let mut tx = self.immediate().await?;
        let outcome =
            RequestSql::<Sqlite>::create(&mut tx, &self.tenant, request, now_ms()).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(outcome)
    }

    async fn run_request(&self, run_id: &str) -> Result<Option<RunRequest>, StoreError> {
        RequestSql::<Sqlite>::get(&mut *self.reader().await?, &self.tenant, run_id).await
    }

    async fn set_run_request_state(
        &self,
        run_id: &str,
        state: RunRequestState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.immediate().await?;
        RequestSql::<Sqlite>::set_state(&mut tx, &self.tenant, run_id, state, reason, now_ms())
            .await?;
        tx.commit().await.map_err(query_error)
    }

    async fn queued_run_requests(&self, limit: u32) -> Result<Vec<RunRequest>, StoreError> {
        RequestSql::<Sqlite>::queued(&mut *self.reader().await?, &self.tenant, limit).await
    }

    async fn unrecorded_run_requests(
        &self,
        filter: &RunRequestFilter,
    ) -> Result<Vec<RunRequest>, StoreError> {
        RequestSql::<Sqlite>::unrecorded(
            &mut *self.reader().await?,
            &self.tenant,
            filter,
            BYTE_ORDER,
        )
        .await
    }

    async fn register_pipeline(&self, pipeline: &NewPipeline) -> Result<bool, StoreError> {
        PipelineSql::<Sqlite>::register(
            &mut *self.writer().await?,
            &self.tenant,
            pipeline,
            now_ms(),
        )
        .await
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        PipelineSql::<Sqlite>::get(&mut *self.reader().await?, &self.tenant, name).await
    }

    async fn list_pipelines(
        &self,
        filter: &PipelineFilter,
    ) -> Result<Vec<PipelineRecord>, StoreError> {
        PipelineSql::<Sqlite>::list(&mut *self.reader().await?, &self.tenant, filter, BYTE_ORDER)
            .await
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}
