//! The seam through which the scheduler waits for concurrency groups: the runner implements it over the store.

use std::fmt::Debug;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::events::EventBus;
use crate::plan::PlannedGroup;

/// Holds concurrency groups for one run: the run's own group, and its stages'.
#[async_trait]
pub trait ConcurrencyGroups: Send + Sync + Debug {
    /// Waits until the run (`stage` `None`) or its instance `stage` holds `group`, emitting
    /// [`crate::events::RunEventKind::WaitingForGroup`] on `bus` while another holds it. `false` when `stop` was
    /// cancelled first: nothing is held then.
    async fn acquire(
        &self,
        group: &PlannedGroup,
        stage: Option<&str>,
        bus: &EventBus,
        stop: &CancellationToken,
    ) -> bool;

    /// Lets `group` go, if the run (or its instance `stage`) holds it; the next waiter takes it.
    async fn release(&self, group: &PlannedGroup, stage: Option<&str>);
}
