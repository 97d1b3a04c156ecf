//! What a pod's containers share and how they start: native sidecars with startup probes on the pod's
//! `localhost`, init containers before the main ones, `emptyDir` and claim volumes, `hostAliases` in the
//! shared `/etc/hosts`, and TTL after finishing.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::{
    Harness, IMAGE, create_job, eventually, job, job_condition, job_pod, job_pod_name, with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_serves_localhost_after_its_startup_probe_and_stops_after_the_main_container() {
    let harness = Harness::start().await;
    let served = with(
        job(
            "served",
            "cat /work/note; wget -q -O - http://localhost:8080/",
        ),
        |job| {
            let spec = &mut job["spec"]["template"]["spec"];
            spec["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
            spec["containers"][0]["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
            spec["initContainers"] = json!([
                {
                    "name": "server",
                    "image": IMAGE,
                    "restartPolicy": "Always",
                    "command": ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && sleep 1 && touch /tmp/started && exec httpd -f -p 8080 -h /www"],
                    "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 10},
                },
                {
                    "name": "prepare",
                    "image": IMAGE,
                    "command": ["sh", "-c", "echo prepared > /work/note"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
            ]);
        },
    );
    create_job(&harness, &served).await;
    job_condition(&harness, "served", "Complete", 40).await;
    let pod = job_pod(&harness, "served").await;
    let name = pod.metadata.name.clone().expect("a name");
    let log = harness
        .pods()
        .logs(&name, &Default::default())
        .await
        .expect("the log");
    assert_eq!(log, "prepared\nserved\n");
    let status = pod.status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let sidecar = status
        .init_container_statuses
        .into_iter()
        .flatten()
        .find(|container| container.name == "server")
        .expect("the sidecar's status");
    assert!(
        sidecar.state.and_then(|state| state.terminated).is_some(),
        "the sidecar was stopped"
    );
    harness.stop().await;
}

fn volume_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_bound_at_once_and_its_volume_outlives_pods_until_the_claim_goes() {
    let harness = Harness::start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(harness.client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache", "labels": {"buildit.run": "test"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("a claim");
    let created = claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("create");
    assert_eq!(
        created.status.and_then(|status| status.phase).as_deref(),
        Some("Bound")
    );
    let volume = format!("bkf-pvc-{}", created.metadata.uid.expect("a uid"));
    let mounted = |name: &str, script: &str| {
        with(job(name, script), |job| {
            let spec = &mut job["spec"]["template"]["spec"];
            spec["volumes"] =
                json!([{"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}]);
            spec["containers"][0]["volumeMounts"] =
                json!([{"name": "cache", "mountPath": "/cache"}]);
        })
    };
    create_job(&harness, &mounted("write", "echo kept > /cache/file")).await;
    job_condition(&harness, "write", "Complete", 30).await;
    create_job(&harness, &mounted("read", "cat /cache/file")).await;
    job_condition(&harness, "read", "Complete", 30).await;
    let reader = job_pod_name(&harness, "read").await;
    assert_eq!(
        harness
            .pods()
            .logs(&reader, &Default::default())
            .await
            .expect("the log"),
        "kept\n"
    );
    assert!(volume_exists(&volume));
    claims
        .delete("cache", &Default::default())
        .await
        .expect("delete");
    eventually(15, "the claim's volume removed", || async {
        (!volume_exists(&volume)).then_some(())
    })
    .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_with_its_pods_after_its_ttl() {
    let harness = Harness::start().await;
    let short = with(job("short", "true"), |job| {
        job["spec"]["ttlSecondsAfterFinished"] = json!(1)
    });
    create_job(&harness, &short).await;
    // The TTL counts from the `Complete` condition's time, in whole seconds: the job may go at once.
    eventually(20, "the job and its pods gone", || async {
        let job = harness.jobs().get_opt("short").await.expect("get");
        let pods = crate::support::job_pods(&harness, "short").await;
        (job.is_none() && pods.is_empty()).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(harness.client.clone(), "default");
    let params = kube::api::ListParams::default()
        .fields("involvedObject.name=short,involvedObject.kind=Job");
    let reasons: Vec<String> = events
        .list(&params)
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"Completed".to_owned()),
        "it completed before it went: {reasons:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_aliases_are_in_the_etc_hosts_that_every_container_of_the_pod_reads() {
    let harness = Harness::start().await;
    let script = "grep buildit /etc/hosts; ping -c1 -W2 cache.buildit.test | head -n 1";
    let aliased = with(job("aliased", script), |job| {
        let spec = &mut job["spec"]["template"]["spec"];
        spec["hostAliases"] = json!([
            {"ip": "127.0.0.1", "hostnames": ["buildit-cache", "cache.buildit.test"]},
            {"ip": "10.1.2.3", "hostnames": ["buildit-far"]},
        ]);
        // An init container must see them too: it fails the pod when it does not.
        spec["initContainers"] = json!([{
            "name": "check",
            "image": IMAGE,
            "command": ["grep", "-q", "buildit-far", "/etc/hosts"],
        }]);
    });
    create_job(&harness, &aliased).await;
    job_condition(&harness, "aliased", "Complete", 30).await;
    let name = job_pod_name(&harness, "aliased").await;
    let log = harness
        .pods()
        .logs(&name, &Default::default())
        .await
        .expect("the log");
    assert_eq!(
        log,
        "127.0.0.1\tbuildit-cache\n127.0.0.1\tcache.buildit.test\n10.1.2.3\tbuildit-far\n\
         PING cache.buildit.test (127.0.0.1): 56 data bytes\n"
    );
    harness.stop().await;
}
