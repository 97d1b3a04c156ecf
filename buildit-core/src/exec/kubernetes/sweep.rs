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
    let (jobs, _) = remove(executor, executor.jobs(), &selector, scope).await?;
    let (pods, going) = remove(executor, executor.pods(), &selector, scope).await?;
    let (secrets, _) = remove(executor, executor.secrets(), &selector, scope).await?;
    // Claims last: one in use stays (protected) until its pods are gone.
    let (claims, _) = remove(executor, executor.claims(), &selector, scope).await?;
    // All the waits at once, each done even when another fails: a pod stuck on a lost node does not hold
    // up the others. Pods found going already are waited for only in a run's sweep: a global one (`buildit
    // gc`) does not wait on pods a lost node may keep for good.
    let job_pods = jobs.iter().map(|job| async move {
        executor
            .delete_pods_of(&format!("{}={job}", super::names::JOB_LABEL), None)
            .await
    });
    let named = if scope.run.is_some() {
        pods.iter().chain(&going).collect::<Vec<_>>()
    } else {
        pods.iter().collect()
    };
    let named_pods = named.into_iter().map(|pod| executor.pod_gone(pod));
    let (job_pods, named_pods) = tokio::join!(
        futures_util::future::join_all(job_pods),
        futures_util::future::join_all(named_pods)
    );
    let waited: Result<(), ExecError> = job_pods.into_iter().chain(named_pods).collect();
    waited?;
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

/// Deletes the objects of `api` under `selector` that may go: the names of those it deleted, and of those in
/// its scope that were being deleted already.
async fn remove<K>(
    executor: &KubernetesExecutor,
    api: Api<K>,
    selector: &str,
    scope: &SweepScope,
) -> Result<(Vec<String>, Vec<String>), ExecError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let listed = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|error| backend("cannot list what runs left on the cluster", &error))?;
    let mut removed = Vec::new();
    let mut going = Vec::new();
    for object in listed.items {
        let Some(name) = object.metadata.name.clone() else {
            continue;
        };
        let empty = BTreeMap::new();
        let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
        let of_run = scope.run.is_some();
        let gone = owner_from_annotations(annotations)
            .is_some_and(|owner| owner.is_gone(&executor.owner, &scope.ended_leases));
        if !(of_run || gone) {
            continue;
        }
        if object.metadata.deletion_timestamp.is_some() {
            going.push(name);
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => removed.push(name),
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(backend(&format!("cannot delete {name}"), &error)),
        }
    }
    Ok((removed, going))
}
