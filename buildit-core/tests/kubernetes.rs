//! The Kubernetes executor against a real API server on loopback (`buildit-kube-fake`) whose pods run in the
//! local Docker Engine: real output, exit codes, and every failure told apart (image pull, OOM, eviction, a pod
//! deleted by someone else, a pod no node takes, a cut log stream), a run's workspace shared by its stages with
//! files moved in and out of it, services as sidecars, with nothing left behind.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its cluster cannot be set up"
)]

use std::time::Duration;

use buildit_core::exec::{
    ExecError, Executor, ExitStatus, KubernetesExecutor, KubernetesOptions, ReadyCheck,
    ServiceSpec, StageSpec,
};
use buildit_core::source::{
    ArchiveDigest, ArchiveLinks, CommitId, FetchableSource, SourceLimits, SourceStore,
};
use buildit_kube_fake::{FakeCluster, FakeOptions, Fault, FaultKind};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::ListParams;

const IMAGE: &str = "buildit-test/busybox:latest";
const NAMESPACE: &str = "buildit-test";

/// A fake cluster and the kubeconfig (in `dir`) that points at it.
async fn fake_cluster(dir: &std::path::Path) -> (FakeCluster, std::path::PathBuf) {
    let fake = FakeCluster::start(FakeOptions::default())
        .await
        .expect("the fake cluster starts");
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, NAMESPACE)
        .expect("kubeconfig");
    (fake, kubeconfig)
}

/// A fake cluster and an executor on it (its kubeconfig in `dir`).
async fn cluster(dir: &std::path::Path) -> (FakeCluster, KubernetesExecutor) {
    let (fake, kubeconfig) = fake_cluster(dir).await;
    let mut options = KubernetesOptions::default();
    options.kubeconfig = Some(kubeconfig);
    options.image_pull_grace = Duration::from_secs(1);
    options.unschedulable_limit = Duration::from_secs(1);
    let executor = KubernetesExecutor::connect(options)
        .await
        .expect("the executor connects");
    assert_eq!(executor.namespace(), NAMESPACE);
    (fake, executor)
}

fn spec(run: &str, stage: &str, commands: &[&str]) -> StageSpec {
    let mut spec = StageSpec::new(
        commands
            .iter()
            .map(|command| (*command).to_owned())
            .collect(),
        "/workspace",
    );
    spec.image = Some(IMAGE.to_owned());
    spec.labels.insert("buildit.run".into(), run.into());
    spec.labels.insert("buildit.stage".into(), stage.into());
    spec.labels.insert("buildit.instance".into(), stage.into());
    spec.labels.insert("buildit.attempt".into(), "1".into());
    spec
}

/// Runs `spec` to its end: how it ended and its output.
async fn run(
    executor: &KubernetesExecutor,
    spec: StageSpec,
) -> (Result<ExitStatus, ExecError>, String) {
    let attempt = executor.spawn(spec).await.expect("spawned");
    let mut logs = executor.logs(&attempt).await.expect("logs");
    let reading = tokio::spawn(async move {
        let mut output = Vec::new();
        while let Some(chunk) = logs.next().await {
            output.extend(chunk.bytes);
        }
        String::from_utf8_lossy(&output).into_owned()
    });
    let ended = tokio::time::timeout(Duration::from_secs(60), executor.wait(&attempt))
        .await
        .expect("the attempt ends in time");
    let output = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the output ends in time")
        .expect("read");
    (ended, output)
}

/// What of run `run` is left on the cluster: Jobs, Pods, Secrets and claims.
async fn left(executor_kubeconfig: &std::path::Path, run: &str) -> Vec<String> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(executor_kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let selector = ListParams::default().labels(&format!("buildit.run={run}"));
    let mut left = Vec::new();
    for job in kube::Api::<Job>::namespaced(client.clone(), NAMESPACE)
        .list(&selector)
        .await
        .expect("jobs")
    {
        left.push(format!("job {}", job.metadata.name.unwrap_or_default()));
    }
    for pod in kube::Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&selector)
        .await
        .expect("pods")
    {
        left.push(format!("pod {}", pod.metadata.name.unwrap_or_default()));
    }
    for secret in kube::Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .list(&selector)
        .await
        .expect("secrets")
    {
        left.push(format!(
            "secret {}",
            secret.metadata.name.unwrap_or_default()
        ));
    }
    for claim in kube::Api::<PersistentVolumeClaim>::namespaced(client, NAMESPACE)
        .list(&selector)
        .await
        .expect("claims")
    {
        left.push(format!("pvc {}", claim.metadata.name.unwrap_or_default()));
    }
    left
}

