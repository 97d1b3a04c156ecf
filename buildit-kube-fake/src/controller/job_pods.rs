//! A Job's pods: creating one from the template (generated name, controller labels, owner reference) and
//! finding those it owns.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::events::{EventType, Reporter, record_event};
use crate::shared::Shared;
use crate::store::Resource;

/// The pods whose controller is the Job with `uid`.
pub(crate) fn owned_pods(shared: &Shared, namespace: &str, uid: &str) -> Vec<Pod> {
    shared
        .store
        .list_as::<Pod>(Resource::Pods, Some(namespace))
        .into_iter()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|reference| reference.uid == uid && reference.controller == Some(true))
        })
        .collect()
}

/// Creates a pod for the Job from its template; `None` if the store refused it.
pub(crate) fn create_pod(shared: &Shared, job: &Job) -> Option<Pod> {
    let name = job.metadata.name.clone()?;
    let namespace = job.metadata.namespace.clone()?;
    let uid = job.metadata.uid.clone()?;
    let template = &job.spec.as_ref()?.template;
    let template_meta = template.metadata.clone().unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.clone()),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name: name.clone(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    let created = shared
        .store
        .create_as(Resource::Pods, &namespace, &pod)
        .ok()?;
    let job_object = serde_json::to_value(job).unwrap_or_default();
    let message = format!(
        "Created pod: {}",
        created.metadata.name.as_deref().unwrap_or_default()
    );
    record_event(
        shared,
        &job_object,
        EventType::Normal,
        Reporter::JobController,
        "SuccessfulCreate",
        &message,
        None,
    );
    Some(created)
}
