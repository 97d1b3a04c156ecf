//! What every test against a running fake shares: starting it with the test image present, a kube-rs
//! client from the kubeconfig it writes, object builders, waiting for conditions, and the check that no
//! container is left behind.

use std::path::PathBuf;
use std::time::Duration;

use buildit_kube_fake::{FakeCluster, FakeOptions};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

pub const IMAGE: &str = "buildit-test/busybox:latest";

/// A started fake, a client for it, and where its kubeconfig is.
pub struct Harness {
    pub cluster: FakeCluster,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    _directory: tempfile::TempDir,
    _sweep: Sweep,
}

/// Removes the fake's containers when a test fails before it stops the fake.
struct Sweep {
    label: String,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &self.label])
            .output();
        let Ok(listed) = listed else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

fn ensure_test_image() {
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|output| output.status.success());
    if present {
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .status()
        .expect("run build-test-image.sh");
    assert!(status.success(), "building {IMAGE} failed");
}

/// The `buildit-kube-fake` binary running as a child process, and a client from the kubeconfig it wrote.
pub struct FakeProcess {
    pub child: tokio::process::Child,
    pub client: kube::Client,
    /// The URL of its serving line.
    pub url: String,
    pub kubeconfig: PathBuf,
    /// Kept open: the binary writes to stderr when it stops, and a closed pipe would fail it.
    _stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    _directory: tempfile::TempDir,
}

impl FakeProcess {
    /// Starts the binary with `namespace` as its kubeconfig's namespace and waits for its serving line.
    pub async fn start(namespace: &str) -> FakeProcess {
        ensure_test_image();
        let directory = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = directory.path().join("kubeconfig");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_buildit-kube-fake"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", namespace])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let first = lines.next_line().await.expect("readable").expect("a line");
        let url = first
            .strip_prefix("buildit-kube-fake serving on ")
            .unwrap_or_else(|| panic!("not the serving line: {first}"))
            .to_owned();
        let config = Kubeconfig::read_from(&kubeconfig).expect("parse the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("config");
        assert_eq!(config.default_namespace, namespace);
        let client = kube::Client::try_from(config).expect("client");
        FakeProcess {
            child,
            client,
            url,
            kubeconfig,
            _stderr: lines,
            _directory: directory,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running child")
    }

    /// Stops it with SIGTERM, as a user would; how it exited.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let signalled = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await
            .expect("kill");
        assert!(signalled.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("it stops")
            .expect("an exit status")
    }
}

impl Harness {
    /// Starts a fake with default options.
    pub async fn start() -> Harness {
        Harness::start_with(FakeOptions::default()).await
    }

    /// Starts a fake with these options.
    pub async fn start_with(options: FakeOptions) -> Harness {
        ensure_test_image();
        let cluster = FakeCluster::start(options).await.expect("start the fake");
        let directory = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = directory.path().join("kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig, "default")
            .expect("write the kubeconfig");
        let config = Kubeconfig::read_from(&kubeconfig).expect("read the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        let client = kube::Client::try_from(config).expect("kube client");
        let label = format!("label=buildit-kube-fake={}", cluster.instance_id());
        Harness {
            cluster,
            client,
            kubeconfig,
            _directory: directory,
            _sweep: Sweep { label },
        }
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Stops the fake and checks that none of its containers is left.
    pub async fn stop(self) {
        let instance = self.cluster.instance_id().to_owned();
        self.cluster.stop().await;
        let output = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=buildit-kube-fake={instance}"),
            ])
            .output()
            .expect("docker ps");
        let left = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(left.is_empty(), "containers left behind: {left}");
    }
}

/// A Job named `name` whose one container runs `sh -c script`, labelled `buildit.run=test` and
/// `buildit.stage=<name>`, with `backoffLimit: 0` and a short grace period, as BuildIt creates them.
pub fn job(name: &str, script: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"buildit.run": "test", "buildit.stage": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"buildit.run": "test", "buildit.stage": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main",
                        "image": IMAGE,
                        "command": ["sh", "-c", script],
                    }],
                },
            },
        },
    }))
    .expect("a valid job")
}

/// Changes a job's JSON (to add fields the builder does not have).
pub fn with(job: Job, change: impl FnOnce(&mut serde_json::Value)) -> Job {
    let mut value = serde_json::to_value(job).expect("job as json");
    change(&mut value);
    serde_json::from_value(value).expect("a valid job")
}

pub async fn create_job(harness: &Harness, job: &Job) -> Job {
    harness
        .jobs()
        .create(&PostParams::default(), job)
        .await
        .expect("create the job")
}

/// Polls `check` every 100 ms until it gives a value, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The condition of `kind` with status True on the Job, once it has one.
pub async fn job_condition(
    harness: &Harness,
    name: &str,
    kind: &str,
    seconds: u64,
) -> (Job, String, String) {
    let jobs = harness.jobs();
    eventually(seconds, &format!("job {name} condition {kind}"), || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get(name).await.ok()?;
            let condition = job
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|condition| condition.type_ == kind && condition.status == "True")?
                .clone();
            Some((
                job,
                condition.reason.unwrap_or_default(),
                condition.message.unwrap_or_default(),
            ))
        }
    })
    .await
}

/// The pods of a Job.
pub async fn job_pods(harness: &Harness, name: &str) -> Vec<Pod> {
    let params =
        kube::api::ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
    harness.pods().list(&params).await.expect("list pods").items
}

/// The one pod of a Job, once it exists.
pub async fn job_pod(harness: &Harness, name: &str) -> Pod {
    eventually(10, &format!("a pod of {name}"), || async {
        job_pods(harness, name).await.into_iter().next()
    })
    .await
}

/// The name of the one pod of a Job, once it exists.
pub async fn job_pod_name(harness: &Harness, name: &str) -> String {
    job_pod(harness, name).await.metadata.name.expect("a name")
}

/// Waits until pod `name` runs.
pub async fn pod_running(harness: &Harness, name: &str) {
    eventually(15, "the pod running", || async {
        let pod = harness.pods().get(name).await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

/// The main container's terminated state of a pod.
/// The events about pod `pod`.
pub async fn pod_events(harness: &Harness, pod: &str) -> Vec<k8s_openapi::api::core::v1::Event> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(harness.client.clone(), "default");
    let params = kube::api::ListParams::default().fields(&format!(
        "involvedObject.name={pod},involvedObject.kind=Pod"
    ));
    events.list(&params).await.expect("events").items
}

pub fn terminated(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}
