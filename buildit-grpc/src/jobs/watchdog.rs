//! What watches a running job beside its run: the lease, extended before it ends, and a cancel asked through
//! another daemon of the store, polled from the run's request.

use std::sync::Arc;
use std::time::Duration;

use buildit_core::owner::Lease;
use buildit_core::store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

/// How long a claim holds a job without a heartbeat.
pub(super) const LEASE: Duration = Duration::from_secs(30);
/// How often a running job's lease is extended.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the run's request is read for a cancel asked elsewhere: a cancel reaches the run within this.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// Watches `run_id`, run under `lease`, until aborted: cancels `cancel` when another worker took the job (the
/// run stops rather than run twice) or when a cancel was asked through the store.
pub(super) fn watch(
    store: Arc<dyn Store>,
    lease: Lease,
    run_id: String,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next_beat = tokio::time::Instant::now() + HEARTBEAT;
        loop {
            tokio::time::sleep(CANCEL_POLL).await;
            if let Ok(Some(request)) = store.run_request(&run_id).await
                && request.cancel_requested_at_ms.is_some()
            {
                cancel.cancel();
            }
            if tokio::time::Instant::now() < next_beat {
                continue;
            }
            next_beat = tokio::time::Instant::now() + HEARTBEAT;
            match store.heartbeat(&lease, LEASE).await {
                Ok(_) => {}
                Err(StoreError::LeaseLost { .. }) => {
                    cancel.cancel();
                    return;
                }
                // A busy store: the next beat tries again, well within the lease.
                Err(_) => {}
            }
        }
    })
}
