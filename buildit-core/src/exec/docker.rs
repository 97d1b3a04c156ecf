//! Running stages in containers through the Docker Engine API: one labelled container per attempt, attached
//! before it starts, stopped by `docker stop` semantics, removed when it ends.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, ExecConfig, HostConfig, NetworkCreateRequest,
    NetworkingConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use tokio::sync::{OnceCell, mpsc, watch};

use super::attempt::{ExitWatch, OutputOnce};
use super::executor::{
    ExecError, Executor, ExitStatus, LogChunk, LogStream, NoteSender, ReadyCheck, ServiceSpec,
    StageSpec, StageStatus,
};
use crate::events::LogStreamKind;
use crate::store::RunOwner;
use crate::system::PullPolicy;

/// Label every BuildIt container carries: the run it belongs to.
pub const RUN_LABEL: &str = "buildit.run";
/// Label naming the process that created a container (`host/pid`): a sweep removes what dead owners left.
pub const OWNER_LABEL: &str = "buildit.owner";
/// Where secrets are handed to the container: a file uploaded before start, read and deleted by the shell, so
/// that no secret appears in the container's configuration (`docker inspect`).
const SECRETS_FILE: &str = ".buildit-secrets";
/// How long to wait for an attempt's output after its container ended, before removing it.
const LOG_DRAIN: Duration = Duration::from_secs(10);
/// How long a memory-limited container killed by SIGKILL waits for the engine's `oom` event before the kill
/// counts as a plain one.
const OOM_EVENT_WAIT: Duration = Duration::from_secs(3);

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

/// What a container stage's workspace is, on the engine.
#[derive(Debug, Clone)]
struct RunWorkspace {
    /// The volume mounted at the workspace path.
    volume: String,
    /// A container that is never started and holds the volume, for copying files in and out.
    holder: String,
}

/// Top-level directories of the host workspace that are not copied into a run's volume: BuildIt's own state.
const NOT_UPLOADED: &[&str] = &[".buildit"];

/// Runs stages with an `image` in Docker containers.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    options: DockerOptions,
    owner: String,
    host: String,
    /// Images seen on the engine: with `if-not-present`, each is inspected once per executor, not per stage.
    present: Arc<Mutex<HashSet<String>>>,
    /// Each run's workspace volume, created when its first container stage needs it.
    workspaces: Arc<Mutex<HashMap<String, Arc<OnceCell<RunWorkspace>>>>>,
}

/// A container attempt.
#[derive(Debug)]
pub struct DockerHandle {
    id: String,
    exit: ExitWatch,
    logs: OutputOnce,
    /// Set when `cancel` stops the container: its SIGKILL is then BuildIt's, not the kernel's for memory, and
    /// the exit is not held back waiting for an `oom` event.
    stopping: Arc<AtomicBool>,
}

impl DockerHandle {
    /// The container's id.
    pub fn container_id(&self) -> &str {
        &self.id
    }
}

/// What a sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Containers removed.
    pub containers: Vec<String>,
    /// Networks removed.
    pub networks: Vec<String>,
    /// Workspace volumes removed.
    pub volumes: Vec<String>,
}

/// The services of one attempt: their containers and the network they share with the stage.
#[derive(Debug, Clone, Default)]
struct ServiceGroup {
    network: Option<String>,
    containers: Vec<(String, String)>,
}

/// Lines of a service's log shown when it never became ready.
const SERVICE_LOG_TAIL: &str = "20";

/// Turns the engine's pull messages into log lines: every change of a layer's state, and its byte counts at
/// most every [`PULL_PROGRESS_EVERY`] while it downloads or extracts.
#[derive(Debug, Default)]
struct PullProgress {
    /// Per layer: its last state, and when its byte counts were last shown.
    layers: HashMap<String, (String, tokio::time::Instant)>,
}

