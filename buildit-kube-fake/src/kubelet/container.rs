//! Starting one container of a pod as the kubelet does (environment, image, create, start, with the
//! waiting reasons and events of each failure) and waiting for it to end.

use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;

use super::docker::{self, ContainerPlan};
use super::env::{expand, resolve_env};
use super::logs::capture;
use super::runtime::{PodContainer, PodRuntime};
use super::status::{ContainerList, Ending, set_running, set_terminated, set_waiting};
use crate::events::EventType;
use crate::faults::FaultKind;
use crate::quantity;

/// Back-off between attempts to start a container (image pull, configuration), capped.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((500_u64 << attempt.min(4)).min(5_000))
}

fn limit(container: &Container, name: &str) -> Option<String> {
    container
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(name)
        .map(|quantity| quantity.0.clone())
}

fn plan(
    runtime: &PodRuntime,
    list: ContainerList,
    container: &Container,
    env: Vec<(String, String)>,
) -> ContainerPlan {
    let variables = env.iter().cloned().collect();
    let expand_all = |items: &Option<Vec<String>>| {
        items.as_ref().map(|items| {
            items
                .iter()
                .map(|item| expand(item, &variables))
                .collect::<Vec<_>>()
        })
    };
    let volumes = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|mount| {
            let volume = runtime.docker_volume(&mount.name)?;
            Some((
                volume,
                mount.mount_path.clone(),
                mount.read_only.unwrap_or(false),
            ))
        })
        .collect();
    let kind = match list {
        ContainerList::Init => "init",
        ContainerList::Main => "main",
    };
    let restarts = super::status::restart_count(&runtime.status(), list, &container.name);
    let mut labels = runtime.labels();
    labels.insert(
        "buildit-kube-fake.container".to_owned(),
        container.name.clone(),
    );
    labels.insert("buildit-kube-fake.kind".to_owned(), kind.to_owned());
    ContainerPlan {
        name: format!(
            "k8s_{}_{}_{}_{}_{restarts}",
            container.name, runtime.key.name, runtime.key.namespace, runtime.uid
        ),
        image: container.image.clone().unwrap_or_default(),
        // A command replaces the image's entrypoint and its default arguments, as in Kubernetes.
        entrypoint: expand_all(&container.command),
        cmd: expand_all(&container.args),
        env: env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect(),
        working_dir: container.working_dir.clone(),
        volumes,
        memory_bytes: limit(container, "memory")
            .and_then(|text| quantity::bytes(&text))
            .and_then(|bytes| i64::try_from(bytes).ok()),
        nano_cpus: limit(container, "cpu")
            .and_then(|text| quantity::cpu_millis(&text))
            .and_then(|millis| i64::try_from(millis * 1_000_000).ok()),
        network_mode: runtime.sandbox_id().map(|id| format!("container:{id}")),
        hostname: None,
        extra_hosts: Vec::new(),
        labels,
    }
}

