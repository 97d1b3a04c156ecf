//! One executor for a whole run: each stage goes to the executor of its kind (`local`: the host; `docker`;
//! `kubernetes`).

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "docker")]
use super::docker::{DockerExecutor, DockerHandle};
use super::executor::{ExecError, Executor, ExitStatus, LogStream, StageSpec, StageStatus};
#[cfg(feature = "kubernetes")]
use super::kubernetes::{KubernetesExecutor, KubernetesHandle};
use super::local::{LocalExecutor, LocalHandle};
use super::sweep::{SweepReport, SweepScope};
use crate::config::ExecutorKind;

/// Sends each attempt to the executor of its spec's kind ([`StageSpec::executor`]); a kind it holds no
/// executor for fails the attempt with [`ExecError::NoExecutor`].
#[derive(Debug, Clone, Default)]
pub struct AnyExecutor {
    local: LocalExecutor,
    #[cfg(feature = "docker")]
    docker: Option<DockerExecutor>,
    #[cfg(feature = "kubernetes")]
    kubernetes: Option<KubernetesExecutor>,
}

impl AnyExecutor {
    /// Host stages only.
    pub fn local() -> Self {
        Self::default()
    }

    /// Host stages, and container stages on `docker`.
    #[cfg(feature = "docker")]
    pub fn with_docker(docker: DockerExecutor) -> Self {
        Self {
            docker: Some(docker),
            ..Self::default()
        }
    }

    /// The same executor, with Kubernetes stages on `kubernetes`.
    #[cfg(feature = "kubernetes")]
    #[must_use]
    pub fn with_kubernetes(mut self, kubernetes: KubernetesExecutor) -> Self {
        self.kubernetes = Some(kubernetes);
        self
    }
}

#[cfg(feature = "docker")]
impl AnyExecutor {
    /// The Docker executor, when there is one.
    pub fn docker_executor(&self) -> Option<&DockerExecutor> {
        self.docker.as_ref()
    }
}

/// An attempt of either kind.
#[derive(Debug)]
pub enum AnyHandle {
    /// On the host.
    Local(LocalHandle),
    /// In a container.
    #[cfg(feature = "docker")]
    Docker(DockerHandle),
    /// In a pod.
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubernetesHandle),
}

// The Docker executor's futures are large (its API client's state machines): boxed, they do not make every host
// stage's futures as large, which the scheduler moves and copies for each stage.
impl Executor for AnyExecutor {
    type Handle = AnyHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<AnyHandle, ExecError> {
        match self.route(spec.executor)? {
            Route::Local(local) => {
                if let Some(service) = spec.services.first() {
                    return Err(ExecError::Backend(format!(
                        "service `{}` needs a container stage, and this stage runs on the host (give it an `image`)",
                        service.name
                    )));
                }
                local.spawn(spec).await.map(AnyHandle::Local)
            }
            #[cfg(feature = "docker")]
            Route::Docker(docker) => Box::pin(docker.spawn(spec)).await.map(AnyHandle::Docker),
            #[cfg(feature = "kubernetes")]
            Route::Kubernetes(kubernetes) => Box::pin(kubernetes.spawn(spec))
                .await
                .map(AnyHandle::Kubernetes),
        }
    }

