//! The statements both SQL backends run the same way: writing a batch of a run's events, reading runs, attempts,
//! logs and jobs, marking a dead runner's run interrupted, ending a job. Standard SQL; the query builder writes
//! each database's placeholders. What differs (claiming, clocks, transactions) stays in each backend.

use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::batch::RecordBatch;
use super::model::{
    AttemptRecord, JobRecord, Lease, LogCursor, LogLineRecord, LogPage, LogQuery, RunCursor,
    RunFilter, RunOwner, RunRecord, RunRef, RunState, StoreError,
};
use super::{replay, rows};
use crate::events::RunEvent;

const RUN_COLUMNS: &str = "id, pipeline, number, status, reason, stage_count, created_at_ms, \
    finished_at_ms, duration_ms, sha, branch, event, requested_at_ms, inputs, retry_of";

fn query_error(error: sqlx::Error) -> StoreError {
    StoreError::query(error)
}

/// Most rows per statement: far below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
const ROWS_PER_STATEMENT: usize = 512;

/// `rows` cut into statements of a power-of-two number of rows (at most `most`, itself a power of two): a
/// multi-row statement's text depends on its row count, and a connection reuses a prepared statement only for
/// the same text, so a few sizes keep every statement in its cache instead of preparing one per batch
/// (preparing was a quarter of the store's instructions on a run of short stages).
fn statements_of<T>(rows: &[T], most: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = most.min(1 << rest.len().ilog2());
        let (statement, after) = rest.split_at(size);
        rest = after;
        Some(statement)
    })
}

/// `AND (at, id) < (before.at_ms, before.id)`: a row comparison, which both databases turn into a range of the
/// index on (tenant_id, at, id) (spelt out with `OR`, it would be a filter over every newer row).
pub(crate) fn push_before<DB>(query: &mut QueryBuilder<DB>, at: &str, id: &str, before: &RunCursor)
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    query.push(format!(" AND ({at}, {id}) < ("));
    query.push_bind(before.at_ms);
    query.push(", ");
    query.push_bind(before.id.clone());
    query.push(")");
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The shared queries of database `DB`; the bounds say what BuildIt needs of a database, once.
pub(crate) struct Shared<DB>(PhantomData<DB>);

