//! Reruns end to end: `buildit runs retry RUN [--failed]` and `buildit run --from STAGE` of real pipelines run
//! by `buildit run`, checked by what each stage did (a line it appends to `ran.log`), the events and `runs show`;
//! and every input a rerun refuses, with what it says.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its processes or files cannot be set up"
)]

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{buildit, buildit_command, json_lines, text};

/// `setup` hands every stage an artifact and an output unique to the execution that made them; `test` has a
/// linux instance that fails until `ok-linux` exists; `summary` needs every `test` instance and reads their
/// artifacts; `lint` depends on nothing. Each stage appends a line to `ran.log` when it runs.
const PIPELINE: &str = r#"pipeline "retry"
stage "setup" {
    outputs "token"
    run "mkdir -p out && token=$(date +%s%N) && echo $token > out/setup.txt && echo token=$token >> \"$BUILDIT_OUTPUT\""
    run "echo setup >> ran.log"
    artifacts "out/setup.txt"
}
stage "test" {
    needs "setup"
    matrix { os "linux" "macos"; }
    run "echo 'test {matrix.os} token={needs.setup.outputs.token} artifact='$(cat out/setup.txt) >> ran.log"
    run "test -f ok-{matrix.os}"
    run "mkdir -p out && echo tested-{matrix.os} > out/test-{matrix.os}.txt"
    artifacts "out/test-{matrix.os}.txt"
}
stage "summary" {
    needs "test"
    run "echo summary $(cat out/test-linux.txt) $(cat out/test-macos.txt) >> ran.log"
}
stage "lint" {
    run "echo lint >> ran.log"
}
"#;

/// A workspace holding `PIPELINE` as `buildit.kdl`, where both `test` instances pass unless told otherwise.
fn workspace(linux_ok: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("buildit.kdl"), PIPELINE).expect("pipeline written");
    std::fs::write(dir.path().join("ok-macos"), "").expect("marker written");
    if linux_ok {
        std::fs::write(dir.path().join("ok-linux"), "").expect("marker written");
    }
    dir
}

/// The lines of `ran.log`, emptied for the next run; and `out/` removed, so that a stage sees only the
/// artifacts BuildIt restores for it.
fn take_ran(dir: &Path) -> Vec<String> {
    let ran = std::fs::read_to_string(dir.join("ran.log")).unwrap_or_default();
    let _ = std::fs::remove_file(dir.join("ran.log"));
    let _ = std::fs::remove_dir_all(dir.join("out"));
    ran.lines().map(str::to_owned).collect()
}

fn finished<'a>(events: &'a [serde_json::Value], stage: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|event| event["type"] == "stage-finished" && event["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage-finished for `{stage}`"))
}

fn show(dir: &Path, run: &str) -> serde_json::Value {
    let output = buildit(dir, &["runs", "show", run, "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"))
}