/// How often a layer's byte counts are shown while it moves.
const PULL_PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl PullProgress {
    fn line(
        &mut self,
        info: &bollard::models::CreateImageInfo,
        now: tokio::time::Instant,
    ) -> Option<String> {
        let status = info.status.as_deref()?.trim();
        let Some(layer) = info.id.as_deref().filter(|id| !id.is_empty()) else {
            // Whole-image messages: the digest, "Downloaded newer image", "Image is up to date".
            return Some(status.to_owned());
        };
        let counts = info
            .progress_detail
            .as_ref()
            .and_then(|detail| Some((detail.current?, detail.total?)))
            .filter(|(_, total)| *total > 0);
        let (last_status, last_shown) = self
            .layers
            .entry(layer.to_owned())
            .or_insert_with(|| (String::new(), now - PULL_PROGRESS_EVERY));
        let changed = last_status != status;
        if !changed && (counts.is_none() || now.duration_since(*last_shown) < PULL_PROGRESS_EVERY) {
            return None;
        }
        *last_status = status.to_owned();
        *last_shown = now;
        Some(match counts {
            Some((current, total)) => format!(
                "{layer}: {status} {} of {}",
                megabytes(current),
                megabytes(total)
            ),
            None => format!("{layer}: {status}"),
        })
    }
}

fn megabytes(bytes: i64) -> String {
    let tenths = bytes.max(0) / 100_000;
    format!("{}.{} MB", tenths / 10, tenths % 10)
}

/// Whether an image reference names a tag (`alpine:3.20`) or a digest (`alpine@sha256:...`); a registry port
/// (`registry:5000/app`) is not a tag.
fn has_tag_or_digest(image: &str) -> bool {
    image.contains('@')
        || image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// Whether the `buildit.owner` label names a process of this host that is gone.
fn owner_is_dead(labels: &HashMap<String, String>, here: &RunOwner) -> bool {
    labels
        .get(OWNER_LABEL)
        .and_then(|owner| owner.rsplit_once('/'))
        .and_then(|(host, pid)| Some((host.to_owned(), pid.parse::<u32>().ok()?)))
        .is_some_and(|(host, pid)| RunOwner { host, pid }.is_dead_here(here))
}

/// A name no other BuildIt process or run uses: `buildit-<time>-<pid>`.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("buildit-{nanos:x}-{}", std::process::id())
}

/// Whether a sweep removes what carries `labels`: it belongs to `run`, or its owner is a dead process of this
/// host.
fn swept(labels: &HashMap<String, String>, run: Option<&str>, here: &RunOwner) -> bool {
    run.is_some_and(|run| labels.get(RUN_LABEL).map(String::as_str) == Some(run))
        || owner_is_dead(labels, here)
}

fn backend(context: &str, error: impl std::fmt::Display) -> ExecError {
    ExecError::Backend(format!("{context}: {error}"))
}

