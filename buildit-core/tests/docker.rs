//! The Docker executor against the real Docker Engine, with the locally built `buildit-test/busybox` image
//! (`scripts/build-test-image.sh`; no registry is needed). Without an engine the tests are skipped, except in CI.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use buildit_core::RunContext;
use buildit_core::events::{FailureKind, LogStreamKind, RunEvent, RunEventKind, StageOutcome};
use buildit_core::exec::{
    AnyExecutor, ArtifactStore, CacheStore, DockerExecutor, DockerOptions, Executor, RunOptions,
    RunReport, StageSpec, SweepScope,
};
use buildit_core::owner::{Lease, LeftoverOwner, RunOwner};
use buildit_core::runner::Runner;
use buildit_core::store::{MemoryStore, Store};
use buildit_core::system::PullPolicy;
use tokio_util::sync::CancellationToken;

mod support;

const IMAGE: &str = "buildit-test/busybox:latest";

/// The executor, or `None` (outside CI) when no engine answers.
async fn docker() -> Option<DockerExecutor> {
    match DockerExecutor::connect(DockerOptions::default()).await {
        Ok(docker) => {
            build_image();
            Some(docker)
        }
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide a Docker Engine: {error}"
            );
            eprintln!("skipped: no Docker Engine ({error})");
            None
        }
    }
}

/// An executor with `options`, or `None` (outside CI) when no engine answers.
async fn docker_with(options: DockerOptions) -> Option<DockerExecutor> {
    docker().await?;
    match DockerExecutor::connect(options).await {
        Ok(docker) => Some(docker),
        Err(error) => panic!("{error}"),
    }
}

fn build_image() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/build-test-image.sh"
        );
        let status = Command::new("bash").arg(script).status();
        assert!(
            matches!(status, Ok(status) if status.success()),
            "cannot build {IMAGE}: {status:?}"
        );
    });
}

fn docker_cli(args: &[&str]) -> String {
    match Command::new("docker").args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(error) => panic!("docker {args:?}: {error}"),
    }
}

/// Containers carrying `label=value`, stopped ones included.
fn containers_with(label: &str, value: &str) -> Vec<String> {
    labelled(&["ps", "-aq"], label, value)
}

struct Run {
    report: RunReport,
    events: Vec<RunEvent>,
    run_id: String,
}

impl Run {
    fn outcome(&self, stage: &str) -> StageOutcome {
        match self.report.stages.iter().find(|s| s.name == stage) {
            Some(report) => report.outcome,
            None => panic!("no stage {stage}"),
        }
    }

    fn reason(&self, stage: &str) -> String {
        self.report
            .stages
            .iter()
            .find(|s| s.name == stage)
            .and_then(|s| s.reason.clone())
            .unwrap_or_default()
    }

