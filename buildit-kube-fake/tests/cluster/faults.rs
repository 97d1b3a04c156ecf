//! Each fault as a real client sees it: image pull failures, OOM kills (injected and real), eviction,
//! unschedulable pods, external deletion, missing secrets, and the pod failure policy's answers to them.

use axum::http::Request;
use buildit_kube_fake::{Fault, FaultKind};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::support::{
    Harness, create_job, eventually, job, job_condition, job_pod, job_pod_name, pod_events,
    terminated, with,
};

/// The reasons of the events about a pod.
async fn event_reasons(harness: &Harness, pod: &str) -> Vec<String> {
    pod_events(harness, pod)
        .await
        .into_iter()
        .filter_map(|event| event.reason)
        .collect()
}

/// The waiting reason and message of the pod's main container, once `check` accepts them.
async fn waiting(harness: &Harness, pod: &str, reason: &str) -> String {
    eventually(20, &format!("waiting reason {reason}"), || async {
        let pod = harness.pods().get(pod).await.ok()?;
        let waiting = pod
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?;
        (waiting.reason.as_deref() == Some(reason)).then(|| waiting.message.unwrap_or_default())
    })
    .await
}

async fn pod_when(harness: &Harness, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    eventually(20, what, || async {
        let pod = harness.pods().get(name).await.ok()?;
        check(&pod).then_some(pod)
    })
    .await
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_leaves_the_pod_pending_in_back_off() {
    let harness = Harness::start().await;
    let fault = Fault::new(FaultKind::ImagePull, "buildit.stage=pull");
    harness.cluster.faults().inject(fault).expect("inject");
    create_job(&harness, &job("pull", "echo never")).await;
    let name = job_pod_name(&harness, "pull").await;
    let message = waiting(&harness, &name, "ErrImagePull").await;
    assert!(
        message.contains("failed to pull and unpack image"),
        "{message}"
    );
    let message = waiting(&harness, &name, "ImagePullBackOff").await;
    assert_eq!(
        message,
        "Back-off pulling image \"buildit-test/busybox:latest\""
    );
    let pod = harness.pods().get(&name).await.expect("the pod");
    assert_eq!(phase(&pod), "Pending");
    assert!(
        event_reasons(&harness, &name)
            .await
            .contains(&"Failed".to_owned())
    );
    let refused = harness.pods().logs(&name, &Default::default()).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref status)) if status.code == 400
            && status.message.contains("is waiting to start: trying and failing to pull image")),
        "{refused:?}"
    );
    // A missing image behaves the same, without a fault.
    let missing = with(job("missing", "true"), |job| {
        job["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("buildit-test/nonexistent:1");
    });
    create_job(&harness, &missing).await;
    let name = job_pod_name(&harness, "missing").await;
    waiting(&harness, &name, "ImagePullBackOff").await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_oom_kill_and_a_real_one_both_report_oomkilled() {
    let harness = Harness::start().await;
    let fault = Fault::new(FaultKind::Oom, "buildit.stage=injected").after_ms(300);
    harness.cluster.faults().inject(fault).expect("inject");
    create_job(&harness, &job("injected", "sleep 30")).await;
    let real = with(job("real", "tail /dev/zero"), |job| {
        job["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"memory": "16Mi"}});
    });
    create_job(&harness, &real).await;
    for name in ["injected", "real"] {
        let (_, reason, _) = job_condition(&harness, name, "Failed", 30).await;
        assert_eq!(reason, "BackoffLimitExceeded");
        let pod = job_pod(&harness, name).await;
        let ended = terminated(&pod).expect("terminated");
        assert_eq!(
            (ended.exit_code, ended.reason.as_deref()),
            (137, Some("OOMKilled")),
            "{name}"
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_fails_with_a_disruption_target_and_the_policy_decides() {
    let harness = Harness::start().await;
    // Injected over the HTTP control API, as a test in another process would.
    let fault = json!({"selector": "buildit.stage=evicted", "fault": "evict", "after_ms": 300});
    let request = Request::post("/fake/faults")
        .body(fault.to_string().into_bytes())
        .expect("a request");
    harness.client.request_text(request).await.expect("inject");
    let policy = |action: &str| json!({"rules": [{"action": action, "onPodConditions": [{"type": "DisruptionTarget"}]}]});
    let evicted = with(job("evicted", "sleep 30"), |job| {
        job["spec"]["podFailurePolicy"] = policy("FailJob")
    });
    create_job(&harness, &evicted).await;
    let name = job_pod_name(&harness, "evicted").await;
    let pod = pod_when(&harness, &name, "the pod evicted", |pod| {
        phase(pod) == "Failed"
    })
    .await;
    let status = pod.status.clone().expect("a status");
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        status.message.as_deref(),
        Some("The node was low on resource: memory.")
    );
    let target = status
        .conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("condition");
    assert_eq!(
        (target.status.as_str(), target.reason.as_deref()),
        ("True", Some("TerminationByKubelet"))
    );
    assert!(
        event_reasons(&harness, &name)
            .await
            .contains(&"Evicted".to_owned())
    );
    let (_, reason, message) = job_condition(&harness, "evicted", "Failed", 20).await;
    assert_eq!(reason, "PodFailurePolicy");
    assert_eq!(
        message,
        format!(
            "Pod default/{name} has condition DisruptionTarget matching FailJob rule at index 0"
        )
    );
    // `Ignore`: the evicted pod is not counted and another one runs.
    harness.cluster.faults().clear();
    let fault = Fault::new(FaultKind::Evict, "buildit.stage=ignored").after_ms(300);
    harness.cluster.faults().inject(fault).expect("inject");
    let ignored = with(job("ignored", "sleep 1"), |job| {
        job["spec"]["podFailurePolicy"] = policy("Ignore")
    });
    create_job(&harness, &ignored).await;
    let first = job_pod_name(&harness, "ignored").await;
    pod_when(&harness, &first, "the first pod evicted", |pod| {
        phase(pod) == "Failed"
    })
    .await;
    harness.cluster.faults().clear();
    let (done, _, _) = job_condition(&harness, "ignored", "Complete", 30).await;
    let status = done.status.expect("a status");
    assert_eq!((status.succeeded, status.failed), (Some(1), Some(0)));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_rules_fail_the_job_with_the_controllers_message() {
    let harness = Harness::start().await;
    let rules = json!({"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]});
    let coded = with(job("coded", "exit 42"), |job| {
        job["spec"]["podFailurePolicy"] = rules
    });
    create_job(&harness, &coded).await;
    let (_, reason, message) = job_condition(&harness, "coded", "Failed", 30).await;
    let pod = job_pod_name(&harness, "coded").await;
    assert_eq!(reason, "PodFailurePolicy");
    assert_eq!(
        message,
        format!(
            "Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pods_stay_pending_with_the_schedulers_message() {
    let harness = Harness::start().await;
    let greedy = with(job("greedy", "true"), |job| {
        job["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "100"}});
    });
    create_job(&harness, &greedy).await;
    harness
        .cluster
        .faults()
        .inject(Fault::new(FaultKind::Unschedulable, "buildit.stage=held"))
        .expect("inject");
    create_job(&harness, &job("held", "true")).await;
    for (name, expected) in [
        ("greedy", "0/1 nodes are available: 1 Insufficient cpu."),
        ("held", "0/1 nodes are available:"),
    ] {
        let pod = job_pod_name(&harness, name).await;
        let pod = pod_when(&harness, &pod, "the pod unschedulable", |pod| {
            pod.status
                .iter()
                .flat_map(|status| status.conditions.iter().flatten())
                .any(|condition| condition.type_ == "PodScheduled" && condition.status == "False")
        })
        .await;
        let condition = pod
            .status
            .clone()
            .and_then(|status| status.conditions)
            .unwrap_or_default();
        let scheduled = condition
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .expect("condition");
        assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
        assert!(
            scheduled
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(expected)),
            "{scheduled:?}"
        );
        assert_eq!(phase(&pod), "Pending");
        let pod_name = pod.metadata.name.clone().expect("a name");
        assert!(
            event_reasons(&harness, &pod_name)
                .await
                .contains(&"FailedScheduling".to_owned())
        );
        let refused = harness.pods().logs(&pod_name, &Default::default()).await;
        assert!(
            matches!(refused, Err(kube::Error::Api(ref status)) if status.code == 400
                && status.message == format!("container \"main\" in pod \"{pod_name}\" is waiting to start: ContainerCreating")),
            "{refused:?}"
        );
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_by_someone_else_fails_its_job() {
    let harness = Harness::start().await;
    harness
        .cluster
        .faults()
        .inject(Fault::new(FaultKind::Delete, "buildit.stage=deleted").after_ms(300))
        .expect("inject");
    create_job(&harness, &job("deleted", "sleep 30")).await;
    let name = job_pod_name(&harness, "deleted").await;
    eventually(20, "the pod gone", || async {
        harness
            .pods()
            .get_opt(&name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let (job, reason, _) = job_condition(&harness, "deleted", "Failed", 20).await;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(job.status.and_then(|status| status.failed), Some(1));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_create_container_config_error() {
    let harness = Harness::start().await;
    let needs = |secret: &str, key: &str| {
        let (secret, key) = (secret.to_owned(), key.to_owned());
        move |job: &mut serde_json::Value| {
            job["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]);
        }
    };
    create_job(
        &harness,
        &with(job("nosecret", "true"), needs("absent", "token")),
    )
    .await;
    let name = job_pod_name(&harness, "nosecret").await;
    assert_eq!(
        waiting(&harness, &name, "CreateContainerConfigError").await,
        "secret \"absent\" not found"
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "present"}, "data": {"other": "eA=="}});
    let secret = serde_json::from_value(secret).expect("a secret");
    harness
        .secrets()
        .create(&Default::default(), &secret)
        .await
        .expect("create");
    create_job(
        &harness,
        &with(job("nokey", "true"), needs("present", "token")),
    )
    .await;
    let name = job_pod_name(&harness, "nokey").await;
    assert_eq!(
        waiting(&harness, &name, "CreateContainerConfigError").await,
        "couldn't find key token in Secret default/present"
    );
    harness.stop().await;
}
