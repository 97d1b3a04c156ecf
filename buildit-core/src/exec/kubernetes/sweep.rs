//! Sweeping what runs left on the cluster: the labelled Jobs, Pods, Secrets and workspace claims of a run that
//! has ended, or of an owner that is gone.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::executor::{KubernetesExecutor, backend, is_not_found};
use super::names::{RUN_LABEL, owner_from_annotations};
use crate::exec::executor::ExecError;
use crate::exec::sweep::{SweepReport, SweepScope};

/// Removes the Jobs, Pods, Secrets and claims `scope` says may go, and waits until their pods are gone.
pub async fn sweep(
    executor: &KubernetesExecutor,
    scope: &SweepScope,
) -> Result<SweepReport, ExecError> {
    let selector = match &scope.run {
        Some(run) => format!("{RUN_LABEL}={}", super::names::label_value(run)),
        None => RUN_LABEL.to_owned(),
    };
    let mut report = SweepReport::default();
    let jobs = remove(executor, executor.jobs(), &selector, scope).await?;
    let pods = remove(executor, executor.pods(), &selector, scope).await?;
    let secrets = remove(executor, executor.secrets(), &selector, scope).await?;
    // Claims last: one in use stays (protected) until its pods are gone.
    let claims = remove(executor, executor.claims(), &selector, scope).await?;
    for job in &jobs {
        executor
            .delete_pods_of(&format!("{}={job}", super::names::JOB_LABEL), None)
            .await?;
    }
    // The pods removed by name (a workspace's holder) are gone too before the sweep says it is done.
    for pod in &pods {
        executor.pod_gone(pod).await?;
    }
    // The report's "containers" are the objects removed, by kind.
    report
        .containers
        .extend(jobs.into_iter().map(|name| format!("job/{name}")));
    report
        .containers
        .extend(pods.into_iter().map(|name| format!("pod/{name}")));
    report
        .containers
        .extend(secrets.into_iter().map(|name| format!("secret/{name}")));
    report
        .containers
        .extend(claims.into_iter().map(|name| format!("pvc/{name}")));
    Ok(report)
}

/// Deletes the objects of `api` under `selector` that may go; their names.
async fn remove<K>(
    executor: &KubernetesExecutor,
    api: Api<K>,
    selector: &str,
    scope: &SweepScope,
) -> Result<Vec<String>, ExecError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let listed = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|error| backend("cannot list what runs left on the cluster", &error))?;
    let mut removed = Vec::new();
    for object in listed.items {
        let Some(name) = object.metadata.name.clone() else {
            continue;
        };
        if object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let empty = BTreeMap::new();
        let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
        let of_run = scope.run.is_some();
        let gone = owner_from_annotations(annotations)
            .is_some_and(|owner| owner.is_gone(&executor.owner, &scope.ended_leases));
        if !(of_run || gone) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => removed.push(name),
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(backend(&format!("cannot delete {name}"), &error)),
        }
    }
    Ok(removed)
}
