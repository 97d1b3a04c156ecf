//! A run's workspace on the cluster: one claim its pods share, and a pod that holds it, created (and filled with
//! the run's files) by the first stage that needs it and deleted when the run ends.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::abandon::OnAbandon;
use super::executor::{KubernetesExecutor, backend, is_not_found};
use super::names::RUN_LABEL;
use super::source_fetch::{SOURCE_CONTAINER, SourceFetch};
use super::status::{PodVerdict, container_verdict, init_verdict};
use super::watch::{Clock, container_log_tail};
use super::workspace_manifest::{HOLDER_CONTAINER, WorkspaceObjects, workspace_objects};
use crate::exec::executor::{ExecError, StageSpec};
use crate::system::WorkspaceAccess;

/// Top-level directories of the host workspace that are not copied into a run's claim: BuildIt's own state.
const NOT_UPLOADED: &[&str] = &[".buildit"];
/// How much longer than its limits a holder pod may take to start.
const START_MARGIN: Duration = Duration::from_secs(120);
/// How long the holder's init container may take to bring the run's source in (a large repository, a slow
/// network), on top of the start's other limits.
const FETCH_LIMIT: Duration = Duration::from_secs(600);
/// The longest wait between two looks at a starting holder pod.
const POLL_CEILING: Duration = Duration::from_secs(1);
/// How often the holder pod is looked at while it starts, at first.
const START_POLL: Duration = Duration::from_millis(50);

/// A run's workspace on the cluster.
#[derive(Debug, Clone)]
pub(super) struct RunWorkspace {
    /// The claim's name, and the holder pod's.
    pub name: String,
    /// The node the holder runs on, where every pod of the run must run when the claim is read-write-once.
    pub node: Option<String>,
    /// Whether the holder fetched the run's source (with a Secret of the workspace's name).
    pub fetched: bool,
}

impl KubernetesExecutor {
    pub(super) fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The run's workspace, created (and filled with the host workspace) by the first stage that needs it.
    pub(super) async fn run_workspace(&self, spec: &StageSpec) -> Result<RunWorkspace, ExecError> {
        let run = spec.labels.get(RUN_LABEL).map_or("", String::as_str);
        self.workspaces
            .get_or_make(run, || self.create_workspace(spec))
            .await
    }

    /// The node an attempt's pod must run on to reach the run's workspace, if any.
    pub(super) fn pinned_node(&self, workspace: &RunWorkspace) -> Option<String> {
        match self.options.workspace_access {
            WorkspaceAccess::ReadWriteOnce => workspace.node.clone(),
            WorkspaceAccess::ReadWriteMany => None,
        }
    }

    async fn create_workspace(&self, spec: &StageSpec) -> Result<RunWorkspace, ExecError> {
        let image = match (&self.options.helper_image, &spec.image) {
            (Some(image), _) | (None, Some(image)) => image.clone(),
            (None, None) => {
                return Err(ExecError::Config(
                    "a stage on the `kubernetes` executor needs an image".to_owned(),
                ));
            }
        };
        let objects = workspace_objects(
            &spec.labels,
            &spec.workspace,
            spec.source.as_ref(),
            &image,
            &self.namespace,
            &self.options,
            &self.owner,
        );
        let name = objects.name.clone();
        let fetched = objects.fetch.is_some();
        // Dropped halfway (the stage's start abandoned), the start deletes what it made in the background.
        let mut made = {
            let (executor, name) = (self.clone(), name.clone());
            OnAbandon::new(async move {
                let _ = executor.remove_workspace(&name, fetched).await;
            })
        };
        let filled = self.fill_workspace(spec, &objects).await;
        made.disarm();
        match filled {
            Ok(node) => Ok(RunWorkspace {
                name,
                node,
                fetched,
            }),
            Err(error) => {
                // Failed, it deletes it before it says so: the run's end finds nothing left.
                let _ = self.remove_workspace(&name, fetched).await;
                Err(error)
            }
        }
    }

    /// Creates the claim and its holder, waits until the holder runs (its init container has fetched the run's
    /// source by then, when it can), and otherwise copies the host workspace in; the holder's node.
    async fn fill_workspace(
        &self,
        spec: &StageSpec,
        objects: &WorkspaceObjects,
    ) -> Result<Option<String>, ExecError> {
        let name = &objects.name;
        self.claims()
            .create(&PostParams::default(), &objects.claim)
            .await
            .map_err(|error| refused("the run's workspace claim", name, &error))?;
        if let Some(fetch) = &objects.fetch {
            self.secrets()
                .create(&PostParams::default(), &fetch.secret)
                .await
                .map_err(|error| refused("the Secret of the run's source", name, &error))?;
        }
        self.pods()
            .create(&PostParams::default(), &objects.holder)
            .await
            .map_err(|error| refused("the pod that holds the run's workspace", name, &error))?;
        let node = self.holder_started(name, objects.fetch.as_ref()).await?;
        if objects.fetch.is_none() && has_files(&spec.workspace)? {
            self.put_tree(name, &spec.workspace, &spec.workspace, NOT_UPLOADED)
                .await
                .map_err(|error| {
                    ExecError::Backend(format!("cannot copy the workspace into its claim: {error}"))
                })?;
        }
        Ok(node)
    }

