//! The connection to a Docker Engine and what every part of the executor does through it: names, labels,
//! removing containers and volumes, errors.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::RemoveContainerOptionsBuilder;

use super::labels::owner_labels;
use crate::exec::executor::{ExecError, StageSpec};
use crate::exec::per_run::PerRun;
use crate::owner::LeftoverOwner;
use crate::system::PullPolicy;

/// Where and how to reach a Docker Engine.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    /// `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; `None`: `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// When images are pulled.
    pub pull: PullPolicy,
    /// Network for stage containers (`--network`); `None`: the engine's default.
    pub network: Option<String>,
    /// Mount the host workspace into stage containers instead of giving each run a workspace volume: no copy,
    /// but stages write into the host directory (as the container's user, often root).
    pub bind_workspace: bool,
}

/// Runs stages of the `docker` executor kind in Docker containers.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    pub(super) docker: Docker,
    pub(super) options: DockerOptions,
    /// Whose the containers, networks and volumes it creates are: their labels say so, for sweeps.
    pub(super) owner: LeftoverOwner,
    pub(super) host: String,
    /// Images seen on the engine: with `if-not-present`, each is inspected once per executor, not per stage.
    pub(super) present: Arc<Mutex<HashSet<String>>>,
    /// Each run's workspace volume, created when its first container stage needs it.
    pub(super) workspaces: Arc<PerRun<RunWorkspace>>,
}

/// What a container stage's workspace is, on the engine.
#[derive(Debug, Clone)]
pub(super) struct RunWorkspace {
    /// The volume mounted at the workspace path.
    pub(super) volume: String,
    /// A container that is never started and holds the volume, for copying files in and out.
    pub(super) holder: String,
}

/// A name no other BuildIt process or run uses: `buildit-<time>-<pid>`.
pub(super) fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("buildit-{nanos:x}-{}", std::process::id())
}

pub(super) fn backend(context: &str, error: impl std::fmt::Display) -> ExecError {
    ExecError::Backend(format!("{context}: {error}"))
}

pub(super) fn is_not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerExecutor {
    /// Connects to the engine, agrees on an API version (older engines answer only to theirs) and checks that
    /// it answers: an unreachable engine is one clear error here, never a hang later.
    pub async fn connect(options: DockerOptions) -> Result<Self, ExecError> {
        let host = options
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |error: &dyn std::fmt::Display| {
            backend(&format!("cannot reach Docker at `{host}`"), error)
        };
        let docker = Docker::connect_with_host(&host).map_err(|e| unreachable(&e))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable(&"no answer within 10 s"))?
            .map_err(|e| unreachable(&e))?;
        tokio::time::timeout(Duration::from_secs(10), docker.ping())
            .await
            .map_err(|_| unreachable(&"no answer within 10 s"))?
            .map_err(|e| unreachable(&e))?;
        Ok(Self {
            docker,
            options,
            owner: LeftoverOwner::this_process(),
            host,
            present: Arc::default(),
            workspaces: Arc::default(),
        })
    }

    /// The engine's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same executor, creating what it creates for `owner` (a fleet's worker gives its id, and the lease
    /// of the job it runs): its sweeps judge leftovers against that owner.
    #[must_use]
    pub fn with_owner(mut self, owner: LeftoverOwner) -> Self {
        self.owner = owner;
        self
    }

    /// Whose what it creates is.
    pub fn owner(&self) -> &LeftoverOwner {
        &self.owner
    }

    /// Removes a volume; whether it is gone.
    pub(super) async fn remove_volume(&self, name: &str) -> bool {
        self.docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
            .is_ok()
    }

    /// Removes a container, running or not, with its anonymous volumes.
    pub(super) async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        // Already gone is fine: removal is idempotent.
        let _ = self.docker.remove_container(id, Some(options)).await;
    }

    /// Labels of everything an attempt creates: its container, its services and their network.
    pub(super) fn attempt_labels(&self, spec: &StageSpec) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        labels.extend(owner_labels(&self.owner));
        labels
    }

    /// What the engine says of the container's state, when it answers.
    pub(super) async fn container_state(
        &self,
        id: &str,
    ) -> Option<bollard::models::ContainerState> {
        self.docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|details| details.state)
    }
}
