//! How to reach the cluster and what the executor's pods get: from `executor "kubernetes"` in the system
//! configuration, the kubeconfig (`KUBECONFIG`, as kubectl finds it) or the pod's own service account.

use std::path::PathBuf;
use std::time::Duration;

use crate::exec::executor::ExecError;
pub use crate::system::WorkspaceAccess;

/// The Kubernetes executor's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KubernetesOptions {
    /// Namespace of the stages' objects; `None`: the kubeconfig context's, else `default`.
    pub namespace: Option<String>,
    /// The kubeconfig file; `None`: `KUBECONFIG`, else `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current one.
    pub context: Option<String>,
    /// The service account of stage pods; `None`: the namespace's default, with no API token mounted.
    pub service_account: Option<String>,
    /// Storage class of a run's workspace claim; `None`: the cluster's default.
    pub storage_class: Option<String>,
    /// The size a run's workspace claim asks for (a Kubernetes quantity: `10Gi`).
    pub workspace_size: String,
    /// How the stages of a run share its workspace claim.
    pub workspace_access: WorkspaceAccess,
    /// The image of the pod that holds a run's workspace and moves files in and out of it (it needs `sh` and
    /// `tar`); `None`: the image of the run's first stage on the cluster.
    pub helper_image: Option<String>,
    /// An image with `sh` and `git` that checks a run's git commit out into its workspace from within the
    /// cluster; `None`: BuildIt checks it out where it runs and copies it in.
    pub git_image: Option<String>,
    /// Secrets for pulling stage images.
    pub image_pull_secrets: Vec<String>,
    /// How long an image may fail to pull (`ErrImagePull`, `ImagePullBackOff`) before the attempt fails.
    pub image_pull_grace: Duration,
    /// How long a pod may stay unschedulable before the attempt fails (with the scheduler's reason).
    pub unschedulable_limit: Duration,
    /// How long the cluster keeps a finished Job the runner did not delete (its process died).
    pub finished_job_ttl: Duration,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            kubeconfig: None,
            context: None,
            service_account: None,
            storage_class: None,
            workspace_size: "10Gi".to_owned(),
            workspace_access: WorkspaceAccess::ReadWriteOnce,
            helper_image: None,
            git_image: None,
            image_pull_secrets: Vec::new(),
            image_pull_grace: Duration::from_secs(30),
            unschedulable_limit: Duration::from_secs(300),
            finished_job_ttl: Duration::from_secs(600),
        }
    }
}

/// A client for the cluster the options name, and the namespace to use.
pub(super) async fn connect(
    options: &KubernetesOptions,
) -> Result<(kube::Client, String), ExecError> {
    let kubeconfig_options = kube::config::KubeConfigOptions {
        context: options.context.clone(),
        ..kube::config::KubeConfigOptions::default()
    };
    let config = match (&options.kubeconfig, &options.context) {
        (Some(path), _) => match kube::config::Kubeconfig::read_from(path) {
            Ok(file) => kube::Config::from_custom_kubeconfig(file, &kubeconfig_options)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(format!("cannot read `{}`: {error}", path.display())),
        },
        (None, Some(_)) => kube::Config::from_kubeconfig(&kubeconfig_options)
            .await
            .map_err(|error| error.to_string()),
        (None, None) => kube::Config::infer()
            .await
            .map_err(|error| error.to_string()),
    }
    .map_err(|why| ExecError::Backend(format!("cannot find the Kubernetes cluster: {why}")))?;
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|error| {
        ExecError::Backend(format!("cannot reach the Kubernetes cluster: {error}"))
    })?;
    Ok((client, namespace))
}
