//! Artifact and cache paths on a real workspace: a path that is empty, the whole workspace or outside it once
//! rendered fails its stage and moves nothing; stages whose paths overlap never run at the same time.

use std::path::Path;
use std::sync::Arc;

use buildit_core::RunContext;
use buildit_core::events::{EventBus, StageOutcome};
use buildit_core::exec::{
    ArtifactStore, CacheStore, LocalExecutor, RunIdentity, RunOptions, RunReport, execute,
};
use tokio_util::sync::CancellationToken;

#[expect(
    dead_code,
    reason = "the shared helpers include some these tests do not need"
)]
mod support;

/// A variable no test environment sets.
const UNSET: &str = "BUILDIT_TEST_NEVER_SET_9F3A";

struct Run {
    report: RunReport,
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
}

async fn run(text: &str, workspace: &Path, options: RunOptions) -> Run {
    let plan = support::plan(text, &RunContext::new().with_branch("main"));
    let mut bus = EventBus::new("run-1");
    let collector = support::collect_from(bus.subscribe_lossless(1024));
    let identity = RunIdentity::new("run-1", 1, workspace);
    let report = execute(
        &plan,
        Arc::new(LocalExecutor::new()),
        &identity,
        &options,
        &bus,
        &CancellationToken::new(),
    )
    .await;
    drop(bus);
    let _ = support::events(collector).await;
    Run { report }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn artifacts_that_render_empty_or_to_the_whole_workspace_fail_and_collect_nothing() {
    let dir = support::temp_dir();
    let _ = std::fs::write(dir.path().join(".env"), "TOKEN=hunter2\n");
    let store_root = dir.path().join(".buildit/artifacts");
    let options = RunOptions {
        artifacts: Some(ArtifactStore::new(&store_root)),
        ..RunOptions::default()
    };
    let text = format!(
        r#"
pipeline "p"
stage "unset-env" {{ run "true"; artifacts "{{env.{UNSET}}}" }}
stage "no-tag" {{ run "true"; artifacts "{{git.tag}}" }}
stage "dot-slash" {{ run "true"; artifacts "./{{git.tag}}" }}
stage "slashes" {{ run "true"; artifacts "{{git.tag}}//" }}
stage "ok" {{ run "mkdir -p dist && echo x > dist/app"; artifacts "dist/{{git.tag}}" }}
"#
    );
    let run = run(&text, dir.path(), options).await;
    for (stage, expected) in [
        (
            "unset-env",
            format!("artifact path `{{env.{UNSET}}}` is empty in this run"),
        ),
        (
            "no-tag",
            "artifact path `{git.tag}` is empty in this run".to_owned(),
        ),
        (
            "dot-slash",
            "artifact path `./{git.tag}` is `./` in this run: the whole workspace".to_owned(),
        ),
        (
            "slashes",
            "artifact path `{git.tag}//` is `//` in this run, which leaves the workspace"
                .to_owned(),
        ),
    ] {
        assert_eq!(run.outcome(stage), StageOutcome::Failed, "{stage}");
        assert!(
            run.reason(stage).starts_with(&expected),
            "{stage}: {}",
            run.reason(stage)
        );
    }
    assert_eq!(
        run.outcome("ok"),
        StageOutcome::Succeeded,
        "{}",
        run.reason("ok")
    );
    assert_eq!(
        files(&store_root),
        ["run-1/ok/dist/app"],
        "only `ok` collected anything"
    );
}

#[tokio::test]
async fn cache_paths_that_render_empty_or_leave_the_workspace_fail_before_the_stage_runs() {
    let dir = support::temp_dir();
    let _ = std::fs::write(dir.path().join(".env"), "TOKEN=hunter2\n");
    let cache_root = dir.path().join(".buildit/cache");
    let options = || RunOptions {
        caches: Some(CacheStore::new(&cache_root)),
        ..RunOptions::default()
    };
    for (path, expected) in [
        (format!("{{env.{UNSET}}}"), "is empty in this run"),
        (
            format!("{{env.{UNSET}}}/sub"),
            "is `/sub` in this run, which leaves the workspace",
        ),
        (
            "{git.tag}/.".to_owned(),
            "is `/.` in this run, which leaves the workspace",
        ),
        (
            "./{git.tag}".to_owned(),
            "the workspace as a whole, which is never cached",
        ),
        ("~/{git.tag}".to_owned(), "the home directory as a whole"),
    ] {
        let text = format!(
            r#"
pipeline "p"
cache "c" {{ path "{path}"; key "k" }}
stage "a" {{ cache "c"; run "touch ran" }}
"#
        );
        let run = run(&text, dir.path(), options()).await;
        assert_eq!(run.outcome("a"), StageOutcome::Failed, "{path}");
        assert!(
            run.reason("a").starts_with("cache `c`: cache path")
                && run.reason("a").contains(expected),
            "{path}: {}",
            run.reason("a")
        );
        assert!(!dir.path().join("ran").exists(), "{path}: the stage ran");
        assert!(
            files(&cache_root).is_empty(),
            "{path}: something was cached"
        );
    }
}

/// A stage that fails if another holds `lock` while it runs: `mkdir` is atomic.
fn exclusive_run() -> &'static str {
    "mkdir lock || { echo overlapped; exit 1; }; sleep 0.3; rmdir lock"
}

