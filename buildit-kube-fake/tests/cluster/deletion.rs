//! Deletion with propagation (Background, Foreground, Orphan) through owner references, and graceful pod
//! deletion.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::support::{
    Harness, create_job, eventually, job, job_pod, job_pod_name, job_pods, pod_running,
};

async fn owned_secret(harness: &Harness, name: &str, job_name: &str, job_uid: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {"buildit.run": "test"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}],
        },
        "data": {"token": "c2VjcmV0"},
    }))
    .expect("a secret");
    harness
        .secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the secret");
}

async fn nothing_labelled(harness: &Harness) -> bool {
    let params = ListParams::default().labels("buildit.run");
    let jobs = harness
        .jobs()
        .list(&params)
        .await
        .expect("jobs")
        .items
        .len();
    let pods = harness
        .pods()
        .list(&params)
        .await
        .expect("pods")
        .items
        .len();
    let secrets = harness
        .secrets()
        .list(&params)
        .await
        .expect("secrets")
        .items
        .len();
    jobs + pods + secrets == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_the_job_at_once_and_its_pods_and_secrets_after() {
    let harness = Harness::start().await;
    let created = create_job(&harness, &job("bg", "sleep 30")).await;
    let uid = created.metadata.uid.expect("a uid");
    owned_secret(&harness, "bg-token", "bg", &uid).await;
    let pod = job_pod(&harness, "bg").await;
    assert_eq!(
        pod.metadata
            .owner_references
            .as_ref()
            .and_then(|refs| refs.first())
            .map(|r| (r.controller, r.block_owner_deletion)),
        Some((Some(true), Some(true)))
    );
    harness
        .jobs()
        .delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(
        harness.jobs().get_opt("bg").await.expect("get").is_none(),
        "the job goes at once"
    );
    eventually(15, "pods and secrets collected", || async {
        nothing_labelled(&harness).await.then_some(())
    })
    .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_keeps_the_job_until_its_pods_are_gone() {
    let harness = Harness::start().await;
    create_job(&harness, &job("fg", "sleep 30")).await;
    let pod_name = job_pod_name(&harness, "fg").await;
    pod_running(&harness, &pod_name).await;
    harness
        .jobs()
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    let held = harness.jobs().get("fg").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(
        held.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );
    eventually(20, "the job gone", || async {
        harness
            .jobs()
            .get_opt("fg")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        job_pods(&harness, "fg").await.is_empty(),
        "the pods went first"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_leaves_the_pods_without_their_owner() {
    let harness = Harness::start().await;
    create_job(&harness, &job("orphan", "true")).await;
    job_pod(&harness, "orphan").await;
    harness
        .jobs()
        .delete("orphan", &DeleteParams::orphan())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pods = job_pods(&harness, "orphan").await;
    assert_eq!(pods.len(), 1, "the pod stays");
    assert!(
        pods[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_gets_sigterm_then_sigkill_after_its_grace_period() {
    let harness = Harness::start().await;
    // The shell ignores SIGTERM: only the kill after the grace period (2 s) stops it.
    create_job(&harness, &job("graceful", "trap '' TERM; sleep 30")).await;
    let name = job_pod_name(&harness, "graceful").await;
    pod_running(&harness, &name).await;
    let started = Instant::now();
    harness
        .pods()
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    let deleting = harness.pods().get(&name).await.expect("still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    eventually(15, "the pod gone", || async {
        harness
            .pods()
            .get_opt(&name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_made_owned_by_a_merge_patch_goes_with_its_job() {
    let harness = Harness::start().await;
    let created = create_job(&harness, &job("patched", "sleep 30")).await;
    let uid = created.metadata.uid.expect("a uid");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "patched-token", "labels": {"buildit.run": "test"}},
        "data": {"token": "c2VjcmV0"},
    }))
    .expect("a secret");
    harness
        .secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the secret");
    let patch = json!({"metadata": {"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "patched", "uid": uid}
    ], "name": "renamed"}});
    let patched = harness
        .secrets()
        .patch(
            "patched-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("patched");
    assert_eq!(
        patched.metadata.name.as_deref(),
        Some("patched-token"),
        "a patch keeps the name"
    );
    assert_eq!(
        patched.data, secret.data,
        "a patch of metadata keeps the data"
    );
    assert_eq!(
        patched
            .metadata
            .owner_references
            .as_ref()
            .and_then(|refs| refs.first())
            .map(|r| r.uid.clone()),
        Some(uid)
    );
    harness
        .jobs()
        .delete("patched", &DeleteParams::background())
        .await
        .expect("delete");
    eventually(15, "the owned secret collected", || async {
        nothing_labelled(&harness).await.then_some(())
    })
    .await;
    harness.stop().await;
}
