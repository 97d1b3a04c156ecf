//! Streams to clients: a run's events (`WatchRun`) and its log lines (`StreamLogs`), joined live while this
//! daemon runs the run or read from the store, sent in batches of what is ready, ended by the daemon's stop.

mod join;
mod logs;
mod pump;
mod watch;

use std::time::Duration;

use buildit_core::store::FollowError;
use tonic::Status;

/// How long a watch stream may be silent before it sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Most events in one `WatchRun` message.
const MAX_BATCH_EVENTS: usize = 1000;
/// Most lines in one `StreamLogs` message (a bound on memory for very short lines).
const MAX_BATCH_LINES: usize = 4096;
/// Most log text in one streamed message (bytes; a longer line goes alone). A client that reads slowly has a
/// few messages waiting for it in the daemon (its outbox, the connection's channel): this keeps them small,
/// and is still a few thousand lines of a typical log a message.
const MAX_BATCH_BYTES: usize = 256 * 1024;

type Sender<T> = tokio::sync::mpsc::Sender<Result<T, Status>>;

fn follow_status(error: &FollowError) -> Status {
    match error {
        // A run that never got a record (it failed before it started, or was forgotten): not found.
        FollowError::Store(buildit_core::store::StoreError::NoSuchRun(run)) => {
            Status::not_found(format!("no run `{run}`"))
        }
        other => Status::unavailable(format!("cannot follow the run: {other}")),
    }
}