    fn lines(&self, stage: &str, stream: LogStreamKind) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|event| match &event.kind {
                RunEventKind::LogLine {
                    stage: s,
                    text,
                    stream: st,
                    ..
                } if s == stage && *st == stream => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A run with no secrets, which nobody cancels.
async fn run_simple(docker: &DockerExecutor, text: &str) -> Run {
    run_pipeline(docker, text, &[], CancellationToken::new()).await
}

async fn run_pipeline(
    docker: &DockerExecutor,
    text: &str,
    secrets: &[(&str, &str)],
    cancel: CancellationToken,
) -> Run {
    let workspace = support::temp_dir();
    let options = RunOptions {
        grace: Duration::from_secs(2),
        ..RunOptions::default()
    };
    run_in(docker, text, secrets, cancel, workspace.path(), options).await
}

async fn run_in(
    docker: &DockerExecutor,
    text: &str,
    secrets: &[(&str, &str)],
    cancel: CancellationToken,
    workspace: &Path,
    options: RunOptions,
) -> Run {
    let plan = support::plan(text, &RunContext::new().with_branch("main"));
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run_id = format!(
        "docker-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let secrets = secrets
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runner = Runner::new(
        run_id.clone(),
        plan,
        AnyExecutor::with_docker(docker.clone()),
        store,
    )
    .workspace(workspace)
    .options(options)
    .cancel_token(cancel)
    .secrets(secrets);
    let (report, events) = support::run_to_end(runner).await;
    Run {
        report,
        events,
        run_id,
    }
}

#[tokio::test]
async fn stages_run_in_containers_with_env_secrets_and_exit_codes() {
    let Some(docker) = docker().await else { return };
    let run = run_pipeline(
        &docker,
        &format!(
            r#"
pipeline "p"
env {{ GREETING "hello" }}
stage "build" {{
    image "{IMAGE}"
    secrets "TOKEN"
    run "echo $GREETING $BUILDIT_STAGE"
    run "echo token=$TOKEN"
    run "echo one >&2; echo two >&2; echo three >&2"
    run "echo built > out.txt"
}}
stage "test" {{
    needs "build"
    image "{IMAGE}"
    run "cat out.txt"
    run "exit 3"
    run "echo never"
}}
stage "host" {{ needs "build"; run "test ! -e out.txt && echo not here" }}
"#
        ),
        &[("TOKEN", "hunter2-secret")],
        CancellationToken::new(),
    )
    .await;
    assert_eq!(run.outcome("build"), StageOutcome::Succeeded);
    assert_eq!(
        run.lines("build", LogStreamKind::Stdout),
        [
            "$ echo $GREETING $BUILDIT_STAGE",
            "hello build",
            "$ echo token=$TOKEN",
            "token=***",
            "$ echo one >&2; echo two >&2; echo three >&2",
            "$ echo built > out.txt"
        ]
    );
    assert_eq!(
        run.lines("build", LogStreamKind::Stderr),
        ["one", "two", "three"]
    );
    // The run's workspace volume is shared with later container stages; the host workspace stays as it was.
    assert_eq!(run.outcome("test"), StageOutcome::Failed);
    assert_eq!(
        run.lines("test", LogStreamKind::Stdout),
        ["$ cat out.txt", "built", "$ exit 3"]
    );
    let test = run.report.stages.iter().find(|s| s.name == "test");
    assert_eq!(test.and_then(|s| s.exit_code), Some(3));
    assert_eq!(
        run.lines("host", LogStreamKind::Stdout),
        ["$ test ! -e out.txt && echo not here", "not here"]
    );
    assert!(
        containers_with("buildit.run", &run.run_id).is_empty(),
        "containers left behind"
    );
}

#[tokio::test]
async fn secrets_stay_out_of_the_container_configuration() {
    let Some(docker) = docker().await else { return };
    let dir = support::temp_dir();
    let mut spec = StageSpec::new(
        vec!["echo ready; sleep 30".to_owned()],
        dir.path().to_path_buf(),
    );
    spec.image = Some(IMAGE.to_owned());
    spec.secrets
        .insert("API_KEY".to_owned(), "very-secret-value-42".to_owned());
    spec.labels
        .insert("buildit.run".to_owned(), "secret-test".to_owned());
    let handle = match docker.spawn(spec).await {
        Ok(handle) => handle,
        Err(error) => panic!("{error}"),
    };
    let inspected = docker_cli(&["inspect", handle.container_id()]);
    assert!(inspected.contains("secret-test"), "{inspected}");
    assert!(
        !inspected.contains("very-secret-value-42"),
        "a secret is visible in docker inspect: {inspected}"
    );
    let started = Instant::now();
    if let Err(error) = docker.cancel(&handle, Duration::from_secs(5)).await {
        panic!("{error}");
    }
    // The init process passes SIGTERM on: `sleep` stops at once, long before the grace period ends.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The run's end releases its workspace volume.
    if let Err(error) = docker.release_run("secret-test").await {
        panic!("{error}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(containers_with("buildit.run", "secret-test").is_empty());
    assert!(volumes_with("buildit.run", "secret-test").is_empty());
}

/// A token that is cancelled after `delay`, and when that happened.
fn cancel_after(delay: Duration) -> (CancellationToken, Arc<std::sync::Mutex<Option<Instant>>>) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let cancelled_at = Arc::new(std::sync::Mutex::new(None));
    let noted = Arc::clone(&cancelled_at);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Ok(mut at) = noted.lock() {
            *at = Some(Instant::now());
        }
        trigger.cancel();
    });
    (cancel, cancelled_at)
}

#[tokio::test]
async fn timeouts_and_cancellation_leave_no_container() {
    let Some(docker) = docker().await else { return };
    // Well after the timeout, even when creating containers is slow (a cold engine in CI).
    let (cancel, _) = cancel_after(Duration::from_secs(5));
    let run = run_pipeline(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "slow" {{ image "{IMAGE}"; timeout "1s"; run "sleep 20" }}
stage "stubborn" {{ image "{IMAGE}"; run "trap '' TERM; sleep 20" }}
"#
        ),
        &[],
        cancel,
    )
    .await;
    assert_eq!(run.outcome("slow"), StageOutcome::TimedOut);
    assert_eq!(run.outcome("stubborn"), StageOutcome::Cancelled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        containers_with("buildit.run", &run.run_id).is_empty(),
        "containers left behind"
    );
}

/// BuildIt's own SIGKILL of a memory-limited container (a stage that ignores SIGTERM, cancelled) is reported
/// once the grace period is over, without waiting for an `oom` event that will not come.
#[tokio::test]
async fn a_memory_limited_container_killed_by_cancel_is_not_held_back() {
    let Some(docker) = docker().await else { return };
    // Well after the container started, even on a cold engine.
    let (cancel, cancelled_at) = cancel_after(Duration::from_secs(4));
    let run = run_pipeline(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "stubborn" {{
    image "{IMAGE}"
    resources memory="64Mi"
    run "trap '' TERM; sleep 30"
}}
"#
        ),
        &[],
        cancel,
    )
    .await;
    let since_cancel = cancelled_at
        .lock()
        .ok()
        .and_then(|at| *at)
        .map(|at| at.elapsed());
    assert_eq!(run.outcome("stubborn"), StageOutcome::Cancelled);
    // The grace period is 2 s; waiting for an `oom` event would add 3 s more.
    assert!(
        since_cancel.is_some_and(|elapsed| elapsed < Duration::from_millis(4500)),
        "{since_cancel:?}"
    );
}

