//! Running stages in containers through the Docker Engine API: one labelled container per attempt, attached
//! before it starts, stopped by `docker stop` semantics, removed when it ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::engine::{DockerExecutor, backend, is_not_found};
use super::services::ServiceGroup;
use crate::events::LogStreamKind;
use crate::exec::attempt::{ExitWatch, OutputOnce, WaitFailure};
use crate::exec::executor::{
    ExecError, Executor, ExitStatus, LogStream, OutputChunk, StageSpec, StageStatus,
};
use crate::exec::sweep::{SweepReport, SweepScope};
use crate::exec::tree::workspace_paths;

/// Where secrets are handed to the container: a file uploaded before start, read and deleted by the shell, so
/// that no secret appears in the container's configuration (`docker inspect`).
const SECRETS_FILE: &str = ".buildit-secrets";
/// How long to wait for an attempt's output after its container ended, before removing it.
const LOG_DRAIN: Duration = Duration::from_secs(10);
/// How long a memory-limited container killed by SIGKILL waits for the engine's `oom` event before the kill
/// counts as a plain one.
const OOM_EVENT_WAIT: Duration = Duration::from_secs(3);

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

impl DockerExecutor {
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
        let workspace_source = self.workspace_source(spec).await?;
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
            let _ = sender.try_send(OutputChunk {
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
                            .send(OutputChunk {
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
                    .send(OutputChunk {
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

    /// Whether the container is gone, or goes within a second.
    async fn removed(&self, id: &str) -> bool {
        for _ in 0..10 {
            match self
                .docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Err(error) if is_not_found(&error) => return true,
                Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        false
    }

    /// Waits for the container to end; its exit code, and whether the kernel killed it for memory (asked about
    /// longer when the container has a memory limit, the usual reason for an OOM kill).
    async fn wait_for(
        &self,
        id: &str,
        memory_limited: bool,
        stopping: &AtomicBool,
    ) -> Result<ExitStatus, WaitFailure> {
        let lost = || {
            WaitFailure::Lost(
                "the stage's container was removed by someone else while it ran".to_owned(),
            )
        };
        let mut waits = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        let code = match waits.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) if is_not_found(&error) => return Err(lost()),
            Some(Err(error)) => {
                return Err(WaitFailure::Failed(format!(
                    "cannot wait for the container: {error}"
                )));
            }
            None => {
                return Err(WaitFailure::Failed(
                    "the engine stopped answering about the container".to_owned(),
                ));
            }
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
        // BuildIt removes a stage's container only after this: a SIGKILL it did not send, followed by the
        // container's disappearance, is someone else's `docker rm -f` (the engine kills first and removes a
        // moment later, so it is asked for a little while).
        if code == 137 && !oom_killed && !stopping.load(Ordering::SeqCst) && self.removed(id).await
        {
            return Err(lost());
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
        self.upload_tree(&workspace.holder, from, &spec.workspace, &[])
            .await
            .map_err(|error| backend("cannot copy files into the workspace volume", error))
    }

    async fn get_files(
        &self,
        spec: &StageSpec,
        paths: &[PathBuf],
        into: &Path,
    ) -> Result<(), ExecError> {
        let paths = workspace_paths(paths)?;
        let workspace = self.run_workspace(spec).await?;
        self.copy_out(&workspace.holder, &spec.workspace, paths, into)
            .await
    }

    async fn release_run(&self, run_id: &str) -> Result<(), ExecError> {
        if let Some(workspace) = self.workspaces.take(run_id) {
            self.remove_workspace(&workspace).await;
        }
        // What an attempt interrupted while starting had created (a stage timed out waiting for its services)
        // carries the run's label: it goes now too.
        self.sweep(&SweepScope::run(run_id)).await.map(|_| ())
    }

    async fn sweep(&self, scope: &SweepScope) -> Result<SweepReport, ExecError> {
        self.sweep_leftovers(scope).await
    }
}
