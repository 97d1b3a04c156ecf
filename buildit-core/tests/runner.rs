//! The `Runner` with each workspace source: a run of an uploaded archive and a run of a git commit, their stages
//! working in the directory the source was prepared into; a source that cannot be prepared records no run. And a
//! cancel asked through the store, which stops a running run.

#![expect(
    clippy::expect_used,
    reason = "test setup (temporary directories, git and tar runs) has no way to go on when it fails"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use buildit_core::RunContext;
use buildit_core::events::{RunEventKind, StageOutcome};
use buildit_core::exec::LocalExecutor;
use buildit_core::runner::{Runner, RunnerError};
use buildit_core::source::{CommitId, SourceLimits, SourceStore, WorkspaceSource};
use buildit_core::store::{MemoryStore, RunFilter, Store};

#[expect(dead_code, reason = "only the plan, the runner and temp dirs are used")]
mod support;

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("the program starts");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

const PIPELINE: &str = r#"
pipeline "sourced"
stage "read" { run "cat greeting.txt"; run "pwd" }
"#;

fn limits() -> SourceLimits {
    SourceLimits {
        max_upload: 1024 * 1024,
        max_entries: 100,
    }
}

/// Runs the pipeline from `source`, prepared into `into`; returns the stage's output lines.
async fn run_from(source: WorkspaceSource, sources: SourceStore, into: &Path) -> Vec<String> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let plan = support::plan(PIPELINE, &RunContext::new());
    let runner =
        Runner::new("sourced-run", plan, LocalExecutor::new(), store).source(source, sources, into);
    let (report, events) = support::run_to_end(runner).await;
    assert_eq!(
        report.stages[0].outcome,
        StageOutcome::Succeeded,
        "{report:?}"
    );
    events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::LogLine { text, .. } if !text.starts_with("$ ") => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_run_of_an_uploaded_archive_works_in_its_unpacked_copy() {
    let dir = support::temp_dir();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("files directory");
    std::fs::write(files.join("greeting.txt"), "hello from the archive\n").expect("file");
    run(
        dir.path(),
        "tar",
        &["-cf", "upload.tar", "-C", "files", "."],
    );
    let sources = SourceStore::new(dir.path().join("sources"), limits());
    let archive = tokio::fs::File::open(dir.path().join("upload.tar"))
        .await
        .expect("archive");
    let digest = sources.put(archive).await.expect("upload");
    let into = dir.path().join("runs/1");
    let lines = run_from(WorkspaceSource::Archive(digest), sources, &into).await;
    let into = into.canonicalize().expect("prepared directory");
    assert_eq!(
        lines,
        [
            "hello from the archive".to_owned(),
            into.display().to_string()
        ]
    );
}

#[tokio::test]
async fn a_run_of_a_git_commit_works_in_its_checkout() {
    let dir = support::temp_dir();
    let repository = dir.path().join("repository");
    std::fs::create_dir(&repository).expect("repository directory");
    let git = |args: &[&str]| {
        let mut all = vec!["-c", "user.name=Test", "-c", "user.email=test@example.com"];
        all.extend_from_slice(args);
        run(&repository, "git", &all)
    };
    git(&["init", "-q"]);
    std::fs::write(repository.join("greeting.txt"), "first\n").expect("file");
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    let first = git(&["rev-parse", "HEAD"]);
    std::fs::write(repository.join("greeting.txt"), "second\n").expect("file");
    git(&["commit", "-q", "-am", "second"]);
    let source = WorkspaceSource::Git {
        repository: repository.display().to_string(),
        commit: CommitId::parse(&first).expect("a commit id"),
    };
    let into = dir.path().join("checkout");
    let sources = SourceStore::new(dir.path().join("sources"), limits());
    let lines = run_from(source, sources, &into).await;
    // The commit asked for, not the branch's tip.
    assert_eq!(lines.first().map(String::as_str), Some("first"));
    assert_eq!(run(&into, "git", &["rev-parse", "HEAD"]), first);
}

#[tokio::test]
async fn a_source_that_cannot_be_prepared_records_no_run() {
    let dir = support::temp_dir();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let plan = support::plan(PIPELINE, &RunContext::new());
    let missing = CommitId::parse(&"a".repeat(40)).expect("a commit id");
    let runner = Runner::new("unprepared", plan, LocalExecutor::new(), Arc::clone(&store)).source(
        WorkspaceSource::Git {
            repository: dir.path().join("nothing-here").display().to_string(),
            commit: missing,
        },
        SourceStore::new(dir.path().join("sources"), limits()),
        dir.path().join("checkout"),
    );
    match runner.start().await {
        Err(RunnerError::Source(_)) => {}
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a run of a repository that is not there started"),
    }
    let runs = store.list_runs(&RunFilter::default()).await.expect("runs");
    assert!(runs.is_empty(), "{runs:?}");
    assert!(!dir.path().join("checkout").exists());
}

/// A cancel asked through the store by someone else (another handle on it: another process) stops the run as its
/// own cancel token would: the stage is cancelled, the run ends `cancelled`, and the handle says why.
#[tokio::test]
async fn a_cancel_asked_through_the_store_stops_the_run() {
    let store = MemoryStore::new();
    let plan = support::plan(
        r#"pipeline "slow"
stage "sleep" { run "touch started && sleep 60" }
stage "after" { needs "sleep"; run "true" }
"#,
        &RunContext::new(),
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let runner = Runner::new(
        "cancelled-run",
        plan,
        LocalExecutor::new(),
        Arc::new(store.clone()),
    )
    .workspace(dir.path());
    let handle = runner.start().await.expect("the run starts");
    let told = handle.store_cancel();
    assert!(!told.is_cancelled());
    // Another handle on the store asks, as `buildit runs cancel` does from its own process.
    let other: Arc<dyn Store> = Arc::new(store.clone());
    // Asked once the stage runs, so that it is the stage that is stopped.
    let started = std::time::Instant::now();
    while !dir.path().join("started").exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the stage never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let asked = std::time::Instant::now();
    assert_eq!(
        other
            .cancel_running_run("cancelled-run")
            .await
            .expect("asked"),
        buildit_core::store::RunState::Running
    );
    let executed = tokio::time::timeout(std::time::Duration::from_secs(20), handle.wait())
        .await
        .expect("the run stops")
        .expect("the run executed");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "stopped after {:?}",
        asked.elapsed()
    );
    assert!(told.is_cancelled());
    assert_eq!(
        executed.report.status,
        buildit_core::events::RunOutcome::Cancelled
    );
    let outcomes: Vec<StageOutcome> = executed
        .report
        .stages
        .iter()
        .map(|stage| stage.outcome)
        .collect();
    assert_eq!(outcomes[0], StageOutcome::Cancelled, "{outcomes:?}");
    assert_ne!(outcomes[1], StageOutcome::Succeeded, "{outcomes:?}");
}