fn token_of(line: &str) -> &str {
    line.split("token=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
}

fn assert_refused(output: &Output, code: i32, says: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(says), "expected `{says}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn retry_failed_reruns_the_failed_matrix_instance_and_its_dependents_only() {
    let dir = workspace(false);
    let first = buildit(dir.path(), &["run", "--plain"], &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let ran = take_ran(dir.path());
    let setup_token = token_of(
        ran.iter()
            .find(|line| line.starts_with("test macos"))
            .expect("test macos ran"),
    )
    .to_owned();
    assert!(!setup_token.is_empty(), "{ran:?}");

    std::fs::write(dir.path().join("ok-linux"), "").expect("marker written");
    let retry = buildit(
        dir.path(),
        &["runs", "retry", "1", "--failed", "--format", "json"],
        &[],
    );
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry.stderr));
    let mut ran = take_ran(dir.path());
    ran.sort();
    // Only the failed instance and what depends on it ran; `setup`, `test (os=macos)` and `lint` did not.
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran[0].starts_with("summary "), "{ran:?}");
    assert!(ran[1].starts_with("test linux "), "{ran:?}");
    // The rerun instance got the reused `setup`'s output and artifact, both of the first run's execution.
    assert_eq!(token_of(&ran[1]), setup_token, "{ran:?}");
    assert!(
        ran[1].ends_with(&format!("artifact={setup_token}")),
        "{ran:?}"
    );
    // The dependent got the reused instance's artifact (`out/` was removed: BuildIt restored it).
    assert_eq!(ran[0], "summary tested-linux tested-macos");

    let events = json_lines(&text(&retry.stdout));
    for reused in ["setup", "test (os=macos)", "lint"] {
        let event = finished(&events, reused);
        assert_eq!(event["outcome"], "succeeded", "{event}");
        assert_eq!(event["attempt"], 0, "{event}");
        assert_eq!(event["reason"], "reused from run #1", "{event}");
    }
    for rerun in ["test (os=linux)", "summary"] {
        let event = finished(&events, rerun);
        assert_eq!(event["outcome"], "succeeded", "{event}");
        assert_eq!(event["attempt"], 1, "{event}");
    }
    // The reused outputs are the run's own too, as its events and `runs show` hold them.
    let outputs = events
        .iter()
        .find(|event| event["type"] == "stage-outputs" && event["stage"] == "setup")
        .expect("setup's outputs told");
    assert_eq!(outputs["outputs"]["token"], setup_token.as_str());
    assert!(
        text(&retry.stderr).contains("reusing from run retry#1"),
        "{}",
        text(&retry.stderr)
    );

    let first_run = show(dir.path(), "1");
    let second = show(dir.path(), "2");
    assert_eq!(second["state"], "succeeded");
    assert_eq!(second["retry_of"], first_run["id"]);
    assert_eq!(second["outputs"]["setup"]["token"], setup_token.as_str());
    let shown = buildit(dir.path(), &["runs", "show", "2"], &[]);
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("retry of retry#1 (its failed and cancelled stages and their dependents)"),
        "{shown}"
    );
    assert!(shown.contains("reused from run #1"), "{shown}");

    // The retry succeeded: retrying its failed stages has nothing to do, and says so.
    let again = buildit(dir.path(), &["runs", "retry", "2", "--failed"], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("nothing to rerun: run retry#2 succeeded"),
        "{}",
        text(&again.stdout)
    );
    assert!(take_ran(dir.path()).is_empty());
    let listed = buildit(dir.path(), &["runs", "list", "--format", "json"], &[]);
    let listed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "no run was recorded: {listed}"
    );
}

#[test]
fn a_reused_stage_whose_artifacts_were_removed_fails_and_says_so() {
    let dir = workspace(false);
    let first = buildit(dir.path(), &["run", "--plain"], &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    take_ran(dir.path());
    // `gc` down to no bytes at all removes the first run's artifacts.
    let gc = buildit(dir.path(), &["gc", "--max-size", "0"], &[]);
    assert_eq!(gc.status.code(), Some(0), "{}", text(&gc.stderr));
    assert!(
        text(&gc.stdout).contains("removed 1 artifact entry"),
        "{}",
        text(&gc.stdout)
    );

    std::fs::write(dir.path().join("ok-linux"), "").expect("marker written");
    let retry = buildit(
        dir.path(),
        &["runs", "retry", "1", "--failed", "--format", "json"],
        &[],
    );
    // A stage failed for BuildIt's reasons, not its own: the infrastructure exit code.
    assert_eq!(retry.status.code(), Some(4), "{}", text(&retry.stderr));
    let events = json_lines(&text(&retry.stdout));
    // `setup` had an artifact: reusing it as if it had none would hand `test` nothing.
    let setup = finished(&events, "setup");
    assert_eq!(setup["outcome"], "failed", "{setup}");
    let reason = setup["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("cannot reuse the artifacts of run #1: it has none left"),
        "{reason}"
    );
    // `lint` declared none: reused as before.
    assert_eq!(finished(&events, "lint")["reason"], "reused from run #1");
    // What needs the failed reuse neither runs nor is reused.
    for dependent in ["test (os=linux)", "test (os=macos)", "summary"] {
        let event = finished(&events, dependent);
        assert_eq!(event["outcome"], "skipped", "{event}");
    }
    assert!(take_ran(dir.path()).is_empty());
}

#[test]
fn a_pipeline_reached_through_a_link_is_retried_with_the_files_it_included() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path();
    std::fs::create_dir_all(path.join("real")).expect("directory made");
    std::fs::create_dir_all(path.join("ci")).expect("directory made");
    std::fs::write(
        path.join("real/pipeline.kdl"),
        "pipeline \"linked\"\ninclude \"common.kdl\"\nstage \"use\" template=\"echo\"\n",
    )
    .expect("pipeline written");
    // Includes are read from the directory of the file as it was named: the link's.
    std::fs::write(
        path.join("ci/common.kdl"),
        "template \"echo\" {\n    run \"echo from-ci >> ran.log\"\n}\n",
    )
    .expect("include written");
    std::os::unix::fs::symlink(path.join("real/pipeline.kdl"), path.join("ci/link.kdl"))
        .expect("link made");
    let first = buildit(path, &["run", "--plain", "ci/link.kdl"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let retry = buildit(path, &["runs", "retry", "1", "--plain"], &[]);
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry.stderr));
    assert_eq!(take_ran(path), ["from-ci", "from-ci"]);
    // An edit to the file it included is seen as a change.
    std::fs::write(
        path.join("ci/common.kdl"),
        "template \"echo\" {\n    run \"echo edited >> ran.log\"\n}\n",
    )
    .expect("include written");
    assert_refused(
        &buildit(path, &["runs", "retry", "1"], &[]),
        2,
        "changed since run linked#1",
    );
}

