//! One executor for a whole run: stages with an `image` go to Docker, the others to the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "docker")]
use super::docker::{DockerExecutor, DockerHandle};
use super::executor::{ExecError, Executor, ExitStatus, LogStream, StageSpec, StageStatus};
use super::local::{LocalExecutor, LocalHandle};

/// Sends each attempt to the executor its spec asks for.
#[derive(Debug, Clone, Default)]
pub struct AnyExecutor {
    local: LocalExecutor,
    #[cfg(feature = "docker")]
    docker: Option<DockerExecutor>,
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
            local: LocalExecutor::new(),
            docker: Some(docker),
        }
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
}

// The Docker executor's futures are large (its API client's state machines): boxed, they do not make every host
// stage's futures as large, which the scheduler moves and copies for each stage.
impl Executor for AnyExecutor {
    type Handle = AnyHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<AnyHandle, ExecError> {
        if spec.image.is_none() {
            if let Some(service) = spec.services.first() {
                return Err(ExecError::Backend(format!(
                    "service `{}` needs a container stage, and this stage runs on the host (give it an `image`)",
                    service.name
                )));
            }
            return self.local.spawn(spec).await.map(AnyHandle::Local);
        }
        #[cfg(feature = "docker")]
        if let Some(docker) = &self.docker {
            return Box::pin(docker.spawn(spec)).await.map(AnyHandle::Docker);
        }
        Err(ExecError::Backend(
            "this stage has an `image`, and no Docker executor is configured".to_owned(),
        ))
    }

    async fn logs(&self, handle: &AnyHandle) -> Result<LogStream, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.logs(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.logs(handle)).await,
        }
    }

    async fn status(&self, handle: &AnyHandle) -> Result<StageStatus, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.status(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.status(handle)).await,
        }
    }

    async fn wait(&self, handle: &AnyHandle) -> Result<ExitStatus, ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.wait(handle).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.wait(handle)).await,
        }
    }

    async fn cancel(&self, handle: &AnyHandle, grace: Duration) -> Result<(), ExecError> {
        match handle {
            AnyHandle::Local(handle) => self.local.cancel(handle, grace).await,
            #[cfg(feature = "docker")]
            AnyHandle::Docker(handle) => Box::pin(self.docker(handle)?.cancel(handle, grace)).await,
        }
    }

    fn workspace_on_host(&self, spec: &StageSpec) -> bool {
        #[cfg(feature = "docker")]
        if let Some(docker) = self.docker_for(spec) {
            return docker.workspace_on_host(spec);
        }
        self.local.workspace_on_host(spec)
    }

    async fn put_files(&self, spec: &StageSpec, from: &Path) -> Result<(), ExecError> {
        #[cfg(feature = "docker")]
        if let Some(docker) = self.docker_for(spec) {
            return Box::pin(docker.put_files(spec, from)).await;
        }
        self.local.put_files(spec, from).await
    }

    async fn get_files(
        &self,
        spec: &StageSpec,
        paths: &[PathBuf],
        into: &Path,
    ) -> Result<(), ExecError> {
        #[cfg(feature = "docker")]
        if let Some(docker) = self.docker_for(spec) {
            return Box::pin(docker.get_files(spec, paths, into)).await;
        }
        self.local.get_files(spec, paths, into).await
    }

    async fn release_run(&self, run_id: &str) -> Result<(), ExecError> {
        #[cfg(feature = "docker")]
        if let Some(docker) = &self.docker {
            Box::pin(docker.release_run(run_id)).await?;
        }
        self.local.release_run(run_id).await
    }
}

#[cfg(feature = "docker")]
impl AnyExecutor {
    /// The Docker executor, for a stage with an image.
    fn docker_for(&self, spec: &StageSpec) -> Option<&DockerExecutor> {
        spec.image.as_ref().and(self.docker.as_ref())
    }

    fn docker(&self, _handle: &DockerHandle) -> Result<&DockerExecutor, ExecError> {
        self.docker
            .as_ref()
            .ok_or_else(|| ExecError::Backend("no Docker executor is configured".to_owned()))
    }
}