/// Ends run `run` and checks that nothing of it is left on the cluster.
async fn released_leaving_nothing(
    executor: &KubernetesExecutor,
    kubeconfig: &std::path::Path,
    run: &str,
) {
    executor.release_run(run).await.expect("released");
    assert_eq!(left(kubeconfig, run).await, Vec::<String>::new());
}

/// A stage of run `run` whose workspace is the host directory `workspace`.
fn in_workspace(
    run: &str,
    stage: &str,
    commands: &[&str],
    workspace: &std::path::Path,
) -> StageSpec {
    let mut spec = spec(run, stage, commands);
    spec.workspace = workspace.to_path_buf();
    spec.workdir = workspace.to_path_buf();
    spec
}

#[tokio::test]
async fn a_stage_runs_its_commands_with_its_secret_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let mut stage = spec("run-ok", "build", &["echo hello", "echo \"token=$TOKEN\""]);
    stage
        .secrets
        .insert("TOKEN".into(), "hunter2-in-a-secret".into());
    stage.env.insert("GREETING".into(), "hi".into());
    let (ended, output) = run(&executor, stage).await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("$ echo hello\nhello\n"), "{output}");
    assert!(output.contains("token=hunter2-in-a-secret\n"), "{output}");
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-ok").await;
    // The value went to the cluster in the Secret only (base64), never in a Job's or a Pod's body.
    for request in fake.requests() {
        assert!(!request.body.contains("hunter2-in-a-secret"), "{request:?}");
    }
    fake.stop().await;
}

#[tokio::test]
async fn a_failing_command_gives_its_exit_code_and_a_missing_image_fails_as_image_pull() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let (ended, output) = run(
        &executor,
        spec("run-fail", "test", &["echo before", "exit 3", "echo never"]),
    )
    .await;
    let status = ended.expect("an exit");
    assert_eq!(status.code, Some(3), "{output}");
    assert!(!status.oom_killed);
    assert!(!output.contains("never"), "{output}");

    let mut missing = spec("run-fail", "pull", &["true"]);
    missing.image = Some("buildit-test/not-there:1".to_owned());
    let (ended, _) = run(&executor, missing).await;
    match ended {
        Err(error @ ExecError::ImagePull(_)) => {
            assert!(error.to_string().contains("not-there"), "{error}")
        }
        other => panic!("a missing image ended as {other:?}"),
    }
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-fail").await;
    fake.stop().await;
}

#[tokio::test]
async fn oom_eviction_deletion_and_unschedulable_are_each_told_apart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let faults = [
        ("oom", FaultKind::Oom),
        ("evict", FaultKind::Evict),
        ("delete", FaultKind::Delete),
        ("unschedulable", FaultKind::Unschedulable),
    ];
    for (stage, fault) in faults {
        fake.faults()
            .inject(Fault::new(fault, &format!("buildit.stage={stage}")).after_ms(300))
            .expect("a fault");
    }
    let (oom, _) = run(&executor, spec("run-faults", "oom", &["sleep 10"])).await;
    assert!(
        oom.as_ref().is_ok_and(|status| status.oom_killed),
        "{oom:?}"
    );
    let (evicted, _) = run(&executor, spec("run-faults", "evict", &["sleep 10"])).await;
    assert!(matches!(evicted, Err(ExecError::Evicted(_))), "{evicted:?}");
    let (deleted, _) = run(&executor, spec("run-faults", "delete", &["sleep 10"])).await;
    assert!(matches!(deleted, Err(ExecError::Lost(_))), "{deleted:?}");
    let (pending, _) = run(&executor, spec("run-faults", "unschedulable", &["true"])).await;
    match pending {
        Err(error @ ExecError::Wait(_)) => {
            assert!(error.to_string().contains("nodes are available"), "{error}");
        }
        other => panic!("an unschedulable pod ended as {other:?}"),
    }
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-faults").await;
    fake.stop().await;
}

