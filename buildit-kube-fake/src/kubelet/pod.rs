//! One pod's worker: runs its lifecycle while watching for its deletion and its timed faults, terminates
//! its containers (grace period, then kill) or evicts it, and cleans up once the pod is gone.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::docker;
use super::lifecycle::lifecycle;
use super::runtime::{PodRuntime, empty_dir_volume};
use super::status::{ContainerList, exit_code, initial_status, set_condition, set_terminated};
use crate::controller::deletion::{DeleteRequest, delete};
use crate::events::EventType;
use crate::faults::FaultKind;
use crate::shared::{INSTANCE_LABEL, POD_UID_LABEL, Shared};
use crate::store::ObjectKey;

/// What the kubelet's loop tells a pod's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// Nothing: keep running.
    Running,
    /// The pod is being deleted with this grace period.
    Delete { grace_seconds: i64 },
    /// The pod is gone from the store.
    Removed,
}

const EVICTION_MESSAGE: &str = "The node was low on resource: memory.";

/// What ended the pod's run.
enum Outcome {
    /// It is being deleted: stop its containers within the grace period, then remove it.
    Deleted(i64),
    /// It was removed from the store: kill what runs.
    Removed,
    /// The `evict` fault fired.
    Evicted,
}

/// Sleeps `after` from the moment the main containers start; never ends when `after` is `None`.
async fn after_start(runtime: &PodRuntime, after: Option<Duration>) {
    let Some(after) = after else {
        return std::future::pending().await;
    };
    let mut started = runtime.main_started.subscribe();
    if started.wait_for(|started| *started).await.is_err() {
        return std::future::pending().await;
    }
    tokio::time::sleep(after).await;
}

async fn drive(
    runtime: &PodRuntime,
    stop: &mut watch::Receiver<StopSignal>,
    evict: Option<Duration>,
    delete_after: Option<Duration>,
) -> Outcome {
    let running = lifecycle(runtime);
    let evict_timer = after_start(runtime, evict);
    let delete_timer = after_start(runtime, delete_after);
    tokio::pin!(running, evict_timer, delete_timer);
    let mut finished = false;
    let mut delete_armed = delete_after.is_some();
    loop {
        tokio::select! {
            () = &mut running, if !finished => finished = true,
            changed = stop.changed() => {
                let signal = if changed.is_err() { StopSignal::Removed } else { *stop.borrow_and_update() };
                match signal {
                    StopSignal::Running => {}
                    StopSignal::Delete { grace_seconds } => return Outcome::Deleted(grace_seconds),
                    StopSignal::Removed => return Outcome::Removed,
                }
            }
            () = &mut evict_timer, if evict.is_some() && !finished => return Outcome::Evicted,
            () = &mut delete_timer, if delete_armed && !finished => {
                delete_armed = false;
                // As another client would: grace period 0.
                let request = DeleteRequest { grace_seconds: Some(0), propagation: None };
                delete(&runtime.shared, &runtime.key, request);
            }
        }
    }
}

/// Stops every container still running (SIGTERM, SIGKILL after `grace_seconds`) and publishes how each
/// ended and the phase that follows: `Failed` with `failed_because` (reason, message) when it is given, in
/// the same update (a client never sees the phase without its reason).
async fn terminate(runtime: &PodRuntime, grace_seconds: i64, failed_because: Option<(&str, &str)>) {
    let status = runtime.status();
    let live: Vec<(ContainerList, String, String)> = runtime
        .container_ids()
        .into_iter()
        .filter(|(list, name, _)| exit_code(&status, *list, name).is_none())
        .collect();
    for (list, name, _) in &live {
        runtime.event(
            EventType::Normal,
            "Killing",
            &format!("Stopping container {name}"),
            Some((*list, name)),
        );
    }
    let docker = &runtime.shared.docker;
    join_all(
        live.iter()
            .map(|(_, _, id)| docker::stop(docker, id, grace_seconds)),
    )
    .await;
    for (list, name, id) in &live {
        if let Some(capture) = runtime.take_capture(*list, name) {
            let _ = capture.await;
        }
        let ending = super::container::read_ending(runtime, id, false).await;
        runtime.publish(|status| set_terminated(status, *list, name, Some(id), &ending));
    }
    if let Some(sandbox) = runtime.sandbox_id() {
        docker::kill(docker, &sandbox).await;
    }
    let status = runtime.status();
    let containers = runtime
        .pod
        .spec
        .as_ref()
        .map(|spec| spec.containers.clone())
        .unwrap_or_default();
    let succeeded = containers
        .iter()
        .all(|container| exit_code(&status, ContainerList::Main, &container.name) == Some(0));
    runtime.publish(|status| {
        if let Some((reason, message)) = failed_because {
            status.phase = Some("Failed".to_owned());
            status.reason = Some(reason.to_owned());
            status.message = Some(message.to_owned());
        } else if !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            status.phase = Some(if succeeded { "Succeeded" } else { "Failed" }.to_owned());
        }
        set_condition(status, "Ready", false, Some("PodCompleted"));
        set_condition(status, "ContainersReady", false, Some("PodCompleted"));
    });
}