impl<DB> Shared<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    /// Running runs: id, owner and last heartbeat.
    pub(crate) async fn running_runs(
        connection: &mut DB::Connection,
        tenant: &str,
    ) -> Result<Vec<(String, RunOwner, i64)>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, owner_host, owner_pid, heartbeat_at_ms FROM pipeline_runs WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND status = 'running'");
        Self::fetch_all_as(connection, query, |row| {
            use rows::StoreRow as _;
            let owner = RunOwner {
                host: row.text("owner_host")?,
                pid: u32::try_from(row.int("owner_pid")?).unwrap_or(0),
            };
            Ok((row.text("id")?, owner, row.int("heartbeat_at_ms")?))
        })
        .await
    }

    /// Marks a run and its running attempts interrupted, only if it has not heart-beat since `heartbeat` was
    /// read (a runner that did is alive). Returns whether it was marked.
    pub(crate) async fn interrupt(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        reason: &str,
        now: i64,
        heartbeat: i64,
    ) -> Result<bool, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new("UPDATE pipeline_runs SET status = 'interrupted', reason = ");
        query.push_bind(reason.to_owned());
        query.push(", finished_at_ms = ");
        query.push_bind(now);
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND status = 'running' AND heartbeat_at_ms = ");
        query.push_bind(heartbeat);
        query.push(" RETURNING id");
        let updated = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(query_error)?;
        if updated.is_none() {
            return Ok(false);
        }
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE attempt_rows SET status = 'interrupted', finished_at_ms = ",
        );
        query.push_bind(now);
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND status = 'running'");
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(query_error)?;
        Ok(true)
    }

    /// Runs matching `filter`, newest first by (requested_at_ms, id): the `pipeline_runs_listed` index, read
    /// backwards from the cursor. `byte_order` is what makes this database compare ids byte by byte, as
    /// [`RunCursor`]'s order does (the daemon merges this list with another in that order).
    pub(crate) async fn list_runs(
        connection: &mut DB::Connection,
        tenant: &str,
        filter: &RunFilter,
        byte_order: &str,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        if let Some(pipeline) = &filter.pipeline {
            query.push(" AND pipeline = ");
            query.push_bind(pipeline.clone());
        }
        if let Some(state) = filter.state {
            query.push(" AND status = ");
            query.push_bind(state.as_str());
        }
        if let Some(branch) = &filter.branch {
            query.push(" AND branch = ");
            query.push_bind(branch.clone());
        }
        let id = format!("id{byte_order}");
        if let Some(before) = &filter.before {
            push_before(&mut query, "requested_at_ms", &id, before);
        }
        query.push(format!(" ORDER BY requested_at_ms DESC, {id} DESC LIMIT "));
        query.push_bind(i64::from(filter.limit));
        Self::fetch_all_as(connection, query, rows::run_record).await
    }

    /// The runs `run` may mean (at most 50).
    pub(crate) async fn find_runs(
        connection: &mut DB::Connection,
        tenant: &str,
        run: &RunRef,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        match run {
            RunRef::Id(id) => {
                query.push(" AND id = ");
                query.push_bind(id.clone());
            }
            RunRef::Number { pipeline, number } => {
                if let Some(pipeline) = pipeline {
                    query.push(" AND pipeline = ");
                    query.push_bind(pipeline.clone());
                }
                query.push(" AND number = ");
                query.push_bind(int(*number));
            }
        }
        query.push(" LIMIT 50");
        Self::fetch_all_as(connection, query, rows::run_record).await
    }

    /// Every row `query` returns, decoded by `decode`.
    async fn fetch_all_as<T>(
        connection: &mut DB::Connection,
        mut query: QueryBuilder<DB>,
        decode: fn(&DB::Row) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?
            .iter()
            .map(|row| decode(row).map_err(query_error))
            .collect()
    }

    /// Every attempt of a run, in the order they started.
    pub(crate) async fn attempts(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT stage, attempt, status, exit_code, reason, started_at_ms, finished_at_ms, duration_ms \
             FROM stage_results WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(" ORDER BY COALESCE(started_at_ms, finished_at_ms), stage, attempt");
        Self::fetch_all_as(connection, query, rows::attempt_record).await
    }

    /// A run's state and end, if this tenant has it.
    async fn run_state(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<(RunState, Option<i64>)>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT status, finished_at_ms FROM pipeline_runs WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        let found = Self::fetch_all_as(connection, query, |row| {
            use rows::StoreRow as _;
            Ok((
                RunState::parse(&row.text("status")?),
                row.opt_int("finished_at_ms")?,
            ))
        })
        .await?;
        Ok(found.into_iter().next())
    }

    /// The events `query` selects (columns seq, at_ms, body).
    async fn event_rows(
        connection: &mut DB::Connection,
        mut query: QueryBuilder<DB>,
        run_id: &Arc<str>,
    ) -> Result<Vec<RunEvent>, StoreError> {
        use rows::StoreRow as _;
        let found = query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?;
        found
            .iter()
            .map(|row| {
                let seq = u64::try_from(row.int("seq").map_err(query_error)?).unwrap_or(0);
                let at_ms = row.int("at_ms").map_err(query_error)?;
                replay::decode_event(run_id, seq, at_ms, &row.text("body").map_err(query_error)?)
            })
            .collect()
    }

    /// The log chunks `query` selects (columns [`rows::LOG_CHUNK_COLUMNS`]), each as numbered lines.
    async fn chunk_rows(
        connection: &mut DB::Connection,
        mut query: QueryBuilder<DB>,
    ) -> Result<Vec<Vec<(u64, LogLineRecord)>>, StoreError> {
        let found = query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?;
        found
            .iter()
            .map(|row| {
                rows::log_chunk(row)
                    .map(|(_, lines)| lines)
                    .map_err(query_error)
            })
            .collect()
    }

    /// The outputs of the run's instances, from its `stage-outputs` rows alone (by the events' type, never
    /// through its log).
    pub(crate) async fn stage_outputs(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<crate::store::StageOutputs, StoreError> {
        let events = Self::events_of_type(connection, tenant, run_id, "stage-outputs").await?;
        Ok(events
            .into_iter()
            .filter_map(|event| match event.kind {
                crate::events::RunEventKind::StageOutputs { stage, outputs, .. } => {
                    Some((stage, outputs))
                }
                _ => None,
            })
            .collect())
    }

    /// What the test reports of the run's instances counted, from its `stage-tests` rows alone: each
    /// instance's last attempt that had any.
    pub(crate) async fn stage_tests(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<crate::store::StageTests, StoreError> {
        let events = Self::events_of_type(connection, tenant, run_id, "stage-tests").await?;
        Ok(events
            .into_iter()
            .filter_map(|event| match event.kind {
                crate::events::RunEventKind::StageTests { stage, tests, .. } => {
                    Some((stage, tests))
                }
                _ => None,
            })
            .collect())
    }

    /// The run's event rows of one type (`kind`, a constant of the caller's), in order.
    async fn events_of_type(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        kind: &'static str,
    ) -> Result<Vec<RunEvent>, StoreError> {
        if Self::run_state(connection, tenant, run_id).await?.is_none() {
            return Err(StoreError::NoSuchRun(run_id.to_owned()));
        }
        let run: Arc<str> = Arc::from(run_id);
        let mut query =
            QueryBuilder::<DB>::new("SELECT seq, at_ms, body FROM run_events WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND type = ");
        query.push_bind(kind.to_owned());
        query.push(" ORDER BY seq");
        Self::event_rows(connection, query, &run).await
    }

    /// Up to `limit` events of the run after `after`, in order: event rows and log chunks merged.
    pub(crate) async fn events_after(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError> {
        if Self::run_state(connection, tenant, run_id).await?.is_none() {
            return Err(StoreError::NoSuchRun(run_id.to_owned()));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let run: Arc<str> = Arc::from(run_id);
        let rows_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let scope = |query: &mut QueryBuilder<DB>| {
            query.push_bind(tenant.to_owned());
            query.push(" AND run_id = ");
            query.push_bind(run_id.to_owned());
        };
        let mut query =
            QueryBuilder::<DB>::new("SELECT seq, at_ms, body FROM run_events WHERE tenant_id = ");
        scope(&mut query);
        query.push(" AND seq > ");
        query.push_bind(int(after));
        query.push(" ORDER BY seq LIMIT ");
        query.push_bind(rows_limit);
        let rows = Self::event_rows(connection, query, &run).await?;
        // Chunks that began before `after` and go on past it (a chunk spans at most `MAX_CHUNK_SPAN` numbers).
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {} FROM logs WHERE tenant_id = ",
            rows::LOG_CHUNK_COLUMNS
        ));
        scope(&mut query);
        query.push(" AND first_seq > ");
        query.push_bind(int(replay::chunks_from(after)));
        query.push(" AND first_seq <= ");
        query.push_bind(int(after));
        query.push(" AND last_seq > ");
        query.push_bind(int(after));
        let straddling = Self::chunk_rows(connection, query).await?;
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {} FROM logs WHERE tenant_id = ",
            rows::LOG_CHUNK_COLUMNS
        ));
        scope(&mut query);
        query.push(" AND first_seq > ");
        query.push_bind(int(after));
        // Sequence numbers are gapless: a chunk that begins past `after + limit` holds none of the page's
        // events. Without this bound a page read (and decoded) every chunk after `after`, the whole rest of a
        // long log, for each page of a reader that is behind.
        query.push(" AND first_seq <= ");
        query.push_bind(int(
            after.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX))
        ));
        query.push(" ORDER BY first_seq LIMIT ");
        query.push_bind(rows_limit);
        let starting = Self::chunk_rows(connection, query).await?;
        Ok(replay::merge_page(
            &run,
            after,
            limit,
            replay::PageParts {
                rows,
                straddling,
                starting,
            },
        ))
    }

    /// A page of log chunks, decoded into lines.
    pub(crate) async fn logs(
        connection: &mut DB::Connection,
        tenant: &str,
        log: &LogQuery,
    ) -> Result<LogPage, StoreError> {
        let limit = log.chunks.max(1);
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {} FROM logs WHERE tenant_id = ",
            rows::LOG_CHUNK_COLUMNS
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(log.run_id.clone());
        if let Some(stage) = &log.stage {
            query.push(" AND stage = ");
            query.push_bind(stage.clone());
        }
        if let Some(attempt) = log.attempt {
            query.push(" AND attempt = ");
            query.push_bind(i64::from(attempt));
        }
        query.push(" AND first_seq > ");
        query.push_bind(log.after.map_or(0, |cursor| int(cursor.seq)));
        query.push(" ORDER BY first_seq LIMIT ");
        query.push_bind(i64::from(limit));
        let chunks = query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?;
        let full = chunks.len() >= limit as usize;
        let mut lines = Vec::new();
        let mut last = None;
        for row in &chunks {
            let (seq, chunk) = rows::log_chunk(row).map_err(query_error)?;
            last = Some(seq);
            lines.extend(chunk.into_iter().map(|(_, line)| line));
        }
        Ok(LogPage {
            lines,
            next: last.filter(|_| full).map(|seq| LogCursor { seq }),
        })
    }

    /// One job.
    pub(crate) async fn job(
        connection: &mut DB::Connection,
        tenant: &str,
        id: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, queue, payload, status, attempts, max_attempts, worker, error FROM job_queue \
             WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(id);
        query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(query_error)?
            .map(|row| rows::job_record(&row).map_err(query_error))
            .transpose()
    }

    /// The jobs of `queue` held under a lease, expired or not.
    pub(crate) async fn leased_jobs(
        connection: &mut DB::Connection,
        tenant: &str,
        queue: &str,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, queue, payload, status, attempts, max_attempts, worker, error FROM job_queue \
             WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND queue = ");
        query.push_bind(queue.to_owned());
        query.push(" AND status = 'running' ORDER BY id");
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?
            .iter()
            .map(|row| rows::job_record(row).map_err(query_error))
            .collect()
    }

    /// Ends `lease` now, if it still holds its job: the job can be claimed again at once. A lease that no
    /// longer holds changes nothing.
    pub(crate) async fn expire_lease(
        connection: &mut DB::Connection,
        tenant: &str,
        lease: &Lease,
        now: i64,
    ) -> Result<(), StoreError> {
        // 0, not now: the claim compares with the database's clock, which may be behind this one.
        let mut query = QueryBuilder::<DB>::new("UPDATE job_queue SET lease_until_ms = ");
        query.push_bind(0_i64);
        query.push(", updated_at_ms = ");
        query.push_bind(now);
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(lease.job);
        query.push(" AND attempts = ");
        query.push_bind(lease.attempt);
        query.push(" AND status = 'running'");
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    /// Ends a job the lease still holds (`completed`, or `failed` with why); [`StoreError::LeaseLost`]
    /// otherwise.
    pub(crate) async fn finish_job(
        connection: &mut DB::Connection,
        tenant: &str,
        lease: &Lease,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new("UPDATE job_queue SET status = ");
        query.push_bind(status.to_owned());
        query.push(", error = ");
        query.push_bind(error.map(str::to_owned));
        query.push(", lease_until_ms = NULL, updated_at_ms = ");
        query.push_bind(now);
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(lease.job);
        query.push(" AND attempts = ");
        query.push_bind(lease.attempt);
        query.push(" AND status = 'running' RETURNING id");
        let done = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(query_error)?;
        if done.is_some() {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                job: lease.job,
                attempt: lease.attempt,
            })
        }
    }

    /// Applies `batch` to run `run_id` of `tenant` on `connection` (inside the caller's transaction): one
    /// multi-row statement per table. Every statement is idempotent, so a batch whose commit was lost can be
    /// written again.
    pub(crate) async fn write_batch(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        batch: &RecordBatch,
    ) -> Result<(), sqlx::Error> {
        if let Some(stages) = batch.stage_count {
            let mut query = QueryBuilder::<DB>::new("UPDATE pipeline_runs SET stage_count = ");
            query.push_bind(int(stages));
            query.push(" WHERE tenant_id = ");
            query.push_bind(tenant.to_owned());
            query.push(" AND id = ");
            query.push_bind(run_id.to_owned());
            query.build().execute(&mut *connection).await?;
        }
        for rows in statements_of(&batch.started, ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO attempt_rows (tenant_id, run_id, stage, attempt, status, started_at_ms) ",
            );
            query.push_values(rows, |mut row, start| {
                row.push_bind(tenant.to_owned())
                    .push_bind(run_id.to_owned())
                    .push_bind(start.stage.clone())
                    .push_bind(i64::from(start.attempt))
                    .push_bind("running")
                    .push_bind(start.at_ms);
            });
            query.push(" ON CONFLICT (tenant_id, run_id, stage, attempt) DO NOTHING");
            query.build().execute(&mut *connection).await?;
        }
        for rows in statements_of(&batch.finished, ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO attempt_rows (tenant_id, run_id, stage, attempt, status, exit_code, reason, \
                 started_at_ms, finished_at_ms, duration_ms) ",
            );
            query.push_values(rows, |mut row, end| {
                row.push_bind(tenant.to_owned())
                    .push_bind(run_id.to_owned())
                    .push_bind(end.stage.clone())
                    .push_bind(i64::from(end.attempt))
                    .push_bind(end.outcome.as_str())
                    .push_bind(end.exit_code.map(i64::from))
                    .push_bind(end.reason.clone())
                    .push_bind(end.started_at_ms)
                    .push_bind(end.at_ms)
                    .push_bind(int(end.duration_ms));
            });
            query.push(
                " ON CONFLICT (tenant_id, run_id, stage, attempt) DO UPDATE SET status = excluded.status, \
                 exit_code = excluded.exit_code, reason = excluded.reason, \
                 started_at_ms = COALESCE(attempt_rows.started_at_ms, excluded.started_at_ms), \
                 finished_at_ms = excluded.finished_at_ms, duration_ms = excluded.duration_ms",
            );
            query.build().execute(&mut *connection).await?;
        }
        for rows in statements_of(&batch.events, ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO run_events (tenant_id, run_id, seq, at_ms, type, stage, attempt, body) ",
            );
            query.push_values(rows, |mut row, event| {
                row.push_bind(tenant.to_owned())
                    .push_bind(run_id.to_owned())
                    .push_bind(int(event.seq))
                    .push_bind(event.at_ms)
                    .push_bind(event.kind.clone())
                    .push_bind(event.attempt_of.as_ref().map(|(stage, _)| stage.clone()))
                    .push_bind(
                        event
                            .attempt_of
                            .as_ref()
                            .map(|(_, attempt)| i64::from(*attempt)),
                    )
                    .push_bind(event.body.clone());
            });
            query.push(" ON CONFLICT (tenant_id, run_id, seq) DO NOTHING");
            query.build().execute(&mut *connection).await?;
        }
        // Chunks are large: a few per statement keeps statements of reasonable size.
        for rows in statements_of(&batch.logs, 16) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO logs (tenant_id, run_id, stage, attempt, first_line, line_count, first_seq, \
                 first_at_ms, streams, offsets_ms, lines, last_seq, seqs) ",
            );
            query.push_values(rows, |mut row, chunk| {
                row.push_bind(tenant.to_owned())
                    .push_bind(run_id.to_owned())
                    .push_bind(chunk.stage.clone())
                    .push_bind(i64::from(chunk.attempt))
                    .push_bind(int(chunk.first_line))
                    .push_bind(int(chunk.line_count))
                    .push_bind(int(chunk.first_seq))
                    .push_bind(chunk.first_at_ms)
                    .push_bind(chunk.streams.clone())
                    .push_bind(chunk.offsets.clone())
                    .push_bind(chunk.texts.clone())
                    .push_bind(int(chunk.last_seq))
                    .push_bind(chunk.seqs.clone());
            });
            query.push(" ON CONFLICT (tenant_id, run_id, stage, attempt, first_line) DO NOTHING");
            query.build().execute(&mut *connection).await?;
        }
        if let Some(end) = batch.run_finished {
            // A finished run has no running attempt: one whose end was never reported (its task died) is
            // interrupted (the `stage_results` view says so of attempts read from events by itself).
            let mut query = QueryBuilder::<DB>::new(
                "UPDATE attempt_rows SET status = 'interrupted', finished_at_ms = ",
            );
            query.push_bind(end.at_ms);
            query.push(" WHERE tenant_id = ");
            query.push_bind(tenant.to_owned());
            query.push(" AND run_id = ");
            query.push_bind(run_id.to_owned());
            query.push(" AND status = 'running'");
            query.build().execute(&mut *connection).await?;
            let mut query = QueryBuilder::<DB>::new("UPDATE pipeline_runs SET status = ");
            query.push_bind(RunState::from(end.status).as_str());
            query.push(", reason = NULL, finished_at_ms = ");
            query.push_bind(end.at_ms);
            query.push(", duration_ms = ");
            query.push_bind(int(end.duration_ms));
            query.push(" WHERE tenant_id = ");
            query.push_bind(tenant.to_owned());
            query.push(" AND id = ");
            query.push_bind(run_id.to_owned());
            query.build().execute(&mut *connection).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_power_of_two_sizes_and_cover_every_row_once_in_order() {
        for count in [0usize, 1, 2, 3, 7, 16, 17, 500, 513, 1500] {
            let rows: Vec<usize> = (0..count).collect();
            let statements: Vec<&[usize]> = statements_of(&rows, 512).collect();
            assert!(
                statements
                    .iter()
                    .all(|statement| statement.len().is_power_of_two() && statement.len() <= 512),
                "{count}: {statements:?}"
            );
            let joined: Vec<usize> = statements.concat();
            assert_eq!(joined, rows);
        }
        // 37 rows, at most 16 a statement: 16 + 16 + 4 + 1.
        let rows = [0u8; 37];
        let sizes: Vec<usize> = statements_of(&rows, 16).map(<[u8]>::len).collect();
        assert_eq!(sizes, [16, 16, 4, 1]);
    }
}
