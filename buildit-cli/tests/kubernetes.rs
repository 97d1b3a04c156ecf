//! `buildit run` of a pipeline whose stages use `executor "kubernetes"`, against a real API server on loopback
//! (`buildit-kube-fake`, its pods in the local Docker Engine): the stages' real output with the secret masked,
//! the right outcome and exit code, and nothing left on the cluster afterwards.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its cluster or files cannot be set up"
)]

mod support;

use buildit_kube_fake::{FakeCluster, FakeOptions};
use support::buildit_command;

const SECRET: &str = "hunter2-k8s-secret-value";

/// A fake cluster, and the kubeconfig (in `dir`) that points at it with the namespace `ci`.
async fn cluster(dir: &std::path::Path) -> (FakeCluster, std::path::PathBuf) {
    let fake = FakeCluster::start(FakeOptions::default())
        .await
        .expect("the fake cluster starts");
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, "ci")
        .expect("kubeconfig");
    (fake, kubeconfig)
}

const PIPELINE: &str = r#"pipeline "on-kubernetes"
defaults { image "buildit-test/busybox:latest"; }
stage "build" {
    executor "kubernetes"
    secrets "TOKEN"
    run "echo building on $(hostname)"
    run "echo token=$TOKEN"
}
stage "test" {
    needs "build"
    executor "kubernetes"
    run "echo testing"
    run "exit 3"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_on_the_cluster_with_its_output_masked_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    let work = workspace(dir.path(), &kubeconfig, PIPELINE);

    let mut command = buildit_command(&work);
    command
        .args(["run", "--plain"])
        .env("BUILDIT_SECRET_TOKEN", SECRET);
    let (code, stdout, stderr) = output(command).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("| building on buildit-build-"), "{stdout}");
    assert!(stdout.contains("| token=***"), "{stdout}");
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("| testing\n"), "{stdout}");
    assert!(stdout.contains("exited with code 3"), "{stdout}");

    // Nothing of the run is left, as kubectl sees it.
    if let Ok(listed) = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "jobs,pods,secrets,pvc", "-l", "buildit.run", "-A"])
        .output()
    {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&listed.stdout),
            String::from_utf8_lossy(&listed.stderr)
        );
        assert!(text.contains("No resources found"), "{text}");
    }
    // No request carried the secret's value, but for the Secret itself (base64).
    for request in fake.requests() {
        assert!(!request.body.contains(SECRET), "{request:?}");
    }
    fake.stop().await;
}

/// Runs `command` off the test's runtime: its exit code, stdout and stderr.
async fn output(mut command: std::process::Command) -> (Option<i32>, String, String) {
    let ran = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("buildit runs");
    (
        ran.status.code(),
        String::from_utf8_lossy(&ran.stdout).into_owned(),
        String::from_utf8_lossy(&ran.stderr).into_owned(),
    )
}

/// Checks, where kubectl is installed, that no Job, pod, Secret or claim of a run is left on the fake.
fn nothing_left(kubeconfig: &std::path::Path) {
    if let Some(left) = kubectl_listed(kubeconfig, "jobs,pods,secrets,pvc") {
        assert_eq!(left.trim(), "", "{left}");
    }
}

/// What `kubectl get KINDS -l buildit.run` lists on the fake, or `None` without kubectl.
fn kubectl_listed(kubeconfig: &std::path::Path, kinds: &str) -> Option<String> {
    kubectl_names(kubeconfig, kinds, "buildit.run")
}

/// What `kubectl get KINDS -l SELECTOR` lists on the fake, or `None` without kubectl.
fn kubectl_names(kubeconfig: &std::path::Path, kinds: &str, selector: &str) -> Option<String> {
    let listed = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", kinds, "-l", selector, "-A", "-o", "name"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&listed.stdout).into_owned())
}

/// Waits (30 s at most) until `kubectl` lists the pod of a stage (not the one that holds the workspace).
async fn a_pod_appears(kubeconfig: &std::path::Path) {
    for _ in 0..300 {
        if kubectl_names(kubeconfig, "pods", "buildit.stage")
            .is_some_and(|pods| !pods.trim().is_empty())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the stage's pod never appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildit_gc_removes_what_a_killed_run_left_on_the_cluster() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    if kubectl_listed(&kubeconfig, "pods").is_none() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let work = workspace(
        dir.path(),
        &kubeconfig,
        "pipeline \"killed\"\nstage \"long\" { executor \"kubernetes\"; image \"buildit-test/busybox:latest\"; secrets \"TOKEN\"; run \"sleep 120\"; }\n",
    );
    let mut child = buildit_command(&work)
        .args(["run", "--plain"])
        .env("BUILDIT_SECRET_TOKEN", SECRET)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("buildit runs");
    // Once its pod runs, the run is killed: nothing of it can clean up.
    a_pod_appears(&kubeconfig).await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let left = kubectl_listed(&kubeconfig, "jobs,pods,secrets,pvc").unwrap_or_default();
    assert!(
        left.contains("job.batch/")
            && left.contains("secret/")
            && left.contains("persistentvolumeclaim/"),
        "{left}"
    );

    let mut gc = buildit_command(&work);
    gc.arg("gc");
    let collected = tokio::task::spawn_blocking(move || gc.output())
        .await
        .expect("joined")
        .expect("buildit gc runs");
    let said = String::from_utf8_lossy(&collected.stdout).into_owned();
    assert!(
        collected.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&collected.stderr)
    );
    assert!(said.contains("Kubernetes object"), "{said}");
    let left = kubectl_listed(&kubeconfig, "jobs,pods,secrets,pvc").unwrap_or_default();
    assert_eq!(left.trim(), "", "{left}");
    fake.stop().await;
}