/// Waits until the image is present (the fake has no registry: nothing is pulled); its id.
async fn ensure_image(runtime: &PodRuntime, list: ContainerList, container: &Container) -> String {
    let image = container.image.clone().unwrap_or_default();
    let labels = runtime.pod.metadata.labels.clone().unwrap_or_default();
    let mut attempt = 0;
    loop {
        let faulted = runtime
            .shared
            .faults
            .applied(FaultKind::ImagePull, &runtime.uid)
            || runtime
                .shared
                .faults
                .take(FaultKind::ImagePull, &runtime.uid, &labels)
                .is_some();
        let present = if faulted {
            None
        } else {
            docker::image_id(&runtime.shared.docker, &image).await
        };
        if let Some(id) = present {
            let message = format!("Container image \"{image}\" already present on machine");
            runtime.event(
                EventType::Normal,
                "Pulled",
                &message,
                Some((list, &container.name)),
            );
            return id;
        }
        let reference = if image.contains('/') {
            image.clone()
        } else {
            format!("docker.io/library/{image}")
        };
        let cause = format!(
            "failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": \
             pull access denied, repository does not exist or may require authorization"
        );
        let pull_message = format!("rpc error: code = Unknown desc = {cause}");
        runtime.event(
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
            Some((list, &container.name)),
        );
        runtime.publish(|status| {
            set_waiting(
                status,
                list,
                &container.name,
                "ErrImagePull",
                Some(pull_message.clone()),
            )
        });
        let failed = format!("Failed to pull image \"{image}\": {pull_message}");
        runtime.event(
            EventType::Warning,
            "Failed",
            &failed,
            Some((list, &container.name)),
        );
        runtime.event(
            EventType::Warning,
            "Failed",
            "Error: ErrImagePull",
            Some((list, &container.name)),
        );
        tokio::time::sleep(backoff(attempt)).await;
        let back_off = format!("Back-off pulling image \"{image}\"");
        runtime.publish(|status| {
            set_waiting(
                status,
                list,
                &container.name,
                "ImagePullBackOff",
                Some(back_off.clone()),
            )
        });
        runtime.event(
            EventType::Normal,
            "BackOff",
            &back_off,
            Some((list, &container.name)),
        );
        runtime.event(
            EventType::Warning,
            "Failed",
            "Error: ImagePullBackOff",
            Some((list, &container.name)),
        );
        tokio::time::sleep(backoff(attempt + 1)).await;
        attempt += 1;
    }
}

/// Reports that container `name` waits for `reason` (its status and a `Failed` event), then waits out the
/// back-off of retry `attempt`.
async fn wait_and_retry(
    runtime: &PodRuntime,
    list: ContainerList,
    name: &str,
    reason: &str,
    message: &str,
    attempt: u32,
) {
    runtime.publish(|status| set_waiting(status, list, name, reason, Some(message.to_owned())));
    runtime.event(
        EventType::Warning,
        "Failed",
        &format!("Error: {message}"),
        Some((list, name)),
    );
    tokio::time::sleep(backoff(attempt)).await;
}

/// Starts the container: retries while its configuration or image is missing (as the kubelet does, with
/// the waiting reason in the status); `Err` if Docker cannot start it (`StartError`, exit code 128).
pub(crate) async fn start_container(
    runtime: &PodRuntime,
    list: ContainerList,
    container: &Container,
) -> Result<String, Ending> {
    let name = container.name.as_str();
    let mut attempt = 0;
    let env = loop {
        match resolve_env(&runtime.shared, &runtime.pod, container) {
            Ok(env) => break env,
            Err(message) => {
                wait_and_retry(
                    runtime,
                    list,
                    name,
                    "CreateContainerConfigError",
                    &message,
                    attempt,
                )
                .await;
                attempt += 1;
            }
        }
    };
    let image_id = ensure_image(runtime, list, container).await;
    let id = loop {
        match docker::create(
            &runtime.shared.docker,
            plan(runtime, list, container, env.clone()),
        )
        .await
        {
            Ok(id) => break id,
            Err(message) => {
                wait_and_retry(
                    runtime,
                    list,
                    name,
                    "CreateContainerError",
                    &message,
                    attempt,
                )
                .await;
                attempt += 1;
            }
        }
    };
    runtime.event(
        EventType::Normal,
        "Created",
        &format!("Created container: {name}"),
        Some((list, name)),
    );
    runtime.add_container(PodContainer {
        list,
        name: name.to_owned(),
        id: id.clone(),
        capture: None,
    });
    if let Err(message) = docker::start(&runtime.shared.docker, &id).await {
        let ending = Ending {
            exit_code: 128,
            reason: "StartError".to_owned(),
            message: Some(message.clone()),
            started_at: Some(Timestamp::UNIX_EPOCH),
            finished_at: crate::store::meta::now(),
        };
        runtime.publish(|status| set_terminated(status, list, name, Some(&id), &ending));
        runtime.event(
            EventType::Warning,
            "Failed",
            &format!("Error: {message}"),
            Some((list, name)),
        );
        return Err(ending);
    }
    let capture = capture(&runtime.shared, &runtime.uid, name, &id);
    runtime.add_container(PodContainer {
        list,
        name: name.to_owned(),
        id: id.clone(),
        capture: Some(capture),
    });
    runtime.publish(|status| set_running(status, list, name, &id, &image_id));
    runtime.event(
        EventType::Normal,
        "Started",
        &format!("Started container {name}"),
        Some((list, name)),
    );
    Ok(id)
}

