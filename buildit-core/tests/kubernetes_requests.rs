//! The Kubernetes executor's requests, asserted one by one against a scripted API server (kube-rs's own way:
//! `tower-test`): the Secret before the Job, no secret value in any body but the Secret's, the Job deleted with
//! `Background` propagation once its output is read, a cancel that waits until no pod is left, and the run's
//! workspace claim and its holder made first and deleted at the run's end.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its scripted server cannot answer"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use buildit_core::exec::{Executor, KubernetesExecutor, KubernetesOptions, StageSpec};
use http::{Request, Response};
use kube::client::Body;

const SECRET: &str = "hunter2-secret-value";

/// One request the scripted server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: String,
}

/// How the attempt's pod looks to the scripted server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodScript {
    /// Its container ran and exited with this code.
    Exited(i32),
    /// It runs until it is deleted.
    Running,
    /// The cluster refuses to create it (its Job has a `FailedCreate` event).
    Refused,
}

fn pod_json(job: &str, script: PodScript) -> serde_json::Value {
    let state = match script {
        PodScript::Exited(code) => {
            serde_json::json!({"terminated": {"exitCode": code, "reason": "Completed"}})
        }
        PodScript::Running | PodScript::Refused => serde_json::json!({"running": {}}),
    };
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job}-abcde"), "namespace": "ci", "resourceVersion": "5",
                     "labels": {"buildit.job": job}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "stage", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
            "state": state,
        }]},
    })
}

fn answer(status: u16, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .expect("a response")
}

/// Serves `handle` as a small API server that knows one attempt, recording every request.
fn scripted_server(mut handle: ApiHandle, script: PodScript, seen: Arc<Mutex<Vec<Seen>>>) {
    tokio::spawn(async move {
        let job: Arc<Mutex<Option<String>>> = Arc::default();
        let deleted_job = Arc::new(Mutex::new(false));
        let mut holder_deleted = false;
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let body = request
                .into_body()
                .collect_bytes()
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            seen.lock().expect("seen").push(Seen {
                method: method.clone(),
                uri: uri.clone(),
                body: body.clone(),
            });
            let path = uri.split('?').next().unwrap_or_default().to_owned();
            let job_name = job.lock().expect("job").clone().unwrap_or_default();
            let response = match (method.as_str(), path.as_str()) {
                ("POST", "/api/v1/namespaces/ci/secrets") => {
                    let mut secret: serde_json::Value = serde_json::from_str(&body).expect("json");
                    secret["metadata"]["uid"] = "secret-uid".into();
                    answer(201, &secret)
                }
                ("POST", "/apis/batch/v1/namespaces/ci/jobs") => {
                    let mut created: serde_json::Value = serde_json::from_str(&body).expect("json");
                    created["metadata"]["uid"] = "job-uid".into();
                    *job.lock().expect("job") =
                        created["metadata"]["name"].as_str().map(str::to_owned);
                    answer(201, &created)
                }
                (
                    "POST",
                    "/api/v1/namespaces/ci/persistentvolumeclaims" | "/api/v1/namespaces/ci/pods",
                ) => {
                    let mut created: serde_json::Value = serde_json::from_str(&body).expect("json");
                    created["metadata"]["uid"] = "workspace-uid".into();
                    answer(201, &created)
                }
                ("DELETE", path) if path.starts_with("/api/v1/namespaces/ci/pods/buildit-ws-") => {
                    holder_deleted = true;
                    answer(
                        200,
                        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    )
                }
                ("GET", path)
                    if path.starts_with("/api/v1/namespaces/ci/pods/buildit-ws-")
                        && holder_deleted =>
                {
                    answer(
                        404,
                        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "gone"}),
                    )
                }
                ("GET", path) if path.starts_with("/api/v1/namespaces/ci/pods/buildit-ws-") => {
                    // The pod that holds the run's workspace runs, on one node.
                    let name = path.rsplit('/').next().unwrap_or_default();
                    answer(
                        200,
                        &serde_json::json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "namespace": "ci", "resourceVersion": "3"},
                            "spec": {"nodeName": "node-1", "containers": [{"name": "files", "image": "busybox"}]},
                            "status": {"phase": "Running", "containerStatuses": [{
                                "name": "files", "image": "busybox", "imageID": "", "ready": true,
                                "restartCount": 0, "state": {"running": {}},
                            }]},
                        }),
                    )
                }
                ("PATCH", _) => answer(200, &serde_json::json!({"metadata": {}})),
                ("DELETE", path) if path.starts_with("/apis/batch/v1/namespaces/ci/jobs/") => {
                    *deleted_job.lock().expect("deleted") = true;
                    answer(
                        200,
                        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    )
                }
                ("DELETE", _) => answer(
                    200,
                    &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                ("GET", path) if path.ends_with("/log") => Response::builder()
                    .status(200)
                    .body(Body::from(
                        b"2026-12-07T13:05:40.000000001Z hello from the pod\n".to_vec(),
                    ))
                    .expect("a response"),
                ("GET", "/api/v1/namespaces/ci/pods") if uri.contains("watch=true") => {
                    // The watch stays open and quiet.
                    held.push(send);
                    continue;
                }
                ("GET", "/api/v1/namespaces/ci/pods") => {
                    let gone = *deleted_job.lock().expect("deleted");
                    let items = if gone || job_name.is_empty() || script == PodScript::Refused {
                        vec![]
                    } else {
                        vec![pod_json(&job_name, script)]
                    };
                    answer(
                        200,
                        &serde_json::json!({
                            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": items,
                        }),
                    )
                }
                ("GET", "/api/v1/namespaces/ci/events") => {
                    let items = if script == PodScript::Refused {
                        vec![serde_json::json!({
                            "metadata": {"name": "e1", "namespace": "ci"},
                            "involvedObject": {"kind": "Job", "name": job_name},
                            "reason": "FailedCreate",
                            "message": "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\"",
                        })]
                    } else {
                        vec![]
                    };
                    answer(
                        200,
                        &serde_json::json!({
                            "apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "7"}, "items": items,
                        }),
                    )
                }
                ("GET", _) => answer(
                    200,
                    &serde_json::json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                        "metadata": {"resourceVersion": "7"}, "items": [],
                    }),
                ),
                _ => answer(
                    404,
                    &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"}),
                ),
            };
            send.send_response(response);
        }
    });
}

