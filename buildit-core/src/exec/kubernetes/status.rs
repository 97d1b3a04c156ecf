//! Reading an attempt's pod: running, waiting (and on what), or ended (and how), from its status alone.

use k8s_openapi::api::core::v1::{ContainerStateWaiting, Pod, PodStatus};

use super::manifest::STAGE_CONTAINER;
use super::services::service_of;
use crate::exec::executor::ExitStatus;

/// What a pod's status says of the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    /// Not running yet, for no reason that is a failure (being scheduled, the image being pulled).
    Pending,
    /// The scheduler cannot place it: its message says why.
    Unschedulable(String),
    /// Its image cannot be pulled (`ErrImagePull`, `ImagePullBackOff`): fails once that lasts too long.
    ImagePullFailing(String),
    /// Its image can never be pulled (`InvalidImageName`, `ErrImageNeverPull`).
    ImageInvalid(String),
    /// Its container cannot be created from the spec (`CreateContainerConfigError`, ...).
    ConfigError(String),
    /// The commands run.
    Running,
    /// The stage's container ended.
    Exited(ExitStatus),
    /// The pod was disrupted: evicted, preempted, its node drained. Never a success.
    Evicted(String),
    /// The pod failed without its container ending (a deadline, the node lost).
    Failed(String),
    /// A service stopped, or its `ready` command kept failing, before the stage started.
    ServiceNotReady {
        /// Its container (whose last log lines tell why).
        container: String,
        /// What the stage's failure says.
        message: String,
    },
}

impl PodVerdict {
    /// The verdict of a container other than the pod's own (a service, the source's fetch), its image or
    /// configuration problem said of `subject`: "service `db`: ErrImagePull: ...".
    pub fn said_of(self, subject: &str) -> Self {
        match self {
            Self::ImagePullFailing(why) => Self::ImagePullFailing(format!("{subject}: {why}")),
            Self::ImageInvalid(why) => Self::ImageInvalid(format!("{subject}: {why}")),
            Self::ConfigError(why) => Self::ConfigError(format!("{subject}: {why}")),
            other => other,
        }
    }
}

/// Reads an attempt's `pod`.
pub fn pod_verdict(pod: &Pod) -> PodVerdict {
    container_verdict(pod, STAGE_CONTAINER)
}

/// Reads `pod` by its container `container` (the one whose work the pod is).
pub fn container_verdict(pod: &Pod, container: &str) -> PodVerdict {
    let Some(status) = &pod.status else {
        return PodVerdict::Pending;
    };
    let disrupted = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "DisruptionTarget" && condition.status == "True");
    if status.reason.as_deref() == Some("Evicted") || disrupted.is_some() {
        let message = status
            .message
            .clone()
            .or_else(|| disrupted.and_then(|condition| condition.message.clone()))
            .or_else(|| disrupted.and_then(|condition| condition.reason.clone()))
            .unwrap_or_else(|| "the pod was disrupted".to_owned());
        return PodVerdict::Evicted(format!("evicted: {message}"));
    }
    let stage = status
        .container_statuses
        .iter()
        .flatten()
        .find(|status| status.name == container);
    if let Some(state) = stage.and_then(|container| container.state.as_ref()) {
        if let Some(terminated) = &state.terminated {
            let oom_killed = terminated.reason.as_deref() == Some("OOMKilled");
            return PodVerdict::Exited(ExitStatus {
                code: Some(terminated.exit_code),
                signal: terminated.signal,
                oom_killed,
            });
        }
        if state.running.is_some() {
            return PodVerdict::Running;
        }
        if let Some(waiting) = &state.waiting
            && let Some(verdict) = waiting_verdict(waiting)
        {
            return verdict;
        }
    }
    if let Some(verdict) = services_verdict(status) {
        return verdict;
    }
    if status.phase.as_deref() == Some("Failed") {
        let why = [status.reason.as_deref(), status.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return PodVerdict::Failed(if why.is_empty() {
            "the pod failed".to_owned()
        } else {
            format!("the pod failed: {why}")
        });
    }
    if let Some(unschedulable) = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
    }) {
        return PodVerdict::Unschedulable(
            unschedulable
                .message
                .clone()
                .unwrap_or_else(|| "no node can run it".to_owned()),
        );
    }
    PodVerdict::Pending
}

/// What the services (the pod's sidecars) say while the stage has not started: one whose image cannot be
/// pulled or that cannot be created, or one restarted (it stopped, or its startup probe gave up).
fn services_verdict(status: &PodStatus) -> Option<PodVerdict> {
    for sidecar in status.init_container_statuses.iter().flatten() {
        let Some(service) = service_of(&sidecar.name) else {
            continue;
        };
        if let Some(waiting) = sidecar
            .state
            .as_ref()
            .and_then(|state| state.waiting.as_ref())
            && let Some(verdict) = waiting_verdict(waiting)
        {
            return Some(verdict.said_of(&format!("service `{service}`")));
        }
        if sidecar.restart_count > 0 {
            return Some(PodVerdict::ServiceNotReady {
                container: sidecar.name.clone(),
                message: format!(
                    "service `{service}` was not ready: it stopped, or its `ready` command kept failing past \
                     its timeout"
                ),
            });
        }
    }
    None
}