    async fn logs(&self, handle: &AnyHandle) -> Result<LogStream, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.logs(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.logs(handle)).await,
            #[cfg(feature = "kubernetes")]
            AnyHandle::Kubernetes(handle) => Box::pin(self.kubernetes()?.logs(handle)).await,
        }
    }

    async fn status(&self, handle: &AnyHandle) -> Result<StageStatus, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.status(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.status(handle)).await,
            #[cfg(feature = "kubernetes")]
            AnyHandle::Kubernetes(handle) => Box::pin(self.kubernetes()?.status(handle)).await,
        }
    }

    async fn wait(&self, handle: &AnyHandle) -> Result<ExitStatus, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.wait(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.wait(handle)).await,
            #[cfg(feature = "kubernetes")]
            AnyHandle::Kubernetes(handle) => Box::pin(self.kubernetes()?.wait(handle)).await,
        }
    }

    async fn cancel(&self, handle: &AnyHandle, grace: Duration) -> Result<(), ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.cancel(handle, grace).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.cancel(handle, grace)).await,
            #[cfg(feature = "kubernetes")]
            AnyHandle::Kubernetes(handle) => {
                Box::pin(self.kubernetes()?.cancel(handle, grace)).await
            }
        }
    }

    fn workspace_on_host(&self, spec: &StageSpec) -> bool {
        match self.route(spec.executor) {
            #[cfg(feature = "docker")]
            Ok(Route::Docker(docker)) => docker.workspace_on_host(spec),
            #[cfg(feature = "kubernetes")]
            Ok(Route::Kubernetes(kubernetes)) => kubernetes.workspace_on_host(spec),
            // A kind without an executor fails at `spawn`; nothing is copied for it before.
            Ok(Route::Local(local)) => local.workspace_on_host(spec),
            Err(_) => self.local.workspace_on_host(spec),
        }
    }

    async fn put_files(&self, spec: &StageSpec, from: &Path) -> Result<(), ExecError> {
        match self.route(spec.executor)? {
            Route::Local(local) => local.put_files(spec, from).await,
            #[cfg(feature = "docker")]
            Route::Docker(docker) => Box::pin(docker.put_files(spec, from)).await,
            #[cfg(feature = "kubernetes")]
            Route::Kubernetes(kubernetes) => Box::pin(kubernetes.put_files(spec, from)).await,
        }
    }

    async fn get_files(
        &self,
        spec: &StageSpec,
        paths: &[PathBuf],
        into: &Path,
    ) -> Result<(), ExecError> {
        match self.route(spec.executor)? {
            Route::Local(local) => local.get_files(spec, paths, into).await,
            #[cfg(feature = "docker")]
            Route::Docker(docker) => Box::pin(docker.get_files(spec, paths, into)).await,
            #[cfg(feature = "kubernetes")]
            Route::Kubernetes(kubernetes) => {
                Box::pin(kubernetes.get_files(spec, paths, into)).await
            }
        }
    }

    async fn release_run(&self, run_id: &str) -> Result<(), ExecError> {
        // Each backend releases the run even when another could not: the first failure is reported.
        #[cfg_attr(
            not(any(feature = "docker", feature = "kubernetes")),
            expect(unused_mut, reason = "only container executors add to it")
        )]
        let mut released = self.local.release_run(run_id).await;
        #[cfg(feature = "docker")]
        if let Some(docker) = &self.docker {
            let docker = Box::pin(docker.release_run(run_id)).await;
            released = released.and(docker);
        }
        #[cfg(feature = "kubernetes")]
        if let Some(kubernetes) = &self.kubernetes {
            let kubernetes = Box::pin(kubernetes.release_run(run_id)).await;
            released = released.and(kubernetes);
        }
        released
    }

    async fn sweep(&self, scope: &SweepScope) -> Result<SweepReport, ExecError> {
        let report = self.local.sweep(scope).await?;
        #[cfg(feature = "docker")]
        let report = {
            let mut report = report;
            if let Some(docker) = &self.docker {
                report.absorb(Box::pin(docker.sweep(scope)).await?);
            }
            report
        };
        #[cfg(feature = "kubernetes")]
        let report = {
            let mut report = report;
            if let Some(kubernetes) = &self.kubernetes {
                report.absorb(Box::pin(kubernetes.sweep(scope)).await?);
            }
            report
        };
        Ok(report)
    }
}