#[tokio::test]
async fn a_cut_log_stream_is_resumed_without_repeating_or_losing_a_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    fake.faults()
        .inject(Fault::new(FaultKind::CutLogs, "buildit.stage=chatty").after_lines(3))
        .expect("a fault");
    let (ended, output) = run(
        &executor,
        spec(
            "run-cut",
            "chatty",
            &["for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.2; done"],
        ),
    )
    .await;
    assert_eq!(ended.expect("an exit").code, Some(0));
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("line "))
        .collect();
    assert_eq!(
        lines,
        (1..=8).map(|i| format!("line {i}")).collect::<Vec<_>>(),
        "{output}"
    );
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-cut").await;
    fake.stop().await;
}

#[tokio::test]
async fn a_cancel_stops_the_pod_and_waits_until_none_is_left() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let attempt = executor
        .spawn(spec("run-cancel", "long", &["sleep 60"]))
        .await
        .expect("spawned");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        executor.cancel(&attempt, Duration::from_secs(1)),
    )
    .await
    .expect("cancelled in time")
    .expect("cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), executor.wait(&attempt))
        .await
        .expect("ends");
    assert!(ended.is_ok_and(|status| !status.success()));
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-cancel").await;
    fake.stop().await;
}

#[tokio::test]
async fn a_pod_deleted_gracefully_by_someone_else_is_lost_even_when_it_exits_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let attempt = executor
        .spawn(spec(
            "run-trap",
            "trap",
            &["trap 'echo bye; exit 0' TERM; sleep 30 & wait"],
        ))
        .await
        .expect("spawned");
    // Once it runs, another client deletes its pod with a grace period: the shell exits 0 on SIGTERM.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let pods =
        kube::Api::<Pod>::namespaced(kube::Client::try_from(config).expect("client"), NAMESPACE);
    let selector = ListParams::default().labels(&format!("buildit.job={}", attempt.job_name()));
    let mut deleted = false;
    for _ in 0..100 {
        let listed = pods.list(&selector).await.expect("pods");
        let running = listed.items.iter().find(|pod| {
            pod.status
                .as_ref()
                .and_then(|status| status.phase.as_deref())
                == Some("Running")
        });
        if let Some(name) = running.and_then(|pod| pod.metadata.name.clone()) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pods.delete(&name, &kube::api::DeleteParams::default().grace_period(5))
                .await
                .expect("deleted");
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted, "the pod never ran");
    let ended = tokio::time::timeout(Duration::from_secs(30), executor.wait(&attempt))
        .await
        .expect("ends in time");
    assert!(matches!(ended, Err(ExecError::Lost(_))), "{ended:?}");
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-trap").await;
    fake.stop().await;
}

