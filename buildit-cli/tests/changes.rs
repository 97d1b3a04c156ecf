//! Changed paths and triggers as a user meets them through `buildit`: `when changes=` decides which stages run
//! from what git says changed, `on` triggers decide whether a run happens when `--event` is given, locally and
//! through the daemon, and every mistake is reported where it is.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use std::path::Path;

use support::{buildit, git, text, write_file as write};

const CHANGES_PIPELINE: &str = r#"pipeline "changes"
stage "docs" {
    when changes="docs/**"
    run "echo building the docs"
}
stage "code" {
    when { changes "src/**" "Cargo.*"; }
    run "echo testing the code"
}
stage "everything" {
    run "echo always here"
}
"#;

/// A repository whose `main` changed the docs, and a branch `feature` from there that changed `src/`.
fn repository(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    write(dir, "buildit.kdl", CHANGES_PIPELINE);
    write(dir, "README.md", "hello\n");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "start"]);
    write(dir, "docs/guide.md", "guide\n");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "docs"]);
    git(dir, &["checkout", "-q", "-b", "feature"]);
    write(dir, "src/lib.rs", "fn main() {}\n");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "code"]);
}

/// What each stage did in `buildit run --format json`'s events: its outcome, and its skip reason.
fn outcomes(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "stage-finished")
        .map(|event| {
            let stage = event["stage"].as_str().unwrap_or_default().to_owned();
            let outcome = event["outcome"].as_str().unwrap_or_default();
            let what = if outcome == "skipped" {
                format!("skipped: {}", event["reason"].as_str().unwrap_or_default())
            } else {
                outcome.to_owned()
            };
            (stage, what)
        })
        .collect()
}

fn outcome_of(outcomes: &[(String, String)], stage: &str) -> String {
    outcomes
        .iter()
        .find(|(name, _)| name == stage)
        .map(|(_, what)| what.clone())
        .unwrap_or_else(|| panic!("no outcome for {stage}: {outcomes:?}"))
}

