//! What a run's workspace asks the cluster for, built without calling anything: the claim the run's pods share,
//! the pod that holds it (files move in and out through it), and where a run's pods must run to reach it.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::{self, ROLE_LABEL, RUN_LABEL};
use super::options::KubernetesOptions;
use super::source_fetch::{SourceFetch, source_fetch};
use crate::owner::LeftoverOwner;
use crate::source::FetchableSource;

/// The container of the holder pod, that files are copied in and out through.
pub const HOLDER_CONTAINER: &str = "files";
/// The workspace volume's name in every pod of a run.
pub const WORKSPACE_VOLUME: &str = "workspace";
/// The value of [`ROLE_LABEL`] on a run's claim and holder pod.
const WORKSPACE_ROLE: &str = "workspace";
/// What the holder runs: nothing, until it is told to stop (then at once: it holds no work of its own). An
/// image without `sleep` ends it at once, which is reported, rather than spinning.
const HOLD: &str = "trap 'exit 0' TERM INT; while sleep 1; do :; done";
/// How long the holder may take to stop.
const HOLDER_GRACE_SECONDS: i64 = 2;

/// A run's workspace objects, ready to be created.
#[derive(Debug, Clone)]
pub struct WorkspaceObjects {
    /// The claim's (and the holder pod's) name.
    pub name: String,
    /// The claim.
    pub claim: PersistentVolumeClaim,
    /// The pod that mounts the claim and stays up while the run lasts.
    pub holder: Pod,
    /// How the holder's init container brings the run's source in; `None`: BuildIt copies it in.
    pub fetch: Option<SourceFetch>,
}

/// The workspace objects of run `run` (whose stages' labels are `spec_labels`), mounted at `workspace`,
/// held by a pod of `image`, with `source` fetched into it by the holder when the cluster can fetch it.
pub fn workspace_objects(
    spec_labels: &BTreeMap<String, String>,
    workspace: &Path,
    source: Option<&FetchableSource>,
    image: &str,
    namespace: &str,
    options: &KubernetesOptions,
    owner: &LeftoverOwner,
) -> WorkspaceObjects {
    let run = spec_labels.get(RUN_LABEL).map_or("", String::as_str);
    let name = names::workspace_name(run);
    let mut labels = BTreeMap::from([(ROLE_LABEL.to_owned(), WORKSPACE_ROLE.to_owned())]);
    labels.insert(RUN_LABEL.to_owned(), names::label_value(run));
    let mut annotations = BTreeMap::from([(RUN_LABEL.to_owned(), run.to_owned())]);
    annotations.extend(owner.marks());
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: metadata.clone(),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![options.workspace_access.as_str().to_owned()]),
            storage_class_name: options.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(options.workspace_size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    let workspace = workspace.display().to_string();
    let fetch = source.and_then(|source| source_fetch(source, &metadata, &workspace, options));
    let mut volumes = vec![workspace_volume(&name)];
    volumes.extend(fetch.iter().flat_map(|fetch| fetch.volumes.clone()));
    let holder = Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: HOLDER_CONTAINER.to_owned(),
                image: Some(image.to_owned()),
                command: Some(vec!["sh".to_owned(), "-c".to_owned(), HOLD.to_owned()]),
                working_dir: Some(workspace.clone()),
                volume_mounts: Some(vec![workspace_mount(&workspace)]),
                ..Container::default()
            }],
            init_containers: fetch.as_ref().map(|fetch| vec![fetch.container.clone()]),
            volumes: Some(volumes),
            restart_policy: Some("Never".to_owned()),
            // The stages' account (what the namespace's policies expect of BuildIt's pods), never its token.
            service_account_name: options.service_account.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(HOLDER_GRACE_SECONDS),
            image_pull_secrets: pull_secrets(options),
            ..PodSpec::default()
        }),
        status: None,
    };
    WorkspaceObjects {
        name,
        claim,
        holder,
        fetch,
    }
}

/// The pod volume of claim `claim`.
pub fn workspace_volume(claim: &str) -> Volume {
    Volume {
        name: WORKSPACE_VOLUME.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: Some(false),
        }),
        ..Volume::default()
    }
}

/// The workspace volume mounted at `path`.
pub fn workspace_mount(path: &str) -> VolumeMount {
    VolumeMount {
        name: WORKSPACE_VOLUME.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// What places a pod on node `node` (where a read-write-once claim is mounted already).
pub fn on_node(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".to_owned(),
                        operator: "In".to_owned(),
                        values: Some(vec![node.to_owned()]),
                    }]),
                    match_expressions: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

/// The image pull secrets of every pod, when there are any.
pub fn pull_secrets(options: &KubernetesOptions) -> Option<Vec<LocalObjectReference>> {
    (!options.image_pull_secrets.is_empty()).then(|| {
        options
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::WorkspaceAccess;

    #[test]
    fn the_claim_and_its_holder_carry_the_run_and_the_settings() {
        let labels = BTreeMap::from([(RUN_LABEL.to_owned(), "18bd-1a".to_owned())]);
        let options = KubernetesOptions {
            storage_class: Some("nfs".to_owned()),
            workspace_access: WorkspaceAccess::ReadWriteMany,
            workspace_size: "3Gi".to_owned(),
            ..KubernetesOptions::default()
        };
        let owner = LeftoverOwner::this_process();
        let objects = workspace_objects(
            &labels,
            Path::new("/src/repo"),
            None,
            "busybox",
            "ci",
            &options,
            &owner,
        );
        let claim = serde_json::to_value(&objects.claim).unwrap_or_default();
        assert_eq!(claim["metadata"]["labels"]["buildit.run"], "18bd-1a");
        assert_eq!(claim["metadata"]["labels"]["buildit.role"], "workspace");
        assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteMany");
        assert_eq!(claim["spec"]["storageClassName"], "nfs");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "3Gi");
        let holder = serde_json::to_value(&objects.holder).unwrap_or_default();
        assert_eq!(holder["metadata"]["name"], objects.name.as_str());
        assert_eq!(holder["metadata"]["labels"]["buildit.run"], "18bd-1a");
        assert_eq!(
            holder["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            objects.name.as_str()
        );
        assert_eq!(
            holder["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/src/repo"
        );
        assert!(
            holder["metadata"]["annotations"]
                .as_object()
                .is_some_and(|marks| marks.keys().any(|key| key.contains("owner"))),
            "{holder}"
        );
    }

    #[test]
    fn a_pod_is_placed_on_the_named_node() {
        let affinity = serde_json::to_value(on_node("node-7")).unwrap_or_default();
        let term = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0];
        assert_eq!(term["key"], "metadata.name");
        assert_eq!(term["operator"], "In");
        assert_eq!(term["values"][0], "node-7");
    }
}