#[tokio::test]
async fn a_runs_stages_share_its_workspace_and_files_move_in_and_out() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let workspace = dir.path().join("repo");
    std::fs::create_dir_all(workspace.join("src")).expect("src");
    std::fs::write(workspace.join("src/main.txt"), "the source\n").expect("a source file");
    std::fs::create_dir_all(workspace.join(".buildit")).expect("state");
    std::fs::write(workspace.join(".buildit/buildit.db"), "not for pods").expect("state file");
    let run_id = "run-files";

    // The host workspace is in the claim (without BuildIt's state); what one stage writes, the next reads.
    let (ended, output) = run(
        &executor,
        in_workspace(
            run_id,
            "build",
            &[
                "cat src/main.txt",
                "test ! -e .buildit",
                "mkdir -p out/deep && echo built > out/deep/result.txt",
                "ln -s /etc/hostname out/link",
            ],
            &workspace,
        ),
    )
    .await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("the source\n"), "{output}");
    let (ended, output) = run(
        &executor,
        in_workspace(run_id, "test", &["cat out/deep/result.txt"], &workspace),
    )
    .await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("built\n"), "{output}");

    // Files in (a restored cache: several MiB of bytes that are not text), then out again, unchanged.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(restored.join("target/cache")).expect("restored");
    let bytes: Vec<u8> = (0..6_000_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(restored.join("target/cache/blob.bin"), &bytes).expect("a blob");
    let stage = in_workspace(run_id, "test", &["true"], &workspace);
    executor
        .put_files(&stage, &restored)
        .await
        .expect("files copied in");
    let copied = dir.path().join("copied");
    executor
        .get_files(
            &stage,
            &[
                "out".into(),
                "out/deep".into(),
                "missing".into(),
                "target/cache/blob.bin".into(),
            ],
            &copied,
        )
        .await
        .expect("files copied out");
    assert_eq!(
        std::fs::read_to_string(copied.join("out/deep/result.txt")).expect("the result"),
        "built\n"
    );
    assert_eq!(
        std::fs::read_link(copied.join("out/link")).expect("a symlink kept as one"),
        std::path::Path::new("/etc/hostname")
    );
    assert!(!copied.join("missing").exists());
    assert!(
        std::fs::read(copied.join("target/cache/blob.bin")).expect("the blob") == bytes,
        "the blob came back changed"
    );
    // The same path rules as Docker: a path asked for that is a symlink, or outside the workspace, is refused.
    let link = executor
        .get_files(&stage, &["out/link".into()], &dir.path().join("link"))
        .await;
    assert!(
        link.as_ref()
            .is_err_and(|error| error.to_string().contains("symlink")),
        "{link:?}"
    );
    let outside = executor
        .get_files(&stage, &["../etc".into()], &dir.path().join("outside"))
        .await;
    assert!(outside.is_err(), "{outside:?}");
    // The empty path is the whole workspace (what a pattern like `**/*.xml` starts from).
    let whole = dir.path().join("whole");
    executor
        .get_files(&stage, &["".into()], &whole)
        .await
        .expect("the whole workspace copied out");
    assert_eq!(
        std::fs::read_to_string(whole.join("src/main.txt")).expect("a source file"),
        "the source\n"
    );
    // A copy that fails halfway (its destination is in the way) with megabytes still to come ends at once,
    // with the reason, and leaves the exec neither blocked nor waiting.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("target/cache/blob.bin/inside")).expect("in the way");
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        executor.get_files(&stage, &["target/cache/blob.bin".into()], &blocked),
    )
    .await
    .expect("a failed copy ends in time");
    assert!(failed.is_err(), "{failed:?}");

    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), run_id).await;
    fake.stop().await;
}

#[tokio::test]
async fn services_run_beside_the_stage_and_one_never_ready_fails_it_before_it_starts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster(dir.path()).await;
    let web = ServiceSpec {
        name: "web".to_owned(),
        image: IMAGE.to_owned(),
        env: [("GREETING".to_owned(), "hello-from-web".to_owned())].into(),
        command: vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "mkdir -p /www && echo $GREETING > /www/index.html && exec httpd -f -p 8080 -h /www"
                .to_owned(),
        ],
        ready: Some(ReadyCheck::Shell(
            "wget -qO- http://127.0.0.1:8080/".to_owned(),
        )),
        ready_timeout: Duration::from_secs(20),
    };
    let mut stage = spec("run-services", "test", &["wget -qO- http://web:8080/"]);
    stage.services = vec![web];
    let (ended, output) = run(&executor, stage).await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("hello-from-web"), "{output}");

    let never = ServiceSpec {
        name: "db".to_owned(),
        image: IMAGE.to_owned(),
        env: std::collections::BTreeMap::new(),
        command: vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo db is warming up; sleep 60".to_owned(),
        ],
        ready: Some(ReadyCheck::Shell("false".to_owned())),
        ready_timeout: Duration::from_secs(2),
    };
    let mut stage = spec("run-services", "blocked", &["echo the stage ran"]);
    stage.services = vec![never];
    let started = std::time::Instant::now();
    let (ended, output) = run(&executor, stage).await;
    match ended {
        // With what the service wrote last, as Docker's failure says it.
        Err(error) => assert!(
            error.to_string().contains("service `db` was not ready")
                && error
                    .to_string()
                    .contains("its last lines:\ndb is warming up"),
            "{error}"
        ),
        Ok(status) => {
            panic!("a stage whose service is never ready ended with {status:?}: {output}")
        }
    }
    assert!(
        !output.lines().any(|line| line == "the stage ran"),
        "{output}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-services").await;
    fake.stop().await;
}

