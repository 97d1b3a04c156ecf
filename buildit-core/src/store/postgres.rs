//! The PostgreSQL backend: for servers and for many workers sharing one job queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::api::Store;
use super::batch::RecordBatch;
use super::model::{
    AttemptRecord, ClaimedJob, DEFAULT_TENANT, JobRecord, LOST, Lease, LogCursor, LogPage,
    LogQuery, NewJob, NewRun, RunFilter, RunOwner, RunRecord, RunRef, StoreError, millis,
};
use super::open::redact;
use super::rows;
use super::{interrupted_reason, now_ms, pick_run};

/// How long to wait for a connection (an unreachable server fails after this, never hangs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const RUN_COLUMNS: &str = "id, pipeline, number, status, reason, stage_count, created_at_ms, \
    finished_at_ms, duration_ms, sha, branch, event";

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

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
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

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
        sqlx::query(
            "INSERT INTO pipeline_runs (tenant_id, id, pipeline, number, status, created_at_ms, owner_host,
                 owner_pid, heartbeat_at_ms, sha, branch, event)
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7,
                 (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT, $8, $9, $10)",
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
        .execute(&mut *tx)
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        self.find_run(&RunRef::Id(run.id.clone())).await
    }

    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        super::write::write_batch::<Postgres>(&mut tx, &self.tenant, run_id, batch)
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
        let running = sqlx::query(
            "SELECT id, owner_host, owner_pid, heartbeat_at_ms FROM pipeline_runs
             WHERE tenant_id = $1 AND status = 'running'",
        )
        .bind(&*self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;
        let mut marked = Vec::new();
        for row in running {
            let id: String = row.try_get("id").map_err(query_error)?;
            let heartbeat: i64 = row.try_get("heartbeat_at_ms").map_err(query_error)?;
            let owner = RunOwner {
                host: row.try_get("owner_host").map_err(query_error)?,
                pid: u32::try_from(row.try_get::<i64, _>("owner_pid").map_err(query_error)?)
                    .unwrap_or(0),
            };
            let Some(reason) = interrupted_reason(&owner, here, heartbeat, now, stale_after) else {
                continue;
            };
            let mut tx = self.begin().await?;
            // Only if nothing changed since it was read: a runner that heart-beat in between is alive.
            let updated = sqlx::query(
                "UPDATE pipeline_runs SET status = 'interrupted', reason = $3, finished_at_ms = $4
                 WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND heartbeat_at_ms = $5",
            )
            .bind(&*self.tenant)
            .bind(&id)
            .bind(&reason)
            .bind(now)
            .bind(heartbeat)
            .execute(&mut *tx)
            .await
            .map_err(query_error)?;
            if updated.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE stage_results SET status = 'interrupted', finished_at_ms = $3
                     WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'",
                )
                .bind(&*self.tenant)
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_error)?;
                marked.push(id);
            }
            tx.commit().await.map_err(query_error)?;
        }
        Ok(marked)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE tenant_id = $1 AND ($2 IS NULL OR pipeline = $2)
             ORDER BY created_at_ms DESC, number DESC LIMIT $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&*self.tenant)
            .bind(&filter.pipeline)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error)?
            .iter()
            .map(|row| rows::run_record(row).map_err(query_error))
            .collect()
    }

    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError> {
        let (id, pipeline, number) = match run {
            RunRef::Id(id) => (Some(id.as_str()), None, None),
            RunRef::Number { pipeline, number } => (None, pipeline.as_deref(), Some(int(*number))),
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE tenant_id = $1 AND ($2 IS NULL OR id = $2)
             AND ($3 IS NULL OR pipeline = $3) AND ($4 IS NULL OR number = $4) LIMIT 50"
        );
        let found: Vec<RunRecord> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&*self.tenant)
            .bind(id)
            .bind(pipeline)
            .bind(number)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error)?
            .iter()
            .map(|row| rows::run_record(row).map_err(query_error))
            .collect::<Result<_, _>>()?;
        pick_run(run, found)
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        sqlx::query(
            "SELECT stage, attempt, status, exit_code, reason, started_at_ms, finished_at_ms, duration_ms
             FROM stage_results WHERE tenant_id = $1 AND run_id = $2
             ORDER BY COALESCE(started_at_ms, finished_at_ms), stage, attempt",
        )
        .bind(&*self.tenant)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?
        .iter()
        .map(|row| rows::attempt_record(row).map_err(query_error))
        .collect()
    }

    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        let chunks: Vec<PgRow> = sqlx::query(
            "SELECT stage, attempt, first_line, first_seq, first_at_ms, streams, offsets_ms, lines FROM logs
             WHERE tenant_id = $1 AND run_id = $2 AND ($3 IS NULL OR stage = $3)
             AND ($4 IS NULL OR attempt = $4) AND first_seq > $5
             ORDER BY first_seq LIMIT $6",
        )
        .bind(&*self.tenant)
        .bind(&query.run_id)
        .bind(&query.stage)
        .bind(query.attempt.map(i64::from))
        .bind(query.after.map_or(0, |cursor| int(cursor.seq)))
        .bind(i64::from(query.chunks.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;
        let full = chunks.len() >= query.chunks.max(1) as usize;
        let mut lines = Vec::new();
        let mut last = None;
        for row in &chunks {
            let (seq, chunk) = rows::log_chunk(row).map_err(query_error)?;
            last = Some(seq);
            lines.extend(chunk);
        }
        Ok(LogPage {
            lines,
            next: last.filter(|_| full).map(|seq| LogCursor { seq }),
        })
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
            .map(|row| claimed_job(&row).map_err(query_error))
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
        self.finish_job(lease, "completed", None).await
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<(), StoreError> {
        self.finish_job(lease, "failed", Some(error)).await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        sqlx::query(
            "SELECT id, queue, payload, status, attempts, max_attempts, worker, error FROM job_queue
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&*self.tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error)?
        .map(|row| rows::job_record(&row).map_err(query_error))
        .transpose()
    }
}

impl PostgresStore {
    async fn finish_job(
        &self,
        lease: &Lease,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE job_queue SET status = $4, error = $5, lease_until_ms = NULL, updated_at_ms = $6
             WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND status = 'running'",
        )
        .bind(&*self.tenant)
        .bind(lease.job)
        .bind(lease.attempt)
        .bind(status)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                job: lease.job,
                attempt: lease.attempt,
            })
        }
    }
}

fn claimed_job(row: &PgRow) -> Result<ClaimedJob, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    Ok(ClaimedJob {
        id,
        payload: row.try_get("payload")?,
        lease: Lease {
            job: id,
            attempt: row.try_get("attempts")?,
        },
        max_attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?).unwrap_or(0),
        lease_until_ms: row.try_get("lease_until_ms")?,
    })
}
