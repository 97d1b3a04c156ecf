//! The statements of registered pipelines, the same on both SQL backends (the query builder writes each
//! database's placeholders; each backend chooses connections and says how names sort).

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::model::{NewPipeline, PipelineFilter, PipelineRecord, StoreError};
use super::rows;
use super::tokens::sha256_hex;

const PIPELINE_COLUMNS: &str =
    "name, file_name, source, source_sha256, registered_at_ms, updated_at_ms, registered_by";

/// The registered pipeline queries of database `DB`.
pub(crate) struct PipelineSql<DB>(PhantomData<DB>);

impl<DB> PipelineSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Inserts or replaces `tenant`'s pipeline in one statement: a row only counting run numbers gets the text,
    /// a registered one gets the new text only when it differs. Whether a row was written.
    pub(crate) async fn register(
        connection: &mut DB::Connection,
        tenant: &str,
        pipeline: &NewPipeline,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO pipelines (tenant_id, name, next_run_number, created_at_ms, source, file_name, \
             source_sha256, registered_at_ms, updated_at_ms, registered_by) VALUES (",
        );
        let mut values = query.separated(", ");
        values.push_bind(tenant.to_owned());
        values.push_bind(pipeline.name.clone());
        values.push_bind(1_i64);
        values.push_bind(now);
        values.push_bind(pipeline.source.clone());
        values.push_bind(pipeline.file_name.clone());
        values.push_bind(sha256_hex(pipeline.source.as_bytes()));
        values.push_bind(now);
        values.push_bind(now);
        values.push_bind(pipeline.registered_by.clone());
        // The counter is left alone: the pipeline's run numbers go on where they were.
        query.push(
            ") ON CONFLICT (tenant_id, name) DO UPDATE SET source = excluded.source, \
             file_name = excluded.file_name, source_sha256 = excluded.source_sha256, \
             registered_at_ms = COALESCE(pipelines.registered_at_ms, excluded.registered_at_ms), \
             updated_at_ms = excluded.updated_at_ms, registered_by = excluded.registered_by \
             WHERE pipelines.source_sha256 IS DISTINCT FROM excluded.source_sha256 \
             OR pipelines.file_name IS DISTINCT FROM excluded.file_name \
             RETURNING name",
        );
        let written = query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?;
        Ok(written.is_some())
    }

    /// `tenant`'s registered pipeline `name`.
    pub(crate) async fn get(
        connection: &mut DB::Connection,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PipelineRecord>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND name = ");
        query.push_bind(name.to_owned());
        query.push(" AND source IS NOT NULL");
        query
            .build()
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .map(|row| rows::pipeline_record(&row).map_err(StoreError::query))
            .transpose()
    }

    /// `tenant`'s registered pipelines after `filter.after`, by name compared byte by byte (`byte_order` is what
    /// makes this database do so).
    pub(crate) async fn list(
        connection: &mut DB::Connection,
        tenant: &str,
        filter: &PipelineFilter,
        byte_order: &str,
    ) -> Result<Vec<PipelineRecord>, StoreError> {
        let ordered_name = format!("name{byte_order}");
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE tenant_id = "
        ));
        query.push_bind(tenant.to_owned());
        query.push(" AND source IS NOT NULL");
        if let Some(after) = &filter.after {
            query.push(format!(" AND {ordered_name} > "));
            query.push_bind(after.clone());
        }
        query.push(format!(" ORDER BY {ordered_name} LIMIT "));
        query.push_bind(i64::from(filter.limit));
        query
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::query)?
            .iter()
            .map(|row| rows::pipeline_record(row).map_err(StoreError::query))
            .collect()
    }
}
