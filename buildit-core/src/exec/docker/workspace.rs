//! A run's workspace on the engine: the host directory bound in, or a volume filled once with a copy of it.

use bollard::models::{ContainerCreateBody, HostConfig};

use super::engine::{DockerExecutor, RunWorkspace, backend, unique_name};
use super::labels::RUN_LABEL;
use crate::exec::executor::{ExecError, StageSpec};

/// Top-level directories of the host workspace that are not copied into a run's volume: BuildIt's own state.
const NOT_UPLOADED: &[&str] = &[".buildit"];

impl DockerExecutor {
    /// What an attempt's container mounts at the workspace path: the host directory (`--bind`), or the run's
    /// volume.
    pub(super) async fn workspace_source(&self, spec: &StageSpec) -> Result<String, ExecError> {
        if self.options.bind_workspace {
            Ok(spec.workspace.display().to_string())
        } else {
            Ok(self.run_workspace(spec).await?.volume)
        }
    }

    /// The run's workspace volume, created (and filled with the host workspace) by the first stage that needs it.
    pub(super) async fn run_workspace(&self, spec: &StageSpec) -> Result<RunWorkspace, ExecError> {
        let run = spec.labels.get(RUN_LABEL).map_or("", String::as_str);
        self.workspaces
            .get_or_make(run, || self.create_workspace(spec))
            .await
    }

    async fn create_workspace(&self, spec: &StageSpec) -> Result<RunWorkspace, ExecError> {
        let Some(image) = &spec.image else {
            return Err(ExecError::Backend(
                "a workspace volume needs a container stage".to_owned(),
            ));
        };
        self.ensure_image(image, spec.notes.as_ref()).await?;
        let mut labels = self.attempt_labels(spec);
        labels.remove("buildit.stage");
        labels.remove("buildit.attempt");
        labels.insert("buildit.role".to_owned(), "workspace".to_owned());
        let volume = format!("{}-workspace", unique_name());
        self.docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels.clone()),
                ..bollard::models::VolumeCreateRequest::default()
            })
            .await
            .map_err(|error| backend("cannot create the run's workspace volume", error))?;
        let workspace = spec.workspace.display().to_string();
        let holder = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(image.clone()),
                    // Never started: it only gives the archive API a way into the volume.
                    cmd: Some(vec!["true".to_owned()]),
                    entrypoint: Some(Vec::new()),
                    labels: Some(labels),
                    host_config: Some(HostConfig {
                        binds: Some(vec![format!("{volume}:{workspace}")]),
                        ..HostConfig::default()
                    }),
                    ..ContainerCreateBody::default()
                },
            )
            .await;
        let holder = match holder {
            Ok(created) => created.id,
            Err(error) => {
                self.remove_volume(&volume).await;
                return Err(backend("cannot create the run's workspace volume", error));
            }
        };
        let created = RunWorkspace { volume, holder };
        if let Err(error) = self
            .upload_tree(
                &created.holder,
                &spec.workspace,
                &spec.workspace,
                NOT_UPLOADED,
            )
            .await
        {
            self.remove_workspace(&created).await;
            return Err(ExecError::Backend(format!(
                "cannot copy the workspace into its volume: {error}"
            )));
        }
        Ok(created)
    }

    /// Removes the volume and its holder.
    pub(super) async fn remove_workspace(&self, workspace: &RunWorkspace) {
        self.remove(&workspace.holder).await;
        self.remove_volume(&workspace.volume).await;
    }
}
