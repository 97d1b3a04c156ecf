//! Writing a batch of a run's events: one multi-row statement per table, shared by the SQL backends (the
//! statements are standard SQL; the query builder writes each database's placeholders).

use sqlx::{Database, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::batch::RecordBatch;
use super::model::RunState;

/// Rows per statement: far below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Applies `batch` to run `run_id` of `tenant` on `connection` (inside the caller's transaction). Every
/// statement is idempotent, so a batch whose commit was lost can be written again.
pub(crate) async fn write_batch<DB>(
    connection: &mut DB::Connection,
    tenant: &str,
    run_id: &str,
    batch: &RecordBatch,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    if let Some(stages) = batch.stage_count {
        let mut query = QueryBuilder::<DB>::new("UPDATE pipeline_runs SET stage_count = ");
        query.push_bind(int(stages));
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        query.build().execute(&mut *connection).await?;
    }
    for rows in batch.started.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO stage_results (tenant_id, run_id, stage, attempt, status, started_at_ms) ",
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
    for rows in batch.finished.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO stage_results (tenant_id, run_id, stage, attempt, status, exit_code, reason, \
             finished_at_ms, duration_ms) ",
        );
        query.push_values(rows, |mut row, end| {
            row.push_bind(tenant.to_owned())
                .push_bind(run_id.to_owned())
                .push_bind(end.stage.clone())
                .push_bind(i64::from(end.attempt))
                .push_bind(end.outcome.as_str())
                .push_bind(end.exit_code.map(i64::from))
                .push_bind(end.reason.clone())
                .push_bind(end.at_ms)
                .push_bind(int(end.duration_ms));
        });
        query.push(
            " ON CONFLICT (tenant_id, run_id, stage, attempt) DO UPDATE SET status = excluded.status, \
             exit_code = excluded.exit_code, reason = excluded.reason, \
             finished_at_ms = excluded.finished_at_ms, duration_ms = excluded.duration_ms",
        );
        query.build().execute(&mut *connection).await?;
    }
    // Chunks are large: a few per statement keeps statements of reasonable size.
    for rows in batch.logs.chunks(16) {
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO logs (tenant_id, run_id, stage, attempt, first_line, line_count, first_seq, \
             first_at_ms, streams, offsets_ms, lines) ",
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
                .push_bind(chunk.texts.clone());
        });
        query.push(" ON CONFLICT (tenant_id, run_id, stage, attempt, first_line) DO NOTHING");
        query.build().execute(&mut *connection).await?;
    }
    if let Some(end) = batch.run_finished {
        // A finished run has no running attempt: one whose end was never reported (its task died) is
        // interrupted.
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE stage_results SET status = 'interrupted', finished_at_ms = ",
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
