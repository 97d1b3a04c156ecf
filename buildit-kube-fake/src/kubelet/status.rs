//! A pod's status as the kubelet writes it: container states (`waiting`, `running`, `terminated`), ready
//! flags, conditions and phase.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Which list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerList {
    Init,
    Main,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl Ending {
    /// An ending read from an exit code (and whether the OOM killer did it).
    pub fn from_exit(
        exit_code: i32,
        oom_killed: bool,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    ) -> Ending {
        let reason = if oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Ending {
            exit_code: if oom_killed { 137 } else { exit_code },
            reason: reason.to_owned(),
            message: None,
            started_at,
            finished_at,
        }
    }
}

/// The initial status of a pod the kubelet takes on: every container waiting.
pub(crate) fn initial_status(pod: &Pod) -> PodStatus {
    let mut status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let has_init = spec
        .init_containers
        .as_ref()
        .is_some_and(|list| !list.is_empty());
    let waiting = |name: &str, image: Option<&String>, reason: &str| ContainerStatus {
        name: name.to_owned(),
        image: image.cloned().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message: None,
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    };
    let main_reason = if has_init {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    status.container_statuses = Some(
        spec.containers
            .iter()
            .map(|container| waiting(&container.name, container.image.as_ref(), main_reason))
            .collect(),
    );
    if has_init {
        status.init_container_statuses = Some(
            spec.init_containers
                .iter()
                .flatten()
                .map(|container| {
                    waiting(&container.name, container.image.as_ref(), "PodInitializing")
                })
                .collect(),
        );
    }
    status.phase = Some("Pending".to_owned());
    status.host_ip = Some("127.0.0.1".to_owned());
    status.host_ips = None;
    status.start_time = Some(Time(crate::store::meta::now()));
    status.qos_class = Some("BestEffort".to_owned());
    set_condition(&mut status, "PodReadyToStartContainers", false, None);
    set_condition(
        &mut status,
        "Initialized",
        !has_init,
        (has_init).then_some("ContainersNotInitialized"),
    );
    set_condition(&mut status, "Ready", false, Some("ContainersNotReady"));
    set_condition(
        &mut status,
        "ContainersReady",
        false,
        Some("ContainersNotReady"),
    );
    status
}

/// Sets a condition, keeping its transition time when its status does not change.
pub(crate) fn set_condition(status: &mut PodStatus, kind: &str, value: bool, reason: Option<&str>) {
    let text = if value { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(existing) = conditions
        .iter_mut()
        .find(|condition| condition.type_ == kind)
    {
        if existing.status != text {
            existing.status = text.to_owned();
            existing.last_transition_time = Some(Time(crate::store::meta::now()));
        }
        existing.reason = reason.map(str::to_owned);
        return;
    }
    conditions.push(PodCondition {
        type_: kind.to_owned(),
        status: text.to_owned(),
        reason: reason.map(str::to_owned),
        last_transition_time: Some(Time(crate::store::meta::now())),
        ..PodCondition::default()
    });
}

fn entry<'a>(
    status: &'a mut PodStatus,
    list: ContainerList,
    name: &str,
) -> Option<&'a mut ContainerStatus> {
    let statuses = match list {
        ContainerList::Init => status.init_container_statuses.as_mut()?,
        ContainerList::Main => status.container_statuses.as_mut()?,
    };
    statuses.iter_mut().find(|container| container.name == name)
}

/// The container is waiting, for `reason`.
pub(crate) fn set_waiting(
    status: &mut PodStatus,
    list: ContainerList,
    name: &str,
    reason: &str,
    message: Option<String>,
) {
    if let Some(container) = entry(status, list, name) {
        container.state = Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message,
            }),
            ..ContainerState::default()
        });
    }
}

/// The container runs.
pub(crate) fn set_running(
    status: &mut PodStatus,
    list: ContainerList,
    name: &str,
    container_id: &str,
    image_id: &str,
) {
    if let Some(container) = entry(status, list, name) {
        container.container_id = Some(format!("docker://{container_id}"));
        container.image_id = image_id.to_owned();
        container.started = Some(true);
        container.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(crate::store::meta::now())),
            }),
            ..ContainerState::default()
        });
    }
}

/// The container ended; a restart moves the ending to `lastState`.
pub(crate) fn set_terminated(
    status: &mut PodStatus,
    list: ContainerList,
    name: &str,
    container_id: Option<&str>,
    ending: &Ending,
) {
    if let Some(container) = entry(status, list, name) {
        container.ready = false;
        container.started = Some(false);
        let started_at = ending.started_at.or_else(|| {
            container
                .state
                .as_ref()
                .and_then(|state| state.running.as_ref())
                .and_then(|running| running.started_at.as_ref())
                .map(|time| time.0)
        });
        container.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: ending.exit_code,
                reason: Some(ending.reason.clone()),
                message: ending.message.clone(),
                started_at: started_at.map(Time),
                finished_at: Some(Time(ending.finished_at)),
                container_id: container_id.map(|id| format!("docker://{id}")),
                signal: None,
            }),
            ..ContainerState::default()
        });
    }
}

/// Marks a container ready or not.
pub(crate) fn set_ready(status: &mut PodStatus, list: ContainerList, name: &str, ready: bool) {
    if let Some(container) = entry(status, list, name) {
        container.ready = ready;
    }
}

/// Counts a restart: the current state becomes `lastState`.
pub(crate) fn count_restart(status: &mut PodStatus, list: ContainerList, name: &str) {
    if let Some(container) = entry(status, list, name) {
        container.restart_count += 1;
        container.last_state = container.state.take();
    }
}

/// Whether the container is terminated in the status (and its exit code).
pub(crate) fn exit_code(status: &PodStatus, list: ContainerList, name: &str) -> Option<i32> {
    let statuses = match list {
        ContainerList::Init => status.init_container_statuses.as_ref()?,
        ContainerList::Main => status.container_statuses.as_ref()?,
    };
    statuses
        .iter()
        .find(|container| container.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|terminated| terminated.exit_code)
}

/// How many times the container was restarted.
pub(crate) fn restart_count(status: &PodStatus, list: ContainerList, name: &str) -> i32 {
    let statuses = match list {
        ContainerList::Init => status.init_container_statuses.as_ref(),
        ContainerList::Main => status.container_statuses.as_ref(),
    };
    statuses
        .into_iter()
        .flatten()
        .find(|container| container.name == name)
        .map_or(0, |container| container.restart_count)
}