#[tokio::test]
async fn parallel_stages_run_at_once() {
    let Some(docker) = docker().await else { return };
    let started = Instant::now();
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
concurrency 3
stage "a" {{ image "{IMAGE}"; run "sleep 1" }}
stage "b" {{ image "{IMAGE}"; run "sleep 1" }}
stage "c" {{ image "{IMAGE}"; run "sleep 1" }}
"#
        ),
    )
    .await;
    for stage in ["a", "b", "c"] {
        assert_eq!(run.outcome(stage), StageOutcome::Succeeded);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn missing_and_bad_images_are_clear_errors() {
    let Some(never) = docker_with(DockerOptions {
        pull: PullPolicy::Never,
        ..DockerOptions::default()
    })
    .await
    else {
        return;
    };
    let run = run_simple(
        &never,
        r#"
pipeline "p"
stage "missing" { image "buildit-test/not-there:1"; run "true" }
stage "bad" { image "Not A Reference!"; run "true" }
"#,
    )
    .await;
    assert_eq!(run.outcome("missing"), StageOutcome::Failed);
    assert!(
        run.reason("missing").contains("not on the Docker host")
            && run.reason("missing").contains("never"),
        "{}",
        run.reason("missing")
    );
    assert_eq!(run.outcome("bad"), StageOutcome::Failed);
    assert!(
        run.reason("bad").contains("Not A Reference!"),
        "{}",
        run.reason("bad")
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_one_clear_error() {
    let started = Instant::now();
    let result = DockerExecutor::connect(DockerOptions {
        host: Some("unix:///nonexistent/docker.sock".to_owned()),
        ..DockerOptions::default()
    })
    .await;
    match result {
        Err(error) => assert!(
            error
                .to_string()
                .contains("cannot reach Docker at `unix:///nonexistent/docker.sock`"),
            "{error}"
        ),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sweeps_remove_what_dead_runs_left_and_nothing_else() {
    let Some(docker) = docker().await else { return };
    let host = buildit_core::store::RunOwner::this_process().host;
    let dead = {
        let mut child = match Command::new("true").spawn() {
            Ok(child) => child,
            Err(error) => panic!("{error}"),
        };
        let pid = child.id();
        let _ = child.wait();
        pid
    };
    let tag = format!("sweep-{}", std::process::id());
    // What the test creates goes when it ends, passed or failed (another host's container is never swept).
    let _cleanup = SweepTestCleanup(tag.clone());
    // `docker create` or `docker volume create` of something labelled as BuildIt's, for `run` of `owner`.
    let labelled_as = |command: &[&str], run: &str, owner: &str| {
        let labels = [
            format!("buildit.run={run}"),
            format!("buildit.owner={owner}"),
            format!("sweep-test={tag}"),
        ];
        let mut args = command.to_vec();
        for label in &labels {
            args.extend(["--label", label]);
        }
        if command == ["create"] {
            args.extend([IMAGE, "true"]);
        }
        docker_cli(&args)
    };
    let create = |run: &str, owner: &str| labelled_as(&["create"], run, owner);
    create("dead-run", &format!("{host}/{dead}"));
    let volume = |run: &str, owner: &str| labelled_as(&["volume", "create"], run, owner);
    volume("dead-run", &format!("{host}/{dead}"));
    volume("live-run", &format!("{host}/{}", std::process::id()));
    create("live-run", &format!("{host}/{}", std::process::id()));
    create("remote-run", &format!("another-host/{dead}"));
    // Not BuildIt's: no run label.
    docker_cli(&[
        "create",
        "--label",
        &format!("sweep-test={tag}"),
        IMAGE,
        "true",
    ]);
    // What the sweep reports is not checked: another test's run, ending meanwhile, sweeps dead owners too.
    if let Err(error) = docker.sweep(&SweepScope::leftovers()).await {
        panic!("{error}");
    }
    let left = containers_with("sweep-test", &tag);
    assert_eq!(left.len(), 3, "only the dead run's container goes");
    assert!(containers_with("buildit.run", "dead-run").is_empty());
    assert_eq!(
        volumes_with("sweep-test", &tag).len(),
        1,
        "only the dead run's volume goes"
    );
    // A run's own sweep takes its containers, alive or not.
    let _ = docker.sweep(&SweepScope::run("live-run")).await;
    assert_eq!(containers_with("sweep-test", &tag).len(), 2);
    assert!(
        volumes_with("sweep-test", &tag).is_empty(),
        "a run's sweep takes its volume"
    );
}

#[tokio::test]
async fn a_fleet_sweep_takes_what_a_restarted_worker_or_an_ended_lease_left() {
    let Some(docker) = docker().await else { return };
    let worker = format!("sweep-worker-{}", std::process::id());
    let docker = docker.with_owner(LeftoverOwner::this_process().with_worker(&worker));
    let here = RunOwner::this_process();
    let tag = format!("fleet-{}", std::process::id());
    let _cleanup = SweepTestCleanup(tag.clone());
    // A container of `run` created by `owner`, with more labels.
    let create = |run: &str, owner: &str, more: &[(&str, &str)]| {
        let mut labels = vec![
            format!("buildit.run={run}-{tag}"),
            format!("buildit.owner={owner}"),
            format!("sweep-test={tag}"),
        ];
        labels.extend(more.iter().map(|(key, value)| format!("{key}={value}")));
        let mut args = vec!["create"];
        for label in &labels {
            args.extend(["--label", label]);
        }
        args.extend([IMAGE, "true"]);
        docker_cli(&args);
    };
    // Another host's processes: their pids say nothing here, only the worker and the lease do.
    create(
        "restarted",
        "another-host/1",
        &[("buildit.worker", &worker)],
    );
    create(
        "other-worker",
        "another-host/1",
        &[("buildit.worker", "another-worker")],
    );
    create(
        "ended-lease",
        "another-host/1",
        &[
            ("buildit.worker", "another-worker"),
            ("buildit.lease", "41/2"),
        ],
    );
    create(
        "later-claim",
        "another-host/1",
        &[("buildit.lease", "41/3")],
    );
    create(
        "own",
        &format!("{}/{}", here.host, here.pid),
        &[("buildit.worker", &worker)],
    );
    let scope = SweepScope::leftovers().with_ended_leases([Lease {
        job: 41,
        attempt: 2,
    }]);
    if let Err(error) = docker.sweep(&scope).await {
        panic!("{error}");
    }
    let left = |run: &str| containers_with("buildit.run", &format!("{run}-{tag}")).len();
    assert_eq!(left("restarted"), 0, "the worker's earlier process is gone");
    assert_eq!(left("ended-lease"), 0, "the lease ended");
    assert_eq!(left("other-worker"), 1, "another worker may be alive");
    assert_eq!(left("later-claim"), 1, "a later claim of the job is alive");
    assert_eq!(left("own"), 1, "this worker's own containers are alive");
}

/// Removes the containers and volumes labelled `sweep-test=<tag>` when dropped.
struct SweepTestCleanup(String);

impl Drop for SweepTestCleanup {
    fn drop(&mut self) {
        for id in containers_with("sweep-test", &self.0) {
            docker_cli(&["rm", "-f", &id]);
        }
        for volume in volumes_with("sweep-test", &self.0) {
            docker_cli(&["volume", "rm", "-f", &volume]);
        }
    }
}

#[tokio::test]
async fn a_container_killed_for_memory_says_so() {
    let Some(docker) = docker().await else { return };
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "hungry" {{
    image "{IMAGE}"
    resources memory="8Mi"
    run "dd if=/dev/zero of=/dev/null bs=64M count=1"
}}
"#
        ),
    )
    .await;
    assert_eq!(run.outcome("hungry"), StageOutcome::Failed);
    let stage = run.report.stages.iter().find(|s| s.name == "hungry");
    assert_eq!(
        stage.and_then(|s| s.reason.as_deref()),
        Some("killed: out of memory")
    );
    assert_eq!(stage.and_then(|s| s.exit_code), Some(137));
}

/// Neither a container nor a network of the run is left.
async fn assert_nothing_left(run_id: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        containers_with("buildit.run", run_id).is_empty(),
        "containers left behind"
    );
    assert!(
        networks_with("buildit.run", run_id).is_empty(),
        "networks left behind"
    );
    assert!(
        volumes_with("buildit.run", run_id).is_empty(),
        "volumes left behind"
    );
}

fn volumes_with(label: &str, value: &str) -> Vec<String> {
    labelled(&["volume", "ls", "-q"], label, value)
}

fn networks_with(label: &str, value: &str) -> Vec<String> {
    labelled(&["network", "ls", "-q"], label, value)
}

/// The ids a `docker ... ls` command lists for objects carrying `label=value`.
fn labelled(list: &[&str], label: &str, value: &str) -> Vec<String> {
    let filter = format!("label={label}={value}");
    let mut args = list.to_vec();
    args.extend(["--filter", &filter]);
    docker_cli(&args).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn services_start_first_are_reachable_by_name_and_go_afterwards() {
    let Some(docker) = docker().await else { return };
    let run = run_simple(&docker, &format!(
            r#"
pipeline "p"
stage "client" {{
    image "{IMAGE}"
    service "web" {{
        image "{IMAGE}"
        env {{ BODY "hello from the service" }}
        command "sh" "-c" "sleep 1; mkdir -p /srv && echo \"$BODY\" > /srv/index.html && httpd -f -p 8080 -h /srv"
        ready "wget -q -O /dev/null http://127.0.0.1:8080/"
    }}
    service "cache" {{ image "{IMAGE}"; command "sleep" "600" }}
    run "wget -qO- http://web:8080/"
    run "ping -c 1 -W 2 cache >/dev/null && echo cache is there"
}}
stage "after" {{ needs "client"; image "{IMAGE}"; run "wget -q -T 2 -O- http://web:8080/ || echo no web any more" }}
"#
        ))
    .await;
    assert_eq!(run.outcome("client"), StageOutcome::Succeeded);
    assert_eq!(
        run.lines("client", LogStreamKind::Stdout),
        [
            "$ wget -qO- http://web:8080/",
            "hello from the service",
            "$ ping -c 1 -W 2 cache >/dev/null && echo cache is there",
            "cache is there"
        ]
    );
    assert_eq!(
        run.lines("after", LogStreamKind::Stdout).last().copied(),
        Some("no web any more")
    );
    assert_nothing_left(&run.run_id).await;
}

#[tokio::test]
async fn a_service_that_never_gets_ready_fails_its_stage_with_its_last_lines() {
    let Some(docker) = docker().await else { return };
    let started = Instant::now();
    let run = run_simple(&docker, &format!(
            r#"
pipeline "p"
stage "client" {{
    image "{IMAGE}"
    service "db" {{
        image "{IMAGE}"
        command "sh" "-c" "echo starting the database; echo config error: no such table >&2; sleep 600"
        ready "test -f /ready" timeout="2s"
    }}
    run "echo never runs"
}}
"#
        ))
    .await;
    assert_eq!(run.outcome("client"), StageOutcome::Failed);
    let reason = run.reason("client");
    assert!(
        reason.contains("service `db` was not ready after 2 s")
            && reason.contains("config error: no such table"),
        "{reason}"
    );
    assert!(run.lines("client", LogStreamKind::Stdout).is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_left(&run.run_id).await;
}

#[tokio::test]
async fn starting_services_counts_against_the_timeout_and_exited_services_are_reported() {
    let Some(docker) = docker().await else { return };
    let started = Instant::now();
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "hanging" {{
    image "{IMAGE}"
    timeout "2s"
    service "api" {{
        image "{IMAGE}"
        command "sleep" "600"
        ready "sleep 600" timeout="10m"
    }}
    run "echo never runs"
}}
stage "crashing" {{
    image "{IMAGE}"
    service "db" {{
        image "{IMAGE}"
        command "sh" "-c" "echo fatal: bad configuration; sleep 0.5; exit 1"
        ready "test -f /never"
    }}
    run "echo never runs"
}}
"#
        ),
    )
    .await;
    assert_eq!(run.outcome("hanging"), StageOutcome::TimedOut);
    assert_eq!(run.reason("hanging"), "timed out after 2s while starting");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.outcome("crashing"), StageOutcome::Failed);
    assert!(
        run.reason("crashing")
            .contains("service `db` stopped before it was ready")
            && run.reason("crashing").contains("fatal: bad configuration"),
        "{}",
        run.reason("crashing")
    );
}

#[tokio::test]
async fn the_workspace_is_copied_into_a_volume_once_and_the_host_directory_stays_untouched() {
    let Some(docker) = docker().await else { return };
    let workspace = support::temp_dir();
    let _ = std::fs::create_dir_all(workspace.path().join("src/deep"));
    let _ = std::fs::write(
        workspace.path().join("src/deep/input.txt"),
        "from the host\n",
    );
    let _ = std::fs::create_dir_all(workspace.path().join(".buildit"));
    let _ = std::fs::write(workspace.path().join(".buildit/state"), "private");
    let options = RunOptions {
        grace: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let run = run_in(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "first" {{
    image "{IMAGE}"
    run "cat src/deep/input.txt"
    run "test ! -e .buildit && echo no state"
    run "echo written > made.txt; rm src/deep/input.txt"
}}
stage "second" {{ needs "first"; image "{IMAGE}"; run "cat made.txt; test ! -e src/deep/input.txt && echo removed"; }}
"#
        ),
        &[],
        CancellationToken::new(),
        workspace.path(),
        options,
    )
    .await;
    assert_eq!(
        run.lines("first", LogStreamKind::Stdout),
        [
            "$ cat src/deep/input.txt",
            "from the host",
            "$ test ! -e .buildit && echo no state",
            "no state",
            "$ echo written > made.txt; rm src/deep/input.txt"
        ]
    );
    // The second stage sees what the stage it needs wrote and deleted.
    assert_eq!(
        run.lines("second", LogStreamKind::Stdout)[1..],
        ["written", "removed"]
    );
    assert!(workspace.path().join("src/deep/input.txt").is_file());
    assert!(!workspace.path().join("made.txt").exists());
    assert_nothing_left(&run.run_id).await;
}

#[tokio::test]
async fn bind_mounts_the_host_workspace_instead() {
    let Some(docker) = docker_with(DockerOptions {
        bind_workspace: true,
        ..DockerOptions::default()
    })
    .await
    else {
        return;
    };
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "build" {{ image "{IMAGE}"; run "echo built > out.txt"; }}
stage "host" {{ needs "build"; run "cat out.txt" }}
"#
        ),
    )
    .await;
    assert_eq!(
        run.lines("host", LogStreamKind::Stdout),
        ["$ cat out.txt", "built"]
    );
    assert_nothing_left(&run.run_id).await;
}

