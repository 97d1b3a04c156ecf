//! Jobs a daemon that died left behind: their leases end at once when its workers are known to be gone, and a
//! job claimed again finds what to do of its run (start it, start it again as a new run, or nothing).

use std::sync::Arc;
use std::time::Duration;

use buildit_core::owner::{Lease, RunOwner};
use buildit_core::store::{RUN_STALE_AFTER, RunRef, RunRequestState, RunState, Store, StoreError};

use tokio_util::sync::CancellationToken;

use super::watchdog::LEASE;
use super::{RUNS_QUEUE, RunJob};

/// A worker's name: its process and host, so that a later daemon on the host can tell that it is gone.
pub(crate) fn worker_name(owner: &RunOwner, index: usize) -> String {
    format!("{}/{index}/{}", owner.pid, owner.host)
}

/// The process a worker named by [`worker_name`] lives in.
fn worker_owner(name: &str) -> Option<RunOwner> {
    let mut parts = name.splitn(3, '/');
    let pid = parts.next()?.parse().ok()?;
    let _index = parts.next()?;
    let host = parts.next()?.to_owned();
    Some(RunOwner { host, pid })
}

/// Ends the leases of jobs whose workers were processes of this host that are gone (a daemon killed, or
/// stopped by a crash): their jobs are claimed again at once rather than when the leases run out.
pub(crate) async fn release_gone_workers(store: &Arc<dyn Store>, here: &RunOwner) {
    let Ok(tenants) = store.list_tenants().await else {
        return;
    };
    for tenant in tenants {
        let store = store.for_tenant(&tenant);
        let Ok(jobs) = store.leased_jobs(RUNS_QUEUE).await else {
            continue;
        };
        for job in jobs {
            let Some(owner) = job.worker.as_deref().and_then(worker_owner) else {
                continue;
            };
            if owner.is_dead_here(here) {
                let lease = Lease {
                    job: job.id,
                    attempt: i64::from(job.attempts),
                };
                if store.expire_lease(&lease).await.is_ok() {
                    tracing::info!(
                        tenant,
                        job = job.id,
                        pid = owner.pid,
                        "the job of a daemon that is gone is claimed again"
                    );
                }
            }
        }
    }
}

/// What a claimed job runs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resumption {
    /// The run the trigger asked for: it never started.
    Start,
    /// A run that starts an interrupted one again (its request, `started`, is recorded already).
    Restart(String),
    /// Nothing, and why: the run ended, was cancelled, may not be restarted, or still runs under its owner.
    Nothing(&'static str),
    /// Not now: the daemon is stopping while the job's run may still run elsewhere; the job is left to its
    /// lease, for whichever daemon claims it next.
    Later,
}

/// Most restarts a chain is followed through (a job is claimed at most a few times; this bounds a loop in a
/// corrupted chain).
const MAX_CHAIN: usize = 16;

/// How often a claimed job whose run still looks alive is looked at again.
const RUNNING_RECHECK: Duration = Duration::from_secs(5);

