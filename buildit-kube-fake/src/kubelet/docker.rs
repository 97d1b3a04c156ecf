//! What the kubelet asks of Docker: containers labelled as this fake's, started, waited for, stopped,
//! killed and removed; volumes; images present or not; commands run inside (probes).

use std::collections::HashMap;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, Mount, MountType,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt as _;

use crate::shared::{INSTANCE_LABEL, POD_UID_LABEL, Shared};

/// What a container is created from.
#[derive(Debug, Default, Clone)]
pub(crate) struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `(docker volume, mount path, read only)`.
    pub volumes: Vec<(String, String, bool)>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// `container:<id>`: the pod sandbox whose network namespace it joins.
    pub network_mode: Option<String>,
    pub hostname: Option<String>,
    /// `hostname:ip` lines for `/etc/hosts` (the sandbox's: Docker refuses them on a container that joins
    /// another's network namespace, and such a container shares the sandbox's `/etc/hosts`).
    pub extra_hosts: Vec<String>,
    pub labels: HashMap<String, String>,
}

/// The labels of everything made for a pod.
pub(crate) fn pod_labels(shared: &Shared, pod_uid: &str) -> HashMap<String, String> {
    HashMap::from([
        (INSTANCE_LABEL.to_owned(), shared.instance.clone()),
        (POD_UID_LABEL.to_owned(), pod_uid.to_owned()),
    ])
}

/// Creates a container; its id.
pub(crate) async fn create(docker: &Docker, plan: ContainerPlan) -> Result<String, String> {
    let mounts = plan
        .volumes
        .iter()
        .map(|(volume, path, read_only)| Mount {
            target: Some(path.clone()),
            source: Some(volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(*read_only),
            ..Mount::default()
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(plan.image),
        entrypoint: plan.entrypoint,
        cmd: plan.cmd,
        env: Some(plan.env),
        working_dir: plan.working_dir,
        hostname: plan.hostname,
        labels: Some(plan.labels),
        host_config: Some(HostConfig {
            network_mode: plan.network_mode,
            mounts: Some(mounts),
            memory: plan.memory_bytes,
            // No swap: a container over its memory limit is killed, as on a node without swap.
            memory_swap: plan.memory_bytes,
            nano_cpus: plan.nano_cpus,
            extra_hosts: (!plan.extra_hosts.is_empty()).then_some(plan.extra_hosts),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptions {
        name: Some(plan.name),
        ..CreateContainerOptions::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .map(|created| created.id)
        .map_err(|error| error.to_string())
}

/// Starts a created container.
pub(crate) async fn start(docker: &Docker, id: &str) -> Result<(), String> {
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|error| error.to_string())
}

/// Waits until the container stops (the engine's answer about exit codes is read by `inspect`).
pub(crate) async fn wait(docker: &Docker, id: &str) {
    let options = WaitContainerOptions {
        condition: "not-running".to_owned(),
    };
    let mut waiting = docker.wait_container(id, Some(options));
    // A non-zero exit comes as an error item: either way the container stopped.
    while waiting.next().await.is_some() {}
}

/// The engine's view of a container.
pub(crate) async fn inspect(docker: &Docker, id: &str) -> Option<ContainerInspectResponse> {
    docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
}

/// SIGTERM, then SIGKILL after `grace_seconds`.
pub(crate) async fn stop(docker: &Docker, id: &str, grace_seconds: i64) {
    let options = StopContainerOptions {
        t: Some(i32::try_from(grace_seconds).unwrap_or(i32::MAX)),
        signal: None,
    };
    // Already stopped or gone is fine.
    let _ = docker.stop_container(id, Some(options)).await;
}

/// SIGKILL now.
pub(crate) async fn kill(docker: &Docker, id: &str) {
    let options = KillContainerOptions {
        signal: "SIGKILL".to_owned(),
    };
    let _ = docker.kill_container(id, Some(options)).await;
}

/// Removes a container, running or not.
pub(crate) async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..RemoveContainerOptions::default()
    };
    let _ = docker.remove_container(id, Some(options)).await;
}

/// The ids of the containers with all these labels (`key=value`).
pub(crate) async fn containers_labelled(docker: &Docker, labels: &[String]) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_owned(), labels.to_vec())])),
        ..ListContainersOptions::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|container| container.id)
        .collect()
}

/// The ids of this fake's stopped containers that mount `volume`.
pub(crate) async fn stopped_containers_using(
    docker: &Docker,
    instance_label: &str,
    volume: &str,
) -> Vec<String> {
    let filters = HashMap::from([
        ("label".to_owned(), vec![instance_label.to_owned()]),
        ("volume".to_owned(), vec![volume.to_owned()]),
        (
            "status".to_owned(),
            vec!["exited".to_owned(), "created".to_owned(), "dead".to_owned()],
        ),
    ]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..ListContainersOptions::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|container| container.id)
        .collect()
}

/// The image's id, if the engine has it.
pub(crate) async fn image_id(docker: &Docker, image: &str) -> Option<String> {
    docker
        .inspect_image(image)
        .await
        .ok()
        .and_then(|image| image.id)
}

/// Creates a named volume labelled as this fake's.
pub(crate) async fn create_volume(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<(), String> {
    let request = bollard::models::VolumeCreateRequest {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..bollard::models::VolumeCreateRequest::default()
    };
    docker
        .create_volume(request)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Removes a volume; whether it is gone (a volume still in use stays).
pub(crate) async fn remove_volume(docker: &Docker, name: &str) -> bool {
    match docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(()) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => true,
        Err(_) => false,
    }
}

/// The names of the volumes with this fake's label.
pub(crate) async fn volumes_labelled(docker: &Docker, label: &str) -> Vec<String> {
    let options = bollard::query_parameters::ListVolumesOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![label.to_owned()],
        )])),
    };
    docker
        .list_volumes(Some(options))
        .await
        .ok()
        .and_then(|listing| listing.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|volume| volume.name)
        .collect()
}

/// Runs `command` in a running container; its exit code (`None`: it could not be run).
pub(crate) async fn exec(docker: &Docker, id: &str, command: &[String]) -> Option<i64> {
    let options = CreateExecOptions {
        cmd: Some(command.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..CreateExecOptions::default()
    };
    let created = docker.create_exec(id, options).await.ok()?;
    if let Ok(StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&created.id, None).await
    {
        // Drain the output: the command has ended when it closes.
        while output.next().await.is_some() {}
    }
    docker.inspect_exec(&created.id).await.ok()?.exit_code
}