#[tokio::test]
async fn a_holder_image_without_tar_fails_the_stage_in_time_with_the_reason() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let image = image_without_tar();
    let fake = FakeCluster::start(FakeOptions::default())
        .await
        .expect("the fake cluster starts");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, NAMESPACE)
        .expect("kubeconfig");
    let mut options = KubernetesOptions::default();
    options.kubeconfig = Some(kubeconfig.clone());
    options.helper_image = Some(image.to_owned());
    let executor = KubernetesExecutor::connect(options)
        .await
        .expect("the executor connects");
    // More than the exec's buffers: a copy that nobody reads would block.
    let workspace = dir.path().join("repo");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::write(workspace.join("big.bin"), vec![7_u8; 4_000_000]).expect("a big file");
    let spawned = tokio::time::timeout(
        Duration::from_secs(60),
        executor.spawn(in_workspace("run-no-tar", "build", &["true"], &workspace)),
    )
    .await
    .expect("the start ends in time");
    match spawned {
        Err(error) => assert!(error.to_string().contains("helper-image"), "{error}"),
        Ok(_) => panic!("a workspace was filled without tar"),
    }
    released_leaving_nothing(&executor, &kubeconfig, "run-no-tar").await;
    fake.stop().await;
}

/// The test image without `tar` (built once, kept: tests running at the same time share it).
fn image_without_tar() -> &'static str {
    let image = "buildit-test/busybox-without-tar:latest";
    let built = std::process::Command::new("docker")
        .args(["build", "--quiet", "--tag", image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(format!("FROM {IMAGE}\nRUN rm /bin/tar\n").as_bytes())?;
            }
            child.wait()
        })
        .expect("docker build runs");
    assert!(built.success(), "the image without tar was not built");
    image
}

