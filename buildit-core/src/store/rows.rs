//! Reading rows into domain types, shared by the SQL backends (each keeps its own SQL).

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::model::{
    AttemptRecord, AttemptState, JobRecord, JobState, LogLineRecord, RunRecord, RunState,
};

/// A row type whose columns decode as BuildIt's two column types: 64-bit integers and text.
pub(crate) trait StoreRow: Row
where
    for<'a> &'a str: ColumnIndex<Self>,
{
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get::<i64, _>(column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get::<Option<i64>, _>(column)
    }
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get::<String, _>(column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get::<Option<String>, _>(column)
    }
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Columns: id, pipeline, number, status, reason, stage_count, created_at_ms, finished_at_ms, duration_ms, sha,
/// branch, event, requested_at_ms, inputs, retry_of.
pub(crate) fn run_record<R: StoreRow>(row: &R) -> Result<RunRecord, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(RunRecord {
        id: row.text("id")?,
        pipeline: row.text("pipeline")?,
        number: unsigned(row.int("number")?),
        state: RunState::parse(&row.text("status")?),
        reason: row.opt_text("reason")?,
        stage_count: row.opt_int("stage_count")?.map(unsigned),
        created_at_ms: row.int("created_at_ms")?,
        finished_at_ms: row.opt_int("finished_at_ms")?,
        duration_ms: row.opt_int("duration_ms")?.map(unsigned),
        sha: row.opt_text("sha")?,
        branch: row.opt_text("branch")?,
        event: row.opt_text("event")?,
        requested_at_ms: row.int("requested_at_ms")?,
        inputs: super::model::RunInputs::from_text(row.opt_text("inputs")?.as_deref()),
        retry_of: row.opt_text("retry_of")?,
    })
}

/// Columns: stage, attempt, status, exit_code, reason, started_at_ms, finished_at_ms, duration_ms.
pub(crate) fn attempt_record<R: StoreRow>(row: &R) -> Result<AttemptRecord, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(AttemptRecord {
        stage: row.text("stage")?,
        attempt: u32::try_from(row.int("attempt")?).unwrap_or(0),
        state: AttemptState::parse(&row.text("status")?),
        exit_code: row
            .opt_int("exit_code")?
            .and_then(|code| i32::try_from(code).ok()),
        reason: row.opt_text("reason")?,
        started_at_ms: row.opt_int("started_at_ms")?,
        finished_at_ms: row.opt_int("finished_at_ms")?,
        duration_ms: row.opt_int("duration_ms")?.map(unsigned),
    })
}

/// Columns: id, queue, payload, status, attempts, max_attempts, worker, error.
pub(crate) fn job_record<R: StoreRow>(row: &R) -> Result<JobRecord, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(JobRecord {
        id: row.int("id")?,
        queue: row.text("queue")?,
        payload: row.text("payload")?,
        state: JobState::parse(&row.text("status")?),
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(0),
        max_attempts: u32::try_from(row.int("max_attempts")?).unwrap_or(0),
        worker: row.opt_text("worker")?,
        error: row.opt_text("error")?,
    })
}

/// The columns a log chunk is read with.
pub(crate) const LOG_CHUNK_COLUMNS: &str =
    "stage, attempt, first_line, first_seq, first_at_ms, streams, offsets_ms, lines, seqs";

/// Columns: [`LOG_CHUNK_COLUMNS`]. Returns the chunk's sequence number and its lines, each with its own.
pub(crate) fn log_chunk<R: StoreRow>(
    row: &R,
) -> Result<(u64, Vec<(u64, LogLineRecord)>), sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let stage = row.text("stage")?;
    let streams = row.text("streams")?;
    let offsets = row.text("offsets_ms")?;
    let texts = row.text("lines")?;
    let seqs = row.opt_text("seqs")?;
    let first_seq = unsigned(row.int("first_seq")?);
    let lines = super::batch::decode_chunk(&super::batch::ChunkColumns {
        stage: &stage,
        attempt: u32::try_from(row.int("attempt")?).unwrap_or(0),
        first_line: unsigned(row.int("first_line")?),
        first_seq,
        first_at_ms: row.int("first_at_ms")?,
        streams: &streams,
        offsets: &offsets,
        texts: &texts,
        seqs: seqs.as_deref(),
    })
    .map_err(|message| sqlx::Error::Decode(message.into()))?;
    Ok((first_seq, lines))
}

/// Columns: id, payload, attempts, max_attempts, lease_until_ms (of a claim).
pub(crate) fn claimed_job<R: StoreRow>(row: &R) -> Result<super::model::ClaimedJob, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let id = row.int("id")?;
    Ok(super::model::ClaimedJob {
        id,
        payload: row.text("payload")?,
        lease: super::model::Lease {
            job: id,
            attempt: row.int("attempts")?,
        },
        max_attempts: u32::try_from(row.int("max_attempts")?).unwrap_or(0),
        lease_until_ms: row.int("lease_until_ms")?,
    })
}

/// Columns: id, tenant_id, name, created_at_ms, last_used_at_ms, revoked_at_ms (never the hash).
pub(crate) fn token_record<R: StoreRow>(row: &R) -> Result<super::model::TokenRecord, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(super::model::TokenRecord {
        id: row.int("id")?,
        tenant: row.text("tenant_id")?,
        name: row.text("name")?,
        created_at_ms: row.int("created_at_ms")?,
        last_used_at_ms: row.opt_int("last_used_at_ms")?,
        revoked_at_ms: row.opt_int("revoked_at_ms")?,
    })
}

/// Columns: run_id, pipeline, idempotency_key, state, reason, created_at_ms, updated_at_ms,
/// cancel_requested_at_ms, restart_of, restarted_as, branch.
pub(crate) fn run_request<R: StoreRow>(row: &R) -> Result<super::model::RunRequest, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(super::model::RunRequest {
        run_id: row.text("run_id")?,
        pipeline: row.text("pipeline")?,
        idempotency_key: row.opt_text("idempotency_key")?,
        state: super::model::RunRequestState::parse(&row.text("state")?),
        reason: row.opt_text("reason")?,
        created_at_ms: row.int("created_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
        cancel_requested_at_ms: row.opt_int("cancel_requested_at_ms")?,
        restart_of: row.opt_text("restart_of")?,
        restarted_as: row.opt_text("restarted_as")?,
        branch: row.opt_text("branch")?,
    })
}

/// Columns: name, file_name, source, source_sha256, registered_at_ms, updated_at_ms, registered_by (of a
/// registered pipeline: the registration columns are not null).
pub(crate) fn pipeline_record<R: StoreRow>(
    row: &R,
) -> Result<super::model::PipelineRecord, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(super::model::PipelineRecord {
        name: row.text("name")?,
        file_name: row.opt_text("file_name")?.unwrap_or_default(),
        source: row.opt_text("source")?.unwrap_or_default(),
        sha256: row.opt_text("source_sha256")?.unwrap_or_default(),
        registered_at_ms: row.opt_int("registered_at_ms")?.unwrap_or(0),
        updated_at_ms: row.opt_int("updated_at_ms")?.unwrap_or(0),
        registered_by: row.opt_text("registered_by")?,
    })
}
