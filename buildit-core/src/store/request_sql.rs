//! The statements of run requests, the same on both SQL backends (the query builder writes each database's
//! placeholders; each backend chooses connections and transactions).

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::model::{
    NewRunRequest, RunRequest, RunRequestFilter, RunRequestOutcome, RunRequestState, StoreError,
};
use super::rows::{self, StoreRow as _};
use super::sql::push_before;

const REQUEST_COLUMNS: &str = "run_id, pipeline, idempotency_key, state, reason, created_at_ms, updated_at_ms, \
     cancel_requested_at_ms, restart_of, restarted_as, branch";

/// Most restarts a cancel follows from the run it names (a chain is a few links long; this bounds a loop in a
/// corrupted one).
const MAX_RESTART_CHAIN: usize = 16;

/// The run request queries of database `DB`.
pub(crate) struct RequestSql<DB>(PhantomData<DB>);

impl<DB> RequestSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Records `request` as queued, or finds the request its idempotency key already made; inside the caller's
    /// transaction. The insert does nothing on a conflict (the database's unique indexes decide between two
    /// concurrent requests with one key, each waiting for the other's commit), and the read that follows sees
    /// the winner.
    pub(crate) async fn create(
        connection: &mut DB::Connection,
        tenant: &str,
        request: &NewRunRequest,
        now: i64,
    ) -> Result<RunRequestOutcome, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO run_requests (tenant_id, run_id, pipeline, idempotency_key, state, created_at_ms, \
             updated_at_ms, branch) VALUES (",
        );
        query.push_bind(tenant.to_owned());
        query.push(", ");
        query.push_bind(request.run_id.clone());
        query.push(", ");
        query.push_bind(request.pipeline.clone());
        query.push(", ");
        query.push_bind(request.idempotency_key.clone());
        query.push(", ");
        query.push_bind(RunRequestState::Queued.as_str().to_owned());
        query.push(", ");
        query.push_bind(now);
        query.push(", ");
        query.push_bind(now);
        query.push(", ");
        query.push_bind(request.branch.clone());
        query.push(format!(
            ") ON CONFLICT DO NOTHING RETURNING {REQUEST_COLUMNS}"
        ));
        let inserted = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        if let Some(row) = inserted {
            return rows::run_request(&row)
                .map(RunRequestOutcome::Created)
                .map_err(StoreError::query);
        }
        // Nothing inserted: the key asked before, or the run id is taken (by a request without this key).
        let Some(key) = &request.idempotency_key else {
            return Err(StoreError::DuplicateRun(request.run_id.clone()));
        };
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM run_requests WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND idempotency_key = ");
        query.push_bind(key.clone());
        match query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
        {
            Some(row) => rows::run_request(&row)
                .map(RunRequestOutcome::Existing)
                .map_err(StoreError::query),
            None => Err(StoreError::DuplicateRun(request.run_id.clone())),
        }
    }

    /// `tenant`'s request for `run_id`.
    pub(crate) async fn get(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunRequest>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM run_requests WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .map(|row| rows::run_request(&row).map_err(StoreError::query))
            .transpose()
    }

    /// Sets the state of `tenant`'s request for `run_id`, if its state leads there
    /// ([`RunRequestState::can_become`]); the state it already has is left as it is, reason included.
    pub(crate) async fn set_state(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        state: RunRequestState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let sources = state.sources();
        if !sources.is_empty() {
            // One conditional update: a concurrent change of state is either seen or waited for, never
            // overwritten (a worker's `started` cannot undo a cancel that came first).
            let mut query = QueryBuilder::<DB>::new("UPDATE run_requests SET state = ");
            query.push_bind(state.as_str().to_owned());
            query.push(", reason = ");
            query.push_bind(reason.map(str::to_owned));
            query.push(", updated_at_ms = ");
            query.push_bind(now);
            query.push(" WHERE tenant_id = ");
            query.push_bind(tenant.to_owned());
            query.push(" AND run_id = ");
            query.push_bind(run_id.to_owned());
            query.push(" AND state IN (");
            let mut separated = query.separated(", ");
            for source in &sources {
                separated.push_bind(source.as_str().to_owned());
            }
            query.push(") RETURNING run_id");
            let updated = query
                .build()
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::query)?;
            if updated.is_some() {
                return Ok(());
            }
        }
        match Self::get(connection, tenant, run_id).await? {
            None => Err(StoreError::NoSuchRun(run_id.to_owned())),
            Some(found) if found.state == state => Ok(()),
            Some(found) => Err(StoreError::RunRequestTransition {
                run_id: run_id.to_owned(),
                from: found.state,
                to: state,
            }),
        }
    }

    /// Notes that a cancel of `tenant`'s `run_id` was asked for (the first time counts); a request that does not
    /// exist is [`StoreError::NoSuchRun`].
    pub(crate) async fn request_cancel(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        // The run and every restart of it: a restart recorded before this update is found through
        // `restarted_as`; one recorded after it copies the cancel from its interrupted run (see `restart`).
        // `updated_at_ms` stays: it tells when a request that never started ended.
        let mut current = run_id.to_owned();
        for depth in 0..MAX_RESTART_CHAIN {
            let mut query = QueryBuilder::<DB>::new(
                "UPDATE run_requests SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, ",
            );
            query.push_bind(now);
            query.push(") WHERE tenant_id = ");
            query.push_bind(tenant.to_owned());
            query.push(" AND run_id = ");
            query.push_bind(current.clone());
            query.push(" RETURNING restarted_as");
            let row = query
                .build()
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::query)?;
            let next = match row {
                Some(row) => row.opt_text("restarted_as").map_err(StoreError::query)?,
                None if depth == 0 => return Err(StoreError::NoSuchRun(run_id.to_owned())),
                None => None,
            };
            match next {
                Some(next) => current = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Records that `tenant`'s interrupted `run_id` starts again as `restart` (a new request, started, whose
    /// `restart_of` is `run_id`), inside the caller's transaction; the first restart wins: a run restarted
    /// already answers its restart's request as it is.
    pub(crate) async fn restart(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        restart: &str,
        now: i64,
    ) -> Result<RunRequest, StoreError> {
        // The update first: on PostgreSQL it locks the row, so a concurrent restart waits and then finds it set.
        let mut query = QueryBuilder::<DB>::new("UPDATE run_requests SET restarted_as = ");
        query.push_bind(restart.to_owned());
        query.push(", updated_at_ms = ");
        query.push_bind(now);
        query.push(" WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(" AND restarted_as IS NULL RETURNING pipeline, branch, cancel_requested_at_ms");
        let updated = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        let Some(row) = updated else {
            let existing = Self::get(connection, tenant, run_id)
                .await?
                .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            let restarted_as = existing
                .restarted_as
                .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
            return Self::get(connection, tenant, &restarted_as)
                .await?
                .ok_or(StoreError::NoSuchRun(restarted_as));
        };
        let pipeline = row.text("pipeline").map_err(StoreError::query)?;
        let branch = row.opt_text("branch").map_err(StoreError::query)?;
        // A cancel of the interrupted run that came first is the restart's too.
        let cancel_requested_at_ms = row
            .opt_int("cancel_requested_at_ms")
            .map_err(StoreError::query)?;
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO run_requests (tenant_id, run_id, pipeline, state, created_at_ms, updated_at_ms, \
             restart_of, branch, cancel_requested_at_ms) VALUES (",
        );
        query.push_bind(tenant.to_owned());
        query.push(", ");
        query.push_bind(restart.to_owned());
        query.push(", ");
        query.push_bind(pipeline);
        query.push(", ");
        query.push_bind(RunRequestState::Started.as_str().to_owned());
        query.push(", ");
        query.push_bind(now);
        query.push(", ");
        query.push_bind(now);
        query.push(", ");
        query.push_bind(run_id.to_owned());
        query.push(", ");
        query.push_bind(branch);
        query.push(", ");
        query.push_bind(cancel_requested_at_ms);
        query.push(format!(") RETURNING {REQUEST_COLUMNS}"));
        let row = query
            .build()
            .fetch_one(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        rows::run_request(&row).map_err(StoreError::query)
    }

    /// `tenant`'s requests without a run record matching `filter`, newest first by (created_at_ms, run_id): the
    /// `run_requests_unrecorded` index, read backwards from the cursor; run ids compared byte by byte
    /// (`byte_order`), as runs are.
    pub(crate) async fn unrecorded(
        connection: &mut DB::Connection,
        tenant: &str,
        filter: &RunRequestFilter,
        byte_order: &str,
    ) -> Result<Vec<RunRequest>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM run_requests WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND recorded_at_ms IS NULL");
        if let Some(pipeline) = &filter.pipeline {
            query.push(" AND pipeline = ");
            query.push_bind(pipeline.clone());
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ");
            query.push_bind(state.as_str().to_owned());
        }
        if let Some(branch) = &filter.branch {
            query.push(" AND branch = ");
            query.push_bind(branch.clone());
        }
        let run_id = format!("run_id{byte_order}");
        if let Some(before) = &filter.before {
            push_before(&mut query, "created_at_ms", &run_id, before);
        }
        query.push(format!(
            " ORDER BY created_at_ms DESC, {run_id} DESC LIMIT "
        ));
        query.push_bind(i64::from(filter.limit));
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .iter()
            .map(|row| rows::run_request(row).map_err(StoreError::query))
            .collect()
    }

    /// Marks `tenant`'s request for `run_id`, if there is one, as having its run's record from `now` on, and
    /// answers its time (the run's place in listings); inside the transaction that creates the record.
    pub(crate) async fn mark_recorded(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE run_requests SET recorded_at_ms = COALESCE(recorded_at_ms, ",
        );
        query.push_bind(now);
        query.push(") WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(" RETURNING created_at_ms");
        query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .map(|row| row.int("created_at_ms").map_err(StoreError::query))
            .transpose()
    }

    /// Up to `limit` of `tenant`'s queued requests, oldest first (ties by run id).
    pub(crate) async fn queued(
        connection: &mut DB::Connection,
        tenant: &str,
        limit: u32,
    ) -> Result<Vec<RunRequest>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM run_requests WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND state = ");
        query.push_bind(RunRequestState::Queued.as_str().to_owned());
        query.push(" ORDER BY created_at_ms, run_id LIMIT ");
        query.push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .iter()
            .map(|row| rows::run_request(row).map_err(StoreError::query))
            .collect()
    }
}