#[test]
fn retry_runs_every_stage_again_with_the_same_flags() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "flags"
stage "show" {
    run "echo show {env.MODE} {git.branch} >> ran.log"
}
stage "other" {
    run "echo other >> ran.log"
}
"#,
    )
    .expect("pipeline written");
    let first = buildit(
        dir.path(),
        &[
            "run",
            "--plain",
            "--env",
            "MODE=fast",
            "--branch",
            "dev",
            "--stage",
            "show",
        ],
        &[],
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(take_ran(dir.path()), ["show fast dev"]);
    let retry = buildit(dir.path(), &["runs", "retry", "flags#1", "--plain"], &[]);
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry.stderr));
    assert_eq!(take_ran(dir.path()), ["show fast dev"]);
    let second = show(dir.path(), "2");
    assert_eq!(second["branch"], "dev");
    assert_eq!(second["inputs"]["env"]["MODE"], "fast");
    assert_eq!(second["inputs"]["rerun"], "all");
    assert_eq!(second["retry_of"], show(dir.path(), "1")["id"]);
    let shown = text(&buildit(dir.path(), &["runs", "show", "2"], &[]).stdout);
    assert!(shown.contains("retry of flags#1\n"), "{shown}");
}

#[test]
fn run_from_reruns_a_stage_and_its_dependents_with_what_it_needs_reused() {
    let dir = workspace(true);
    let first = buildit(dir.path(), &["run", "--plain"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let token = token_of(
        take_ran(dir.path())
            .iter()
            .find(|line| line.starts_with("test linux"))
            .expect("test linux ran"),
    )
    .to_owned();
    // A run that fails `setup` comes later: `--from` takes the latest run that has `setup` succeeded.
    std::fs::write(
        dir.path().join("broken.kdl"),
        PIPELINE.replace("mkdir -p out && token", "false && token"),
    )
    .expect("pipeline written");
    let broken = buildit(dir.path(), &["run", "--plain", "broken.kdl"], &[]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken.stderr));
    take_ran(dir.path());

    let from = buildit(
        dir.path(),
        &["run", "--from", "test", "--format", "json"],
        &[],
    );
    assert_eq!(from.status.code(), Some(0), "{}", text(&from.stderr));
    let mut ran = take_ran(dir.path());
    ran.sort();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert_eq!(ran[0], "summary tested-linux tested-macos");
    assert!(ran[1].starts_with("test linux "), "{ran:?}");
    assert!(ran[2].starts_with("test macos "), "{ran:?}");
    assert_eq!(token_of(&ran[1]), token, "{ran:?}");
    assert!(ran[1].ends_with(&format!("artifact={token}")), "{ran:?}");
    let events = json_lines(&text(&from.stdout));
    assert_eq!(finished(&events, "setup")["reason"], "reused from run #1");
    let lint = finished(&events, "lint");
    assert_eq!(lint["outcome"], "skipped");
    assert_eq!(
        lint["reason"],
        "not rerun: `--from test` runs `test` and what depends on it"
    );
    assert!(
        text(&from.stderr).contains("reusing from run retry#1"),
        "{}",
        text(&from.stderr)
    );
    let third = show(dir.path(), "3");
    assert_eq!(third["retry_of"], show(dir.path(), "1")["id"]);
    assert_eq!(third["inputs"]["rerun"], "from test");

    // One instance: the other is reused (from the latest run that has it succeeded, the one just made).
    let one = buildit(
        dir.path(),
        &["run", "--from", "test (os=linux)", "--format", "json"],
        &[],
    );
    assert_eq!(one.status.code(), Some(0), "{}", text(&one.stderr));
    let mut ran = take_ran(dir.path());
    ran.sort();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(ran[0], "summary tested-linux tested-macos");
    assert!(ran[1].starts_with("test linux "), "{ran:?}");
    let events = json_lines(&text(&one.stdout));
    assert_eq!(
        finished(&events, "test (os=macos)")["reason"],
        "reused from run #3"
    );
}

#[test]
fn reruns_refuse_what_they_cannot_do_and_say_why() {
    let dir = workspace(true);
    let path = dir.path();
    let first = buildit(path, &["run", "--plain"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));

    assert_refused(
        &buildit(path, &["runs", "retry", "9"], &[]),
        2,
        "no run `9`",
    );
    assert_refused(
        &buildit(path, &["run", "--from", "tset"], &[]),
        2,
        "`--from tset` names no stage of pipeline `retry`; did you mean `test`?",
    );
    assert_refused(
        &buildit(
            path,
            &["runs", "retry", "1", "--server", "127.0.0.1:1"],
            &[],
        ),
        2,
        "retrying a run works only for a local store, not with `--server`",
    );
    let succeeded = buildit(path, &["runs", "retry", "1", "--failed"], &[]);
    assert_eq!(succeeded.status.code(), Some(0));
    assert!(
        text(&succeeded.stdout).contains("nothing to rerun: run retry#1 succeeded"),
        "{}",
        text(&succeeded.stdout)
    );

    std::fs::write(path.join("buildit.kdl"), PIPELINE.replace("lint", "lint2"))
        .expect("pipeline changed");
    assert_refused(
        &buildit(path, &["runs", "retry", "1"], &[]),
        2,
        "changed since run retry#1",
    );
    std::fs::remove_file(path.join("buildit.kdl")).expect("pipeline removed");
    assert_refused(
        &buildit(path, &["runs", "retry", "1"], &[]),
        2,
        "of run retry#1 is gone",
    );

    // A run that is still running.
    std::fs::write(
        path.join("slow.kdl"),
        "pipeline \"slow\"\nstage \"sleep\" {\n    run \"echo $$ > sleep.pid && exec sleep 300\"\n}\n",
    )
    .expect("pipeline written");
    let mut child = buildit_command(path)
        .args(["run", "--plain", "slow.kdl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("buildit run starts");
    let started = Instant::now();
    while std::fs::read_to_string(path.join("sleep.pid"))
        .map(|pid| pid.trim().is_empty())
        .unwrap_or(true)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = buildit(path, &["runs", "retry", "slow#1"], &[]);
    let cancelled = buildit(path, &["runs", "cancel", "slow#1"], &[]);
    let _ = child.wait();
    assert_eq!(
        cancelled.status.code(),
        Some(0),
        "{}",
        text(&cancelled.stderr)
    );
    assert_refused(&running, 2, "run slow#1 is still running");
}