/// Evicts the pod as the kubelet does under memory pressure.
async fn evict(runtime: &PodRuntime) {
    runtime.publish(|status| {
        set_condition(
            status,
            "DisruptionTarget",
            true,
            Some("TerminationByKubelet"),
        );
        if let Some(condition) = status
            .conditions
            .iter_mut()
            .flatten()
            .find(|condition| condition.type_ == "DisruptionTarget")
        {
            condition.message = Some(EVICTION_MESSAGE.to_owned());
        }
    });
    runtime.event(EventType::Warning, "Evicted", EVICTION_MESSAGE, None);
    terminate(runtime, 0, Some(("Evicted", EVICTION_MESSAGE))).await;
}

/// Removes the pod's containers, its `emptyDir` volumes and its logs.
pub(crate) async fn clean_up(shared: &Shared, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let labels = [
        format!("{INSTANCE_LABEL}={}", shared.instance),
        format!("{POD_UID_LABEL}={uid}"),
    ];
    let ids = docker::containers_labelled(&shared.docker, &labels).await;
    join_all(ids.iter().map(|id| docker::remove(&shared.docker, id))).await;
    let volumes = pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten());
    for volume in volumes.filter(|volume| volume.empty_dir.is_some()) {
        docker::remove_volume(
            &shared.docker,
            &empty_dir_volume(shared, &uid, &volume.name),
        )
        .await;
    }
    shared.logs.forget_pod(&uid);
}

/// Runs a pod bound to the node until it is gone.
pub(crate) async fn run_pod(
    shared: Arc<Shared>,
    key: ObjectKey,
    pod: Pod,
    mut stop: watch::Receiver<StopSignal>,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let timed = |kind| {
        shared
            .faults
            .take(kind, &uid, &labels)
            .map(|fault| Duration::from_millis(fault.after_ms))
    };
    let oom_after = timed(FaultKind::Oom);
    let evict_after = timed(FaultKind::Evict);
    let delete_after = timed(FaultKind::Delete);
    let runtime = PodRuntime::new(Arc::clone(&shared), key.clone(), pod.clone(), oom_after);
    runtime.publish(|status| *status = initial_status(&runtime.pod));
    // A deletion that came before the worker started is seen at once.
    stop.mark_changed();
    let mut outcome = drive(&runtime, &mut stop, evict_after, delete_after).await;
    if matches!(outcome, Outcome::Evicted) {
        evict(&runtime).await;
        // An evicted pod stays (phase Failed) until someone deletes it.
        outcome = loop {
            if stop.changed().await.is_err() {
                break Outcome::Removed;
            }
            match *stop.borrow_and_update() {
                StopSignal::Running => {}
                StopSignal::Delete { grace_seconds } => break Outcome::Deleted(grace_seconds),
                StopSignal::Removed => break Outcome::Removed,
            }
        };
    }
    match outcome {
        Outcome::Deleted(grace_seconds) => {
            terminate(&runtime, grace_seconds, None).await;
            clean_up(&shared, &pod).await;
            // The kubelet confirms the deletion once the containers are gone.
            shared.store.remove(&key);
        }
        Outcome::Removed | Outcome::Evicted => {
            terminate(&runtime, 0, None).await;
            clean_up(&shared, &pod).await;
        }
    }
}
