//! What an attempt asks the cluster for, built from its stage spec without calling anything: the Secret that
//! holds its secrets and the Job that runs its commands (secrets only by `secretKeyRef`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, ResourceRequirements, Secret,
    SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names;
use super::options::KubernetesOptions;
use super::services::{host_aliases, sidecars};
use super::workspace_manifest::{on_node, pull_secrets, workspace_mount, workspace_volume};
use crate::exec::executor::StageSpec;
use crate::owner::LeftoverOwner;

/// The name of the container that runs the stage's commands (its log is the stage's output).
pub const STAGE_CONTAINER: &str = "stage";
/// How much longer than the stage's timeout the cluster lets the Job run: the runner stops the stage at its
/// timeout itself; the Job's deadline stops it when no runner is left to.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// An attempt's objects, ready to be created.
#[derive(Debug, Clone)]
pub struct AttemptObjects {
    /// The Job's (and the Secret's) name.
    pub name: String,
    /// The Secret, when the stage has secrets.
    pub secret: Option<Secret>,
    /// The Job.
    pub job: Job,
}

/// Where an attempt's pod finds the run's workspace.
#[derive(Debug, Clone, Copy)]
pub struct WorkspacePlace<'a> {
    /// The run's claim.
    pub claim: &'a str,
    /// The node the pod must run on to mount it, when it must.
    pub node: Option<&'a str>,
}