/// The scripted server's side of the connection.
type ApiHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn executor() -> (KubernetesExecutor, Arc<Mutex<Vec<Seen>>>, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "ci");
    let executor =
        KubernetesExecutor::with_client(client, "ci".to_owned(), KubernetesOptions::default());
    (executor, Arc::default(), handle)
}

fn spec() -> StageSpec {
    let mut spec = StageSpec::new(vec!["echo hello".into()], "/workspace");
    spec.image = Some("busybox".into());
    spec.secrets.insert("TOKEN".into(), SECRET.into());
    spec.labels.insert("buildit.run".into(), "run-1".into());
    spec.labels
        .insert("buildit.instance".into(), "build".into());
    spec.labels.insert("buildit.attempt".into(), "1".into());
    spec
}

#[tokio::test]
async fn an_attempt_creates_its_secret_then_its_job_and_deletes_the_job_in_the_background() {
    let (executor, seen, handle) = executor();
    scripted_server(handle, PodScript::Exited(0), Arc::clone(&seen));
    let attempt = executor.spawn(spec()).await.expect("spawned");
    let mut logs = executor.logs(&attempt).await.expect("logs");
    let status = tokio::time::timeout(Duration::from_secs(10), executor.wait(&attempt))
        .await
        .expect("ends in time")
        .expect("an exit");
    assert_eq!(status.code, Some(0));
    let mut output = Vec::new();
    while let Some(chunk) = logs.next().await {
        output.extend(chunk.bytes);
    }
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("$ echo hello\n"), "{output}");
    assert!(output.contains("hello from the pod\n"), "{output}");
    tokio::time::timeout(Duration::from_secs(10), executor.release_run("run-1"))
        .await
        .expect("released in time")
        .unwrap_or_else(|error| panic!("{error}: {:#?}", seen.lock().expect("seen")));

    let seen = seen.lock().expect("seen").clone();
    let position = |method: &str, path: &str| {
        seen.iter()
            .position(|request| request.method == method && request.uri.starts_with(path))
            .unwrap_or_else(|| panic!("no {method} {path} in {seen:#?}"))
    };
    let claim = position("POST", "/api/v1/namespaces/ci/persistentvolumeclaims");
    let holder = position("POST", "/api/v1/namespaces/ci/pods");
    let secret = position("POST", "/api/v1/namespaces/ci/secrets");
    let job = position("POST", "/apis/batch/v1/namespaces/ci/jobs");
    let delete = position("DELETE", "/apis/batch/v1/namespaces/ci/jobs/");
    assert!(
        claim < holder && holder < secret && secret < job && job < delete,
        "{seen:#?}"
    );
    // The stage's pod mounts the run's claim, on the node that holds it (a read-write-once claim).
    let job_body: serde_json::Value = serde_json::from_str(&seen[job].body).expect("json");
    let pod = &job_body["spec"]["template"]["spec"];
    let claim_name = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        .as_str()
        .expect("the claim");
    assert!(
        seen[claim].body.contains(claim_name),
        "{}",
        seen[claim].body
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0]["values"][0],
        "node-1"
    );
    // The run's end deletes the holder, then the claim (while the last Jobs go).
    let holder_deleted = position(
        "DELETE",
        &format!("/api/v1/namespaces/ci/pods/{claim_name}"),
    );
    let claim_deleted = position(
        "DELETE",
        &format!("/api/v1/namespaces/ci/persistentvolumeclaims/{claim_name}"),
    );
    assert!(holder_deleted < claim_deleted, "{seen:#?}");
    // The Secret is owned by its Job once the Job exists.
    let owned = position("PATCH", "/api/v1/namespaces/ci/secrets/");
    assert!(seen[owned].body.contains("job-uid"), "{}", seen[owned].body);
    // No secret value in any body; its base64 form only in the Secret's.
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for (index, request) in seen.iter().enumerate() {
        assert!(!request.body.contains(SECRET), "{request:?}");
        if index != secret {
            assert!(!request.body.contains(&encoded), "{request:?}");
        }
    }
    assert!(seen[secret].body.contains(&encoded));
    assert!(
        seen[job].body.contains("secretKeyRef"),
        "{}",
        seen[job].body
    );
    assert!(
        seen[delete]
            .body
            .contains("\"propagationPolicy\":\"Background\""),
        "{}",
        seen[delete].body
    );
}

