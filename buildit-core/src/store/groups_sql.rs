//! The statements that hold, hand over and let go of concurrency groups, the same on both SQL backends; each
//! backend runs them in one transaction of its own.

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::groups::{GroupAcquire, GroupClaim};
use super::manage_sql::{ManageSql, RunFacts};
use super::model::{RunState, StoreError};
use super::rows::StoreRow as _;

/// A group's row.
struct Holding {
    run_id: String,
    stage: String,
    pending: Option<String>,
}

/// The concurrency group queries of database `DB`.
pub(crate) struct GroupSql<DB>(PhantomData<DB>);

impl<DB> GroupSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Answers `claim` inside the caller's transaction (`lock` is what the backend appends to a select to lock
    /// the row it reads: ` FOR UPDATE` on PostgreSQL, nothing where the transaction is the lock).
    pub(crate) async fn acquire(
        connection: &mut DB::Connection,
        tenant: &str,
        claim: &GroupClaim,
        now: i64,
        lock: &str,
    ) -> Result<GroupAcquire, StoreError> {
        let stage = claim.stage.clone().unwrap_or_default();
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO concurrency_groups (tenant_id, name, run_id, stage, acquired_at_ms) VALUES (",
        );
        insert.push_bind(tenant.to_owned());
        insert.push(", ");
        insert.push_bind(claim.group.clone());
        insert.push(", ");
        insert.push_bind(claim.run_id.clone());
        insert.push(", ");
        insert.push_bind(stage.clone());
        insert.push(", ");
        insert.push_bind(now);
        insert.push(") ON CONFLICT (tenant_id, name) DO NOTHING RETURNING name");
        let inserted = insert
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        if inserted.is_some() {
            return Ok(GroupAcquire::Acquired);
        }
        let Some(held) = Self::holding(connection, tenant, &claim.group, lock).await? else {
            // Let go of between the two statements: the next claim finds it free.
            return Ok(GroupAcquire::Held {
                holder_run: String::new(),
                holder_number: None,
                holder_stage: None,
                displaced: None,
                holder_is_older: false,
            });
        };
        // Held already; or held by the claimant's run itself, which then holds it for its stages too.
        if held.run_id == claim.run_id && (held.stage == stage || held.stage.is_empty()) {
            return Ok(GroupAcquire::Acquired);
        }
        let holder = Self::run(connection, tenant, &held.run_id).await?;
        let mine = Self::run(connection, tenant, &claim.run_id).await?;
        if !holder.as_ref().is_some_and(running) {
            // Its holder ended, or died and was marked interrupted. The group's pending run is next, as when a
            // holder lets go: a claimant that asks first does not pass it. Else the group is the claimant's.
            let pending = held.pending.filter(|pending| *pending != claim.run_id);
            if let Some(pending) = pending
                && let Some(next) = Self::run(connection, tenant, &pending)
                    .await?
                    .filter(running)
            {
                // A run's own claim waits next, as it would have had the holder let go.
                let next_pending = claim.pending.then(|| claim.run_id.clone());
                Self::set_holder(
                    connection,
                    tenant,
                    &claim.group,
                    (&pending, ""),
                    next_pending,
                    now,
                )
                .await?;
                return Ok(GroupAcquire::Held {
                    holder_is_older: mine.as_ref().is_none_or(|mine| next.order < mine.order),
                    holder_run: pending,
                    holder_number: Some(next.number),
                    holder_stage: None,
                    displaced: None,
                });
            }
            Self::set_holder(
                connection,
                tenant,
                &claim.group,
                (&claim.run_id, &stage),
                None,
                now,
            )
            .await?;
            return Ok(GroupAcquire::Acquired);
        }
        let mut displaced = None;
        if claim.pending && held.pending.as_deref() != Some(claim.run_id.as_str()) {
            if let Some(pending) = &held.pending {
                let other = Self::run(connection, tenant, pending).await?;
                if let (Some(other), Some(mine)) = (other, &mine) {
                    let other_running = running(&other);
                    if other_running && other.order > mine.order {
                        return Ok(GroupAcquire::Superseded {
                            by: pending.clone(),
                        });
                    }
                    if other_running {
                        displaced = Some(pending.clone());
                    }
                }
            }
            Self::set_pending(connection, tenant, &claim.group, Some(&claim.run_id)).await?;
        }
        // A run the store cannot read counts as older: it is never cancelled in its place.
        let holder_is_older = match (&holder, &mine) {
            (Some(holder), Some(mine)) => holder.order < mine.order,
            _ => true,
        };
        Ok(GroupAcquire::Held {
            holder_run: held.run_id,
            holder_number: holder.map(|holder| holder.number),
            holder_stage: (!held.stage.is_empty()).then_some(held.stage),
            displaced,
            holder_is_older,
        })
    }

    /// Lets `group` go if `run_id` (its instance `stage`) holds it: to the group's pending run when there is
    /// one, else to whoever claims it next. A run that was only pending stops being so. Nothing else changes.
    pub(crate) async fn release(
        connection: &mut DB::Connection,
        tenant: &str,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
        now: i64,
        lock: &str,
    ) -> Result<(), StoreError> {
        let stage = stage.unwrap_or_default();
        let Some(held) = Self::holding(connection, tenant, group, lock).await? else {
            return Ok(());
        };
        if held.run_id == run_id && held.stage == stage {
            match held.pending.filter(|pending| pending != run_id) {
                Some(pending) => {
                    Self::set_holder(connection, tenant, group, (&pending, ""), None, now).await
                }
                None => {
                    let mut query = QueryBuilder::<DB>::new(
                        "DELETE FROM concurrency_groups WHERE tenant_id = ",
                    );
                    query.push_bind(tenant.to_owned());
                    query.push(" AND name = ");
                    query.push_bind(group.to_owned());
                    query
                        .build()
                        .execute(&mut *connection)
                        .await
                        .map_err(StoreError::query)?;
                    Ok(())
                }
            }
        } else if held.pending.as_deref() == Some(run_id) && stage.is_empty() {
            Self::set_pending(connection, tenant, group, None).await
        } else {
            Ok(())
        }
    }

    async fn holding(
        connection: &mut DB::Connection,
        tenant: &str,
        group: &str,
        lock: &str,
    ) -> Result<Option<Holding>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT run_id, stage, pending_run_id FROM concurrency_groups WHERE tenant_id = ",
        );
        query.push_bind(tenant.to_owned());
        query.push(" AND name = ");
        query.push_bind(group.to_owned());
        query.push(lock);
        let row = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        row.map(|row| {
            Ok::<_, sqlx::Error>(Holding {
                run_id: row.text("run_id")?,
                stage: row.text("stage")?,
                pending: row.opt_text("pending_run_id")?,
            })
        })
        .transpose()
        .map_err(StoreError::query)
    }

    async fn run(
        connection: &mut DB::Connection,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunFacts>, StoreError> {
        ManageSql::<DB>::facts(connection, tenant, run_id).await
    }

    async fn set_holder(
        connection: &mut DB::Connection,
        tenant: &str,
        group: &str,
        (run_id, stage): (&str, &str),
        pending: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new("UPDATE concurrency_groups SET run_id = ");
        query.push_bind(run_id.to_owned());
        query.push(", stage = ");
        query.push_bind(stage.to_owned());
        query.push(", acquired_at_ms = ");
        query.push_bind(now);
        query.push(", pending_run_id = ");
        match pending {
            Some(pending) => query.push_bind(pending),
            None => query.push("NULL"),
        };
        Self::update_row(connection, query, tenant, group).await
    }

    async fn set_pending(
        connection: &mut DB::Connection,
        tenant: &str,
        group: &str,
        pending: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new("UPDATE concurrency_groups SET pending_run_id = ");
        match pending {
            Some(pending) => query.push_bind(pending.to_owned()),
            None => query.push("NULL"),
        };
        Self::update_row(connection, query, tenant, group).await
    }

    /// Runs `update` (an `UPDATE concurrency_groups SET ...`) on `tenant`'s group `group`.
    async fn update_row(
        connection: &mut DB::Connection,
        mut update: QueryBuilder<DB>,
        tenant: &str,
        group: &str,
    ) -> Result<(), StoreError> {
        update.push(" WHERE tenant_id = ");
        update.push_bind(tenant.to_owned());
        update.push(" AND name = ");
        update.push_bind(group.to_owned());
        update
            .build()
            .execute(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        Ok(())
    }
}

/// Whether the run is still running (its holding or pending claim stands).
fn running(facts: &RunFacts) -> bool {
    facts.state == RunState::Running
}
