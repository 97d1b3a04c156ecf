//! The scheduler: binds each new pod to the one fake node when its requests fit what is left of the node's
//! CPU and memory (and its claims exist, and its node selector and affinity allow the node), else leaves it
//! `Pending` with `PodScheduled=False` and a `FailedScheduling` event, as the real scheduler says it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::node_affinity::allows_node;
use super::reconcile::reconcile_loop;
use crate::events::{EventType, Reporter, record_event};
use crate::faults::FaultKind;
use crate::quantity;
use crate::shared::{NODE_NAME, Shared};
use crate::store::{ObjectKey, Resource};

const NO_PREEMPTION: &str =
    "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
const NOT_HELPFUL: &str =
    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

/// CPU (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Requests {
    cpu: u64,
    memory: u64,
}

fn container_requests(container: &Container) -> Requests {
    let requests = container
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref());
    let quantity = |name: &str| {
        requests
            .and_then(|requests| requests.get(name))
            .map(|q| q.0.clone())
    };
    Requests {
        cpu: quantity("cpu")
            .and_then(|q| quantity::cpu_millis(&q))
            .unwrap_or(0),
        memory: quantity("memory")
            .and_then(|q| quantity::bytes(&q))
            .unwrap_or(0),
    }
}

/// What a pod needs of the node: its containers and sidecars together, or its largest init container.
fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let mut running = Requests::default();
    let mut largest_init = Requests::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            running.cpu += requests.cpu;
            running.memory += requests.memory;
        } else {
            largest_init.cpu = largest_init.cpu.max(requests.cpu + running.cpu);
            largest_init.memory = largest_init.memory.max(requests.memory + running.memory);
        }
    }
    for container in &spec.containers {
        let requests = container_requests(container);
        running.cpu += requests.cpu;
        running.memory += requests.memory;
    }
    Requests {
        cpu: running.cpu.max(largest_init.cpu),
        memory: running.memory.max(largest_init.memory),
    }
}

fn is_finished(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|node| !node.is_empty())
}

fn set_scheduled_condition(status: &mut PodStatus, scheduled: bool, message: Option<String>) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|condition| condition.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".to_owned(),
        status: if scheduled { "True" } else { "False" }.to_owned(),
        reason: (!scheduled).then(|| "Unschedulable".to_owned()),
        message,
        last_transition_time: Some(Time(crate::store::meta::now())),
        ..PodCondition::default()
    });
}

/// Why the pod cannot be placed, if it cannot.
fn unschedulable_reason(shared: &Shared, pod: &Pod, uid: &str, namespace: &str) -> Option<String> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if shared.faults.applied(FaultKind::Unschedulable, uid)
        || shared
            .faults
            .take(FaultKind::Unschedulable, uid, &labels)
            .is_some()
    {
        return Some(format!(
            "0/1 nodes are available: 1 node(s) were unschedulable. {NOT_HELPFUL}"
        ));
    }
    let claims = pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref());
    for claim in claims {
        let key = ObjectKey::new(
            Resource::PersistentVolumeClaims,
            namespace,
            &claim.claim_name,
        );
        if shared.store.get(&key).is_none() {
            return Some(format!(
                "0/1 nodes are available: persistentvolumeclaim \"{}\" not found. {NOT_HELPFUL}",
                claim.claim_name
            ));
        }
    }
    if !allows_node(pod) {
        return Some(format!(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {NOT_HELPFUL}"
        ));
    }
    let needed = pod_requests(pod);
    let used = shared
        .store
        .list_as::<Pod>(Resource::Pods, None)
        .iter()
        .filter(|other| is_bound(other) && !is_finished(other))
        .map(pod_requests)
        .fold(Requests::default(), |sum, requests| Requests {
            cpu: sum.cpu + requests.cpu,
            memory: sum.memory + requests.memory,
        });
    let options = &shared.options;
    let short_cpu = used.cpu + needed.cpu > options.node_cpu_millis;
    let short_memory = used.memory + needed.memory > options.node_memory_bytes;
    match (short_cpu, short_memory) {
        (false, false) => None,
        (true, false) => Some(format!(
            "0/1 nodes are available: 1 Insufficient cpu. {NO_PREEMPTION}"
        )),
        (false, true) => Some(format!(
            "0/1 nodes are available: 1 Insufficient memory. {NO_PREEMPTION}"
        )),
        (true, true) => Some(format!(
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. {NO_PREEMPTION}"
        )),
    }
}

fn schedule(shared: &Shared, reported: &mut HashSet<String>) {
    let pods = shared.store.list_as::<Pod>(Resource::Pods, None);
    for pod in pods
        .iter()
        .filter(|pod| !is_bound(pod) && pod.metadata.deletion_timestamp.is_none())
    {
        let (Some(namespace), Some(name), Some(uid)) = (
            &pod.metadata.namespace,
            &pod.metadata.name,
            &pod.metadata.uid,
        ) else {
            continue;
        };
        let key = ObjectKey::new(Resource::Pods, namespace, name);
        let object = serde_json::to_value(pod).unwrap_or_default();
        if let Some(message) = unschedulable_reason(shared, pod, uid, namespace) {
            if reported.insert(uid.clone()) {
                shared.store.update_as::<Pod>(&key, |pod| {
                    let status = pod.status.get_or_insert_with(PodStatus::default);
                    status.phase = Some("Pending".to_owned());
                    set_scheduled_condition(status, false, Some(message.clone()));
                });
                let event = (EventType::Warning, Reporter::Scheduler, "FailedScheduling");
                record_event(shared, &object, event.0, event.1, event.2, &message, None);
            }
            continue;
        }
        reported.remove(uid);
        shared.store.update_as::<Pod>(&key, |pod| {
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(NODE_NAME.to_owned());
            }
            let status = pod.status.get_or_insert_with(PodStatus::default);
            set_scheduled_condition(status, true, None);
        });
        let message = format!("Successfully assigned {namespace}/{name} to {NODE_NAME}");
        record_event(
            shared,
            &object,
            EventType::Normal,
            Reporter::Scheduler,
            "Scheduled",
            &message,
            None,
        );
    }
}

/// Schedules pods until the fake stops; unschedulable pods are tried again as others finish.
pub(crate) async fn run_scheduler(shared: Arc<Shared>) {
    let mut reported = HashSet::new();
    reconcile_loop(shared, Duration::from_millis(500), move |shared| {
        schedule(shared, &mut reported);
    })
    .await;
}