fn is_not_found(error: &DockerError) -> bool {
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
        let owner = RunOwner::this_process();
        Ok(Self {
            docker,
            options,
            owner: format!("{}/{}", owner.host, owner.pid),
            host,
            present: Arc::default(),
            workspaces: Arc::default(),
        })
    }

    /// The engine's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Makes sure `image` is on the engine, as the pull policy says; a pull reports its progress to `notes`.
    async fn ensure_image(&self, image: &str, notes: Option<&NoteSender>) -> Result<(), ExecError> {
        let known = self.options.pull != PullPolicy::Always
            && self
                .present
                .lock()
                .is_ok_and(|present| present.contains(image));
        if known {
            return Ok(());
        }
        self.pull_if_needed(image, notes).await?;
        if let Ok(mut present) = self.present.lock() {
            present.insert(image.to_owned());
        }
        Ok(())
    }

    async fn pull_if_needed(
        &self,
        image: &str,
        notes: Option<&NoteSender>,
    ) -> Result<(), ExecError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(error) if is_not_found(&error) => false,
            Err(error) => return Err(backend(&format!("cannot inspect image `{image}`"), error)),
        };
        let pull = match self.options.pull {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never if present => false,
            PullPolicy::Never => {
                return Err(ExecError::ImagePull(format!(
                    "image `{image}` is not on the Docker host, and the pull policy is `never`"
                )));
            }
        };
        if !pull {
            return Ok(());
        }
        // Without a tag or digest the engine pulls every tag of the repository; `docker pull` means `latest`.
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        if !has_tag_or_digest(image) {
            options = options.tag("latest");
        }
        let options = options.build();
        let note = |text: String| async move {
            if let Some(notes) = notes {
                notes.send(text).await;
            }
        };
        note(format!("buildit: pulling image `{image}`")).await;
        let started = tokio::time::Instant::now();
        let mut progress = self.docker.create_image(Some(options), None, None);
        let mut layers = PullProgress::default();
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(line) = layers.line(&info, tokio::time::Instant::now()) {
                        note(format!("buildit: {line}")).await;
                    }
                }
                Err(error) => {
                    return Err(ExecError::ImagePull(format!(
                        "cannot pull image `{image}`: {error}"
                    )));
                }
            }
        }
        note(format!(
            "buildit: pulled image `{image}` in {:.1} s",
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(())
    }

    /// Removes the containers of runs whose owner is gone (a killed `buildit`), and, with `run`, every
    /// container of that run. Containers of live runs, and containers that are not BuildIt's, are never touched.
    pub async fn sweep(&self, run: Option<&str>) -> Result<SweepReport, ExecError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![RUN_LABEL.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|error| backend("cannot list containers", error))?;
        let here = RunOwner::this_process();
        let mut report = SweepReport::default();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            if swept(&labels, run, &here) {
                self.remove(&id).await;
                report.containers.push(id);
            }
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|error| backend("cannot list networks", error))?;
        for network in networks {
            let Some(name) = network.name else { continue };
            let labels = network.labels.unwrap_or_default();
            if swept(&labels, run, &here) && self.docker.remove_network(&name).await.is_ok() {
                report.networks.push(name);
            }
        }
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|error| backend("cannot list volumes", error))?;
        for volume in volumes.volumes.unwrap_or_default() {
            // A volume still mounted (by a live run's container) refuses removal: it is left alone.
            if swept(&volume.labels, run, &here) && self.remove_volume(&volume.name).await {
                report.volumes.push(volume.name);
            }
        }
        Ok(report)
    }

    /// The run's workspace volume, created (and filled with the host workspace) by the first stage that needs it.
    async fn run_workspace(&self, spec: &StageSpec) -> Result<RunWorkspace, ExecError> {
        let run = spec.labels.get(RUN_LABEL).cloned().unwrap_or_default();
        let cell = match self.workspaces.lock() {
            Ok(mut workspaces) => Arc::clone(workspaces.entry(run).or_default()),
            Err(_) => return Err(ExecError::Backend("workspace registry poisoned".to_owned())),
        };
        cell.get_or_try_init(|| self.create_workspace(spec))
            .await
            .cloned()
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
            .upload_tree(&created, &spec.workspace, &spec.workspace, NOT_UPLOADED)
            .await
        {
            self.remove_workspace(&created).await;
            return Err(ExecError::Backend(format!(
                "cannot copy the workspace into its volume: {error}"
            )));
        }
        Ok(created)
    }

    /// Copies the host tree `from` into the volume at `to` (a path inside the container).
    async fn upload_tree(
        &self,
        workspace: &RunWorkspace,
        from: &Path,
        to: &Path,
        skip_top: &'static [&'static str],
    ) -> Result<(), String> {
        let (stream, packing) = super::docker_files::pack_tree(from.to_path_buf(), skip_top);
        let options = UploadToContainerOptionsBuilder::new()
            .path(&to.display().to_string())
            .build();
        let uploaded = self
            .docker
            .upload_to_container(
                &workspace.holder,
                Some(options),
                bollard::body_try_stream(stream),
            )
            .await;
        // A packing error cuts the stream short: it is the real cause of a failed (or truncated) upload.
        packing
            .await
            .map_err(|error| format!("packing failed: {error}"))??;
        uploaded.map_err(|error| error.to_string())
    }

    /// Removes a volume; whether it is gone.
    async fn remove_volume(&self, name: &str) -> bool {
        self.docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
            .is_ok()
    }

    async fn remove_workspace(&self, workspace: &RunWorkspace) {
        self.remove(&workspace.holder).await;
        self.remove_volume(&workspace.volume).await;
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        // Already gone is fine: removal is idempotent.
        let _ = self.docker.remove_container(id, Some(options)).await;
    }

    fn create_body(
        &self,
        spec: &StageSpec,
        image: &str,
        network: Option<&str>,
        workspace_source: &str,
    ) -> ContainerCreateBody {
        let labels = self.attempt_labels(spec);
        let env: Vec<String> = spec
            .env
            .iter()
            .filter(|(name, _)| !spec.env_remove.contains(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let mut script = String::new();
        if !spec.secrets.is_empty() {
            // Read, then deleted: the values live only in the shell's environment. An image whose user cannot
            // delete files in `/` keeps the file (readable inside the container only): the log says so.
            script.push_str(&format!(
                ". /{SECRETS_FILE}; rm -f /{SECRETS_FILE} 2>/dev/null || echo \"buildit: warning: cannot delete the secrets file /{SECRETS_FILE} (the image's user cannot write to /); it stays inside this container until it is removed\" >&2\n"
            ));
        }
        script.push_str(&spec.script());
        let workspace = spec.workspace.display().to_string();
        let resources = spec.resources.as_ref();
        ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec![spec.shell.clone(), "-c".to_owned(), script]),
            // The image's entrypoint would wrap the shell; stages run their commands themselves.
            entrypoint: Some(Vec::new()),
            env: Some(env),
            working_dir: Some(spec.workdir.display().to_string()),
            labels: Some(labels),
            tty: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                // An init process as PID 1, so that `docker stop`'s SIGTERM reaches the commands.
                init: Some(true),
                // The workspace (the run's volume, or the host directory) at the same path as on the host:
                // `BUILDIT_WORKSPACE` and paths in logs agree.
                binds: Some(vec![format!("{workspace_source}:{workspace}")]),
                memory: resources
                    .and_then(|r| r.memory_bytes)
                    .and_then(|bytes| i64::try_from(bytes).ok()),
                nano_cpus: resources
                    .and_then(|r| r.cpu_millis)
                    .and_then(|millis| i64::try_from(millis.saturating_mul(1_000_000)).ok()),
                network_mode: network
                    .map(str::to_owned)
                    .or_else(|| self.options.network.clone()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    /// A stage with services sits on their network; it joins the configured `network` too, so that what it
    /// reaches there (a registry, a cache proxy) stays reachable.
    async fn join_configured_network(
        &self,
        id: &str,
        services: &ServiceGroup,
    ) -> Result<(), ExecError> {
        let (Some(configured), Some(_)) = (&self.options.network, &services.network) else {
            return Ok(());
        };
        self.docker
            .connect_network(
                configured,
                bollard::models::NetworkConnectRequest {
                    container: id.to_owned(),
                    ..bollard::models::NetworkConnectRequest::default()
                },
            )
            .await
            .map_err(|error| backend(&format!("cannot join network `{configured}`"), error))
    }

    /// Labels of everything an attempt creates: its container, its services and their network.
    fn attempt_labels(&self, spec: &StageSpec) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        labels.insert(OWNER_LABEL.to_owned(), self.owner.clone());
        labels
    }

    /// Starts the stage's services on a network of their own and waits until each is ready. On failure,
    /// everything started is removed again.
    async fn start_services(&self, spec: &StageSpec) -> Result<ServiceGroup, ExecError> {
        let mut group = ServiceGroup::default();
        let result = self.start_services_into(spec, &mut group).await;
        if let Err(error) = result {
            self.remove_services(&group).await;
            return Err(error);
        }
        Ok(group)
    }

    async fn start_services_into(
        &self,
        spec: &StageSpec,
        group: &mut ServiceGroup,
    ) -> Result<(), ExecError> {
        let labels = self.attempt_labels(spec);
        let network = unique_name();
        self.docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                labels: Some(labels.clone()),
                ..NetworkCreateRequest::default()
            })
            .await
            .map_err(|error| backend("cannot create the services' network", error))?;
        group.network = Some(network.clone());
        for service in &spec.services {
            self.ensure_image(&service.image, spec.notes.as_ref())
                .await?;
            let mut service_labels = labels.clone();
            service_labels.insert("buildit.service".to_owned(), service.name.clone());
            let body = ContainerCreateBody {
                image: Some(service.image.clone()),
                cmd: (!service.command.is_empty()).then(|| service.command.clone()),
                env: Some(
                    service
                        .env
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect(),
                ),
                labels: Some(service_labels),
                host_config: Some(HostConfig {
                    init: Some(true),
                    network_mode: Some(network.clone()),
                    ..HostConfig::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings {
                            aliases: Some(vec![service.name.clone()]),
                            ..EndpointSettings::default()
                        },
                    )])),
                }),
                ..ContainerCreateBody::default()
            };
            let what = format!("service `{}`", service.name);
            let created = self
                .docker
                .create_container(
                    None::<bollard::query_parameters::CreateContainerOptions>,
                    body,
                )
                .await
                .map_err(|error| {
                    backend(
                        &format!("cannot create {what} from `{}`", service.image),
                        error,
                    )
                })?;
            group
                .containers
                .push((service.name.clone(), created.id.clone()));
            self.docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|error| backend(&format!("cannot start {what}"), error))?;
        }
        for (service, (_, id)) in spec.services.iter().zip(group.containers.clone()) {
            self.wait_ready(service, &id).await?;
        }
        Ok(())
    }

    /// Runs the service's `ready` command inside it until it succeeds, or fails with its last log lines.
    async fn wait_ready(&self, service: &ServiceSpec, id: &str) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + service.ready_timeout;
        loop {
            let running = self
                .container_state(id)
                .await
                .and_then(|state| state.running)
                .unwrap_or(false);
            if !running {
                return Err(ExecError::Backend(format!(
                    "service `{}` stopped before it was ready{}",
                    service.name,
                    self.log_tail(id).await
                )));
            }
            // Without a `ready` command, running is ready.
            let Some(ready) = &service.ready else {
                return Ok(());
            };
            // One check may hang (a connection that is accepted and never answered): it gets what is left of
            // the readiness time, never more.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.exec_succeeds(id, ready))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::Backend(format!(
                    "service `{}` was not ready after {} s (`{ready}` kept failing){}",
                    service.name,
                    service.ready_timeout.as_secs(),
                    self.log_tail(id).await
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn exec_succeeds(&self, id: &str, check: &ReadyCheck) -> bool {
        let config = ExecConfig {
            cmd: Some(check.argv()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..ExecConfig::default()
        };
        let Ok(exec) = self.docker.create_exec(id, config).await else {
            return false;
        };
        match self.docker.start_exec(&exec.id, None).await {
            Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) => {
                while output.next().await.is_some() {}
            }
            Ok(bollard::exec::StartExecResults::Detached) => {}
            Err(_) => return false,
        }
        self.docker
            .inspect_exec(&exec.id)
            .await
            .ok()
            .and_then(|inspected| inspected.exit_code)
            == Some(0)
    }

    /// The last lines of a container's output, for error messages.
    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(SERVICE_LOG_TAIL)
            .build();
        let mut logs = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let text = text.trim_end();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its last lines:\n{text}")
        }
    }

    async fn remove_services(&self, group: &ServiceGroup) {
        for (_, id) in &group.containers {
            self.remove(id).await;
        }
        if let Some(network) = &group.network {
            let _ = self.docker.remove_network(network).await;
        }
    }

    async fn upload_secrets(&self, id: &str, spec: &StageSpec) -> Result<(), ExecError> {
        let mut file = String::new();
        for (name, value) in &spec.secrets {
            file.push_str(&format!(
                "export {name}={}\n",
                crate::config::quote_for_shell(value)
            ));
        }
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(file.len() as u64);
        header.set_mode(0o444);
        header.set_cksum();
        archive
            .append_data(&mut header, SECRETS_FILE, file.as_bytes())
            .map_err(|error| backend("cannot pack the stage's secrets", error))?;
        let bytes = archive
            .into_inner()
            .map_err(|error| backend("cannot pack the stage's secrets", error))?;
        let options = UploadToContainerOptionsBuilder::new().path("/").build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(bytes.into()))
            .await
            .map_err(|error| backend("cannot hand the secrets to the container", error))
    }

    async fn start(&self, spec: &StageSpec, image: &str) -> Result<DockerHandle, ExecError> {
        let workspace_source = if self.options.bind_workspace {
            spec.workspace.display().to_string()
        } else {
            self.run_workspace(spec).await?.volume
        };
        let services = if spec.services.is_empty() {
            ServiceGroup::default()
        } else {
            self.start_services(spec).await?
        };
        let body = self.create_body(spec, image, services.network.as_deref(), &workspace_source);
        let created = match self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
        {
            Ok(created) => created,
            Err(error) => {
                self.remove_services(&services).await;
                return Err(backend(
                    &format!("cannot create a container from `{image}`"),
                    error,
                ));
            }
        };
        let id = created.id;
        let started = match self.join_configured_network(&id, &services).await {
            Ok(()) => self.attach_and_start(&id, spec, services.clone()).await,
            Err(error) => Err(error),
        };
        match started {
            Ok(handle) => Ok(handle),
            Err(error) => {
                self.remove(&id).await;
                self.remove_services(&services).await;
                Err(error)
            }
        }
    }

    async fn attach_and_start(
        &self,
        id: &str,
        spec: &StageSpec,
        services: ServiceGroup,
    ) -> Result<DockerHandle, ExecError> {
        if !spec.secrets.is_empty() {
            self.upload_secrets(id, spec).await?;
        }
        // Attached before it starts: no line between start and attach is lost. No replay of earlier output
        // (`logs`): there is none yet, and the engine may send early lines both as replay and as stream.
        let attach = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(attach))
            .await
            .map_err(|error| backend("cannot attach to the container", error))?;
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|error| backend("cannot start the container", error))?;

        let (sender, receiver) = mpsc::channel(64);
        if let Some(echo) = spec.first_echo() {
            let _ = sender.try_send(LogChunk {
                stream: LogStreamKind::Stdout,
                bytes: echo.into_bytes(),
            });
        }
        let (logs_done_sender, mut logs_done) = watch::channel(false);
        let mut output = attached.output;
        tokio::spawn(async move {
            while let Some(frame) = output.next().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(error) => {
                        // A cut connection must not pass for the end of the output.
                        let _ = sender
                            .send(LogChunk {
                                stream: LogStreamKind::Stderr,
                                bytes: format!("\nbuildit: lost the container's output: {error}\n")
                                    .into_bytes(),
                            })
                            .await;
                        break;
                    }
                };
                let (stream, message) = match frame {
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        (LogStreamKind::Stdout, message)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        (LogStreamKind::Stderr, message)
                    }
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                if sender
                    .send(LogChunk {
                        stream,
                        bytes: message.to_vec(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = logs_done_sender.send(true);
        });

        let (exit_sender, exit) = ExitWatch::new();
        let executor = self.clone();
        let container = id.to_owned();
        let memory_limited = spec
            .resources
            .as_ref()
            .is_some_and(|resources| resources.memory_bytes.is_some());
        let stopping = Arc::new(AtomicBool::new(false));
        let stopped_by_us = Arc::clone(&stopping);
        tokio::spawn(async move {
            let result = executor
                .wait_for(&container, memory_limited, &stopped_by_us)
                .await;
            // The output is complete once the attach stream ends; only then does the container go. The exit
            // is reported after the removal: when a run ends, none of its containers is left.
            let _ = tokio::time::timeout(LOG_DRAIN, logs_done.wait_for(|done| *done)).await;
            executor.remove(&container).await;
            // Services stop after their stage.
            executor.remove_services(&services).await;
            let _ = exit_sender.send(Some(result));
        });
        Ok(DockerHandle {
            id: id.to_owned(),
            exit,
            logs: OutputOnce::new(receiver),
            stopping,
        })
    }

    /// What the engine says of the container's state, when it answers.
    async fn container_state(&self, id: &str) -> Option<bollard::models::ContainerState> {
        self.docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|details| details.state)
    }

    /// Whether the engine logged an `oom` event for the container (in the last ten minutes), or logs one within
    /// `wait`: the engine streams matching events until then and answers as soon as one is there.
    async fn oom_event(&self, id: &str, wait: Duration) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let until = now + wait;
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("container".to_owned(), vec![id.to_owned()]),
            ("event".to_owned(), vec!["oom".to_owned()]),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .since(&now.as_secs().saturating_sub(600).to_string())
            .until(&format!("{}.{:09}", until.as_secs(), until.subsec_nanos()))
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options));
        matches!(
            tokio::time::timeout(wait + Duration::from_secs(5), events.next()).await,
            Ok(Some(Ok(_)))
        )
    }

    /// Whether the engine says the kernel killed the container for memory.
    async fn oom_killed(&self, id: &str) -> bool {
        self.container_state(id)
            .await
            .and_then(|state| state.oom_killed)
            .unwrap_or(false)
    }

    /// Waits for the container to end; its exit code, and whether the kernel killed it for memory (asked about
    /// longer when the container has a memory limit, the usual reason for an OOM kill).
    async fn wait_for(
        &self,
        id: &str,
        memory_limited: bool,
        stopping: &AtomicBool,
    ) -> Result<ExitStatus, String> {
        let mut waits = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        let code = match waits.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => return Err(format!("cannot wait for the container: {error}")),
            None => return Err("the engine stopped answering about the container".to_owned()),
        };
        // The engine learns of an OOM kill from a separate kernel event, racing the exit: its `OOMKilled` flag
        // can be cleared again by the exit (cgroup v1 engines, when the killed process is not the container's
        // first), while its `oom` event stays, and on a busy machine the event can come a second after the exit.
        // A SIGKILL (137) of a container with a memory limit waits up to OOM_EVENT_WAIT for the event (unless
        // BuildIt stopped it); without a limit it is asked about a few times before it counts as a plain kill.
        let mut oom_killed = self.oom_killed(id).await;
        if !oom_killed && code == 137 && memory_limited && !stopping.load(Ordering::SeqCst) {
            oom_killed = self.oom_event(id, OOM_EVENT_WAIT).await || self.oom_killed(id).await;
        } else if !memory_limited {
            for _ in 0..5 {
                if oom_killed || code != 137 || stopping.load(Ordering::SeqCst) {
                    break;
                }
                oom_killed = self.oom_event(id, Duration::ZERO).await;
                if !oom_killed {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    oom_killed = self.oom_killed(id).await;
                }
            }
        }
        let code = i32::try_from(code).unwrap_or(i32::MAX);
        // Codes above 128 are a signal's (the init process reports 128 + signal).
        let signal = (code > 128 && code < 160).then(|| code - 128);
        Ok(ExitStatus {
            code: Some(code),
            signal,
            oom_killed,
        })
    }
}

