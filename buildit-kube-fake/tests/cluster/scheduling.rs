//! The scheduler's node filter: a pod's `nodeSelector` and required node affinity against the one node,
//! `buildit-fake-node`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::support::{
    Harness, create_job, eventually, job, job_condition, job_pod, pod_events, with,
};

const NODE: &str = "buildit-fake-node";
const NO_MATCH: &str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                        preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

/// A job whose pod template gets `change`.
fn placed(name: &str, change: impl FnOnce(&mut Value)) -> Job {
    with(job(name, "true"), |job| {
        change(&mut job["spec"]["template"]["spec"]);
    })
}

/// Required node affinity with these terms.
fn required(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

/// The messages of the events with `reason` about a pod.
async fn event_messages(harness: &Harness, pod: &str, reason: &str) -> Vec<String> {
    pod_events(harness, pod)
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .filter_map(|event| event.message)
        .collect()
}

/// The pod of a job once its `PodScheduled` condition is False.
async fn unscheduled_pod(harness: &Harness, job_name: &str) -> Pod {
    let name = job_pod(harness, job_name)
        .await
        .metadata
        .name
        .expect("a name");
    eventually(20, "the pod unschedulable", || async {
        let pod = harness.pods().get(&name).await.ok()?;
        let unscheduled = pod
            .status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .any(|condition| condition.type_ == "PodScheduled" && condition.status == "False");
        unscheduled.then_some(pod)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_affinity_or_selector_names_another_node_stays_pending_with_the_schedulers_message()
 {
    let harness = Harness::start().await;
    let by_affinity = placed("by-affinity", |spec| {
        spec["affinity"] = required(json!([{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["other-node"]},
        ]}]));
    });
    let by_selector = placed("by-selector", |spec| {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": "other-node"});
    });
    let by_name = placed("by-name", |spec| {
        spec["affinity"] = required(json!([
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": [NODE]}]},
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "Exists"}, {"key": "disk", "operator": "Exists"}]},
        ]));
    });
    for job in [&by_affinity, &by_selector, &by_name] {
        create_job(&harness, job).await;
    }
    for name in ["by-affinity", "by-selector", "by-name"] {
        let pod = unscheduled_pod(&harness, name).await;
        let status = pod.status.clone().expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Pending"), "{name}");
        let condition = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|condition| condition.type_ == "PodScheduled")
            .expect("the condition");
        assert_eq!(
            (condition.reason.as_deref(), condition.message.as_deref()),
            (Some("Unschedulable"), Some(NO_MATCH)),
            "{name}"
        );
        assert_eq!(
            pod.spec.and_then(|spec| spec.node_name),
            None,
            "{name} is not bound"
        );
        let pod_name = pod.metadata.name.expect("a name");
        assert_eq!(
            event_messages(&harness, &pod_name, "FailedScheduling").await,
            [NO_MATCH],
            "{name}"
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_affinity_and_selector_allow_the_fake_node_runs_there() {
    let harness = Harness::start().await;
    let pinned = placed("pinned", |spec| {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": NODE});
        // The first term matches nothing; terms are ORed, so the second places the pod.
        spec["affinity"] = required(json!([
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["other-node"]}]},
            {
                "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["other-node"]}],
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}],
            },
        ]));
    });
    create_job(&harness, &pinned).await;
    job_condition(&harness, "pinned", "Complete", 30).await;
    let pod = job_pod(&harness, "pinned").await;
    assert_eq!(
        pod.spec.and_then(|spec| spec.node_name).as_deref(),
        Some(NODE)
    );
    let pod_name = pod.metadata.name.expect("a name");
    assert_eq!(
        event_messages(&harness, &pod_name, "Scheduled").await,
        [format!(
            "Successfully assigned default/{pod_name} to {NODE}"
        )]
    );
    harness.stop().await;
}