/// What the init container `container` (one that runs to its end before the pod's containers start) says:
/// an image that cannot be pulled, a container that cannot be created, or an exit that is not 0; `None` while
/// it is on its way or once it succeeded.
pub fn init_verdict(pod: &Pod, container: &str) -> Option<PodVerdict> {
    let status = pod
        .status
        .as_ref()?
        .init_container_statuses
        .iter()
        .flatten()
        .find(|status| status.name == container)?;
    let state = status.state.as_ref()?;
    if let Some(terminated) = &state.terminated {
        return (terminated.exit_code != 0).then(|| {
            PodVerdict::Exited(ExitStatus {
                code: Some(terminated.exit_code),
                signal: terminated.signal,
                oom_killed: terminated.reason.as_deref() == Some("OOMKilled"),
            })
        });
    }
    waiting_verdict(state.waiting.as_ref()?)
}

fn waiting_verdict(waiting: &ContainerStateWaiting) -> Option<PodVerdict> {
    let reason = waiting.reason.as_deref()?;
    let message = match &waiting.message {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_owned(),
    };
    match reason {
        "ErrImagePull" | "ImagePullBackOff" => Some(PodVerdict::ImagePullFailing(message)),
        "InvalidImageName" | "ErrImageNeverPull" => Some(PodVerdict::ImageInvalid(message)),
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Some(PodVerdict::ConfigError(message))
        }
        _ => None,
    }
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a test fails loudly on what it cannot build"
)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": status,
        }))
        .expect("a pod")
    }

    fn stage_state(state: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": "stage", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": state,
            }],
        }))
    }

    #[test]
    fn each_status_is_read_as_what_it_means() {
        assert_eq!(
            pod_verdict(&pod(serde_json::json!({"phase": "Pending"}))),
            PodVerdict::Pending
        );
        assert_eq!(
            pod_verdict(&stage_state(serde_json::json!({"running": {}}))),
            PodVerdict::Running
        );
        assert_eq!(
            pod_verdict(&stage_state(
                serde_json::json!({"terminated": {"exitCode": 3, "reason": "Error"}})
            )),
            PodVerdict::Exited(ExitStatus {
                code: Some(3),
                signal: None,
                oom_killed: false
            })
        );
        assert_eq!(
            pod_verdict(&stage_state(
                serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
            )),
            PodVerdict::Exited(ExitStatus {
                code: Some(137),
                signal: None,
                oom_killed: true
            })
        );
        assert!(matches!(
            pod_verdict(&stage_state(serde_json::json!({"waiting": {
                "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\""
            }}))),
            PodVerdict::ImagePullFailing(message) if message.contains("nope:1")
        ));
        assert!(matches!(
            pod_verdict(&stage_state(
                serde_json::json!({"waiting": {"reason": "InvalidImageName"}})
            )),
            PodVerdict::ImageInvalid(_)
        ));
        assert!(matches!(
            pod_verdict(&stage_state(serde_json::json!({"waiting": {
                "reason": "CreateContainerConfigError", "message": "secret \"s\" not found"
            }}))),
            PodVerdict::ConfigError(message) if message.contains("secret \"s\" not found")
        ));
        assert!(matches!(
            pod_verdict(&stage_state(
                serde_json::json!({"waiting": {"reason": "ContainerCreating"}})
            )),
            PodVerdict::Pending
        ));
    }

    #[test]
    fn a_disrupted_pod_is_evicted_even_when_its_container_exited_zero() {
        let evicted = pod(serde_json::json!({
            "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
            "containerStatuses": [{
                "name": "stage", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }],
        }));
        assert_eq!(
            pod_verdict(&evicted),
            PodVerdict::Evicted("evicted: The node was low on resource: memory.".to_owned())
        );
        let drained = pod(serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                            "message": "Eviction API: evicting"}],
        }));
        assert!(matches!(pod_verdict(&drained), PodVerdict::Evicted(_)));
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let pending = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient cpu."}],
        }));
        assert_eq!(
            pod_verdict(&pending),
            PodVerdict::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".to_owned())
        );
    }

    #[test]
    fn a_service_that_cannot_start_or_get_ready_fails_the_stage_before_it_starts() {
        let with_service = |sidecar: serde_json::Value, stage: serde_json::Value| {
            pod(serde_json::json!({
                "phase": "Pending",
                "initContainerStatuses": [sidecar],
                "containerStatuses": [{
                    "name": "stage", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": stage,
                }],
            }))
        };
        let initializing = serde_json::json!({"waiting": {"reason": "PodInitializing"}});
        let pulling = with_service(
            serde_json::json!({
                "name": "service-db", "image": "postgres", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}},
            }),
            initializing.clone(),
        );
        assert_eq!(
            pod_verdict(&pulling),
            PodVerdict::ImagePullFailing("service `db`: ErrImagePull".to_owned())
        );
        let restarted = serde_json::json!({
            "name": "service-db", "image": "postgres", "imageID": "", "ready": false,
            "restartCount": 1, "state": {"running": {}},
        });
        let not_ready = with_service(restarted.clone(), initializing);
        assert!(
            matches!(
                pod_verdict(&not_ready),
                PodVerdict::ServiceNotReady { ref container, ref message }
                    if container == "service-db" && message.contains("`db`")
            ),
            "{:?}",
            pod_verdict(&not_ready)
        );
        // Once the stage runs, a service that restarts is the stage's business.
        let running = with_service(restarted, serde_json::json!({"running": {}}));
        assert_eq!(pod_verdict(&running), PodVerdict::Running);
    }
}