#[tokio::test]
async fn stages_with_overlapping_paths_never_run_at_the_same_time() {
    let dir = support::temp_dir();
    let options = || RunOptions {
        concurrency: Some(4),
        caches: Some(CacheStore::new(dir.path().join(".buildit/cache"))),
        artifacts: Some(ArtifactStore::new(dir.path().join(".buildit/artifacts"))),
        ..RunOptions::default()
    };
    let text = format!(
        r#"
pipeline "p"
cache "deps" {{ path "target"; key "deps" }}
stage "cached" {{ cache "deps"; run "{run}; mkdir -p target" }}
stage "collects" {{ run "{run}; mkdir -p target/release && echo x > target/release/app"; artifacts "target/release/*" }}
stage "matrix" {{ matrix {{ n "1" "2" "3" }}; cache "deps"; run "{run}" }}
"#,
        run = exclusive_run()
    );
    let run = run(&text, dir.path(), options()).await;
    for stage in [
        "cached",
        "collects",
        "matrix (n=1)",
        "matrix (n=2)",
        "matrix (n=3)",
    ] {
        assert_eq!(
            run.outcome(stage),
            StageOutcome::Succeeded,
            "{stage}: {}",
            run.reason(stage)
        );
    }
    // Serialised, not merely lucky: five stages of 0.3 s each, one at a time.
    assert!(
        run.report.duration >= std::time::Duration::from_millis(1500),
        "{:?}",
        run.report.duration
    );
}

#[tokio::test]
async fn stages_with_distinct_paths_still_run_at_the_same_time() {
    let dir = support::temp_dir();
    let options = RunOptions {
        concurrency: Some(4),
        caches: Some(CacheStore::new(dir.path().join(".buildit/cache"))),
        artifacts: Some(ArtifactStore::new(dir.path().join(".buildit/artifacts"))),
        ..RunOptions::default()
    };
    // Each waits until the other has started: only parallel runs succeed.
    let meet = |me: &str, other: &str| {
        format!(
            "touch {me}.started; for i in $(seq 100); do test -e {other}.started && exit 0; sleep 0.05; done; exit 1"
        )
    };
    let text = format!(
        r#"
pipeline "p"
cache "deps" {{ path "vendor/{{matrix.n}}"; key "deps-{{matrix.n}}" }}
stage "m" {{ matrix {{ n "1" "2" }}; cache "deps"; run "{one}" }}
stage "dist" {{ run "mkdir -p dist && touch dist/a.js && {two}"; artifacts "dist/*.js" }}
stage "docs" {{ run "mkdir -p dist && touch dist/a.css && {three}"; artifacts "dist/*.css" }}
"#,
        one = meet("m-$BUILDIT_MATRIX_N", "m-$((3 - BUILDIT_MATRIX_N))"),
        two = meet("dist", "docs"),
        three = meet("docs", "dist"),
    );
    let run = run(&text, dir.path(), options).await;
    for stage in ["m (n=1)", "m (n=2)", "dist", "docs"] {
        assert_eq!(
            run.outcome(stage),
            StageOutcome::Succeeded,
            "{stage}: {}",
            run.reason(stage)
        );
    }
}
