//! Concurrency groups held through the store: a run (or stage) waits while another run holds its group, asks
//! the holder to cancel when the group cancels the one in progress, and lets go at its end.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, RunEventKind};
use crate::exec::ConcurrencyGroups;
use crate::owner::RunOwner;
use crate::plan::PlannedGroup;
use crate::store::{GroupAcquire, GroupClaim, RUN_STALE_AFTER, Store};

/// How often a waiting run asks the store for its group again: the group passes on within this of its holder's
/// end, as a cancel asked through the store does ([`super::CANCEL_POLL`]).
pub const GROUP_POLL: Duration = Duration::from_secs(1);

/// How often a waiting run looks for holders whose runner died: each look writes to every running run's row
/// that is stale, so a daemon with many waiting runs would otherwise do it many times a second.
const DEAD_HOLDER_SWEEP: Duration = Duration::from_secs(5);

/// The groups of one run, held in its store.
#[derive(Debug)]
pub(crate) struct StoreGroups {
    store: Arc<dyn Store>,
    run_id: String,
    /// Who runs this run: a holder of this host whose process is gone is found by comparing with it.
    owner: RunOwner,
    poll: Duration,
}

impl StoreGroups {
    pub(crate) fn new(store: Arc<dyn Store>, run_id: String, owner: RunOwner) -> Self {
        Self {
            store,
            run_id,
            owner,
            poll: GROUP_POLL,
        }
    }
}

/// Who held the group when the waiter last said so, and whether it was being cancelled.
type Announced = (String, Option<String>, bool);

#[async_trait]
impl ConcurrencyGroups for StoreGroups {
    async fn acquire(
        &self,
        group: &PlannedGroup,
        stage: Option<&str>,
        bus: &EventBus,
        stop: &CancellationToken,
    ) -> bool {
        let claim = GroupClaim {
            group: group.name.clone(),
            run_id: self.run_id.clone(),
            stage: stage.map(str::to_owned),
            pending: stage.is_none(),
        };
        let mut announced: Option<Announced> = None;
        let mut asked_own_cancel = false;
        let mut swept_at: Option<tokio::time::Instant> = None;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // Stopped while waiting: the run may have been queued as the group's pending run, which
                    // it no longer is. It holds nothing, and lets go of nothing else.
                    let _ = self.store.release_group(&claim.group, &self.run_id, stage).await;
                    return false;
                }
                _ = poll.tick() => {}
            }
            // A store that cannot be read is asked again at the next poll.
            let Ok(answer) = self.store.acquire_group(&claim).await else {
                continue;
            };
            let (holder_run, holder_number, holder_stage, displaced, holder_is_older) = match answer
            {
                GroupAcquire::Acquired => return true,
                // A newer run waits for the group: this older one gives way. Its own cancel is asked for (the
                // newer one only cancels a run it displaced as pending, which this one may never have been),
                // and the run's cancel poll carries it out; meanwhile it waits here.
                GroupAcquire::Superseded { .. } => {
                    if !asked_own_cancel {
                        asked_own_cancel =
                            self.store.cancel_running_run(&self.run_id).await.is_ok();
                    }
                    continue;
                }
                GroupAcquire::Held {
                    holder_run,
                    holder_number,
                    holder_stage,
                    displaced,
                    holder_is_older,
                } => (
                    holder_run,
                    holder_number,
                    holder_stage,
                    displaced,
                    holder_is_older,
                ),
            };
            if holder_run.is_empty() {
                continue;
            }
            // GitHub's rule: of the runs waiting for a group, only the newest waits on; an older one is cancelled.
            if let Some(older) = displaced {
                let _ = self.store.cancel_running_run(&older).await;
            }
            // A run never cancels itself: its own stage that holds the group is waited for. Only an older holder
            // is cancelled: a newer one that got there first (this run's build was slower) is the one to keep,
            // and this run gives way instead.
            let mut cancelling = false;
            if group.cancel_in_progress && holder_run != self.run_id {
                if holder_is_older {
                    cancelling = matches!(
                        self.store.cancel_running_run(&holder_run).await,
                        Ok(crate::store::RunState::Running)
                    );
                } else if !asked_own_cancel {
                    asked_own_cancel = self.store.cancel_running_run(&self.run_id).await.is_ok();
                }
            }
            let now = (holder_run.clone(), holder_stage.clone(), cancelling);
            if announced.as_ref() != Some(&now) {
                bus.emit(RunEventKind::WaitingForGroup {
                    stage: stage.map(str::to_owned),
                    group: group.name.clone(),
                    holder_run,
                    holder_number,
                    holder_stage,
                    cancelling,
                })
                .await;
                announced = Some(now);
            }
            // A holder whose runner died (killed, its machine gone) is marked interrupted, so that the next poll
            // takes the group instead of waiting for a run that never ends.
            if swept_at.is_none_or(|at| at.elapsed() >= DEAD_HOLDER_SWEEP) {
                swept_at = Some(tokio::time::Instant::now());
                let _ = self
                    .store
                    .mark_interrupted(&self.owner, RUN_STALE_AFTER)
                    .await;
            }
        }
    }

    async fn release(&self, group: &PlannedGroup, stage: Option<&str>) {
        // A release that fails leaves the group to a run that is no longer running: the next claim takes it.
        let _ = self
            .store
            .release_group(&group.name, &self.run_id, stage)
            .await;
    }
}