impl Executor for DockerExecutor {
    type Handle = DockerHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<DockerHandle, ExecError> {
        let Some(image) = spec.image.clone() else {
            return Err(ExecError::Backend(
                "the Docker executor runs stages with an `image`".to_owned(),
            ));
        };
        self.ensure_image(&image, spec.notes.as_ref()).await?;
        self.start(&spec, &image).await
    }

    async fn logs(&self, handle: &DockerHandle) -> Result<LogStream, ExecError> {
        handle.logs.take()
    }

    async fn status(&self, handle: &DockerHandle) -> Result<StageStatus, ExecError> {
        handle.exit.status()
    }

    async fn wait(&self, handle: &DockerHandle) -> Result<ExitStatus, ExecError> {
        handle.exit.wait().await
    }

    async fn cancel(&self, handle: &DockerHandle, grace: Duration) -> Result<(), ExecError> {
        if handle.exit.ended() {
            return Ok(());
        }
        handle.stopping.store(true, Ordering::SeqCst);
        // `docker stop`: SIGTERM to the init process (which passes it on), SIGKILL after the grace period.
        let seconds = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        match self.docker.stop_container(&handle.id, Some(options)).await {
            Ok(()) => {}
            // Gone or already stopped: the watcher reports how it ended.
            Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(error) => return Err(backend("cannot stop the container", error)),
        }
        handle.exit.wait().await.map(|_| ())
    }