/// Runs `git` with `args` in `dir`, with an identity, and returns its output.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=BuildIt",
            "-c",
            "user.email=ci@buildit.invalid",
        ])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A `git daemon` serving the repositories under a directory, stopped when dropped.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn serve(base: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave the daemon running.
        let exec_path = git(base, &["--exec-path"]);
        let child = std::process::Command::new(std::path::Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=0.0.0.0"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let daemon = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(daemon);
        panic!("git daemon does not listen on {port}");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the test image with git (`scripts/build-git-image.sh`), if it is not there yet.
fn git_image() -> &'static str {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-git-image.sh");
    let built = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("the image script runs");
    assert!(built.status.success(), "{built:?}");
    "buildit-test/git:latest"
}

/// A fake cluster whose executor checks git sources out with the git image.
async fn cluster_with_git(dir: &std::path::Path) -> (FakeCluster, KubernetesExecutor) {
    let (fake, kubeconfig) = fake_cluster(dir).await;
    let mut options = KubernetesOptions::default();
    options.kubeconfig = Some(kubeconfig);
    options.git_image = Some(git_image().to_owned());
    let executor = KubernetesExecutor::connect(options)
        .await
        .expect("the executor connects");
    (fake, executor)
}

#[tokio::test]
async fn a_git_commit_is_checked_out_on_the_cluster_and_nothing_comes_from_the_host() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, executor) = cluster_with_git(dir.path()).await;
    let repositories = dir.path().join("repositories");
    let repository = repositories.join("app");
    std::fs::create_dir_all(&repository).expect("repository");
    git(&repository, &["init", "--quiet"]);
    std::fs::write(repository.join("version.txt"), "first\n").expect("a file");
    git(&repository, &["add", "."]);
    git(&repository, &["commit", "--quiet", "-m", "first"]);
    let first = git(&repository, &["rev-parse", "HEAD"]);
    std::fs::write(repository.join("version.txt"), "second\n").expect("a file");
    git(&repository, &["commit", "--quiet", "-am", "second"]);
    let daemon = GitDaemon::serve(&repositories);
    let host =
        buildit_kube_fake::host_seen_from_pods().expect("the address pods reach this machine at");
    // What is on this machine's disk must not reach the pod: the cluster fetched the source itself.
    let workspace = dir.path().join("checkout");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::write(workspace.join("host-only.txt"), "not from git").expect("a host file");
    let source = |commit: &str, repository: String| FetchableSource::Git {
        repository,
        commit: CommitId::parse(commit).expect("a commit id"),
    };

    let mut stage = in_workspace(
        "run-git",
        "build",
        &["cat version.txt", "test -d .git", "test ! -e host-only.txt"],
        &workspace,
    );
    stage.source = Some(source(&first, format!("git://{host}:{}/app", daemon.port)));
    let (ended, output) = run(&executor, stage).await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("first\n"), "{output}");
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-git").await;

    // A commit the repository does not have fails the stage before it starts, with git's reason.
    let mut unknown = in_workspace("run-git-unknown", "build", &["true"], &workspace);
    unknown.source = Some(source(
        &"0".repeat(40),
        format!("git://{host}:{}/app", daemon.port),
    ));
    match tokio::time::timeout(Duration::from_secs(60), executor.spawn(unknown)).await {
        Ok(Err(error)) => {
            let message = error.to_string();
            assert!(message.contains("is not in the repository"), "{message}");
            assert!(
                message.contains(&format!("/app at {}", "0".repeat(40))),
                "{message}"
            );
        }
        other => panic!("an unknown commit gave {other:?}"),
    }
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-git-unknown").await;

    // A URL's password goes to the cluster in the source's Secret only, and never into a message.
    let mut private = in_workspace("run-git-private", "build", &["true"], &workspace);
    private.source = Some(source(
        &first,
        format!("http://ci:s3cret-pass@{host}:1/app.git"),
    ));
    match tokio::time::timeout(Duration::from_secs(60), executor.spawn(private)).await {
        Ok(Err(error)) => {
            let message = error.to_string();
            assert!(
                message.contains("cannot bring git http://ci:***@"),
                "{message}"
            );
            assert!(!message.contains("s3cret-pass"), "{message}");
        }
        other => panic!("an unreachable repository gave {other:?}"),
    }
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-git-private").await;
    for request in fake.requests() {
        assert!(!request.body.contains("s3cret-pass"), "{request:?}");
    }
    fake.stop().await;
}

/// Serves each file it links to once, over HTTP on every address, as the daemon does; counts what it served.
#[derive(Debug, Default)]
struct OnceLinks {
    host: String,
    port: u16,
    files: std::sync::Mutex<std::collections::HashMap<String, std::path::PathBuf>>,
    served: std::sync::atomic::AtomicUsize,
    /// Served instead of the linked file, when set: a download that is not the upload.
    substitute: std::sync::Mutex<Option<Vec<u8>>>,
}

impl ArchiveLinks for OnceLinks {
    fn link(&self, archive: &std::path::Path, _digest: &ArchiveDigest) -> Option<String> {
        let mut files = self.files.lock().ok()?;
        let token = format!("t{}", files.len() + 1000);
        files.insert(token.clone(), archive.to_path_buf());
        Some(format!(
            "http://{}:{}/sources/{token}",
            self.host, self.port
        ))
    }
}