#[tokio::test]
async fn artifacts_and_caches_move_through_the_volume_with_the_same_rules() {
    let Some(docker) = docker().await else { return };
    let workspace = support::temp_dir();
    let stores = support::temp_dir();
    let options = || RunOptions {
        grace: Duration::from_secs(2),
        concurrency: Some(1),
        artifacts: Some(ArtifactStore::new(stores.path().join("artifacts"))),
        caches: Some(CacheStore::new(stores.path().join("caches"))),
        ..RunOptions::default()
    };
    let pipeline = format!(
        r#"
pipeline "p"
cache "deps" {{ path "deps" "deps/nested" "~/.outside"; key "deps-1" }}
cache "linked" {{ path "linked"; key "linked-1" }}
stage "build" {{
    image "{IMAGE}"
    cache "deps"
    cache "linked"
    run "ln -sfn /etc linked"
    run "test -f deps/fetched && echo warm || {{ mkdir -p deps; echo v1 > deps/fetched; echo cold; }}"
    run "mkdir -p dist/sub; echo app > dist/app.txt; echo x > dist/sub/x.txt; echo log > dist/skip.log; echo r > report.xml"
    artifacts "dist/**/*.txt" "report.xml"
}}
stage "host" {{ needs "build"; run "cat dist/app.txt dist/sub/x.txt report.xml; test ! -e dist/skip.log"; artifacts "host.txt"; run "echo from-host > host.txt" }}
stage "back" {{ needs "host"; image "{IMAGE}"; run "cat host.txt" }}
stage "sneaky" {{ needs "build"; image "{IMAGE}"; run "ln -s /etc/hostname leak"; artifacts "leak" }}
"#
    );
    let run = || {
        run_in(
            &docker,
            &pipeline,
            &[],
            CancellationToken::new(),
            workspace.path(),
            options(),
        )
    };
    let first = run().await;
    assert_eq!(
        first.outcome("build"),
        StageOutcome::Succeeded,
        "{}",
        first.reason("build")
    );
    assert_eq!(first.lines("build", LogStreamKind::Stdout)[2], "cold");
    let notes = first.lines("build", LogStreamKind::Stderr);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("`~/.outside` is outside the workspace")),
        "{notes:?}"
    );
    // A cache path that goes up out of the workspace never gets this far: validation refuses it.
    let up = buildit_core::parse_pipeline(
        "pipeline \"p\"\ncache \"deps\" { path \"../up\"; key \"k\" }\nstage \"s\" { cache \"deps\"; run \"true\" }\n",
        "buildit.kdl",
    );
    assert!(
        up.as_ref().is_err_and(|error| error
            .diagnostics
            .iter()
            .any(|d| d.message.contains("`../up` can never be used"))),
        "{up:?}"
    );
    support::assert_line_starting(&notes, "buildit: cache `deps` saved");
    // A symlink out of the container's workspace is never followed into the host.
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("buildit: cache `linked` not saved") && n.contains("symlink")),
        "{notes:?}"
    );
    // A host stage gets the container stage's artifacts, and a container stage gets the host stage's.
    assert_eq!(
        first.outcome("host"),
        StageOutcome::Succeeded,
        "{}",
        first.reason("host")
    );
    assert_eq!(
        first.lines("host", LogStreamKind::Stdout)[1..4],
        ["app", "x", "r"]
    );
    assert_eq!(
        first.outcome("back"),
        StageOutcome::Succeeded,
        "{}",
        first.reason("back")
    );
    assert_eq!(first.lines("back", LogStreamKind::Stdout)[1], "from-host");
    // A symlink out of the workspace is refused, as on the host.
    assert_eq!(first.outcome("sneaky"), StageOutcome::Failed);
    assert!(
        first.reason("sneaky").contains("leak"),
        "{}",
        first.reason("sneaky")
    );
    assert_nothing_left(&first.run_id).await;

    // The next run starts from a clean workspace: the cache brings `deps` back into its volume.
    let second = run().await;
    assert_eq!(second.lines("build", LogStreamKind::Stdout)[2], "warm");
    assert_nothing_left(&second.run_id).await;
}

