//! The loop every controller runs: reconcile everything, then wait for a change in the store or a tick.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::shared::Shared;

/// Runs `step` after every burst of changes and at least every `tick`, until the fake stops.
pub(crate) async fn reconcile_loop(
    shared: Arc<Shared>,
    tick: Duration,
    mut step: impl FnMut(&Shared),
) {
    let mut changes = shared.store.subscribe();
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        step(&shared);
        tokio::select! {
            received = changes.recv() => {
                if matches!(received, Err(RecvError::Closed)) {
                    return;
                }
            }
            _ = ticks.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        // A burst of changes is one reconciliation.
        loop {
            match changes.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
    }
}
