//! What the kubelet does for a pod from start to end: the sandbox, its volumes, the init containers in order
//! (native sidecars started and probed), the main containers together, then the sidecars stopped and the
//! phase set.

use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::container::{read_ending, run_to_end, start_container};
use super::docker::{self, ContainerPlan};
use super::probes::probe_until_settled;
use super::runtime::{PodRuntime, empty_dir_volume};
use super::status::{
    ContainerList, count_restart, exit_code, set_condition, set_ready, set_terminated,
};
use crate::events::EventType;

/// How long the sandbox sleeps: for ever, as far as a pod is concerned.
const SANDBOX_SLEEP: &str = "2147483647";

/// The pod's `hostAliases` as Docker's `hostname:ip` entries, one per hostname.
fn host_alias_entries(runtime: &PodRuntime) -> Vec<String> {
    let aliases = runtime
        .pod
        .spec
        .iter()
        .flat_map(|spec| spec.host_aliases.iter().flatten());
    aliases
        .flat_map(|alias| {
            alias
                .hostnames
                .iter()
                .flatten()
                .map(move |hostname| format!("{hostname}:{}", alias.ip))
        })
        .collect()
}

async fn create_sandbox(runtime: &PodRuntime) {
    let image = runtime.shared.options.pause_image.clone();
    let mut labels = runtime.labels();
    labels.insert("buildit-kube-fake.kind".to_owned(), "sandbox".to_owned());
    loop {
        let plan = ContainerPlan {
            name: format!(
                "k8s_POD_{}_{}_{}_0",
                runtime.key.name, runtime.key.namespace, runtime.uid
            ),
            image: image.clone(),
            entrypoint: Some(vec!["sleep".to_owned(), SANDBOX_SLEEP.to_owned()]),
            hostname: Some(runtime.key.name.chars().take(63).collect()),
            // The pod's containers join the sandbox's network namespace and share its `/etc/hosts`.
            extra_hosts: host_alias_entries(runtime),
            labels: labels.clone(),
            ..ContainerPlan::default()
        };
        let created = match docker::create(&runtime.shared.docker, plan).await {
            Ok(id) => docker::start(&runtime.shared.docker, &id)
                .await
                .map(|()| id),
            Err(error) => Err(error),
        };
        match created {
            Ok(id) => {
                let address = docker::inspect(&runtime.shared.docker, &id)
                    .await
                    .and_then(|details| details.network_settings?.networks)
                    .and_then(|networks| {
                        networks
                            .into_values()
                            .find_map(|network| network.ip_address)
                    })
                    .filter(|address| !address.is_empty());
                runtime.set_sandbox(id);
                runtime.publish(|status| {
                    set_condition(status, "PodReadyToStartContainers", true, None);
                    status.pod_ip = address;
                });
                return;
            }
            Err(error) => {
                let message = format!("Failed to create pod sandbox: {error}");
                runtime.event(EventType::Warning, "FailedCreatePodSandBox", &message, None);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn create_empty_dirs(runtime: &PodRuntime, spec: &PodSpec) {
    for volume in spec
        .volumes
        .iter()
        .flatten()
        .filter(|volume| volume.empty_dir.is_some())
    {
        let name = empty_dir_volume(&runtime.shared, &runtime.uid, &volume.name);
        if let Err(error) =
            docker::create_volume(&runtime.shared.docker, &name, runtime.labels()).await
        {
            let message = format!(
                "MountVolume.SetUp failed for volume \"{}\" : {error}",
                volume.name
            );
            runtime.event(EventType::Warning, "FailedMount", &message, None);
        }
    }
}

/// Starts a native sidecar and waits for its startup (then readiness) probe; restarts it while its startup
/// probe fails, as the kubelet does for a container that restarts `Always`.
async fn start_sidecar(runtime: &PodRuntime, sidecar: &Container) -> Option<String> {
    let list = ContainerList::Init;
    let name = sidecar.name.as_str();
    let mut restarts: u32 = 0;
    loop {
        let id = match start_container(runtime, list, sidecar).await {
            Ok(id) => id,
            Err(_) => return None,
        };
        let started = match &sidecar.startup_probe {
            Some(probe) => probe_until_settled(runtime, list, name, &id, probe, "Startup").await,
            None => true,
        };
        if started {
            if let Some(probe) = &sidecar.readiness_probe {
                while !probe_until_settled(runtime, list, name, &id, probe, "Readiness").await {}
            }
            runtime.publish(|status| set_ready(status, list, name, true));
            return Some(id);
        }
        let message = format!("Container {name} failed startup probe, will be restarted");
        runtime.event(EventType::Normal, "Killing", &message, Some((list, name)));
        docker::kill(&runtime.shared.docker, &id).await;
        let ending = read_ending(runtime, &id, false).await;
        docker::remove(&runtime.shared.docker, &id).await;
        runtime.publish(|status| {
            set_terminated(status, list, name, Some(&id), &ending);
            count_restart(status, list, name);
        });
        restarts += 1;
        tokio::time::sleep(Duration::from_millis(
            (1_000_u64 << restarts.min(4)).min(10_000),
        ))
        .await;
    }
}

/// Stops the sidecars (last started first) and sets the pod's phase.
async fn finish(
    runtime: &PodRuntime,
    spec: &PodSpec,
    sidecars: &[(String, String)],
    succeeded: bool,
) {
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    for (name, id) in sidecars.iter().rev() {
        let message = format!("Stopping container {name}");
        runtime.event(
            EventType::Normal,
            "Killing",
            &message,
            Some((ContainerList::Init, name)),
        );
        docker::stop(&runtime.shared.docker, id, grace).await;
        if let Some(capture) = runtime.take_capture(ContainerList::Init, name) {
            let _ = capture.await;
        }
        let ending = read_ending(runtime, id, false).await;
        runtime
            .publish(|status| set_terminated(status, ContainerList::Init, name, Some(id), &ending));
    }
    let reason = if succeeded {
        "PodCompleted"
    } else {
        "PodFailed"
    };
    runtime.publish(|status| {
        status.phase = Some(if succeeded { "Succeeded" } else { "Failed" }.to_owned());
        set_condition(status, "Ready", false, Some(reason));
        set_condition(status, "ContainersReady", false, Some(reason));
    });
    if let Some(sandbox) = runtime.sandbox_id() {
        docker::kill(&runtime.shared.docker, &sandbox).await;
    }
}

/// Runs the pod to its end (phase `Succeeded` or `Failed`).
pub(crate) async fn lifecycle(runtime: &PodRuntime) {
    let Some(spec) = runtime.pod.spec.clone() else {
        return;
    };
    create_sandbox(runtime).await;
    create_empty_dirs(runtime, &spec).await;
    let mut sidecars = Vec::new();
    for init in spec.init_containers.iter().flatten() {
        if init.restart_policy.as_deref() == Some("Always") {
            if let Some(id) = start_sidecar(runtime, init).await {
                sidecars.push((init.name.clone(), id));
            }
            continue;
        }
        let ending = match start_container(runtime, ContainerList::Init, init).await {
            Ok(id) => run_to_end(runtime, ContainerList::Init, &init.name, &id, None).await,
            Err(ending) => ending,
        };
        if ending.exit_code != 0 {
            finish(runtime, &spec, &sidecars, false).await;
            return;
        }
    }
    runtime.publish(|status| set_condition(status, "Initialized", true, None));
    let mut started = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        if let Ok(id) = start_container(runtime, ContainerList::Main, container).await {
            started.push((container.name.clone(), id, index));
        }
    }
    runtime.main_started.send_replace(true);
    runtime.publish(|status| {
        if !started.is_empty() {
            status.phase = Some("Running".to_owned());
        }
        for (name, _, _) in &started {
            set_ready(status, ContainerList::Main, name, true);
        }
        let all = started.len() == spec.containers.len();
        let reason = (!all).then_some("ContainersNotReady");
        set_condition(status, "ContainersReady", all, reason);
        set_condition(status, "Ready", all, reason);
    });
    let endings = started.iter().map(|(name, id, index)| {
        let oom_after = if *index == 0 { runtime.oom_after } else { None };
        run_to_end(runtime, ContainerList::Main, name, id, oom_after)
    });
    join_all(endings).await;
    let status = runtime.status();
    let succeeded = spec
        .containers
        .iter()
        .all(|container| exit_code(&status, ContainerList::Main, &container.name) == Some(0));
    finish(runtime, &spec, &sidecars, succeeded).await;
}