    fn workspace_on_host(&self, _spec: &StageSpec) -> bool {
        self.options.bind_workspace
    }

    async fn put_files(&self, spec: &StageSpec, from: &Path) -> Result<(), ExecError> {
        let workspace = self.run_workspace(spec).await?;
        self.upload_tree(&workspace, from, &spec.workspace, &[])
            .await
            .map_err(|error| backend("cannot copy files into the workspace volume", error))
    }

    async fn get_files(
        &self,
        spec: &StageSpec,
        paths: &[PathBuf],
        into: &Path,
    ) -> Result<(), ExecError> {
        let mut inside_paths = Vec::new();
        for path in paths {
            let Some(inside) = super::executor::inside_workspace(path) else {
                return Err(ExecError::Backend(format!(
                    "`{}` is not a path inside the workspace",
                    path.display()
                )));
            };
            inside_paths.push(inside);
        }
        let workspace = self.run_workspace(spec).await?;
        // Nested paths would unpack twice, the second time through what the first one wrote.
        for path in &super::executor::outermost(inside_paths) {
            if super::cache::written_through_symlink(into, &into.join(path)) {
                return Err(ExecError::Backend(format!(
                    "`{}` would be written through a symlink",
                    path.display()
                )));
            }
            let inside = spec.workspace.join(path);
            let options = DownloadFromContainerOptionsBuilder::new()
                .path(&inside.display().to_string())
                .build();
            let mut download = self
                .docker
                .download_from_container(&workspace.holder, Some(options))
                .peekable();
            // The engine answers a missing path with 404 before any byte: nothing to copy.
            match std::pin::Pin::new(&mut download).peek().await {
                Some(Err(error)) if is_not_found(error) => continue,
                _ => {}
            }
            super::docker_files::unpack_tree(download, into.join(path))
                .await
                .map_err(|error| {
                    backend(
                        &format!(
                            "cannot copy `{}` out of the workspace volume",
                            path.display()
                        ),
                        error,
                    )
                })?;
        }
        Ok(())
    }