/// A workspace in `dir` whose system configuration points at `kubeconfig`, with `pipeline` as its pipeline.
fn workspace(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    pipeline: &str,
) -> std::path::PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work directory");
    std::fs::write(work.join("buildit.kdl"), pipeline).expect("pipeline");
    std::fs::write(
        work.join("buildit-system.kdl"),
        format!(
            "executor \"local\"\nexecutor \"kubernetes\" {{ kubeconfig \"{}\"; namespace \"ci\"; image-pull-grace \"1s\"; }}\ndefault-executor \"kubernetes\"\n",
            kubeconfig.display()
        ),
    )
    .expect("system configuration");
    work
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_on_the_cluster_is_reported_as_what_it_is_and_leaves_nothing() {
    use buildit_kube_fake::{Fault, FaultKind};
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    for (stage, fault) in [
        ("oom", FaultKind::Oom),
        ("evicted", FaultKind::Evict),
        ("gone", FaultKind::Delete),
    ] {
        fake.faults()
            .inject(Fault::new(fault, &format!("buildit.stage={stage}")).after_ms(500))
            .expect("a fault");
    }
    let work = workspace(
        dir.path(),
        &kubeconfig,
        r#"pipeline "failures"
defaults { image "buildit-test/busybox:latest"; }
stage "ok" { run "echo fine" }
stage "fails" { run "exit 3" }
stage "slow" { timeout "2s"; run "sleep 60" }
stage "pull" { image "buildit-test/not-there:1"; run "true" }
stage "oom" { run "sleep 30" }
stage "evicted" { run "echo still here; sleep 30" }
stage "gone" { run "sleep 30" }
"#,
    );
    let mut command = buildit_command(&work);
    command.args(["run", "--plain", "-j", "8"]);
    let (code, stdout, stderr) = output(command).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let line = |stage: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(stage) && (line.contains('✓') || line.contains('✗')))
            .unwrap_or_else(|| panic!("no end of `{stage}` in {stdout}"))
            .to_owned()
    };
    assert!(line("ok ").contains("succeeded"), "{stdout}");
    assert!(line("fails ").contains("exited with code 3"), "{stdout}");
    assert!(line("slow ").contains("timed out after 2s"), "{stdout}");
    assert!(line("pull ").contains("cannot be pulled"), "{stdout}");
    assert!(line("oom ").contains("out of memory"), "{stdout}");
    assert!(line("evicted ").contains("evicted"), "{stdout}");
    assert!(
        line("gone ").contains("deleted by someone else"),
        "{stdout}"
    );
    nothing_left(&kubeconfig);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_stages_on_the_cluster_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    if kubectl_listed(&kubeconfig, "pods").is_none() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let work = workspace(
        dir.path(),
        &kubeconfig,
        "pipeline \"cancelled\"\nstage \"long\" { executor \"kubernetes\"; image \"buildit-test/busybox:latest\"; run \"sleep 120\"; }\n",
    );
    let child = buildit_command(&work)
        .args(["run", "--plain"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("buildit runs");
    a_pod_appears(&kubeconfig).await;
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let ended = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("buildit ends");
    let stdout = String::from_utf8_lossy(&ended.stdout).into_owned();
    assert_eq!(ended.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("cancelled"), "{stdout}");
    let left = kubectl_listed(&kubeconfig, "jobs,pods,secrets,pvc").unwrap_or_default();
    assert_eq!(left.trim(), "", "{left}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_triggered_through_the_daemon_runs_its_stages_on_the_cluster() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    // The daemon finds its system configuration where it starts (the data directory's parent); the store it
    // names is the one tokens are made in.
    std::fs::write(
        dir.path().join("buildit-system.kdl"),
        format!(
            "store \"sqlite\" path=\"daemon/buildit.db\"\nexecutor \"local\"\nexecutor \"kubernetes\" {{ kubeconfig \"{}\"; namespace \"ci\"; helper-image \"buildit-test/busybox:latest\"; }}\n",
            kubeconfig.display()
        ),
    )
    .expect("system configuration");
    let data = dir.path().join("daemon");
    // Pods fetch the uploaded source from the daemon by a one-time link, through the address at which
    // containers reach this machine.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("0.0.0.0:{port}");
    let url = format!(
        "http://{}:{port}",
        buildit_kube_fake::host_seen_from_pods().expect("the address pods reach this machine at")
    );
    let daemon =
        support::Daemon::on_free_port(&data, &["--source-listen", &listen, "--source-url", &url]);
    let token = support::create_token(dir.path(), &data, "acme", "kubernetes");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    std::fs::write(
        work.join("buildit.kdl"),
        "pipeline \"remote-k8s\"\nstage \"hello\" { executor \"kubernetes\"; image \"buildit-test/busybox:latest\"; run \"echo hello from the cluster\"; run \"cat uploaded.txt\"; }\n",
    )
    .expect("pipeline");
    std::fs::write(work.join("uploaded.txt"), "this file was uploaded\n").expect("a file");
    let mut command = buildit_command(&work);
    command
        .args(["pipelines", "trigger", "--follow"])
        .env("BUILDIT_SERVER", &daemon.address)
        .env("BUILDIT_TOKEN", &token);
    let (code, stdout, stderr) = output(command).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("| hello from the cluster"), "{stdout}");
    // The uploaded workspace reached the stage's pod: fetched by the workspace's holder, not copied in.
    assert!(stdout.contains("| this file was uploaded"), "{stdout}");
    let requests = fake.requests();
    assert!(
        requests.iter().any(|request| request.method == "POST"
            && request.path.ends_with("/pods")
            && request.body.contains("initContainers")
            && request.body.contains("\"name\":\"source\"")),
        "no holder fetched the source: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|request| request.path.contains("/exec")),
        "files were copied in: {requests:?}"
    );
    for request in &requests {
        assert!(
            !request.body.contains("/sources/"),
            "a link in a body: {request:?}"
        );
    }
    nothing_left(&kubeconfig);
    drop(daemon);
    fake.stop().await;
}

const FILES_PIPELINE: &str = r#"pipeline "files"
defaults { image "buildit-test/busybox:latest"; }
cache "deps" {
    path "deps"
    key "deps-v1"
}
stage "build" {
    executor "kubernetes"
    cache "deps"
    run "echo source=$(cat src.txt)"
    run "if test -f deps/fetched; then echo deps-cached; else echo deps-fetched; mkdir -p deps; echo x > deps/fetched; fi"
    run "mkdir -p out && echo built-from-$(cat src.txt) > out/result.txt"
    artifacts "out/result.txt"
}
stage "check" {
    needs "build"
    executor "local"
    run "cat out/result.txt"
}
stage "serve" {
    needs "build"
    executor "kubernetes"
    service "web" {
        image "buildit-test/busybox:latest"
        env { PAGE "page-from-the-service" }
        command "sh" "-c" "mkdir -p /www && echo $PAGE > /www/index.html && exec httpd -f -p 8080 -h /www"
        ready "wget -qO- http://127.0.0.1:8080/" timeout="20s"
    }
    run "wget -qO- http://web:8080/"
    run "cat out/result.txt"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_artifacts_caches_and_services_work_on_the_cluster() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    let work = workspace(dir.path(), &kubeconfig, FILES_PIPELINE);
    std::fs::write(work.join("src.txt"), "the-repository").expect("a source file");
    let run = |work: std::path::PathBuf| async move {
        let mut command = buildit_command(&work);
        command.args(["run", "--plain"]);
        let (code, stdout, stderr) = output(command).await;
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        stdout
    };
    let first = run(work.clone()).await;
    // The workspace reached the pod; the artifact came back to the host stage, and through the claim to the
    // other pod; the service answered by its name.
    assert!(first.contains("| source=the-repository"), "{first}");
    assert!(first.contains("| deps-fetched"), "{first}");
    assert!(first.contains("| built-from-the-repository"), "{first}");
    assert!(first.contains("| page-from-the-service"), "{first}");
    nothing_left(&kubeconfig);
    // The second run gets the cache the first one saved, in a new claim.
    let second = run(work).await;
    assert!(second.contains("| deps-cached"), "{second}");
    assert!(second.contains("cache `deps` restored"), "{second}");
    nothing_left(&kubeconfig);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_runs_on_the_fake_cluster() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (fake, kubeconfig) = cluster(dir.path()).await;
    let work = workspace(dir.path(), &kubeconfig, "");
    std::fs::remove_file(work.join("buildit.kdl")).expect("no pipeline of its own");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kubernetes.kdl")
        .display()
        .to_string();
    let mut command = buildit_command(&work);
    command.args(["run", &example, "--plain"]);
    let (code, stdout, stderr) = output(command).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("| the service says ok"), "{stdout}");
    assert!(stdout.contains("| built in pod buildit-build-"), "{stdout}");
    // The pod's output reached the host stage.
    assert!(
        stdout.contains("| the build ran in buildit-build-"),
        "{stdout}"
    );
    // The test stage's report was read out of its pod.
    assert!(stdout.contains("| tests: 1 passed of 1 test"), "{stdout}");
    // Only the artifact reached the host workspace.
    assert!(work.join("out/build.txt").is_file());
    nothing_left(&kubeconfig);
    fake.stop().await;
}