    /// Waits until the holder pod runs; the node it runs on. Fails as a stage would: an image that cannot be
    /// pulled, a pod no node takes, within the same limits; and with the fetch's last lines when it cannot bring
    /// the source in.
    async fn holder_started(
        &self,
        name: &str,
        fetch: Option<&SourceFetch>,
    ) -> Result<Option<String>, ExecError> {
        let mut clock = Clock::default();
        // A pod that stays pending with no reason the clock knows (a claim never bound, say) is given up too.
        let mut limit =
            self.options.unschedulable_limit + self.options.image_pull_grace + START_MARGIN;
        if fetch.is_some() {
            limit += FETCH_LIMIT;
        }
        let deadline = tokio::time::Instant::now() + limit;
        // Quick at first (a pod usually starts within a second), then once a second.
        let mut poll = START_POLL;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::Backend(format!(
                    "the pod that holds the run's workspace ({name}) did not start within {}s",
                    limit.as_secs()
                )));
            }
            let pod = match self.pods().get(name).await {
                Ok(pod) => pod,
                Err(error) if is_not_found(&error) => {
                    return Err(ExecError::Lost(format!(
                        "the pod that holds the run's workspace ({name}) was deleted"
                    )));
                }
                Err(error) => return Err(backend("cannot read the workspace's pod", &error)),
            };
            let fetching = fetch.and_then(|fetch| {
                init_verdict(&pod, SOURCE_CONTAINER).map(|verdict| (fetch, verdict))
            });
            let from_source = fetching.is_some();
            let verdict = match fetching {
                Some((fetch, PodVerdict::Exited(status))) => {
                    let tail = container_log_tail(self, &pod, SOURCE_CONTAINER).await;
                    let message = fetch.hide(&format!(
                        "cannot bring {} into the run's workspace: the fetch exited with {}{tail}",
                        fetch.what,
                        status.code.unwrap_or(-1)
                    ));
                    return Err(if fetch.lacks_tools(status.code) {
                        ExecError::Config(format!(
                            "{message}\n(set `helper-image` in `executor \"kubernetes\"` to an image that has them)"
                        ))
                    } else {
                        ExecError::Backend(message)
                    });
                }
                Some((fetch, verdict)) => {
                    verdict.said_of(&format!("the image that brings {} in", fetch.what))
                }
                None => container_verdict(&pod, HOLDER_CONTAINER),
            };
            if verdict == PodVerdict::Running {
                return Ok(node_of(&pod));
            }
            if let PodVerdict::Exited(status) = verdict {
                return Err(ExecError::Backend(format!(
                    "the pod that holds the run's workspace ended ({status:?}): its image needs `sh`, \
                     `sleep` and `tar` (set `helper-image` in `executor \"kubernetes\"`)"
                )));
            }
            if let Some(Err(failure)) = clock.judge(verdict, &self.options) {
                let error = failure.to_error();
                return Err(match error {
                    ExecError::Wait(message) => ExecError::Backend(format!(
                        "the run's workspace cannot be made ready: {message}"
                    )),
                    // The source's container says which image it is about; the holder's needs a hint.
                    ExecError::Config(message) if from_source => ExecError::Config(format!(
                        "the pod that holds the run's workspace cannot start: {message}"
                    )),
                    ExecError::Config(message) => ExecError::Config(format!(
                        "the pod that holds the run's workspace cannot start: {message}; its image needs \
                         `sh`, `sleep` and `tar` (set `helper-image` in `executor \"kubernetes\"`)"
                    )),
                    other => other,
                });
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_CEILING);
        }
    }

    /// Deletes the run's workspace: the holder pod, the claim (which the cluster keeps, protected, until the
    /// pod is gone) and, when the holder `fetched` the source, the source's Secret; waits until the pod is gone.
    pub(super) async fn remove_workspace(
        &self,
        name: &str,
        fetched: bool,
    ) -> Result<(), ExecError> {
        let failed = |error: &kube::Error| backend(&format!("cannot delete {name}"), error);
        let pod = self
            .pods()
            .delete(name, &DeleteParams::background().grace_period(1))
            .await;
        // The claim is deleted even when the pod could not be: a claim left behind is the costly leftover.
        let claim = self
            .claims()
            .delete(name, &DeleteParams::background())
            .await;
        let secret = if fetched {
            self.secrets()
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        for deleted in [pod.map(|_| ()), claim.map(|_| ()), secret] {
            match deleted {
                Err(error) if !is_not_found(&error) => return Err(failed(&error)),
                _ => {}
            }
        }
        self.pod_gone(name).await
    }

    /// Copies the host tree `from` into the run's workspace, over what is there.
    pub(super) async fn put_workspace_files(
        &self,
        spec: &StageSpec,
        from: &Path,
    ) -> Result<(), ExecError> {
        let workspace = self.run_workspace(spec).await?;
        self.put_tree(&workspace.name, from, &spec.workspace, &[])
            .await
    }
}

/// Whether the host workspace has anything to copy (an empty one, or none, needs no copy).
fn has_files(workspace: &Path) -> Result<bool, ExecError> {
    match std::fs::read_dir(workspace) {
        Ok(entries) => Ok(entries.flatten().any(|entry| {
            !NOT_UPLOADED
                .iter()
                .any(|skipped| entry.file_name() == *skipped)
        })),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(ExecError::Backend(format!(
            "cannot read the workspace `{}`: {error}",
            workspace.display()
        ))),
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn refused(what: &str, name: &str, error: &kube::Error) -> ExecError {
    match error {
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            ExecError::Config(format!("the cluster refused {what}: {}", status.message))
        }
        _ => backend(&format!("cannot create {what} ({name})"), error),
    }
}