#[tokio::test]
async fn a_cancel_deletes_the_job_and_its_pods_and_waits_until_they_are_gone() {
    let (executor, seen, handle) = executor();
    scripted_server(handle, PodScript::Running, Arc::clone(&seen));
    let attempt = executor.spawn(spec()).await.expect("spawned");
    // Running: the pod is listed until its Job is deleted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        executor.status(&attempt).await,
        Ok(buildit_core::exec::StageStatus::Running)
    ));
    tokio::time::timeout(
        Duration::from_secs(10),
        executor.cancel(&attempt, Duration::from_secs(3)),
    )
    .await
    .expect("cancelled in time")
    .expect("cancelled");
    let seen = seen.lock().expect("seen").clone();
    let delete = seen
        .iter()
        .find(|request| {
            request.method == "DELETE"
                && request
                    .uri
                    .starts_with("/apis/batch/v1/namespaces/ci/jobs/")
        })
        .unwrap_or_else(|| panic!("no DELETE of the Job in {seen:#?}"));
    assert!(
        delete.body.contains("\"propagationPolicy\":\"Background\""),
        "{}",
        delete.body
    );
    assert!(
        delete.body.contains("\"gracePeriodSeconds\":3"),
        "{}",
        delete.body
    );
    // After the delete, the executor listed the Job's pods until none was left.
    let listed_after = seen
        .iter()
        .skip_while(|request| request.method != "DELETE")
        .any(|request| {
            request.method == "GET" && request.uri.contains("labelSelector=buildit.job")
        });
    assert!(listed_after, "{seen:#?}");
}

#[tokio::test]
async fn a_pod_the_cluster_refuses_to_create_fails_the_attempt_with_the_reason() {
    let (executor, seen, handle) = executor();
    scripted_server(handle, PodScript::Refused, Arc::clone(&seen));
    let attempt = executor.spawn(spec()).await.expect("spawned");
    let ended = tokio::time::timeout(Duration::from_secs(20), executor.wait(&attempt))
        .await
        .expect("ends in time");
    match ended {
        Err(error @ buildit_core::exec::ExecError::Config(_)) => {
            assert!(
                error.to_string().contains("violates PodSecurity"),
                "{error}"
            );
        }
        other => panic!("a refused pod ended as {other:?}"),
    }
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .any(|request| request.uri.contains("fieldSelector=involvedObject.kind")),
        "{seen:#?}"
    );
}
