//! The Docker executor against the real Docker Engine, with the locally built `buildit-test/busybox` image
//! (`scripts/build-test-image.sh`; no registry is needed). Without an engine the tests are skipped, except in CI.

use std::process::Command;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use buildit_core::RunContext;
use buildit_core::events::{EventBus, LogStreamKind, RunEvent, RunEventKind, StageOutcome};
use buildit_core::exec::{
    AnyExecutor, DockerExecutor, DockerOptions, Executor, RunIdentity, RunOptions, RunReport,
    StageSpec, execute,
};
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
    docker_cli(&["ps", "-aq", "--filter", &format!("label={label}={value}")])
        .lines()
        .map(str::to_owned)
        .collect()
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

async fn run_pipeline(
    docker: &DockerExecutor,
    text: &str,
    secrets: &[(&str, &str)],
    cancel: CancellationToken,
) -> Run {
    let plan = support::plan(text, &RunContext::new().with_branch("main"));
    let workspace = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run_id = format!(
        "docker-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut identity = RunIdentity::new(run_id.clone(), 1, workspace.path());
    for (name, value) in secrets {
        identity
            .secrets
            .insert((*name).to_owned(), (*value).to_owned());
    }
    let mut bus = EventBus::new(run_id.clone());
    let collector = support::collect(&mut bus);
    let options = RunOptions {
        grace: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let report = execute(
        &plan,
        Arc::new(AnyExecutor::with_docker(docker.clone())),
        &identity,
        &options,
        &bus,
        &cancel,
    )
    .await;
    drop(bus);
    let events = support::events(collector).await;
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
stage "host" {{ needs "build"; run "cat out.txt" }}
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
    // The workspace is shared with later stages, in containers and on the host.
    assert_eq!(run.outcome("test"), StageOutcome::Failed);
    assert_eq!(
        run.lines("test", LogStreamKind::Stdout),
        ["$ cat out.txt", "built", "$ exit 3"]
    );
    let test = run.report.stages.iter().find(|s| s.name == "test");
    assert_eq!(test.and_then(|s| s.exit_code), Some(3));
    assert_eq!(
        run.lines("host", LogStreamKind::Stdout),
        ["$ cat out.txt", "built"]
    );
    assert!(
        containers_with("buildit.run", &run.run_id).is_empty(),
        "containers left behind"
    );
}

#[tokio::test]
async fn secrets_stay_out_of_the_container_configuration() {
    let Some(docker) = docker().await else { return };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(containers_with("buildit.run", "secret-test").is_empty());
}

#[tokio::test]
async fn timeouts_and_cancellation_leave_no_container() {
    let Some(docker) = docker().await else { return };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        // Well after the timeout, even when creating containers is slow (a cold engine in CI).
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.cancel();
    });
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

#[tokio::test]
async fn parallel_stages_run_at_once() {
    let Some(docker) = docker().await else { return };
    let started = Instant::now();
    let run = run_pipeline(
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
        &[],
        CancellationToken::new(),
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
    let Some(_) = docker().await else { return };
    let never = match DockerExecutor::connect(DockerOptions {
        pull: PullPolicy::Never,
        ..DockerOptions::default()
    })
    .await
    {
        Ok(docker) => docker,
        Err(error) => panic!("{error}"),
    };
    let run = run_pipeline(
        &never,
        r#"
pipeline "p"
stage "missing" { image "buildit-test/not-there:1"; run "true" }
stage "bad" { image "Not A Reference!"; run "true" }
"#,
        &[],
        CancellationToken::new(),
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
    let create = |run: &str, owner: &str| {
        docker_cli(&[
            "create",
            "--label",
            &format!("buildit.run={run}"),
            "--label",
            &format!("buildit.owner={owner}"),
            "--label",
            &format!("sweep-test={tag}"),
            IMAGE,
            "true",
        ])
    };
    create("dead-run", &format!("{host}/{dead}"));
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
    let report = match docker.sweep(None).await {
        Ok(report) => report,
        Err(error) => panic!("{error}"),
    };
    assert!(!report.containers.is_empty());
    let left = containers_with("sweep-test", &tag);
    assert_eq!(left.len(), 3, "only the dead run's container goes");
    assert!(containers_with("buildit.run", "dead-run").is_empty());
    // A run's own sweep takes its containers, alive or not.
    let _ = docker.sweep(Some("live-run")).await;
    assert_eq!(containers_with("sweep-test", &tag).len(), 2);
    for id in containers_with("sweep-test", &tag) {
        docker_cli(&["rm", "-f", &id]);
    }
}

#[tokio::test]
async fn a_container_killed_for_memory_says_so() {
    let Some(docker) = docker().await else { return };
    let run = run_pipeline(
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
        &[],
        CancellationToken::new(),
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
}

fn networks_with(label: &str, value: &str) -> Vec<String> {
    docker_cli(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label={label}={value}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn services_start_first_are_reachable_by_name_and_go_afterwards() {
    let Some(docker) = docker().await else { return };
    let run = run_pipeline(
        &docker,
        &format!(
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
        ),
        &[],
        CancellationToken::new(),
    )
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
    let run = run_pipeline(
        &docker,
        &format!(
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
        ),
        &[],
        CancellationToken::new(),
    )
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
    let run = run_pipeline(
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
        &[],
        CancellationToken::new(),
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