/// A Docker registry on a loopback port (Debian's `docker-registry`; the engine trusts loopback registries
/// without TLS), stopped when dropped.
struct LocalRegistry {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// `None` (outside CI) when the registry program is not installed.
    fn start() -> Option<Self> {
        let program = "/usr/bin/docker-registry";
        if !Path::new(program).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install docker-registry"
            );
            eprintln!("skipped: no {program}");
            return None;
        }
        let dir = support::temp_dir();
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(address) => address.port(),
            Err(error) => panic!("{error}"),
        };
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let written = std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        );
        assert!(written.is_ok(), "{written:?}");
        let child = match Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!("{program}: {error}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "the registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            address,
            _dir: dir,
        })
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn pulls_report_their_progress_in_the_stage_log_as_they_happen() {
    let Some(docker) = docker().await else { return };
    let Some(registry) = LocalRegistry::start() else {
        return;
    };
    // An image with a layer of its own, so that pulling it downloads something.
    let context = support::temp_dir();
    let stamp = format!("stamp-{}-{:?}", std::process::id(), Instant::now());
    let _ = std::fs::write(context.path().join("stamp"), &stamp);
    let _ = std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY stamp /stamp\n"),
    );
    let image = format!("{}/buildit-pull-test/app:1", registry.address);
    let context_path = context.path().display().to_string();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &image, &context_path])
        .output();
    assert!(
        matches!(&built, Ok(output) if output.status.success()),
        "{built:?}"
    );
    let pushed = Command::new("docker").args(["push", &image]).output();
    assert!(
        matches!(&pushed, Ok(output) if output.status.success()),
        "{pushed:?}"
    );
    docker_cli(&["rmi", &image]);
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "pulled" {{ image "{image}"; run "cat /stamp"; }}
"#
        ),
    )
    .await;
    docker_cli(&["rmi", &image]);
    assert_eq!(
        run.outcome("pulled"),
        StageOutcome::Succeeded,
        "{}",
        run.reason("pulled")
    );
    assert_eq!(run.lines("pulled", LogStreamKind::Stdout)[1], stamp);
    let notes = run.lines("pulled", LogStreamKind::Stderr);
    assert_eq!(
        notes.first().copied(),
        Some(format!("buildit: pulling image `{image}`").as_str()),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.ends_with(": Pull complete")),
        "every layer's end is shown: {notes:?}"
    );
    support::assert_line_starting(&notes, "buildit: Digest: sha256:");
    assert!(
        notes
            .last()
            .is_some_and(|n| n.starts_with(&format!("buildit: pulled image `{image}` in "))),
        "{notes:?}"
    );
    // The notes came while the stage was starting: before its first output line.
    let position = |wanted: &str| {
        run.events.iter().position(|event| {
            matches!(&event.kind, RunEventKind::LogLine { text, .. } if text.starts_with(wanted))
        })
    };
    assert!(position("buildit: pulling image") < position(&stamp));
}

