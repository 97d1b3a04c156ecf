//! Finding a run to follow: joined live while a worker of this daemon runs it, else read from the store.

use std::time::Duration;

use buildit_core::store::{RunFollower, RunRef, RunRequestState};
use tonic::Status;

use crate::registry::Phase;
use crate::service::BuildItService;

/// How long a watcher of a run queued here that has a record waits for it to show running here (a worker of
/// this daemon records a run a moment before it shows it running), before reading it from the store.
const LIVE_GRACE: Duration = Duration::from_millis(500);

impl BuildItService {
    /// A follower of the run from `after_seq`: joined live while this daemon runs it, else read from the store.
    pub(super) async fn follower(
        &self,
        tenant: &str,
        run_id: &str,
        after_seq: u64,
        live: bool,
    ) -> Result<RunFollower, Status> {
        let store = self.store.for_tenant(tenant);
        if live {
            // Joined live while a worker of this daemon runs it; a run queued here may be claimed by another
            // daemon of the store, and a run queued elsewhere is only in the store: both are polled there until
            // the run has a record (or will never get one), then read from the store.
            // A worker here records the run just before it shows it running: a record of a run this daemon
            // queued gets a moment to turn up live before the store is read.
            let mut waited_for_live = false;
            loop {
                let mut phase = self.registry.watch(tenant, run_id);
                let current = phase
                    .as_mut()
                    .map(|phase| phase.borrow_and_update().clone());
                match current {
                    Some(Phase::Running(joiner)) => return Ok(joiner.join(after_seq).await),
                    Some(Phase::Ended) => break,
                    Some(Phase::Queued) | None => {}
                }
                if store.find_run(&RunRef::Id(run_id.to_owned())).await.is_ok() {
                    match phase.as_mut() {
                        Some(phase) if !waited_for_live => {
                            waited_for_live = true;
                            let _ = tokio::time::timeout(LIVE_GRACE, phase.changed()).await;
                            continue;
                        }
                        _ => break,
                    }
                }
                // Started comes just before the run's first record: waited for as well.
                match store.run_request(run_id).await {
                    Ok(Some(request))
                        if matches!(
                            request.state,
                            RunRequestState::Queued | RunRequestState::Started
                        ) => {}
                    _ => break,
                }
                let changed = async {
                    match phase.as_mut() {
                        Some(phase) => {
                            let _ = phase.changed().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = self.shutdown.cancelled() => {
                        return Err(Status::unavailable("the daemon is stopping: resume with after_seq 0"));
                    }
                }
            }
        }
        Ok(if live {
            // Run by another daemon of the store (or over): its store is read until it ends.
            RunFollower::tailing(store, run_id, after_seq)
        } else {
            RunFollower::stored(store, run_id, after_seq)
        })
    }
}