/// What the job runs now: its run if it never started; for a run its daemon left interrupted (the last of the
/// job's restarts), a new run that starts it again, recorded as its restart (when `restarts` allows).
///
/// A run that still looks alive (its owner is not a process of this host known to be gone, and it beat
/// recently) is waited for, the job's lease kept, until it ends or goes stale: a daemon on another host, or in
/// a restarted container (another PID namespace), stops beating once it died.
pub(super) async fn resumption(
    store: &Arc<dyn Store>,
    job: &RunJob,
    lease: &Lease,
    restarts: bool,
    stop: &CancellationToken,
) -> Result<Resumption, StoreError> {
    let mut current = job.run_id.clone();
    let mut cancelled = false;
    for _ in 0..MAX_CHAIN {
        let Some(request) = store.run_request(&current).await? else {
            break;
        };
        cancelled |=
            request.cancel_requested_at_ms.is_some() || request.state == RunRequestState::Cancelled;
        match request.restarted_as {
            Some(next) => current = next,
            None => break,
        }
    }
    let waited = tokio::time::Instant::now();
    let record = loop {
        let record = match store.find_run(&RunRef::Id(current.clone())).await {
            Ok(record) => record,
            Err(StoreError::NoSuchRun(_)) if current == job.run_id => return Ok(Resumption::Start),
            // A restart recorded by a worker that died before the run started.
            Err(StoreError::NoSuchRun(_)) if cancelled => {
                let _ = store
                    .set_run_request_state(&current, RunRequestState::Cancelled, None)
                    .await;
                return Ok(Resumption::Nothing("its run was cancelled"));
            }
            Err(StoreError::NoSuchRun(_)) => return Ok(Resumption::Restart(current)),
            Err(error) => return Err(error),
        };
        if record.state != RunState::Running {
            break record;
        }
        // Its lease ran out: a daemon gone from this host, or one elsewhere whose run stopped beating, is marked.
        let marked = store
            .mark_interrupted(&RunOwner::this_process(), RUN_STALE_AFTER)
            .await?;
        if marked.contains(&current) {
            continue;
        }
        if waited.elapsed() > RUN_STALE_AFTER * 2 {
            // It beats on: its owner lives, and only lost the job's lease.
            return Ok(Resumption::Nothing("its run still runs under its owner"));
        }
        store.heartbeat(lease, LEASE).await?;
        tokio::select! {
            () = tokio::time::sleep(RUNNING_RECHECK) => {}
            () = stop.cancelled() => return Ok(Resumption::Later),
        }
    };
    Ok(match record.state {
        RunState::Interrupted if cancelled => Resumption::Nothing("its run was cancelled"),
        RunState::Interrupted if !restarts => {
            Resumption::Nothing("interrupted runs are not started again")
        }
        RunState::Interrupted => {
            let restart = store
                .restart_run_request(&current, &buildit_core::runner::new_run_id())
                .await?;
            if restart.cancel_requested_at_ms.is_some() {
                // Cancelled while the restart was being recorded.
                let _ = store
                    .set_run_request_state(&restart.run_id, RunRequestState::Cancelled, None)
                    .await;
                return Ok(Resumption::Nothing("its run was cancelled"));
            }
            Resumption::Restart(restart.run_id)
        }
        _ => Resumption::Nothing("its run had ended"),
    })
}

#[cfg(test)]
mod tests {
    use buildit_core::store::{MemoryStore, NewRunRequest};

    use super::*;

    fn job(run_id: &str) -> RunJob {
        serde_json::from_value(serde_json::json!({
            "run_id": run_id,
            "pipeline": "pipeline \"p\"\nstage \"a\" { run \"true\" }\n",
            "file_name": "buildit.kdl",
            "branch": null,
            "sha": null,
            "tag": null,
            "event": null,
            "env": {},
            "stages": [],
        }))
        .unwrap_or_else(|error| panic!("a job: {error}"))
    }

    /// A store with run `r1`'s request, started again as `r2` by a worker that died before `r2` had a record.
    async fn restarted_before_it_ran() -> Arc<dyn Store> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let request = NewRunRequest {
            run_id: "r1".to_owned(),
            pipeline: "p".to_owned(),
            idempotency_key: None,
            branch: None,
        };
        let steps = async {
            store.create_run_request(&request).await?;
            store
                .set_run_request_state("r1", RunRequestState::Started, None)
                .await?;
            store.restart_run_request("r1", "r2").await
        };
        if let Err(error) = steps.await {
            panic!("setting up: {error}");
        }
        store
    }

    #[tokio::test]
    async fn a_restart_that_never_ran_runs_unless_its_chain_was_cancelled() {
        let lease = Lease { job: 1, attempt: 1 };
        let stop = CancellationToken::new();
        let store = restarted_before_it_ran().await;
        let resumed = resumption(&store, &job("r1"), &lease, true, &stop).await;
        assert_eq!(resumed.ok(), Some(Resumption::Restart("r2".to_owned())));

        let store = restarted_before_it_ran().await;
        if let Err(error) = store.request_run_cancel("r1").await {
            panic!("cancel: {error}");
        }
        let resumed = resumption(&store, &job("r1"), &lease, true, &stop).await;
        assert_eq!(
            resumed.ok(),
            Some(Resumption::Nothing("its run was cancelled"))
        );
        let restart = store.run_request("r2").await.ok().flatten();
        assert_eq!(
            restart.map(|request| request.state),
            Some(RunRequestState::Cancelled)
        );
    }

    #[test]
    fn a_worker_name_tells_its_process() {
        let owner = RunOwner {
            host: "ci-1 pid:[4026531836]".to_owned(),
            pid: 4242,
        };
        assert_eq!(worker_owner(&worker_name(&owner, 3)), Some(owner));
        assert_eq!(worker_owner("4242-0"), None);
        assert_eq!(worker_owner("x/0/host"), None);
    }
}
