//! The Kubernetes executor: an attempt is a Secret (when it has secrets) and a Job, watched through its pod,
//! its log followed, and its Job deleted (with its pods and Secret) once its output is read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::abandon::OnAbandon;
use super::logs::{PodProgress, follow};
use super::manifest::{WorkspacePlace, attempt_objects, owned_by_job};
use super::names::{JOB_LABEL, RUN_LABEL};
use super::options::{KubernetesOptions, connect};
use super::watch::watch_attempt;
use super::workspace::RunWorkspace;
use crate::events::LogStreamKind;
use crate::exec::attempt::{ExitWatch, OutputOnce};
use crate::exec::executor::{
    ExecError, Executor, ExitStatus, LogStream, OutputChunk, StageSpec, StageStatus,
};
use crate::exec::per_run::PerRun;
use crate::exec::sweep::{SweepReport, SweepScope};
use crate::exec::tree::workspace_paths;
use crate::owner::LeftoverOwner;

/// How long a deleted attempt's pods may take to go before the executor stops waiting for them.
const GONE_WAIT: Duration = Duration::from_secs(60);
/// How often the executor looks whether they went.
const GONE_POLL: Duration = Duration::from_millis(100);
/// How long the end of a run waits for its attempts' cleanups.
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// Runs stages of the `kubernetes` executor kind as Jobs on a cluster.
#[derive(Clone)]
pub struct KubernetesExecutor {
    pub(super) client: kube::Client,
    pub(super) namespace: String,
    pub(super) options: KubernetesOptions,
    pub(super) owner: LeftoverOwner,
    /// Each run's attempts being cleaned up (their Jobs deleted once their output is read): the run's
    /// release waits for them.
    cleanups: Arc<Mutex<HashMap<String, Vec<JoinHandle<()>>>>>,
    /// Each run's workspace claim and the pod that holds it.
    pub(super) workspaces: Arc<PerRun<RunWorkspace>>,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor")
            .field("namespace", &self.namespace)
            .field("options", &self.options)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// A Kubernetes attempt.
#[derive(Debug)]
pub struct KubernetesHandle {
    job: String,
    exit: ExitWatch,
    logs: OutputOnce,
    /// Set by `cancel`: the pod's going away is then BuildIt's doing, not someone else's.
    stopping: Arc<AtomicBool>,
}

impl KubernetesHandle {
    /// The attempt's Job.
    pub fn job_name(&self) -> &str {
        &self.job
    }
}

impl KubernetesExecutor {
    /// Finds the cluster as the options say (`KUBECONFIG`, the kubeconfig's context, or in-cluster) and checks
    /// that its API answers: an unreachable cluster is one clear error here, never a hang later.
    pub async fn connect(options: KubernetesOptions) -> Result<Self, ExecError> {
        let (client, namespace) = connect(&options).await?;
        let executor = Self::with_client(client, namespace, options);
        executor.client.apiserver_version().await.map_err(|error| {
            ExecError::Backend(format!("the Kubernetes cluster does not answer: {error}"))
        })?;
        Ok(executor)
    }

    /// An executor over `client`, in `namespace` (tests give a client of their own).
    pub fn with_client(
        client: kube::Client,
        namespace: String,
        options: KubernetesOptions,
    ) -> Self {
        Self {
            client,
            namespace,
            options,
            owner: LeftoverOwner::this_process(),
            cleanups: Arc::default(),
            workspaces: Arc::default(),
        }
    }

    /// The same executor, creating what it creates for `owner` (a fleet's worker, and its lease).
    #[must_use]
    pub fn with_owner(mut self, owner: LeftoverOwner) -> Self {
        self.owner = owner;
        self
    }

    /// The namespace its objects go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Deletes Job `name` (its pods and Secret go with it) and waits until no pod of it is left, pending ones
    /// included.
    pub(super) async fn delete_attempt(
        &self,
        name: &str,
        grace: Option<Duration>,
    ) -> Result<(), ExecError> {
        let selector = format!("{JOB_LABEL}={name}");
        // The pods first, with the grace asked for: those the garbage collector deletes for the Job get their
        // spec's grace period instead. A pod deleted before its Job counts as failed: with no retries, the
        // Job makes no other.
        let mut deleted = std::collections::HashSet::new();
        self.delete_pods_once(&selector, grace, &mut deleted)
            .await?;
        match self.jobs().delete(name, &deleting(grace)).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(backend(&format!("cannot delete Job {name}"), &error)),
        }
        // A pod made meanwhile, or one the garbage collector has not reached yet, is deleted here, so that a
        // pending pod never outlives a cancelled attempt.
        self.delete_pods_of(&selector, grace).await
    }

