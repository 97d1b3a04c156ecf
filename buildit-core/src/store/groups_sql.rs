//! The statements that hold, hand over and let go of concurrency groups, the same on both SQL backends; each
//! backend runs them in one transaction of its own.

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::groups::{GroupAcquire, GroupClaim};
use super::model::StoreError;
use super::rows::StoreRow as _;

/// A group's row.
struct Holding {
    run_id: String,
    stage: String,
    pending: Option<String>,
}

/// What the store has of a run the groups refer to.
struct RunFacts {
    running: bool,
    number: i64,
    /// Its place among runs: newer runs sort after older ones.
    order: (i64, String),
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
            });
        };
        // Held already; or held by the claimant's run itself, which then holds it for its stages too.
        if held.run_id == claim.run_id && (held.stage == stage || held.stage.is_empty()) {
            return Ok(GroupAcquire::Acquired);
        }
        let holder = Self::run(connection, tenant, &held.run_id).await?;
        if !holder.as_ref().is_some_and(|holder| holder.running) {
            // Its holder ended, or died and was marked interrupted: the group is the claimant's.
            let pending = held.pending.filter(|pending| *pending != claim.run_id);
            Self::set_holder(
                connection,
                tenant,
                &claim.group,
                (&claim.run_id, &stage),
                pending,
                now,
            )
            .await?;
            return Ok(GroupAcquire::Acquired);
        }
        let mut displaced = None;
        if claim.pending && held.pending.as_deref() != Some(claim.run_id.as_str()) {
            if let Some(pending) = &held.pending {
                let other = Self::run(connection, tenant, pending).await?;
                let mine = Self::run(connection, tenant, &claim.run_id).await?;
                if let (Some(other), Some(mine)) = (other, mine) {
                    if other.running && other.order > mine.order {
                        return Ok(GroupAcquire::Superseded {
                            by: pending.clone(),
                        });
                    }
                    if other.running {
                        displaced = Some(pending.clone());
                    }
                }
            }
            Self::set_pending(connection, tenant, &claim.group, Some(&claim.run_id)).await?;
        }
        Ok(GroupAcquire::Held {
            holder_run: held.run_id,
            holder_number: holder.map(|holder| holder.number),
            holder_stage: (!held.stage.is_empty()).then_some(held.stage),
            displaced,
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
                running: row.text("status")? == "running",
                number: row.int("number")?,
                order: (row.int("created_at_ms")?, run_id.to_owned()),
            })
        })
        .transpose()
        .map_err(StoreError::query)
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
        query.push(" WHERE tenant_id = ");
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
        query.push(" WHERE tenant_id = ");
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