    async fn release_run(&self, run_id: &str) -> Result<(), ExecError> {
        let cell = self
            .workspaces
            .lock()
            .ok()
            .and_then(|mut workspaces| workspaces.remove(run_id));
        if let Some(workspace) = cell.as_ref().and_then(|cell| cell.get()) {
            self.remove_workspace(workspace).await;
        }
        // What an attempt interrupted while starting had created (a stage timed out waiting for its services)
        // carries the run's label: it goes now too.
        self.sweep(Some(run_id)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PullProgress, has_tag_or_digest};

    #[test]
    fn pull_progress_shows_state_changes_and_throttles_byte_counts() {
        let info =
            |id: &str, status: &str, current: Option<i64>| bollard::models::CreateImageInfo {
                id: Some(id.to_owned()),
                status: Some(status.to_owned()),
                progress_detail: current.map(|current| bollard::models::ProgressDetail {
                    current: Some(current),
                    total: Some(3_000_000),
                }),
                ..bollard::models::CreateImageInfo::default()
            };
        let mut progress = PullProgress::default();
        let start = tokio::time::Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let lines: Vec<Option<String>> = vec![
            progress.line(&info("abc", "Pulling fs layer", None), at(0)),
            progress.line(&info("abc", "Downloading", Some(1_000_000)), at(10)),
            progress.line(&info("abc", "Downloading", Some(1_500_000)), at(500)),
            progress.line(&info("abc", "Downloading", Some(2_500_000)), at(2_100)),
            progress.line(&info("def", "Downloading", Some(100)), at(2_200)),
            progress.line(&info("abc", "Pull complete", None), at(2_300)),
            progress.line(&info("", "Digest: sha256:00", None), at(2_400)),
        ];
        assert_eq!(
            lines,
            [
                Some("abc: Pulling fs layer".to_owned()),
                Some("abc: Downloading 1.0 MB of 3.0 MB".to_owned()),
                None,
                Some("abc: Downloading 2.5 MB of 3.0 MB".to_owned()),
                Some("def: Downloading 0.0 MB of 3.0 MB".to_owned()),
                Some("abc: Pull complete".to_owned()),
                Some("Digest: sha256:00".to_owned()),
            ]
        );
    }

    #[test]
    fn references_without_a_tag_are_told_apart() {
        for tagged in [
            "alpine:3.20",
            "registry:5000/app:1",
            "ghcr.io/o/app@sha256:abc",
            "buildit-test/busybox:latest",
        ] {
            assert!(has_tag_or_digest(tagged), "{tagged}");
        }
        for bare in ["alpine", "registry:5000/app", "ghcr.io/o/app"] {
            assert!(!has_tag_or_digest(bare), "{bare}");
        }
    }
}
