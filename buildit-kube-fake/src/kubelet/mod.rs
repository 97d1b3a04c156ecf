//! The kubelet of the one fake node: a worker per pod bound to it (its containers in Docker), the deletion
//! signals those workers get, a Docker volume per persistent volume claim, and the commands `pods/exec` runs.

mod container;
mod docker;
mod env;
mod exec;
mod lifecycle;
mod logs;
mod pod;
mod probes;
mod runtime;
mod status;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::reconcile_loop;
use crate::shared::{INSTANCE_LABEL, NODE_NAME, Shared};
use crate::store::{ObjectKey, Resource};
pub(crate) use exec::{
    AttachedStreams, CreatedExec, ExecEnd, ExecError, ExecInput, ExecOutput, RunningExec,
    create_exec,
};
use pod::{StopSignal, run_pod};

#[derive(Debug)]
struct Worker {
    stop: watch::Sender<StopSignal>,
    handle: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Kubelet {
    workers: HashMap<String, Worker>,
    /// Claims (by uid) whose volume was created.
    claims: HashSet<String>,
}

fn signal_for(pod: &Pod) -> StopSignal {
    match &pod.metadata.deletion_timestamp {
        Some(_) => StopSignal::Delete {
            grace_seconds: pod.metadata.deletion_grace_period_seconds.unwrap_or(30),
        },
        None => StopSignal::Running,
    }
}

impl Kubelet {
    fn sync_pods(&mut self, shared: &Arc<Shared>) {
        let pods = shared.store.list_as::<Pod>(Resource::Pods, None);
        let mut present = HashSet::new();
        for pod in &pods {
            let bound =
                pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) == Some(NODE_NAME);
            let (Some(uid), Some(namespace), Some(name)) = (
                &pod.metadata.uid,
                &pod.metadata.namespace,
                &pod.metadata.name,
            ) else {
                continue;
            };
            if !bound {
                continue;
            }
            present.insert(uid.clone());
            let signal = signal_for(pod);
            if let Some(worker) = self.workers.get(uid) {
                worker.stop.send_if_modified(|current| {
                    let changed = *current != signal && signal != StopSignal::Running;
                    if changed {
                        *current = signal;
                    }
                    changed
                });
                continue;
            }
            let (stop, receiver) = watch::channel(signal);
            let key = ObjectKey::new(Resource::Pods, namespace, name);
            let handle = tokio::spawn(run_pod(Arc::clone(shared), key, pod.clone(), receiver));
            self.workers.insert(uid.clone(), Worker { stop, handle });
        }
        for (uid, worker) in &self.workers {
            if !present.contains(uid) {
                worker.stop.send_if_modified(|current| {
                    let changed = *current != StopSignal::Removed;
                    *current = StopSignal::Removed;
                    changed
                });
            }
        }
        self.workers
            .retain(|uid, worker| present.contains(uid) || !worker.handle.is_finished());
    }

    fn sync_claims(&mut self, shared: &Arc<Shared>) {
        let claims = shared
            .store
            .list_as::<PersistentVolumeClaim>(Resource::PersistentVolumeClaims, None);
        let present: HashSet<String> = claims
            .iter()
            .filter_map(|claim| claim.metadata.uid.clone())
            .collect();
        let new: Vec<String> = present.difference(&self.claims).cloned().collect();
        for uid in new {
            self.claims.insert(uid.clone());
            let shared = Arc::clone(shared);
            let name = runtime::claim_volume(&uid);
            tokio::spawn(async move {
                let labels = HashMap::from([(INSTANCE_LABEL.to_owned(), shared.instance.clone())]);
                // A claim whose volume cannot be made fails its pods' mounts instead.
                let _ = docker::create_volume(&shared.docker, &name, labels).await;
            });
        }
        let gone: Vec<String> = self.claims.difference(&present).cloned().collect();
        for uid in gone {
            self.claims.remove(&uid);
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                let name = runtime::claim_volume(&uid);
                let label = format!("{INSTANCE_LABEL}={}", shared.instance);
                // Finished pods' stopped containers still hold the volume (their output is already in the
                // log book); a running pod's hold it until the pod ends.
                for _ in 0..120 {
                    for id in docker::stopped_containers_using(&shared.docker, &label, &name).await
                    {
                        docker::remove(&shared.docker, &id).await;
                    }
                    if docker::remove_volume(&shared.docker, &name).await
                        || shared.shutdown.is_cancelled()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    }
}

/// Runs the kubelet until the fake stops.
pub(crate) async fn run_kubelet(shared: Arc<Shared>) {
    let mut kubelet = Kubelet::default();
    let owner = Arc::clone(&shared);
    reconcile_loop(Arc::clone(&shared), Duration::from_millis(500), move |_| {
        kubelet.sync_pods(&owner);
        kubelet.sync_claims(&owner);
        let aborts = kubelet
            .workers
            .values()
            .map(|worker| worker.handle.abort_handle());
        *lock_workers(&owner) = aborts.collect();
    })
    .await;
    abort_workers(&shared);
}

fn lock_workers(shared: &Shared) -> std::sync::MutexGuard<'_, Vec<tokio::task::AbortHandle>> {
    shared
        .pod_workers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops every pod worker: the fake is stopping, and no worker may create a container after the final sweep.
pub(crate) fn abort_workers(shared: &Shared) {
    for abort in std::mem::take(&mut *lock_workers(shared)) {
        abort.abort();
    }
}

/// Removes every container and volume the fake `instance` created (twice: a request a stopped worker had in
/// flight may still create a container).
pub(crate) async fn remove_everything(docker: &bollard::Docker, instance: &str) {
    let label = format!("{INSTANCE_LABEL}={instance}");
    for pass in 0..2 {
        if pass > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let ids = docker::containers_labelled(docker, std::slice::from_ref(&label)).await;
        join_all(ids.iter().map(|id| docker::remove(docker, id))).await;
    }
    for volume in docker::volumes_labelled(docker, &label).await {
        docker::remove_volume(docker, &volume).await;
    }
}
