//! Jobs run for real: secrets in the environment, failures, deadlines, label selectors, requests recorded.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::support::{Harness, create_job, job, job_condition, job_pod, terminated, with};

fn secret(name: &str, key: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"buildit.run": "test"}},
        "stringData": {key: value},
    }))
    .expect("a valid secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_with_its_secret_in_the_environment_and_its_output_in_the_log() {
    let harness = Harness::start().await;
    let value = "s3cr3t-0f-the-test";
    harness
        .secrets()
        .create(&PostParams::default(), &secret("token", "token", value))
        .await
        .expect("create the secret");
    let hello = with(job("hello", r#"echo hello; echo "$TOKEN""#), |job| {
        job["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}}]);
    });
    create_job(&harness, &hello).await;
    let (completed, reason, _) = job_condition(&harness, "hello", "Complete", 30).await;
    assert_eq!(reason, "CompletionsReached");
    let status = completed.status.expect("a status");
    assert_eq!(status.succeeded, Some(1));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let pod = job_pod(&harness, "hello").await;
    let name = pod.metadata.name.clone().expect("a name");
    assert!(
        name.starts_with("hello-") && name.len() == "hello-".len() + 5,
        "{name}"
    );
    let ended = terminated(&pod).expect("terminated");
    assert_eq!(
        (ended.exit_code, ended.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(
        pod.status.and_then(|status| status.phase).as_deref(),
        Some("Succeeded")
    );
    let log = harness
        .pods()
        .logs(&name, &Default::default())
        .await
        .expect("the log");
    assert_eq!(log, format!("hello\n{value}\n"));
    // The secret's value reached the fake only in the Secret itself, base64 or not.
    let carrying: Vec<String> = harness
        .cluster
        .requests()
        .into_iter()
        .filter(|request| request.body.contains(value))
        .map(|request| request.path)
        .collect();
    assert_eq!(carrying, ["/api/v1/namespaces/default/secrets"]);
    // The same dump over HTTP, for tests in other processes.
    let dump = axum::http::Request::get("/fake/requests")
        .body(Vec::new())
        .expect("a request");
    let dump = harness.client.request_text(dump).await.expect("the dump");
    let dump: Vec<buildit_kube_fake::RecordedRequest> = serde_json::from_str(&dump).expect("json");
    assert!(
        dump.iter()
            .any(|request| request.method == "POST" && request.path.ends_with("/jobs"))
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_job_with_its_exit_code_in_the_pod() {
    let harness = Harness::start().await;
    create_job(&harness, &job("fails", "echo about to fail >&2; exit 3")).await;
    let (failed, reason, message) = job_condition(&harness, "fails", "Failed", 30).await;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert_eq!(failed.status.and_then(|status| status.failed), Some(1));
    let pod = job_pod(&harness, "fails").await;
    let ended = terminated(&pod).expect("terminated");
    assert_eq!(
        (ended.exit_code, ended.reason.as_deref()),
        (3, Some("Error"))
    );
    let log = harness
        .pods()
        .logs(
            pod.metadata.name.as_deref().expect("a name"),
            &Default::default(),
        )
        .await
        .expect("the log");
    assert_eq!(log, "about to fail\n");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_is_killed_and_fails() {
    let harness = Harness::start().await;
    let slow = with(job("slow", "sleep 30"), |job| {
        job["spec"]["activeDeadlineSeconds"] = json!(1)
    });
    let started = std::time::Instant::now();
    create_job(&harness, &slow).await;
    let (_, reason, message) = job_condition(&harness, "slow", "Failed", 20).await;
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    // Deadline (1 s) plus the pod's grace period (2 s): not the 30 s of the command.
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_label_selectors() {
    let harness = Harness::start().await;
    let secrets = harness.secrets();
    for (name, stage) in [("a", "build"), ("b", "test"), ("c", "deploy")] {
        let mut secret = secret(name, "k", "v");
        secret
            .metadata
            .labels
            .get_or_insert_default()
            .insert("buildit.stage".to_owned(), stage.to_owned());
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create");
    }
    let unlabelled: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
    }))
    .expect("a secret");
    secrets
        .create(&PostParams::default(), &unlabelled)
        .await
        .expect("create");
    let names = |selector: &'static str| {
        let secrets = secrets.clone();
        async move {
            let listed = secrets
                .list(&ListParams::default().labels(selector))
                .await
                .expect("list");
            let mut names: Vec<String> = listed
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            names.sort();
            names.join(",")
        }
    };
    assert_eq!(names("buildit.run").await, "a,b,c");
    assert_eq!(names("!buildit.run").await, "plain");
    assert_eq!(names("buildit.stage=build").await, "a");
    assert_eq!(names("buildit.stage!=build").await, "b,c,plain");
    assert_eq!(names("buildit.stage in (build,test)").await, "a,b");
    assert_eq!(
        names("buildit.run=test,buildit.stage notin (build)").await,
        "b,c"
    );
    let by_name = secrets
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);
    let taken = secrets.create(&PostParams::default(), &unlabelled).await;
    assert!(
        matches!(taken, Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists")
    );
    let mut invalid = secret("badlabel", "k", "v");
    invalid
        .metadata
        .labels
        .get_or_insert_default()
        .insert("buildit.stage".to_owned(), "build step".to_owned());
    let refused = secrets.create(&PostParams::default(), &invalid).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref status)) if status.code == 422 && status.reason == "Invalid"
            && status.message.starts_with("Secret \"badlabel\" is invalid: metadata.labels: Invalid value: \"build step\"")),
        "{refused:?}"
    );
    let missing = secrets.get("nope").await;
    assert!(
        matches!(missing, Err(kube::Error::Api(status)) if status.code == 404 && status.reason == "NotFound")
    );
    harness.stop().await;
}