    /// Deletes the pods `selector` names that are not being deleted already (nor by this executor, in
    /// `deleted`); whether any pod was left.
    async fn delete_pods_once(
        &self,
        selector: &str,
        grace: Option<Duration>,
        deleted: &mut std::collections::HashSet<String>,
    ) -> Result<bool, ExecError> {
        let pods = self.pods();
        let left = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|error| backend("cannot list pods", &error))?;
        for pod in &left.items {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_none() && deleted.insert(name.clone()) {
                match pods.delete(&name, &deleting(grace)).await {
                    Ok(_) => {}
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => {
                        return Err(backend(&format!("cannot delete pod {name}"), &error));
                    }
                }
            }
        }
        Ok(!left.items.is_empty())
    }

    /// Deletes the pods `selector` names and waits until they are gone.
    pub(super) async fn delete_pods_of(
        &self,
        selector: &str,
        grace: Option<Duration>,
    ) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + grace.unwrap_or_default() + GONE_WAIT;
        let mut deleted = std::collections::HashSet::new();
        loop {
            if !self.delete_pods_once(selector, grace, &mut deleted).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::Backend(format!(
                    "pods of `{selector}` are still there after {}s",
                    GONE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(GONE_POLL).await;
        }
    }

    /// Waits until pod `name` is gone (a minute at most).
    pub(super) async fn pod_gone(&self, name: &str) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + GONE_WAIT;
        loop {
            match self.pods().get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(GONE_POLL).await;
                }
                Ok(Some(_)) => {
                    return Err(ExecError::Backend(format!(
                        "the pod {name} is still there after {}s",
                        GONE_WAIT.as_secs()
                    )));
                }
                Err(error) => return Err(backend(&format!("cannot read pod {name}"), &error)),
            }
        }
    }

    fn track_cleanup(&self, run: &str, cleanup: JoinHandle<()>) {
        if let Ok(mut cleanups) = self.cleanups.lock() {
            let list = cleanups.entry(run.to_owned()).or_default();
            list.retain(|task| !task.is_finished());
            list.push(cleanup);
        }
    }
}

