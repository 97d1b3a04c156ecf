//! The `buildit-kube-fake` binary: writes the kubeconfig, says where it serves, and removes its containers
//! when it is stopped with SIGTERM.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};

use crate::support::{FakeProcess, eventually, job};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_until_sigterm_then_removes_its_containers() {
    let fake = FakeProcess::start("builds").await;
    assert!(fake.url.starts_with("http://127.0.0.1:"), "{}", fake.url);
    let text = std::fs::read_to_string(&fake.kubeconfig).expect("the kubeconfig");
    assert!(
        text.contains(&format!("server: {}", fake.url)) && text.contains("namespace: builds"),
        "{text}"
    );
    let jobs: Api<Job> = Api::default_namespaced(fake.client.clone());
    jobs.create(&PostParams::default(), &job("long", "sleep 300"))
        .await
        .expect("create");
    let pods: Api<Pod> = Api::default_namespaced(fake.client.clone());
    let uid = eventually(20, "the pod running", || async {
        let pod = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        (pod.status.as_ref()?.phase.as_deref() == Some("Running"))
            .then(|| pod.metadata.uid.clone())?
    })
    .await;
    let status = fake.terminate().await;
    assert!(status.success(), "{status}");
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=buildit-kube-fake.pod-uid={uid}"),
        ])
        .output()
        .expect("docker ps");
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_dropped_without_stop_still_removes_its_containers() {
    let harness = crate::support::Harness::start().await;
    crate::support::create_job(&harness, &job("dropped", "sleep 300")).await;
    let name = crate::support::job_pod_name(&harness, "dropped").await;
    eventually(20, "the pod running", || async {
        let pod = harness.pods().get(&name).await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let label = format!("label=buildit-kube-fake={}", harness.cluster.instance_id());
    let running = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &label])
        .output()
        .expect("ps");
    assert!(!running.stdout.is_empty(), "the pod's containers exist");
    // As when a test panics: the fake is dropped, not stopped.
    let crate::support::Harness { cluster, .. } = harness;
    drop(cluster);
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &label])
        .output()
        .expect("ps");
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
