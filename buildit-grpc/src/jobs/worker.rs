//! The in-process workers: each claims jobs from the runs queue of every tenant in turn, and runs each one's
//! run (or its restart) through the core's `Runner` under the job's lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::exec::RunOptions;
use buildit_core::owner::RunOwner;
use buildit_core::runner::{RunSetup, Runner, connect_executor};
use buildit_core::source::{ArchiveDigest, WorkspaceSource};
use buildit_core::store::{ClaimedJob, RunRequestState, Store};
use buildit_core::system::SystemConfig;
use tokio_util::sync::CancellationToken;

use super::reclaim::{Resumption, resumption};
use super::watchdog::{self, LEASE};
use super::{RUNS_QUEUE, RunJob, sources};
use crate::registry::{Phase, Registry};
use crate::source_links::SourceLinks;

pub(crate) use super::reclaim::worker_name;

/// How long an idle worker waits before it looks at the queues again.
const IDLE: Duration = Duration::from_millis(100);

/// What every worker shares.
#[derive(Debug, Clone)]
pub(crate) struct Workers {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) system: Arc<SystemConfig>,
    pub(crate) registry: Arc<Registry>,
    /// Where runs get their workspaces (`runs/<id>`).
    pub(crate) data_dir: PathBuf,
    /// Stops claiming (a drain); running runs go on.
    pub(crate) stop_claiming: CancellationToken,
    /// Whether a run its daemon left interrupted starts again, as a new run, when its job is claimed again.
    pub(crate) restart_interrupted: bool,
    /// Cuts the grace periods of cancelled runs' stages short: a stopping daemon whose drain ran out exits
    /// within a second.
    pub(crate) kill: CancellationToken,
    /// Issues one-time download links to the runs' uploaded sources, when the daemon serves them: an executor
    /// that runs stages elsewhere (Kubernetes) then lets them fetch the source themselves.
    pub(crate) source_links: Option<Arc<SourceLinks>>,
}