/// A delete with `Background` propagation and, when given, `grace` (the object's own grace period otherwise).
fn deleting(grace: Option<Duration>) -> DeleteParams {
    let params = DeleteParams::background();
    match grace {
        Some(grace) => params.grace_period(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
        None => params,
    }
}

pub(super) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

pub(super) fn backend(context: &str, error: &kube::Error) -> ExecError {
    ExecError::Backend(format!("{context}: {error}"))
}

impl Executor for KubernetesExecutor {
    type Handle = KubernetesHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<KubernetesHandle, ExecError> {
        let Some(image) = spec.image.clone() else {
            return Err(ExecError::Config(
                "a stage on the `kubernetes` executor needs an image".to_owned(),
            ));
        };
        if let Some(why) = super::services::refused(&spec.services) {
            return Err(ExecError::Config(why));
        }
        let workspace = self.run_workspace(&spec).await?;
        let node = self.pinned_node(&workspace);
        let place = WorkspacePlace {
            claim: &workspace.name,
            node: node.as_deref(),
        };
        let objects = attempt_objects(
            &spec,
            &image,
            &self.namespace,
            &self.options,
            &self.owner,
            place,
        );
        let name = objects.name.clone();
        let run = spec.labels.get(RUN_LABEL).cloned().unwrap_or_default();
        // Should this future be dropped before the attempt is handed over (the scheduler's deadline or stop
        // while starting), or fail halfway, what it created is deleted in the background.
        let mut created = {
            let (executor, name, secret) = (self.clone(), name.clone(), objects.secret.is_some());
            OnAbandon::new(async move {
                // A Job whose request was sent may exist even when its answer never came: deleting one
                // that does not costs a request.
                let _ = executor.delete_attempt(&name, None).await;
                if secret {
                    let _ = executor
                        .secrets()
                        .delete(&name, &DeleteParams::background())
                        .await;
                }
            })
        };
        // The Secret first: the pod reads it by reference as it starts.
        if let Some(secret) = &objects.secret {
            self.secrets()
                .create(&PostParams::default(), secret)
                .await
                .map_err(|error| backend(&format!("cannot create Secret {name}"), &error))?;
        }
        let job = match self
            .jobs()
            .create(&PostParams::default(), &objects.job)
            .await
        {
            Ok(job) => job,
            Err(error) => {
                return Err(match &error {
                    kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                        ExecError::Config(format!(
                            "the cluster refused the stage's Job: {}",
                            status.message
                        ))
                    }
                    _ => backend(&format!("cannot create Job {name}"), &error),
                });
            }
        };
        // Owned by its Job, the Secret goes when the Job goes (also when the cluster deletes a finished Job
        // whose runner died). Failing that, its labels let the run's release and sweeps find it.
        if objects.secret.is_some()
            && let Some(owner) = owned_by_job(&job)
        {
            let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
            let _ = self
                .secrets()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        let (exit_sender, exit) = ExitWatch::new();
        let (output, output_receiver) = mpsc::channel(64);
        if let Some(echo) = spec.first_echo() {
            let _ = output
                .send(OutputChunk {
                    stream: LogStreamKind::Stdout,
                    bytes: echo.into_bytes(),
                })
                .await;
        }
        let (progress_sender, progress) = watch::channel(PodProgress::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch_attempt(
            self.clone(),
            name.clone(),
            Arc::clone(&stopping),
            exit_sender,
            progress_sender,
        ));
        let reader = tokio::spawn(follow(self.pods(), progress, output));
        let cleanup = {
            let executor = self.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let _ = watcher.await;
                // The log is read to its end before anything is deleted. Deleting is done again after a
                // cancel (which may have given up): it costs a request when all is gone already.
                let _ = reader.await;
                let _ = executor.delete_attempt(&name, None).await;
            })
        };
        self.track_cleanup(&run, cleanup);
        created.disarm();
        Ok(KubernetesHandle {
            job: name,
            exit,
            logs: OutputOnce::new(output_receiver),
            stopping,
        })
    }

    async fn logs(&self, handle: &KubernetesHandle) -> Result<LogStream, ExecError> {
        handle.logs.take()
    }

    async fn status(&self, handle: &KubernetesHandle) -> Result<StageStatus, ExecError> {
        handle.exit.status()
    }

    async fn wait(&self, handle: &KubernetesHandle) -> Result<ExitStatus, ExecError> {
        handle.exit.wait().await
    }

    async fn cancel(&self, handle: &KubernetesHandle, grace: Duration) -> Result<(), ExecError> {
        handle.stopping.store(true, Ordering::SeqCst);
        // A grace period of 0 is a forced delete: the pod object goes while its containers may still run.
        self.delete_attempt(&handle.job, Some(grace.max(Duration::from_secs(1))))
            .await
    }

    fn workspace_on_host(&self, _spec: &StageSpec) -> bool {
        false
    }

    async fn put_files(&self, spec: &StageSpec, from: &std::path::Path) -> Result<(), ExecError> {
        self.put_workspace_files(spec, from).await
    }

    async fn get_files(
        &self,
        spec: &StageSpec,
        paths: &[std::path::PathBuf],
        into: &std::path::Path,
    ) -> Result<(), ExecError> {
        let paths = workspace_paths(paths)?;
        let workspace = self.run_workspace(spec).await?;
        self.copy_out(&workspace.name, &spec.workspace, paths, into)
            .await
    }

    async fn release_run(&self, run_id: &str) -> Result<(), ExecError> {
        let cleanups = self
            .cleanups
            .lock()
            .ok()
            .and_then(|mut cleanups| cleanups.remove(run_id))
            .unwrap_or_default();
        // Bounded: a cleanup stuck on a pod that never goes (its node lost) does not hold the run forever;
        // the sweep below deletes what is left, and the cluster finishes it.
        let all = futures_util::future::join_all(cleanups);
        let attempts_gone = async {
            let _ = tokio::time::timeout(RELEASE_WAIT, all).await;
        };
        let workspace = self.workspaces.take(run_id);
        // No stage of the run starts any more: its workspace goes while its last Jobs do.
        let workspace_gone = async {
            match &workspace {
                Some(workspace) => {
                    self.remove_workspace(&workspace.name, workspace.fetched)
                        .await
                }
                None => Ok(()),
            }
        };
        let ((), removed) = tokio::join!(attempts_gone, workspace_gone);
        // The sweep runs whatever happened above: it also finds a workspace whose making was interrupted.
        let swept = self.sweep(&SweepScope::run(run_id)).await.map(|_| ());
        removed.and(swept)
    }

    async fn sweep(&self, scope: &SweepScope) -> Result<SweepReport, ExecError> {
        super::sweep::sweep(self, scope).await
    }
}