/// The executor an attempt goes to.
enum Route<'a> {
    /// The host.
    Local(&'a LocalExecutor),
    /// A Docker Engine.
    #[cfg(feature = "docker")]
    Docker(&'a DockerExecutor),
    /// A Kubernetes cluster.
    #[cfg(feature = "kubernetes")]
    Kubernetes(&'a KubernetesExecutor),
}

impl AnyExecutor {
    /// Where a stage of `kind` runs, or why it cannot run here.
    fn route(&self, kind: ExecutorKind) -> Result<Route<'_>, ExecError> {
        match kind {
            ExecutorKind::Local => Ok(Route::Local(&self.local)),
            #[cfg(feature = "docker")]
            ExecutorKind::Docker => {
                self.docker
                    .as_ref()
                    .map(Route::Docker)
                    .ok_or_else(|| ExecError::NoExecutor {
                        kind,
                        why: "no Docker Engine is connected".to_owned(),
                    })
            }
            #[cfg(not(feature = "docker"))]
            ExecutorKind::Docker => Err(ExecError::NoExecutor {
                kind,
                why: "this build of BuildIt has no Docker executor (the `docker` feature)"
                    .to_owned(),
            }),
            #[cfg(feature = "kubernetes")]
            ExecutorKind::Kubernetes => {
                self.kubernetes
                    .as_ref()
                    .map(Route::Kubernetes)
                    .ok_or_else(|| ExecError::NoExecutor {
                        kind,
                        why: "no Kubernetes cluster is connected".to_owned(),
                    })
            }
            #[cfg(not(feature = "kubernetes"))]
            ExecutorKind::Kubernetes => Err(ExecError::NoExecutor {
                kind,
                why: "this build of BuildIt has no Kubernetes executor (the `kubernetes` feature)"
                    .to_owned(),
            }),
        }
    }
}

#[cfg(feature = "docker")]
impl AnyExecutor {
    fn docker(&self, _handle: &DockerHandle) -> Result<&DockerExecutor, ExecError> {
        self.docker.as_ref().ok_or_else(|| ExecError::NoExecutor {
            kind: ExecutorKind::Docker,
            why: "no Docker Engine is connected".to_owned(),
        })
    }
}

#[cfg(feature = "kubernetes")]
impl AnyExecutor {
    /// The Kubernetes executor, when there is one.
    pub fn kubernetes_executor(&self) -> Option<&KubernetesExecutor> {
        self.kubernetes.as_ref()
    }

    fn kubernetes(&self) -> Result<&KubernetesExecutor, ExecError> {
        self.kubernetes
            .as_ref()
            .ok_or_else(|| ExecError::NoExecutor {
                kind: ExecutorKind::Kubernetes,
                why: "no Kubernetes cluster is connected".to_owned(),
            })
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::exec::spec::{RunIdentity, stage_spec};
    use crate::{Plan, RunContext, parse_pipeline};

    /// Each stage's spec, by instance name.
    fn specs(source: &str, workspace: &Path) -> Vec<(String, StageSpec)> {
        let pipeline = parse_pipeline(source, "buildit.kdl").expect("a valid pipeline");
        let plan = Plan::build(&pipeline, &RunContext::default()).expect("a plan");
        let run = RunIdentity::new("route-test", 1, workspace);
        plan.order()
            .map(|stage| {
                let spec = stage_spec(&plan, stage, &run, 1).expect("a spec");
                (stage.name().to_owned(), spec)
            })
            .collect()
    }

    #[tokio::test]
    async fn stages_go_to_the_executor_of_their_kind() {
        let workspace = tempfile::tempdir().expect("a temporary directory");
        let specs = specs(
            r#"
pipeline "routes"
defaults { image "buildit-test/busybox:latest"; }
stage "container" { run "true"; }
stage "host" { executor "local"; run "true"; }
stage "cluster" { executor "kubernetes"; run "true"; }
"#,
            workspace.path(),
        );
        let kinds: Vec<(&str, ExecutorKind, bool)> = specs
            .iter()
            .map(|(name, spec)| (name.as_str(), spec.executor, spec.image.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("container", ExecutorKind::Docker, true),
                ("host", ExecutorKind::Local, false),
                ("cluster", ExecutorKind::Kubernetes, true),
            ]
        );

        let executor = AnyExecutor::local();
        for (name, spec) in specs {
            let result = executor.spawn(spec).await;
            match name.as_str() {
                "host" => {
                    let handle = result.expect("a host stage starts");
                    let status = executor.wait(&handle).await.expect("it ends");
                    assert!(status.success(), "{status:?}");
                }
                "container" => match result {
                    Err(ExecError::NoExecutor { kind, why }) => {
                        assert_eq!(kind, ExecutorKind::Docker);
                        assert!(why.contains("no Docker"), "{why}");
                    }
                    other => panic!("a docker stage ran without Docker: {other:?}"),
                },
                _ => match result {
                    Err(error @ ExecError::NoExecutor { .. }) => assert!(
                        error
                            .to_string()
                            .starts_with("this stage runs on the `kubernetes` executor, and "),
                        "{error}"
                    ),
                    other => panic!("a kubernetes stage ran: {other:?}"),
                },
            }
        }
    }

    #[tokio::test]
    async fn the_kind_decides_not_the_image() {
        let workspace = tempfile::tempdir().expect("a temporary directory");
        // An image on a spec of the `local` kind does not make it a container stage.
        let mut spec = StageSpec::new(vec!["echo here".to_owned()], workspace.path());
        spec.image = Some("buildit-test/busybox:latest".to_owned());
        let executor = AnyExecutor::local();
        assert!(executor.workspace_on_host(&spec));
        let handle = executor.spawn(spec).await.expect("it runs on the host");
        assert!(matches!(handle, AnyHandle::Local(_)));
        assert!(executor.wait(&handle).await.expect("it ends").success());

        // Executors without leftovers have nothing to sweep.
        let report = executor
            .sweep(&SweepScope::run("route-test"))
            .await
            .expect("a sweep");
        assert!(report.is_empty(), "{report:?}");
    }
}
