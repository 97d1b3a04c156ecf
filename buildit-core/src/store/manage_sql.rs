//! The statements that manage recorded runs (a cancel asked through the store, deleting a run, finding the runs to
//! prune), the same on both SQL backends; each backend chooses connections and transactions.

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::model::{RunRecord, RunState, StoreError};
use super::rows::{self, StoreRow as _};

const RUN_COLUMNS: &str = "id, pipeline, number, status, reason, stage_count, created_at_ms, \
    finished_at_ms, duration_ms, sha, branch, event, requested_at_ms, inputs, retry_of";

/// The tables that hold a run's rows besides `pipeline_runs`, by their column naming the run: everything a
/// deleted run leaves behind. `attempt_rows` is the table under the `stage_results` view.
const RUN_TABLES: [&str; 4] = ["logs", "run_events", "attempt_rows", "run_requests"];

/// What the store has of a run that another run refers to (a cancel, a concurrency group).
pub(crate) struct RunFacts {
    pub(crate) state: RunState,
    pub(crate) number: i64,
    /// Its place among runs: newer runs sort after older ones (by creation time, then id).
    pub(crate) order: (i64, String),
}

/// The run management queries of database `DB`.
pub(crate) struct ManageSql<DB>(PhantomData<DB>);

impl<DB> ManageSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// The state of `tenant`'s run `run_id`, [`StoreError::NoSuchRun`] when it has none.
    async fn state(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<RunState, StoreError> {
        match Self::facts(connection, tenant, run_id).await? {
            Some(facts) => Ok(facts.state),
            None => Err(StoreError::NoSuchRun(run_id.to_owned())),
        }
    }

    /// What `tenant`'s run `run_id` is now and where it stands among runs; `None` when it has no such run.
    pub(crate) async fn facts(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunFacts>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT status, number, created_at_ms FROM pipeline_runs WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        let row = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        row.map(|row| {
            Ok::<_, sqlx::Error>(RunFacts {
                state: RunState::parse(&row.text("status")?),
                number: row.int("number")?,
                order: (row.int("created_at_ms")?, run_id.to_owned()),
            })
        })
        .transpose()
        .map_err(StoreError::query)
    }

    /// Notes a cancel of `tenant`'s run `run_id` if it is running (the first request's time stays); the run's
    /// state either way.
    pub(crate) async fn request_cancel(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        now: i64,
    ) -> Result<RunState, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE pipeline_runs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, ",
        );
        query.push_bind(now);
        query.push(") WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND status = 'running' RETURNING id");
        let updated = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        if updated.is_some() {
            return Ok(RunState::Running);
        }
        // Not running (or not there): nothing was noted, and the caller is told why.
        Self::state(connection, tenant, run_id).await
    }

    /// Whether a cancel of `tenant`'s running run `run_id` was asked for (false for a run it does not have).
    pub(crate) async fn cancel_requested(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT cancel_requested_at_ms FROM pipeline_runs WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        let row = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        match row {
            Some(row) => Ok(row
                .opt_int("cancel_requested_at_ms")
                .map_err(StoreError::query)?
                .is_some()),
            None => Ok(false),
        }
    }

    /// Deletes `tenant`'s ended run `run_id` and every row of it, inside the caller's transaction (which the
    /// caller rolls back on an error). [`StoreError::RunStillRunning`] for a running run.
    pub(crate) async fn delete(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<(), StoreError> {
        // The run first, and only if it has ended: a run that ends meanwhile is deleted, one that is running
        // keeps every row (the caller's rollback undoes nothing, as nothing else was deleted yet).
        let mut query = QueryBuilder::<DB>::new("DELETE FROM pipeline_runs WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND status <> 'running' RETURNING id");
        let deleted = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        if deleted.is_none() {
            return match Self::state(connection, tenant, run_id).await? {
                RunState::Running => Err(StoreError::RunStillRunning(run_id.to_owned())),
                // Deleted between the two statements by someone else: gone either way.
                _ => Err(StoreError::NoSuchRun(run_id.to_owned())),
            };
        }
        for table in RUN_TABLES {
            let mut query =
                QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE tenant_id = "));
            query.push_bind(tenant.to_owned());
            query.push(" AND run_id = ");
            query.push_bind(run_id.to_owned());
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(StoreError::query)?;
        }
        Ok(())
    }

    /// `tenant`'s ended runs that ended before `before_ms`, oldest end first.
    pub(crate) async fn ended_before(
        connection: &mut DB::Connection,
        tenant: &str,
        before_ms: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND status <> 'running' AND finished_at_ms IS NOT NULL AND finished_at_ms < ");
        query.push_bind(before_ms);
        query.push(" ORDER BY finished_at_ms, id");
        let found = query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        found
            .iter()
            .map(|row| rows::run_record(row).map_err(StoreError::query))
            .collect()
    }
}
