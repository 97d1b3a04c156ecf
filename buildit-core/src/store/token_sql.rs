//! The statements of API tokens and tenants, the same on both SQL backends (the query builder writes each
//! database's placeholders; each backend chooses connections and transactions).

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::model::{StoreError, TokenRecord};
use super::rows::{self, StoreRow as _};
use super::tokens::last_use_is_stale;

const TOKEN_COLUMNS: &str = "id, tenant_id, name, created_at_ms, last_used_at_ms, revoked_at_ms";

/// The token queries of database `DB`.
pub(crate) struct TokenSql<DB>(PhantomData<DB>);

impl<DB> TokenSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Every tenant's name, sorted.
    pub(crate) async fn tenants(
        connection: &mut DB::Connection,
    ) -> Result<Vec<String>, StoreError> {
        let mut query = QueryBuilder::<DB>::new("SELECT id FROM tenants ORDER BY id");
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .iter()
            .map(|row| row.text("id").map_err(StoreError::query))
            .collect()
    }

    /// Adds `tenant` if missing and the token, inside the caller's transaction.
    pub(crate) async fn insert(
        connection: &mut DB::Connection,
        tenant: &str,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<TokenRecord, StoreError> {
        let mut query = QueryBuilder::<DB>::new("INSERT INTO tenants (id, created_at_ms) VALUES (");
        query.push_bind(tenant.to_owned());
        query.push(", ");
        query.push_bind(now);
        query.push(") ON CONFLICT (id) DO NOTHING");
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO api_tokens (tenant_id, name, token_sha256, created_at_ms) VALUES (",
        );
        query.push_bind(tenant.to_owned());
        query.push(", ");
        query.push_bind(name.to_owned());
        query.push(", ");
        query.push_bind(token_hash.to_owned());
        query.push(", ");
        query.push_bind(now);
        query.push(format!(") RETURNING {TOKEN_COLUMNS}"));
        let row = query
            .build()
            .fetch_one(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        rows::token_record(&row).map_err(StoreError::query)
    }

    /// The tenant of the unrevoked token with this hash, and whether its last use is due to be written.
    pub(crate) async fn lookup(
        connection: &mut DB::Connection,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(i64, String, bool)>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, tenant_id, last_used_at_ms FROM api_tokens WHERE token_sha256 = ",
        );
        query.push_bind(token_hash.to_owned());
        query.push(" AND revoked_at_ms IS NULL");
        let Some(row) = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
        else {
            return Ok(None);
        };
        let found = (|| {
            Ok::<_, sqlx::Error>((
                row.int("id")?,
                row.text("tenant_id")?,
                last_use_is_stale(row.opt_int("last_used_at_ms")?, now),
            ))
        })()
        .map_err(StoreError::query)?;
        Ok(Some(found))
    }

    /// The unrevoked token with this hash, whatever its tenant.
    pub(crate) async fn find(
        connection: &mut DB::Connection,
        token_hash: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = "
        ));
        query.push_bind(token_hash.to_owned());
        query.push(" AND revoked_at_ms IS NULL");
        query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .map(|row| rows::token_record(&row).map_err(StoreError::query))
            .transpose()
    }

    /// Writes the token's last use, unless another lookup did within the minute.
    pub(crate) async fn touch(
        connection: &mut DB::Connection,
        id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new("UPDATE api_tokens SET last_used_at_ms = ");
        query.push_bind(now);
        query.push(" WHERE id = ");
        query.push_bind(id);
        query.push(" AND (last_used_at_ms IS NULL OR last_used_at_ms <= ");
        query.push_bind(now.saturating_sub(super::tokens::LAST_USED_EVERY_MS));
        query.push(")");
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        Ok(())
    }

    /// `tenant`'s tokens, oldest first.
    pub(crate) async fn list(
        connection: &mut DB::Connection,
        tenant: &str,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" ORDER BY id");
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .iter()
            .map(|row| rows::token_record(row).map_err(StoreError::query))
            .collect()
    }

    /// Revokes `tenant`'s token `id` (keeping an earlier revocation's time); [`StoreError::NoSuchToken`] when
    /// `tenant` has no such token.
    pub(crate) async fn revoke(
        connection: &mut DB::Connection,
        tenant: &str,
        id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE api_tokens SET revoked_at_ms = COALESCE(revoked_at_ms, ",
        );
        query.push_bind(now);
        query.push(") WHERE tenant_id = ");
        query.push_bind(tenant.to_owned());
        query.push(" AND id = ");
        query.push_bind(id);
        query.push(" RETURNING id");
        let revoked = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        revoked.map(|_| ()).ok_or(StoreError::NoSuchToken(id))
    }
}
