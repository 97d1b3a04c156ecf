//! The peer of `bench/vs-kube-jobs.sh`: N Jobs like BuildIt's stages (`sh -c true`, no retries, mounting one
//! volume claim made for the loop), one after the other, each created, waited for until complete, deleted in
//! the background and waited for until its pod is gone, with kube-rs directly; then the claim deleted. Prints
//! the elapsed time.
//!
//! Usage: kube-loop KUBECONFIG NAMESPACE JOBS IMAGE

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kubeconfig, namespace, jobs, image] = args.as_slice() else {
        return Err("usage: kube-loop KUBECONFIG NAMESPACE JOBS IMAGE".into());
    };
    let jobs: usize = jobs.parse()?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let job_api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client, namespace);
    let started = Instant::now();
    let run = format!("loop-{}", std::process::id());
    // The Jobs share a claim, as the stages of a BuildIt run share their workspace.
    let claim_name = format!("{run}-ws");
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": claim_name, "labels": {"buildit.run": run}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    claim_api.create(&PostParams::default(), &claim).await?;
    for index in 0..jobs {
        let name = format!("{run}-{index}");
        let labels = [
            ("buildit.run".to_owned(), run.clone()),
            ("buildit.job".to_owned(), name.clone()),
        ]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "stage".to_owned(),
                            image: Some(image.clone()),
                            command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
                            volume_mounts: Some(vec![VolumeMount {
                                name: "workspace".to_owned(),
                                mount_path: "/workspace".to_owned(),
                                ..VolumeMount::default()
                            }]),
                            ..Container::default()
                        }],
                        volumes: Some(vec![Volume {
                            name: "workspace".to_owned(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: claim_name.clone(),
                                read_only: Some(false),
                            }),
                            ..Volume::default()
                        }]),
                        restart_policy: Some("Never".to_owned()),
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            ..Job::default()
        };
        job_api.create(&PostParams::default(), &job).await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(job_api.clone(), &name, conditions::is_job_completed()),
        )
        .await??;
        job_api.delete(&name, &DeleteParams::background()).await?;
        let listed = ListParams::default().labels(&format!("buildit.job={name}"));
        while !pod_api.list(&listed).await?.items.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    claim_api
        .delete(&claim_name, &DeleteParams::background())
        .await?;
    println!("{jobs} jobs in {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}
