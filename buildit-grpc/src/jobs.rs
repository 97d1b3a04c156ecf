//! The runs queue: what a trigger puts in the store's job queue, and the in-process workers that claim those
//! jobs with leases and run them through the core's `Runner`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::config::EventKind;
use buildit_core::exec::RunOptions;
use buildit_core::owner::RunOwner;
use buildit_core::runner::{
    LoadError, RunSetup, Runner, check_against_system, connect_executor, plan_for,
};
use buildit_core::source::{ArchiveDigest, SourceStore, WorkspaceSource};
use buildit_core::store::{ClaimedJob, RunRequestState, Store};
use buildit_core::system::SystemConfig;
use buildit_core::{Plan, RunContext, parse_pipeline};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::registry::{Phase, Registry};

/// A tenant's uploaded archives: stored apart from every other tenant's, so a digest never reaches another
/// tenant's upload.
pub(crate) fn sources(
    data_dir: &std::path::Path,
    tenant: &str,
    system: &SystemConfig,
) -> SourceStore {
    SourceStore::new(data_dir.join("sources").join(tenant), system.sources)
}

/// The queue runs wait in.
pub(crate) const RUNS_QUEUE: &str = "runs";
/// How long a claim holds a job without a heartbeat.
const LEASE: Duration = Duration::from_secs(30);
/// How often a running job's lease is extended.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long an idle worker waits before it looks at the queues again.
const IDLE: Duration = Duration::from_millis(100);

/// A queued run, as the job's payload (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunJob {
    pub(crate) run_id: String,
    /// The pipeline's name (known once the trigger parsed it).
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) pipeline: String,
    pub(crate) file_name: String,
    pub(crate) branch: Option<String>,
    pub(crate) sha: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) stages: Vec<String>,
    /// The sha256 of an uploaded archive to unpack as the workspace.
    #[serde(default)]
    pub(crate) source: Option<String>,
}

impl RunJob {
    /// The run context the job asks for.
    pub(crate) fn context(&self) -> Result<RunContext, String> {
        let mut context = RunContext::new();
        context.branch.clone_from(&self.branch);
        context.sha.clone_from(&self.sha);
        context.tag.clone_from(&self.tag);
        context.event = Some(match &self.event {
            Some(event) => event
                .parse::<EventKind>()
                .map_err(|_| format!("unknown event `{event}`"))?,
            None => EventKind::Manual,
        });
        context.env = self.env.clone();
        context.selected = self.stages.clone();
        Ok(context)
    }

    /// The plan the job runs: parsed, checked against the daemon's system configuration and planned. The
    /// trigger refuses a job this refuses; a worker that gets a refusal saw the configuration change in between.
    pub(crate) fn plan(&self, system: &SystemConfig) -> Result<Plan, Refusal> {
        let pipeline = parse_pipeline(&self.pipeline, &self.file_name)
            .map_err(|error| Refusal::Load(LoadError::Config(error)))?;
        check_against_system(&pipeline, system).map_err(Refusal::Load)?;
        let context = self.context().map_err(Refusal::Context)?;
        plan_for(pipeline, system, context).map_err(Refusal::Load)
    }
}

/// Why a job's pipeline cannot be planned.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The pipeline, or the pipeline against the system configuration, is invalid; or the run cannot be planned.
    Load(LoadError),
    /// The job's context is not one (an unknown event).
    Context(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(error) => error.fmt(f),
            Self::Context(problem) => f.write_str(problem),
        }
    }
}

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
}

impl Workers {
    /// One worker: claims a job from the queue of every tenant with runs here, runs it, and goes on until told
    /// to stop claiming.
    pub(crate) async fn work(self, worker: String) {
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
            for tenant in tenants {
                let store = self.store.for_tenant(&tenant);
                if let Ok(Some(job)) = store.claim(RUNS_QUEUE, &worker, LEASE).await {
                    claimed = Some((tenant, store, job));
                    break;
                }
            }
            match claimed {
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
        // A job claimed again after its daemon died, or queued by another daemon of the same store, is known
        // here from now on: a cancel and the drain reach it.
        let cancel = self.registry.ensure(tenant, &job.run_id);
        if store
            .find_run(&buildit_core::store::RunRef::Id(job.run_id.clone()))
            .await
            .is_ok()
        {
            // Its run started under a daemon that died (the run is marked interrupted): it is not started twice.
            self.registry.set(tenant, &job.run_id, Phase::Ended);
            self.registry.forget_later(tenant, &job.run_id);
            let _ = store.complete(&claimed.lease).await;
            tracing::warn!(
                tenant,
                run_id = job.run_id.as_str(),
                "a reclaimed job's run had already started: left as recorded"
            );
            return;
        }
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
        let heartbeat = {
            let store = Arc::clone(&store);
            let lease = claimed.lease;
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    match store.heartbeat(&lease, LEASE).await {
                        Ok(_) => {}
                        // Another worker holds the job now: this run stops rather than run twice.
                        Err(buildit_core::store::StoreError::LeaseLost { .. }) => {
                            cancel.cancel();
                            return;
                        }
                        // A busy store: the next beat tries again, well within the lease.
                        Err(_) => {}
                    }
                }
            })
        };
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
        heartbeat.abort();
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
            runner = runner.source(
                WorkspaceSource::Archive(digest),
                sources(&self.data_dir, tenant, &self.system),
                &workspace,
            );
        }
        let runner = runner
            .options(RunOptions::default())
            .setup(setup)
            .cancel_token(cancel)
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