#[test]
fn changed_paths_decide_which_stages_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let repo = dir.path();
    repository(repo);

    // On the branch: its own commits since main changed `src/` only.
    let output = buildit(repo, &["run", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let found = outcomes(&text(&output.stdout));
    assert_eq!(outcome_of(&found, "code"), "succeeded", "{found:?}");
    assert_eq!(outcome_of(&found, "everything"), "succeeded", "{found:?}");
    let docs = outcome_of(&found, "docs");
    assert!(
        docs.starts_with("skipped: no file changed since main (")
            && docs.ends_with("matches `docs/**`"),
        "{docs}"
    );

    // From an older base, the docs changed too.
    let output = buildit(repo, &["run", "--format", "json", "--base", "main~1"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let found = outcomes(&text(&output.stdout));
    assert_eq!(outcome_of(&found, "docs"), "succeeded", "{found:?}");

    // A file changed in the working tree and not committed counts for a run of the working tree.
    git(repo, &["checkout", "-q", "main"]);
    write(repo, "Cargo.toml", "[package]\n");
    // On main without a base, the changes are not known: every stage runs.
    let output = buildit(repo, &["plan", "--format", "json"], &[]);
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert!(plan.get("changes").is_none(), "{plan}");
    let output = buildit(repo, &["plan", "--format", "json", "--base", "main~1"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    // Since main's parent: its last commit (the docs) and the untracked Cargo.toml.
    assert_eq!(
        plan["changes"]["paths"],
        serde_json::json!(["Cargo.toml", "docs/guide.md"]),
        "{plan}"
    );
    let skipped: Vec<&str> = plan["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|stage| stage["skipped"] == true)
        .filter_map(|stage| stage["name"].as_str())
        .collect();
    assert!(skipped.is_empty(), "{plan}");

    // A base that is not a commit is refused before anything runs.
    let output = buildit(repo, &["run", "--base", "no-such-ref"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("`--base no-such-ref` is not a commit"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn without_a_repository_changes_are_unknown_and_every_stage_runs() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    // A temporary directory: in no repository.
    std::fs::write(dir.path().join("buildit.kdl"), CHANGES_PIPELINE)
        .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["run", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let found = outcomes(&text(&output.stdout));
    for stage in ["docs", "code", "everything"] {
        assert_eq!(outcome_of(&found, stage), "succeeded", "{found:?}");
    }
}

const TRIGGERED_PIPELINE: &str = r#"pipeline "triggered"
on "push" branches="main" paths="src/**"
on "tag" pattern="v*"
stage "build" {
    run "echo built"
}
"#;

#[test]
fn triggers_decide_whether_a_run_happens_when_the_event_is_given() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let repo = dir.path();
    repository(repo);
    write(repo, "buildit.kdl", TRIGGERED_PIPELINE);

    let plan = buildit(
        repo,
        &["plan", "--event", "push", "--branch", "feature"],
        &[],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let shown = text(&plan.stdout);
    assert!(
        shown.contains(
            "on push branches=main paths=src/**: does not match (branch `feature` is not `main`)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("on tag pattern=v*: does not match (the event is push)"),
        "{shown}"
    );
    assert!(shown.contains("not triggered: no stage runs"), "{shown}");
    assert!(
        shown.contains("build  [local]  skipped: not triggered"),
        "{shown}"
    );

    // Not triggered: nothing runs and nothing is recorded.
    let run = buildit(
        repo,
        &["run", "--event", "push", "--branch", "feature"],
        &[],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let said = text(&run.stdout);
    assert!(
        said.starts_with("not triggered: no `on` matches this push (")
            && said.trim_end().ends_with(": nothing runs"),
        "{said}"
    );
    let listed = buildit(repo, &["runs", "list"], &[]);
    assert!(
        text(&listed.stderr).contains("no run history"),
        "{}",
        text(&listed.stdout)
    );

    // The branch matches; `src/` did not change since HEAD (only the pipeline file did), and did since `main`.
    let run = buildit(
        repo,
        &[
            "run", "--event", "push", "--branch", "main", "--base", "HEAD", "--plain",
        ],
        &[],
    );
    assert!(
        text(&run.stdout).contains("not triggered"),
        "{}",
        text(&run.stdout)
    );
    let run = buildit(
        repo,
        &[
            "run", "--event", "push", "--branch", "main", "--base", "main", "--plain",
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("| built"),
        "{}",
        text(&run.stdout)
    );

    // A tag matches its pattern; no `--event`: the triggers are not asked.
    let tag = buildit(
        repo,
        &["run", "--event", "tag", "--tag", "v1.0", "--plain"],
        &[],
    );
    assert!(
        text(&tag.stdout).contains("| built"),
        "{}",
        text(&tag.stdout)
    );
    let plain = buildit(repo, &["run", "--branch", "feature", "--plain"], &[]);
    assert!(
        text(&plain.stdout).contains("| built"),
        "{}",
        text(&plain.stdout)
    );
}

#[test]
fn the_daemon_matches_triggers_and_changes_as_a_local_run_does() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("daemon");
    let daemon = support::Daemon::on_free_port(&data, &[]);
    let token = support::create_token(dir.path(), &data, "acme", "changes");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap_or_else(|error| panic!("{error}"));
    repository(&repo);
    let env = [
        ("BUILDIT_SERVER", daemon.address.as_str()),
        ("BUILDIT_TOKEN", token.as_str()),
    ];
    let remote = buildit(&repo, &["pipelines", "trigger", "--follow"], &env);
    let local = buildit(&repo, &["run", "--plain"], &[]);
    for (how, output) in [("through the daemon", &remote), ("locally", &local)] {
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{how}: {stdout}{}",
            text(&output.stderr)
        );
        assert!(stdout.contains("| testing the code"), "{how}: {stdout}");
        assert!(!stdout.contains("building the docs"), "{how}: {stdout}");
    }
    write(&repo, "buildit.kdl", TRIGGERED_PIPELINE);
    let remote = buildit(
        &repo,
        &[
            "pipelines",
            "trigger",
            "--event",
            "push",
            "--branch",
            "feature",
        ],
        &env,
    );
    assert_eq!(remote.status.code(), Some(0), "{}", text(&remote.stderr));
    let said = text(&remote.stdout);
    assert!(
        said.starts_with("not triggered: no `on` matches this push (")
            && said.contains("nothing runs"),
        "{said}"
    );
    let runs = buildit(&repo, &["runs", "list", "--format", "json"], &env);
    let listed: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap_or_default();
    // The first trigger's run only.
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "{}",
        text(&runs.stdout)
    );
}

#[test]
fn changes_mistakes_are_reported_where_they_are() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "p"
on "push" paths="./src/**"
stage "a" {
    when changes="/src/**"
    run "true"
}
stage "b" {
    when changes="docs/../src/**"
    run "true"
}
stage "c" {
    when { change "src/**"; }
    run "true"
}
stage "d" {
    when changes="src/[a"
    run "true"
}
stage "e" {
    when { changes 1; }
    run "true"
}
"#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    insta::assert_snapshot!(text(&output.stderr));
}

#[test]
fn a_run_without_a_branch_is_asked_for_one_when_triggers_filter_branches() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let repo = dir.path();
    repository(repo);
    write(repo, "buildit.kdl", TRIGGERED_PIPELINE);
    git(repo, &["checkout", "-q", "--detach"]);
    let run = buildit(repo, &["run", "--event", "push"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stdout));
    assert!(
        text(&run.stderr).contains("--branch main"),
        "{}",
        text(&run.stderr)
    );
    // A tag event does not filter branches: it is matched as usual.
    let tag = buildit(
        repo,
        &["run", "--event", "tag", "--tag", "v2", "--plain"],
        &[],
    );
    assert!(
        text(&tag.stdout).contains("| built"),
        "{}",
        text(&tag.stdout)
    );
}