/// An image with no shell at all: only the busybox binary, at `/busybox`.
fn build_shell_less_image() -> &'static str {
    const NO_SHELL: &str = "buildit-test/no-shell:latest";
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let context = support::temp_dir();
        let _ = std::fs::write(
            context.path().join("Dockerfile"),
            format!(
                "FROM {IMAGE} AS tools\nFROM scratch\nCOPY --from=tools /bin/busybox /busybox\n"
            ),
        );
        let context_path = context.path().display().to_string();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", NO_SHELL, &context_path])
            .output();
        assert!(
            matches!(&built, Ok(output) if output.status.success()),
            "{built:?}"
        );
    });
    NO_SHELL
}

#[tokio::test]
async fn a_ready_check_with_arguments_runs_without_a_shell() {
    let Some(docker) = docker().await else { return };
    let no_shell = build_shell_less_image();
    let run = run_simple(&docker, &format!(
            r#"
pipeline "p"
stage "exec-form" {{
    image "{IMAGE}"
    service "bare" {{ image "{no_shell}"; command "/busybox" "sleep" "60"; ready "/busybox" "true"; }}
    run "echo started"
}}
stage "shell-form" {{
    image "{IMAGE}"
    service "bare" {{ image "{no_shell}"; command "/busybox" "sleep" "60"; ready "/busybox true" timeout="2s"; }}
    run "echo started"
}}
"#
        ))
    .await;
    assert_eq!(
        run.outcome("exec-form"),
        StageOutcome::Succeeded,
        "{}",
        run.reason("exec-form")
    );
    assert_eq!(run.outcome("shell-form"), StageOutcome::Failed);
    assert!(
        run.reason("shell-form")
            .starts_with("service `bare` was not ready after 2 s (`/busybox true` kept failing)"),
        "{}",
        run.reason("shell-form")
    );
    assert_nothing_left(&run.run_id).await;
}

/// A stage whose container someone else removes (`docker rm -f`) is `lost`: the infrastructure's failure, told
/// apart from the command's own exit code.
#[tokio::test]
async fn a_container_removed_by_someone_else_is_lost() {
    let Some(docker) = docker().await else { return };
    let remover = tokio::task::spawn_blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // Running, not only created: removed before it starts, the stage would fail to start instead.
            if let Some(id) = labelled(&["ps", "-q"], "buildit.stage", "removed-by-hand").first() {
                std::thread::sleep(Duration::from_millis(300));
                docker_cli(&["rm", "-f", id]);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let run = run_simple(
        &docker,
        &format!(
            r#"
pipeline "p"
stage "removed-by-hand" {{ image "{IMAGE}"; run "echo started; sleep 30" }}
"#
        ),
    )
    .await;
    assert!(matches!(remover.await, Ok(true)), "the container never ran");
    let report = &run.report.stages[0];
    assert_eq!(report.outcome, StageOutcome::Failed, "{report:?}");
    assert_eq!(report.failure, Some(FailureKind::Lost), "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("removed by someone else")),
        "{report:?}"
    );
}
