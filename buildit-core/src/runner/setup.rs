//! What a run takes from the system configuration: its secrets, the environment it scrubs, where artifacts and
//! caches go, and the executors its stages need.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::RunnerError;
use crate::config::ExecutorKind;
use crate::exec::{AnyExecutor, ArtifactStore, CacheStore};
#[cfg(feature = "docker")]
use crate::exec::{DockerExecutor, DockerOptions};
use crate::plan::Plan;
use crate::system::{ArtifactStoreConfig, SecretStoreConfig, SystemConfig};

/// The parts of a run that come from the system configuration and the runner's environment.
#[derive(Debug, Clone, Default)]
pub struct RunSetup {
    /// Secret values by name: those the plan's stages ask for that the secret store has.
    pub secrets: BTreeMap<String, String>,
    /// Host environment variables no stage inherits (the secret store's own variables).
    pub scrub_env: Vec<String>,
    /// Where artifacts go; `None` leaves them where stages wrote them.
    pub artifacts: Option<ArtifactStore>,
    /// Where caches go; `None` disables them.
    pub caches: Option<CacheStore>,
}

impl RunSetup {
    /// The setup of a run of `plan` in `workspace`: secrets read from the secret store (the environment through
    /// `env`, whose variable names are `env_names`), caches under the workspace's `.buildit/cache`.
    pub fn from_system(
        plan: &Plan,
        system: &SystemConfig,
        workspace: &Path,
        env: impl Fn(&str) -> Option<String>,
        env_names: impl IntoIterator<Item = String>,
    ) -> Result<Self, RunnerError> {
        let names: Vec<&str> = plan
            .order()
            .filter(|stage| !stage.is_skipped())
            .flat_map(|stage| {
                plan.definition(stage)
                    .secrets
                    .iter()
                    .map(|secret| secret.value.as_str())
            })
            .collect();
        let secrets = system.load_secrets(names, env)?;
        let scrub_env = match &system.secrets {
            SecretStoreConfig::Env { prefix } if !prefix.is_empty() => env_names
                .into_iter()
                .filter(|name| name.starts_with(prefix.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        let uses_artifacts = plan
            .order()
            .any(|stage| !stage.is_skipped() && !plan.definition(stage).artifacts.is_empty());
        let artifacts = match &system.artifacts {
            ArtifactStoreConfig::Filesystem { path } => Some(ArtifactStore::new(path)),
            ArtifactStoreConfig::S3 { .. } if uses_artifacts => {
                return Err(RunnerError::UnsupportedArtifactStore {
                    store: "s3".to_owned(),
                });
            }
            ArtifactStoreConfig::S3 { .. } => None,
        };
        Ok(Self {
            secrets,
            scrub_env,
            artifacts,
            caches: Some(CacheStore::new(workspace.join(".buildit/cache"))),
        })
    }
}

/// Creates the workspace's `.buildit/` (store, caches, artifacts) with a `.gitignore` of its own, so that nothing
/// in it is ever committed, whether or not the repository ignores it. An existing directory is left as it is.
pub fn create_data_dir(workspace: &Path) {
    let dir = workspace.join(".buildit");
    // `create_dir` fails when it exists: only the run that creates it writes the file. Failures surface later,
    // where the store or cache is written, with a better message.
    if std::fs::create_dir(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join(".gitignore"),
            "# Created by BuildIt: its store, caches and artifacts are never committed.\n*\n",
        );
    }
}

/// The first stage that will run on `kind`.
fn needs(plan: &Plan, kind: ExecutorKind) -> Option<&crate::plan::PlannedStage> {
    plan.order()
        .find(|stage| !stage.is_skipped() && stage.executor() == kind)
}

/// Refuses a plan with a stage that will run on an executor this build of BuildIt cannot run (Kubernetes without
/// the `kubernetes` feature), before anything is prepared for it.
pub fn check_executors(plan: &Plan) -> Result<(), RunnerError> {
    match needs(plan, ExecutorKind::Kubernetes) {
        Some(stage) if !cfg!(feature = "kubernetes") => Err(RunnerError::UnsupportedExecutor {
            stage: stage.name().to_owned(),
            executor: "kubernetes".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// How to reach the cluster, from the system configuration's `executor "kubernetes"`.
#[cfg(feature = "kubernetes")]
pub fn kubernetes_options(system: &SystemConfig) -> crate::exec::KubernetesOptions {
    use crate::system::ExecutorConfig;
    let mut options = crate::exec::KubernetesOptions::default();
    if let Some(ExecutorConfig::Kubernetes {
        namespace,
        kubeconfig,
        context,
        service_account,
        storage_class,
        workspace_size,
        workspace_access,
        helper_image,
        git_image,
        image_pull_secrets,
        image_pull_grace,
        unschedulable_limit,
    }) = system.executor(ExecutorKind::Kubernetes)
    {
        options.namespace.clone_from(namespace);
        options.kubeconfig.clone_from(kubeconfig);
        options.context.clone_from(context);
        options.service_account.clone_from(service_account);
        options.storage_class.clone_from(storage_class);
        if let Some(size) = workspace_size {
            options.workspace_size.clone_from(size);
        }
        options.workspace_access = *workspace_access;
        options.helper_image.clone_from(helper_image);
        options.git_image.clone_from(git_image);
        options.image_pull_secrets.clone_from(image_pull_secrets);
        if let Some(grace) = image_pull_grace {
            options.image_pull_grace = *grace;
        }
        if let Some(limit) = unschedulable_limit {
            options.unschedulable_limit = *limit;
        }
    }
    options
}

/// How to reach Docker, from the system configuration's `executor "docker"`.
#[cfg(feature = "docker")]
pub fn docker_options(system: &SystemConfig) -> DockerOptions {
    use crate::system::ExecutorConfig;
    match system.executor(ExecutorKind::Docker) {
        Some(ExecutorConfig::Docker {
            host,
            pull,
            network,
        }) => DockerOptions {
            host: host.clone(),
            pull: *pull,
            network: network.clone(),
            ..DockerOptions::default()
        },
        _ => DockerOptions::default(),
    }
}

/// The executor for the stages `plan` runs: the host, and Docker and Kubernetes when a stage needs them
/// (connected, and swept of what killed runs left behind). `docker` adjusts the options the system configuration gives. Returns the
/// executor and, when the sweep failed, why (the run goes on: it is the last run's leftovers, not this run's).
pub async fn connect_executor(
    plan: &Plan,
    system: &SystemConfig,
    #[cfg(feature = "docker")] docker: impl FnOnce(DockerOptions) -> DockerOptions,
) -> Result<(AnyExecutor, Option<String>), RunnerError> {
    check_executors(plan)?;
    #[cfg_attr(
        not(any(feature = "docker", feature = "kubernetes")),
        expect(unused_mut, reason = "only container executors are added")
    )]
    let mut executor = AnyExecutor::local();
    #[cfg_attr(
        not(any(feature = "docker", feature = "kubernetes")),
        expect(unused_mut, reason = "only container executors are swept")
    )]
    let mut swept = None;
    if let Some(_stage) = needs(plan, ExecutorKind::Docker) {
        #[cfg(feature = "docker")]
        {
            let docker = DockerExecutor::connect(docker(docker_options(system))).await?;
            swept = sweep_leftovers(&docker).await;
            executor = AnyExecutor::with_docker(docker);
        }
        #[cfg(not(feature = "docker"))]
        return Err(RunnerError::UnsupportedExecutor {
            stage: _stage.name().to_owned(),
            executor: "docker".to_owned(),
        });
    }
    #[cfg(feature = "kubernetes")]
    if needs(plan, ExecutorKind::Kubernetes).is_some() {
        let kubernetes =
            crate::exec::KubernetesExecutor::connect(kubernetes_options(system)).await?;
        swept = swept.or(sweep_leftovers(&kubernetes).await);
        executor = executor.with_kubernetes(kubernetes);
    }
    let _ = system;
    Ok((executor, swept))
}

/// Removes what killed runs left on `executor`'s backend; why it could not, if it could not.
#[cfg(any(feature = "docker", feature = "kubernetes"))]
async fn sweep_leftovers(executor: &impl crate::exec::Executor) -> Option<String> {
    crate::exec::Executor::sweep(executor, &crate::exec::SweepScope::leftovers())
        .await
        .err()
        .map(|error| format!("cannot remove leftovers of earlier runs: {error}"))
}