/// How a stopped container ended, from the engine.
pub(crate) async fn read_ending(runtime: &PodRuntime, id: &str, oom_fault: bool) -> Ending {
    let mut details = docker::inspect(&runtime.shared.docker, id).await;
    // The engine may report a memory-limited container's SIGKILL before it has recorded the OOM kill behind
    // it (a busy machine): it is asked again for a moment, as the real kubelet learns of it from its events.
    for _ in 0..OOM_RECHECKS {
        let state = details.as_ref().and_then(|details| details.state.as_ref());
        let limited = details
            .as_ref()
            .and_then(|details| details.host_config.as_ref())
            .and_then(|config| config.memory)
            .is_some_and(|memory| memory > 0);
        let killed = state.and_then(|state| state.exit_code) == Some(137);
        if oom_fault
            || !limited
            || !killed
            || state.and_then(|state| state.oom_killed) == Some(true)
        {
            break;
        }
        tokio::time::sleep(OOM_RECHECK_EVERY).await;
        details = docker::inspect(&runtime.shared.docker, id).await;
    }
    let state = details.and_then(|details| details.state);
    let parse = |text: Option<&String>| text.and_then(|text| text.parse::<Timestamp>().ok());
    let exit_code = state
        .as_ref()
        .and_then(|state| state.exit_code)
        .and_then(|code| i32::try_from(code).ok())
        .unwrap_or(137);
    let oom_killed = oom_fault
        || state
            .as_ref()
            .and_then(|state| state.oom_killed)
            .unwrap_or(false);
    let started = parse(state.as_ref().and_then(|state| state.started_at.as_ref()));
    let finished = parse(state.as_ref().and_then(|state| state.finished_at.as_ref()))
        .filter(|finished| finished.as_second() > 0)
        .unwrap_or_else(crate::store::meta::now);
    Ending::from_exit(exit_code, oom_killed, started, finished)
}

/// How often, and how far apart, a SIGKILLed memory-limited container is asked whether it was an OOM kill.
const OOM_RECHECKS: u32 = 30;
const OOM_RECHECK_EVERY: Duration = Duration::from_millis(100);

/// Waits for a started container to end (killing it as the OOM killer would when the `oom` fault says so),
/// waits for its log to be complete, and publishes how it ended.
pub(crate) async fn run_to_end(
    runtime: &PodRuntime,
    list: ContainerList,
    name: &str,
    id: &str,
    oom_after: Option<Duration>,
) -> Ending {
    let docker = &runtime.shared.docker;
    let mut oom_fault = false;
    match oom_after {
        Some(after) => {
            tokio::select! {
                () = docker::wait(docker, id) => {}
                () = tokio::time::sleep(after) => {
                    oom_fault = true;
                    docker::kill(docker, id).await;
                    docker::wait(docker, id).await;
                }
            }
        }
        None => docker::wait(docker, id).await,
    }
    // The status says terminated only once every line of the output is in the log book.
    if let Some(capture) = runtime.take_capture(list, name) {
        let _ = capture.await;
    }
    let ending = read_ending(runtime, id, oom_fault).await;
    runtime.publish(|status| set_terminated(status, list, name, Some(id), &ending));
    ending
}
