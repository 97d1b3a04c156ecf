//! Cancels asked through the store: the process running a run polls for them and cancels the run's own token.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a running run asks the store whether someone wants it cancelled: `buildit runs cancel` from another
/// process takes effect within this. One indexed read of one row a second costs the store next to nothing.
pub const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Polls the store every `every` until `done` (the run has executed) or `cancel` (stopped some other way) is
/// cancelled; when a cancel of `run_id` was asked for ([`Store::cancel_running_run`]), cancels `requested` (so a
/// frontend can say why the run stops) and then `cancel`, which stops the run exactly as a first Ctrl-C does:
/// nothing new starts and running stages get their grace period. A store that cannot be read is asked again at
/// the next poll: a cancel is never invented from an error.
pub(crate) async fn cancel_on_request(
    store: Arc<dyn Store>,
    run_id: String,
    every: Duration,
    cancel: CancellationToken,
    requested: CancellationToken,
    done: CancellationToken,
) {
    let mut poll = tokio::time::interval(every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = cancel.cancelled() => return,
            _ = poll.tick() => {}
        }
        if store.run_cancel_requested(&run_id).await.unwrap_or(false) {
            requested.cancel();
            cancel.cancel();
            return;
        }
    }
}