impl Workers {
    /// One worker: claims a job from the queue of every tenant with runs here, runs it, and goes on until told
    /// to stop claiming.
    pub(crate) async fn work(self, worker: String) {
        // Where the next look at the tenants starts: each claim moves it on, so that one tenant's long queue
        // does not keep another's runs waiting.
        let mut turn = 0usize;
        loop {
            if self.stop_claiming.is_cancelled() {
                return;
            }
            let mut claimed = None;
            // Tenants with runs triggered here, and every tenant of the store: jobs a daemon that died left
            // queued (or leased) are claimed again after a restart.
            let mut tenants = self.registry.tenants();
            if let Ok(known) = self.store.list_tenants().await {
                tenants.extend(known);
            }
            tenants.sort();
            tenants.dedup();
            let count = tenants.len().max(1);
            tenants.rotate_left(turn % count);
            for (offset, tenant) in tenants.into_iter().enumerate() {
                let store = self.store.for_tenant(&tenant);
                if let Ok(Some(job)) = store.claim(RUNS_QUEUE, &worker, LEASE).await {
                    turn = turn.wrapping_add(offset + 1);
                    claimed = Some((tenant, store, job));
                    break;
                }
            }
            match claimed {
                // Claimed as the daemon began to stop: left for the next one at once.
                Some((_, store, job)) if self.stop_claiming.is_cancelled() => {
                    let _ = store.expire_lease(&job.lease).await;
                    return;
                }
                Some((tenant, store, job)) => self.run(&tenant, store, job).await,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(IDLE) => {}
                        () = self.stop_claiming.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Runs one claimed job to its end, extending its lease while it runs.
    async fn run(&self, tenant: &str, store: Arc<dyn Store>, claimed: ClaimedJob) {
        let job: RunJob = match serde_json::from_str(&claimed.payload) {
            Ok(job) => job,
            Err(error) => {
                let _ = store
                    .fail(&claimed.lease, &format!("unreadable job: {error}"))
                    .await;
                return;
            }
        };
        let mut job = job;
        let resumed = resumption(
            &store,
            &job,
            &claimed.lease,
            self.restart_interrupted,
            &self.stop_claiming,
        )
        .await;
        match resumed {
            Ok(Resumption::Later) => {
                let _ = store.expire_lease(&claimed.lease).await;
                return;
            }
            Ok(Resumption::Start) => {}
            Ok(Resumption::Restart(run_id)) => {
                tracing::warn!(
                    tenant,
                    run_id = job.run_id.as_str(),
                    restart = run_id.as_str(),
                    "a run its daemon left interrupted starts again as a new run"
                );
                job.run_id = run_id;
            }
            Ok(Resumption::Nothing(why)) => {
                tracing::warn!(
                    tenant,
                    run_id = job.run_id.as_str(),
                    why,
                    "a reclaimed job ends"
                );
                let _ = store.complete(&claimed.lease).await;
                return;
            }
            Err(error) => {
                // Left to the lease: the job is claimed again once it runs out.
                tracing::warn!(
                    tenant,
                    run_id = job.run_id.as_str(),
                    error = %error,
                    "cannot tell what a claimed job's run needs"
                );
                return;
            }
        }
        // A job claimed again after its daemon died, or queued by another daemon of the same store, is known
        // here from now on: a cancel and the drain reach it.
        let cancel = self.registry.ensure(tenant, &job.run_id);
        // The request says whether it may start: one cancelled while it waited (here or through another daemon)
        // never does. Marking it started is what a later cancel sees.
        let may_start = !cancel.is_cancelled()
            && store
                .set_run_request_state(&job.run_id, RunRequestState::Started, None)
                .await
                .is_ok();
        if !may_start {
            self.registry.set(tenant, &job.run_id, Phase::Ended);
            self.registry.forget_later(tenant, &job.run_id);
            let _ = store.complete(&claimed.lease).await;
            return;
        }
        let watchdog = watchdog::watch(
            Arc::clone(&store),
            claimed.lease,
            job.run_id.clone(),
            cancel.clone(),
        );
        tracing::info!(
            tenant,
            run_id = job.run_id.as_str(),
            job = claimed.id,
            "run starts"
        );
        let outcome = self.execute(tenant, &store, &job, cancel).await;
        match &outcome {
            Ok(()) => tracing::info!(tenant, run_id = job.run_id.as_str(), "run ended"),
            Err(error) => tracing::warn!(
                tenant,
                run_id = job.run_id.as_str(),
                error = error.as_str(),
                "run failed to run"
            ),
        }
        watchdog.abort();
        if let Err(error) = &outcome {
            // A run that could not start has no record: its request says why.
            let recorded = store
                .find_run(&buildit_core::store::RunRef::Id(job.run_id.clone()))
                .await
                .is_ok();
            if !recorded {
                let _ = store
                    .set_run_request_state(&job.run_id, RunRequestState::Failed, Some(error))
                    .await;
            }
        }
        self.registry.set(tenant, &job.run_id, Phase::Ended);
        self.registry.forget_later(tenant, &job.run_id);
        let _ = match outcome {
            Ok(()) => store.complete(&claimed.lease).await,
            Err(error) => store.fail(&claimed.lease, &error).await,
        };
    }

    /// Plans the job and runs it in a workspace of its own, removed afterwards.
    async fn execute(
        &self,
        tenant: &str,
        store: &Arc<dyn Store>,
        job: &RunJob,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        let plan = job
            .plan(&self.system)
            .map_err(|refusal| refusal.to_string())?;
        let workspace = self.data_dir.join("runs").join(&job.run_id);
        let source = match &job.source {
            Some(digest) => Some(
                ArchiveDigest::parse(digest)
                    .map_err(|error| format!("source `{digest}`: {error}"))?,
            ),
            None => None,
        };
        std::fs::create_dir_all(&workspace)
            .map_err(|error| format!("cannot create the run's workspace: {error}"))?;
        let mut setup =
            RunSetup::from_system(&plan, &self.system, &workspace, |_| None, Vec::new())
                .map_err(|error| error.to_string())?;
        // The daemon's secrets (a secrets file, its environment) are its own, not any tenant's: no remote run
        // gets one until tenants have secret stores of their own. A stage asking for one fails as for a
        // secret that is missing.
        setup.secrets.clear();
        let (executor, _swept) = connect_executor(&plan, &self.system, |options| options)
            .await
            .map_err(|error| error.to_string())?;
        let mut runner = Runner::new(job.run_id.clone(), plan, executor, Arc::clone(store))
            .workspace(&workspace);
        if let Some(digest) = source {
            let mut store = sources(&self.data_dir, tenant, &self.system);
            if let Some(links) = &self.source_links {
                let links: Arc<SourceLinks> = Arc::clone(links);
                store = store.with_links(links);
            }
            runner = runner.source(WorkspaceSource::Archive(digest), store, &workspace);
        }
        let runner = runner
            .options(RunOptions::default())
            .setup(setup)
            .cancel_token(cancel)
            .kill_token(self.kill.child_token())
            .owner(RunOwner::this_process());
        let result = async {
            let handle = runner.start().await.map_err(|error| error.to_string())?;
            self.registry
                .set(tenant, &job.run_id, Phase::Running(handle.joiner()));
            let mut executed = handle.wait().await.map_err(|error| error.to_string())?;
            executed
                .recorded()
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&workspace).await;
        result
    }
}
