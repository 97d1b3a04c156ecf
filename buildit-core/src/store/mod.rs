//! The store: run history, stage attempts, logs and the job queue, behind one trait with a SQLite and a
//! PostgreSQL backend.

mod api;
mod batch;
mod follow;
mod groups;
mod groups_sql;
mod manage_sql;
mod memory;
mod model;
mod open;
mod pipeline_sql;
#[cfg(feature = "postgres")]
mod postgres;
mod recorder;
mod replay;
mod request_sql;
mod rows;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod token_sql;
mod tokens;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use api::{StageOutputs, StageTests, Store};
pub use batch::{AttemptEnd, AttemptStart, LogChunk, RecordBatch, RunEnd, StoredEvent};
pub use follow::{FOLLOW_PAGE, FollowError, MAX_HELD, RunFollower};
pub use groups::{GroupAcquire, GroupClaim};
pub use memory::MemoryStore;
pub use model::{
    AttemptRecord, AttemptState, ClaimedJob, DEFAULT_TENANT, JobRecord, JobState, LOST, Lease,
    LogCursor, LogLineRecord, LogPage, LogQuery, NewJob, NewPipeline, NewRun, NewRunRequest,
    PipelineFilter, PipelineRecord, RunCursor, RunFilter, RunInputs, RunOwner, RunRecord, RunRef,
    RunRequest, RunRequestFilter, RunRequestOutcome, RunRequestState, RunState, StoreError,
    TokenRecord,
};
pub use open::{StoreLocation, open_store};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use recorder::{
    MAX_BATCH_EVENTS, RUN_HEARTBEAT, RUN_STALE_AFTER, RecordSummary, record_run,
    record_run_reporting,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use tokens::{TOKEN_PREFIX, check_tenant_name, hash_token, new_token, sha256_hex};

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Why a running run counts as interrupted, if it does: its process is gone from this host, or it has not
/// heart-beat for `stale_after`.
pub(crate) fn interrupted_reason(
    owner: &RunOwner,
    here: &RunOwner,
    heartbeat_at_ms: i64,
    now_ms: i64,
    stale_after: Duration,
) -> Option<String> {
    if owner.is_dead_here(here) {
        return Some(format!(
            "its runner (process {} on {}) is gone",
            owner.pid, owner.host
        ));
    }
    // A runner of this host that still exists is alive, even when it has not heart-beat for a while (its
    // output blocked by a paused pager, say).
    if owner.host == here.host {
        return None;
    }
    let silent = now_ms.saturating_sub(heartbeat_at_ms);
    (silent > model::millis(stale_after)).then(|| {
        format!(
            "its runner (process {} on {}) has not been heard from for {} s",
            owner.pid,
            owner.host,
            silent / 1000
        )
    })
}

/// The one run `reference` means among the runs that matched it.
pub(crate) fn pick_run(
    reference: &RunRef,
    mut found: Vec<RunRecord>,
) -> Result<RunRecord, StoreError> {
    match (reference, found.len()) {
        (_, 1) => Ok(found.remove(0)),
        (RunRef::Number { number, .. }, n) if n > 1 => {
            let mut pipelines: Vec<String> = found.into_iter().map(|run| run.pipeline).collect();
            pipelines.sort();
            pipelines.dedup();
            Err(StoreError::AmbiguousRun {
                number: *number,
                pipelines,
            })
        }
        (RunRef::Id(id), _) => Err(StoreError::NoSuchRun(id.clone())),
        (RunRef::Number { pipeline, number }, _) => Err(StoreError::NoSuchRun(match pipeline {
            Some(pipeline) => format!("{pipeline}#{number}"),
            None => number.to_string(),
        })),
    }
}
