//! One pod as the kubelet runs it: its spec, the status it publishes, its sandbox and containers, and the
//! faults that apply to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::ContainerList;
use crate::events::{EventType, Reporter, record_event};
use crate::shared::Shared;
use crate::store::ObjectKey;

/// A container the kubelet created for the pod (its current attempt).
#[derive(Debug)]
pub(crate) struct PodContainer {
    pub list: ContainerList,
    pub name: String,
    pub id: String,
    /// Copies its output into the log book; ends when the container stops.
    pub capture: Option<JoinHandle<()>>,
}

/// The kubelet's side of one pod.
#[derive(Debug)]
pub(crate) struct PodRuntime {
    pub shared: Arc<Shared>,
    pub key: ObjectKey,
    pub uid: String,
    pub pod: Pod,
    pub status: Mutex<PodStatus>,
    pub sandbox: Mutex<Option<String>>,
    pub containers: Mutex<Vec<PodContainer>>,
    /// For the `oom` fault: how long the first container runs before it is killed.
    pub oom_after: Option<Duration>,
    /// Becomes true when the main containers have started (timed faults count from then).
    pub main_started: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PodRuntime {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: ObjectKey,
        pod: Pod,
        oom_after: Option<Duration>,
    ) -> PodRuntime {
        PodRuntime {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            status: Mutex::new(pod.status.clone().unwrap_or_default()),
            shared,
            key,
            pod,
            sandbox: Mutex::new(None),
            containers: Mutex::new(Vec::new()),
            oom_after,
            main_started: watch::channel(false).0,
        }
    }

    /// Changes the status and writes it to the store.
    pub(crate) fn publish(&self, change: impl FnOnce(&mut PodStatus)) {
        let status = {
            let mut status = lock(&self.status);
            change(&mut status);
            status.clone()
        };
        self.shared.store.update_as::<Pod>(&self.key, |pod| {
            pod.status = Some(status);
        });
    }

    /// A copy of the current status.
    pub(crate) fn status(&self) -> PodStatus {
        lock(&self.status).clone()
    }

    /// Records an event about the pod; `container` names the container it is about.
    pub(crate) fn event(
        &self,
        event_type: EventType,
        reason: &str,
        message: &str,
        container: Option<(ContainerList, &str)>,
    ) {
        let object = self
            .shared
            .store
            .get(&self.key)
            .unwrap_or_else(|| serde_json::to_value(&self.pod).unwrap_or_default());
        let field_path = container.map(|(list, name)| match list {
            ContainerList::Init => format!("spec.initContainers{{{name}}}"),
            ContainerList::Main => format!("spec.containers{{{name}}}"),
        });
        record_event(
            &self.shared,
            &object,
            event_type,
            Reporter::Kubelet,
            reason,
            message,
            field_path,
        );
    }

    pub(crate) fn sandbox_id(&self) -> Option<String> {
        lock(&self.sandbox).clone()
    }

    pub(crate) fn set_sandbox(&self, id: String) {
        *lock(&self.sandbox) = Some(id);
    }

    /// Remembers a created container (replacing an earlier attempt of the same name).
    pub(crate) fn add_container(&self, container: PodContainer) {
        let mut containers = lock(&self.containers);
        containers
            .retain(|existing| existing.name != container.name || existing.list != container.list);
        containers.push(container);
    }

    /// Takes the log capture of a container, to wait for it.
    pub(crate) fn take_capture(&self, list: ContainerList, name: &str) -> Option<JoinHandle<()>> {
        lock(&self.containers)
            .iter_mut()
            .find(|container| container.list == list && container.name == name)
            .and_then(|container| container.capture.take())
    }

    /// `(list, name, id)` of every container created so far.
    pub(crate) fn container_ids(&self) -> Vec<(ContainerList, String, String)> {
        lock(&self.containers)
            .iter()
            .map(|container| (container.list, container.name.clone(), container.id.clone()))
            .collect()
    }

    /// The Docker volume that backs the pod volume `volume`.
    pub(crate) fn docker_volume(&self, volume: &str) -> Option<String> {
        let spec = self.pod.spec.as_ref()?;
        let source = spec
            .volumes
            .iter()
            .flatten()
            .find(|candidate| candidate.name == volume)?;
        if source.empty_dir.is_some() {
            return Some(empty_dir_volume(&self.shared, &self.uid, volume));
        }
        let claim = source.persistent_volume_claim.as_ref()?;
        let key = ObjectKey::new(
            crate::store::Resource::PersistentVolumeClaims,
            &self.key.namespace,
            &claim.claim_name,
        );
        let claim_uid = self
            .shared
            .store
            .get(&key)?
            .pointer("/metadata/uid")?
            .as_str()?
            .to_owned();
        Some(claim_volume(&claim_uid))
    }

    /// The labels for containers and volumes of this pod.
    pub(crate) fn labels(&self) -> HashMap<String, String> {
        super::docker::pod_labels(&self.shared, &self.uid)
    }
}

/// The Docker volume of a pod's `emptyDir`.
pub(crate) fn empty_dir_volume(shared: &Shared, pod_uid: &str, volume: &str) -> String {
    format!("bkf-{}-{pod_uid}-{volume}", shared.instance)
}

/// The Docker volume of a claim, named from its uid.
pub(crate) fn claim_volume(claim_uid: &str) -> String {
    format!("bkf-pvc-{claim_uid}")
}