impl OnceLinks {
    async fn start(host: String) -> std::sync::Arc<Self> {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("a listener");
        let port = listener.local_addr().expect("its address").port();
        let links = std::sync::Arc::new(Self {
            host,
            port,
            ..Self::default()
        });
        let serving = std::sync::Arc::clone(&links);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0_u8; 4096];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]).into_owned();
                let token = request
                    .split_whitespace()
                    .nth(1)
                    .and_then(|path| path.strip_prefix("/sources/"))
                    .unwrap_or_default()
                    .to_owned();
                let file = serving
                    .files
                    .lock()
                    .ok()
                    .and_then(|mut files| files.remove(&token));
                let substitute = serving.substitute.lock().ok().and_then(|s| s.clone());
                let body = match (file, substitute) {
                    (Some(_), Some(bytes)) => Some(bytes),
                    (Some(path), None) => std::fs::read(path).ok(),
                    (None, _) => None,
                };
                let response = match body {
                    Some(body) => {
                        serving
                            .served
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        response.extend(body);
                        response
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            }
        });
        links
    }
}

#[tokio::test]
async fn an_uploaded_archive_is_downloaded_once_by_the_cluster_and_checked() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = fake_cluster(dir.path()).await;
    // Fetching an archive in the cluster takes an image the operator names, with the programs it needs.
    let mut options = KubernetesOptions::default();
    options.kubeconfig = Some(kubeconfig);
    options.helper_image = Some(IMAGE.to_owned());
    let executor = KubernetesExecutor::connect(options)
        .await
        .expect("the executor connects");
    let links = OnceLinks::start(
        buildit_kube_fake::host_seen_from_pods().expect("the address pods reach this machine at"),
    )
    .await;
    let upload = dir.path().join("upload");
    std::fs::create_dir_all(upload.join("src")).expect("upload");
    std::fs::write(upload.join("src/app.txt"), "uploaded\n").expect("a file");
    // A setuid program of someone else's: unpacked, it is neither setuid nor theirs.
    std::fs::write(upload.join("src/tool"), "#!/bin/sh\n").expect("a program");
    let chmod = std::process::Command::new("chmod")
        .arg("4755")
        .arg(upload.join("src/tool"))
        .status()
        .expect("chmod runs");
    assert!(chmod.success());
    let tar = std::process::Command::new("tar")
        .args(["--owner=4242", "--group=4242", "-cf", "-", "-C"])
        .arg(&upload)
        .arg(".")
        .output()
        .expect("tar runs");
    assert!(tar.status.success());
    let store = SourceStore::new(dir.path().join("sources"), SourceLimits::default())
        .with_links(links.clone());
    let digest = store.put(&tar.stdout[..]).await.expect("stored");
    let workspace = dir.path().join("unpacked");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::write(workspace.join("host-only.txt"), "not uploaded").expect("a host file");
    let source = FetchableSource::Archive {
        digest,
        store: store.clone(),
    };

    let mut stage = in_workspace(
        "run-archive",
        "build",
        &[
            "cat src/app.txt",
            "test ! -e host-only.txt",
            "test -x src/tool && test ! -u src/tool",
            "test \"$(stat -c %u src/tool)\" != 4242",
        ],
        &workspace,
    );
    stage.source = Some(source.clone());
    let (ended, output) = run(&executor, stage).await;
    assert_eq!(ended.expect("an exit").code, Some(0), "{output}");
    assert!(output.contains("uploaded\n"), "{output}");
    assert_eq!(links.served.load(std::sync::atomic::Ordering::SeqCst), 1);
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-archive").await;

    // A download that is not the archive uploaded (and checked) is refused: nothing of it is used.
    *links.substitute.lock().expect("the lock") = Some(b"not the upload".to_vec());
    let mut tampered = in_workspace("run-tampered", "build", &["true"], &workspace);
    tampered.source = Some(source);
    match tokio::time::timeout(Duration::from_secs(60), executor.spawn(tampered)).await {
        Ok(Err(error)) => {
            let message = error.to_string();
            assert!(message.contains("is not the one uploaded"), "{message}");
            assert!(!message.contains("/sources/t"), "{message}");
        }
        other => panic!("a tampered download gave {other:?}"),
    }
    released_leaving_nothing(&executor, &dir.path().join("kubeconfig"), "run-tampered").await;

    // The links went to the cluster in Secrets only.
    for request in fake.requests() {
        assert!(!request.body.contains("/sources/t"), "{request:?}");
    }
    fake.stop().await;
}