/// The objects of one attempt of `spec`.
pub fn attempt_objects(
    spec: &StageSpec,
    image: &str,
    namespace: &str,
    options: &KubernetesOptions,
    owner: &LeftoverOwner,
    workspace: WorkspacePlace<'_>,
) -> AttemptObjects {
    let run = spec.labels.get(names::RUN_LABEL).map_or("", String::as_str);
    let instance = spec
        .labels
        .get("buildit.instance")
        .map_or("stage", String::as_str);
    let attempt = spec
        .labels
        .get("buildit.attempt")
        .and_then(|attempt| attempt.parse().ok())
        .unwrap_or(1);
    let name = names::job_name(run, instance, attempt);
    let labels = names::labels(&spec.labels, &name);
    let annotations = names::annotations(&spec.labels, owner);
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };
    let secret = (!spec.secrets.is_empty()).then(|| Secret {
        metadata: metadata.clone(),
        immutable: Some(true),
        type_: Some("Opaque".to_owned()),
        data: Some(
            spec.secrets
                .iter()
                .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    });
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .filter(|(key, _)| !spec.secrets.contains_key(*key))
        .map(|(key, value)| EnvVar {
            name: key.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    env.extend(spec.secrets.keys().map(|key| EnvVar {
        name: key.clone(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }));
    let resources = spec.resources.as_ref().map(|resources| {
        let mut amounts = BTreeMap::new();
        if let Some(cpu) = resources.cpu_millis {
            amounts.insert("cpu".to_owned(), Quantity(format!("{cpu}m")));
        }
        if let Some(memory) = resources.memory_bytes {
            amounts.insert("memory".to_owned(), Quantity(memory.to_string()));
        }
        ResourceRequirements {
            limits: Some(amounts.clone()),
            requests: Some(amounts),
            ..ResourceRequirements::default()
        }
    });
    let workspace_path = spec.workspace.display().to_string();
    let container = Container {
        name: STAGE_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        // The stage's shell runs the commands as it does locally; the image's entrypoint would wrap it.
        command: Some(vec![spec.shell.clone(), "-c".to_owned(), spec.script()]),
        env: Some(env),
        working_dir: Some(spec.workdir.display().to_string()),
        resources,
        volume_mounts: Some(vec![workspace_mount(&workspace_path)]),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_owned()),
        service_account_name: options.service_account.clone(),
        // A stage talks to the cluster's API only through a service account given for it.
        automount_service_account_token: Some(options.service_account.is_some()),
        enable_service_links: Some(false),
        // A pod deleted by the cluster (a Job's deadline, its TTL) gets BuildIt's own grace period; a cancel
        // gives the run's.
        termination_grace_period_seconds: Some(seconds(crate::exec::DEFAULT_GRACE)),
        image_pull_secrets: pull_secrets(options),
        volumes: Some(vec![workspace_volume(workspace.claim)]),
        affinity: workspace.node.map(on_node),
        init_containers: (!spec.services.is_empty()).then(|| sidecars(&spec.services)),
        host_aliases: host_aliases(&spec.services),
        ..PodSpec::default()
    };
    let job = Job {
        metadata: metadata.clone(),
        spec: Some(JobSpec {
            // One pod: a failed attempt is retried by the runner (as a new attempt, with its own Job).
            backoff_limit: Some(0),
            active_deadline_seconds: spec
                .timeout
                .map(|timeout| seconds(timeout + DEADLINE_MARGIN)),
            ttl_seconds_after_finished: Some(
                i32::try_from(seconds(options.finished_job_ttl)).unwrap_or(i32::MAX),
            ),
            // A disrupted pod (evicted, preempted, its node drained) fails the Job with reason
            // `PodFailurePolicy` rather than counting as the stage's failure: the runner tells it apart.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".to_owned(),
                        status: "True".to_owned(),
                    }]),
                    on_exit_codes: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    AttemptObjects { name, secret, job }
}

/// The reference that makes the Job own its Secret (the Secret goes when the Job goes).
pub fn owned_by_job(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs().max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a test fails loudly on what it cannot build"
)]
mod tests {
    use super::*;

    fn spec() -> StageSpec {
        let mut spec = StageSpec::new(vec!["make".into(), "make test".into()], "/work/repo/sub");
        spec.workspace = "/work/repo".into();
        spec.image = Some("rust:1.95".into());
        spec.env.insert("CI".into(), "true".into());
        spec.secrets
            .insert("TOKEN".into(), "hunter2-secret-value".into());
        spec.timeout = Some(Duration::from_secs(600));
        spec.labels.insert("buildit.run".into(), "18bd-1a".into());
        spec.labels
            .insert("buildit.instance".into(), "test[os=linux]".into());
        spec.labels.insert("buildit.attempt".into(), "2".into());
        spec
    }

    #[test]
    fn the_job_runs_the_commands_in_the_stages_shell_and_carries_no_secret_value() {
        let objects = attempt_objects(
            &spec(),
            "rust:1.95",
            "ci",
            &KubernetesOptions::default(),
            &LeftoverOwner::this_process(),
            WorkspacePlace {
                claim: "buildit-ws-1",
                node: Some("node-7"),
            },
        );
        let job = serde_json::to_string(&objects.job).expect("serializes");
        assert!(!job.contains("hunter2-secret-value"), "{job}");
        let pod = objects
            .job
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("a pod template");
        let container = &pod.containers[0];
        let command = container.command.as_ref().expect("a command");
        assert_eq!(command[..2], ["sh".to_owned(), "-c".to_owned()]);
        assert!(command[2].contains("make test"), "{command:?}");
        assert_eq!(container.working_dir.as_deref(), Some("/work/repo/sub"));
        let token = container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == "TOKEN")
            .expect("the secret's variable");
        assert_eq!(token.value, None);
        let reference = token
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .expect("a secretKeyRef");
        assert_eq!(reference.name, objects.name);
        let secret = objects.secret.expect("a secret");
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(
            secret.data.as_ref().and_then(|data| data.get("TOKEN")),
            Some(&ByteString(b"hunter2-secret-value".to_vec()))
        );
        let spec = objects.job.spec.as_ref().expect("a job spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(630));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let pod_json = serde_json::to_value(pod).expect("serializes");
        assert_eq!(
            pod_json["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "buildit-ws-1"
        );
        assert_eq!(
            pod_json["containers"][0]["volumeMounts"][0]["mountPath"],
            "/work/repo"
        );
        assert_eq!(
            pod_json["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
            "node-7"
        );
        let labels = objects.job.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get("buildit.run").map(String::as_str),
            Some("18bd-1a")
        );
        assert_eq!(labels.get(names::JOB_LABEL), Some(&objects.name));
        assert!(
            labels
                .get("buildit.instance")
                .is_some_and(|value| value.starts_with("test-os-linux")),
            "{labels:?}"
        );
    }

    #[test]
    fn a_stage_without_secrets_has_no_secret() {
        let mut spec = spec();
        spec.secrets.clear();
        let objects = attempt_objects(
            &spec,
            "rust:1.95",
            "ci",
            &KubernetesOptions::default(),
            &LeftoverOwner::this_process(),
            WorkspacePlace {
                claim: "buildit-ws-1",
                node: Some("node-7"),
            },
        );
        assert!(objects.secret.is_none());
    }
}
