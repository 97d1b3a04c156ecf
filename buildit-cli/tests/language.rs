//! The pipeline language as a user meets it through `buildit`: what `validate` says of each mistake, what `plan`
//! shows, and what `run` does, for matrices with `exclude` and `include`, instances paired by `matrix="same"`,
//! and outputs passed between stages.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use std::path::{Path, PathBuf};

use support::{buildit, diagnostics, json_lines, text};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

#[test]
fn the_matrix_example_plans_its_instances_and_pairs_them() {
    let output = buildit(
        &repo_root(),
        &["plan", "examples/matrix.kdl", "--format", "json"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    let stages = plan["stages"].as_array().cloned().unwrap_or_default();
    let names = |prefix: &str| -> Vec<String> {
        stages
            .iter()
            .filter_map(|stage| stage["name"].as_str())
            .filter(|name| name.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let builds = [
        "build (os=linux, rust=1.80)",
        "build (os=linux, rust=1.82)",
        "build (os=macos, rust=1.82)",
        "build (os=windows, rust=1.82)",
    ];
    assert_eq!(names("build"), builds);
    assert_eq!(names("test").len(), 4);
    for stage in &stages {
        let name = stage["name"].as_str().unwrap_or_default();
        let needs: Vec<&str> = stage["needs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|need| need.as_str())
            .collect();
        if let Some(values) = name.strip_prefix("test ") {
            // Each test needs the build of its own values, and only that one.
            assert_eq!(needs, [format!("build {values}")], "{name}");
        } else if name == "release" {
            assert_eq!(needs.len(), 4, "{needs:?}");
        }
    }
}

#[test]
fn a_stage_needed_both_paired_and_not_is_needed_whole() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "both"
stage "build" {
    matrix { os "linux" "macos"; }
    run "true"
}
stage "test" {
    matrix { os "linux" "macos"; }
    needs "build"
    needs "build" matrix="same"
    run "true"
}
"#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["plan", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    for stage in plan["stages"].as_array().into_iter().flatten() {
        if stage["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("test"))
        {
            assert_eq!(stage["needs"].as_array().map(Vec::len), Some(2), "{stage}");
        }
    }
}

#[test]
fn a_paired_instance_waits_for_its_partner_only_and_a_failed_partner_skips_it_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    // The linux build fails at once; the macos one takes a while: linux's test is skipped without waiting for
    // it, and macos's test runs once its own build is done.
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "paired"
stage "build" {
    matrix { os "linux" "macos"; }
    run "if [ {matrix.os} = linux ]; then exit 3; fi; sleep 1; echo built {matrix.os}"
    allow-failure #false
}
stage "test" {
    matrix { os "linux" "macos"; }
    needs "build" matrix="same"
    run "echo tested {matrix.os}"
}
"#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["run", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let events = json_lines(&text(&output.stdout));
    let finished = |stage: &str| {
        events
            .iter()
            .find(|event| event["type"] == "stage-finished" && event["stage"] == stage)
            .map(|event| event["outcome"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(finished("build (os=linux)").as_deref(), Some("failed"));
    assert_eq!(finished("build (os=macos)").as_deref(), Some("succeeded"));
    assert_eq!(finished("test (os=macos)").as_deref(), Some("succeeded"));
    assert_eq!(finished("test (os=linux)").as_deref(), Some("skipped"));
    // Skipped as soon as its own build failed, before the other build ended.
    let seq = |stage: &str| {
        events
            .iter()
            .find(|event| event["type"] == "stage-finished" && event["stage"] == stage)
            .and_then(|event| event["seq"].as_u64())
            .unwrap_or_else(|| panic!("{stage} never finished"))
    };
    assert!(
        seq("test (os=linux)") < seq("build (os=macos)"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "log-line" && event["text"] == "tested macos"),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|event| event["type"] == "log-line" && event["text"] == "tested linux"),
        "{events:?}"
    );
}

#[test]
fn matrix_entry_and_pairing_mistakes_are_reported_where_they_are() {
    let found = diagnostics(
        r#"pipeline "p"
stage "build" {
    matrix {
        os "linux" "macos"
        rust "1.80" "1.82"
        exclude { oss "macos"; }
        exclude { os "macOS"; }
        include { os "windows"; }
        include { os "linux"; rust "1.80"; }
    }
    run "true"
}
stage "test" {
    matrix { os "linux" "windows"; rust "1.80"; }
    needs "build" matrix="same"
    run "true"
}
stage "lint" {
    needs "build" matrix="all"
    run "true"
}
stage "deploy" {
    needs "build" matrix="same"
    run "true"
}
stage "package" {
    matrix { os "linux"; }
    needs "build" matrix="same"
    run "true"
}
stage "empty" {
    matrix {
        os "linux" "macos"
        exclude { os "linux"; }
        exclude { os "macos"; }
    }
    run "true"
}
"#,
    );
    insta::assert_debug_snapshot!(found);
}

/// `buildit run --format json` of `pipeline` in `dir` (with `env`): its exit code and events.
fn run_events(
    dir: &Path,
    pipeline: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, Vec<serde_json::Value>) {
    std::fs::write(dir.join("buildit.kdl"), pipeline).unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir, &["run", "--format", "json"], env);
    (output.status.code(), json_lines(&text(&output.stdout)))
}

fn logged(events: &[serde_json::Value], stage: &str, line: &str) -> bool {
    events.iter().any(|event| {
        event["type"] == "log-line" && event["stage"] == stage && event["text"] == line
    })
}

const OUTPUTS_PIPELINE: &str = r#"pipeline "outputs"
stage "build" {
    outputs "version" "notes"
    secrets "TOKEN"
    run "echo version=1.2.3 >> \"$BUILDIT_OUTPUT\""
    run "printf 'notes<<END\nfirst line\nsecond=line\nEND\n' >> \"$BUILDIT_OUTPUT\""
    run "echo token_copy=$TOKEN >> \"$BUILDIT_OUTPUT\""
}
stage "deploy" {
    needs "build"
    env { RELEASE "v{needs.build.outputs.version}"; }
    run "echo deploying {needs.build.outputs.version} as $RELEASE"
    run "printf '%s\n' \"$BUILDIT_NEEDS_BUILD_OUTPUTS_NOTES\""
}
"#;

/// Checks a run of [`OUTPUTS_PIPELINE`] (on the host, or with `defaults { image ... }` in a container).
fn check_outputs_run(dir: &Path, pipeline: &str) {
    let (code, events) = run_events(dir, pipeline, &[("BUILDIT_SECRET_TOKEN", "hunter2-out")]);
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        logged(&events, "deploy", "deploying 1.2.3 as v1.2.3"),
        "{events:?}"
    );
    assert!(logged(&events, "deploy", "first line"), "{events:?}");
    assert!(logged(&events, "deploy", "second=line"), "{events:?}");
    // What is not declared is said and dropped.
    assert!(
        events.iter().any(|event| event["type"] == "log-line"
            && event["stage"] == "build"
            && event["text"].as_str().is_some_and(
                |text| text.contains("1 output not declared in the stage's `outputs` ignored")
            )),
        "{events:?}"
    );
    let written = events
        .iter()
        .find(|event| event["type"] == "stage-outputs" && event["stage"] == "build")
        .unwrap_or_else(|| panic!("no outputs event: {events:?}"));
    assert_eq!(written["outputs"]["version"], "1.2.3");
    assert_eq!(written["outputs"]["notes"], "first line\nsecond=line");
    assert!(written["outputs"].get("token_copy").is_none(), "{written}");
    // `runs show` has them.
    let shown = buildit(dir, &["runs", "show", "1", "--format", "json"], &[]);
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(shown["outputs"]["build"]["version"], "1.2.3", "{shown}");
}

#[test]
fn outputs_pass_from_a_stage_to_the_stages_that_need_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    check_outputs_run(dir.path(), OUTPUTS_PIPELINE);
    // Read, the file is gone from the workspace.
    let left: Vec<_> = std::fs::read_dir(dir.path().join(".buildit/outputs"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn outputs_pass_between_container_stages_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let pipeline = OUTPUTS_PIPELINE.replace(
        "pipeline \"outputs\"\n",
        "pipeline \"outputs\"\ndefaults { image \"buildit-test/busybox:latest\"; }\n",
    );
    check_outputs_run(dir.path(), &pipeline);
}

#[test]
fn a_secret_in_an_output_is_masked_where_shown_and_whole_where_used() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (code, events) = run_events(
        dir.path(),
        r#"pipeline "secret-output"
stage "login" {
    outputs "session"
    secrets "TOKEN"
    run "echo session=s-$TOKEN >> \"$BUILDIT_OUTPUT\""
}
stage "use" {
    needs "login"
    run "test \"$BUILDIT_NEEDS_LOGIN_OUTPUTS_SESSION\" = s-hunter2-out && echo whole"
}
"#,
        &[("BUILDIT_SECRET_TOKEN", "hunter2-out")],
    );
    assert_eq!(code, Some(0), "{events:?}");
    assert!(logged(&events, "use", "whole"), "{events:?}");
    let all = serde_json::to_string(&events).unwrap_or_default();
    assert!(!all.contains("hunter2-out"), "{all}");
    let shown = buildit(dir.path(), &["runs", "show", "1"], &[]);
    assert!(!text(&shown.stdout).contains("hunter2-out"));
    assert!(
        text(&shown.stdout).contains("login: session=s-***"),
        "{}",
        text(&shown.stdout)
    );
}

#[test]
fn an_output_never_written_fails_the_stage_that_needs_it_and_a_bad_file_fails_its_writer() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (code, events) = run_events(
        dir.path(),
        r#"pipeline "missing"
stage "build" { outputs "version"; run "true"; }
stage "deploy" { needs "build"; run "echo {needs.build.outputs.version}"; }
"#,
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        reason_of(&events, "deploy").contains(
            "stage `build` has no output `version`: it did not succeed, or did not write it"
        ),
        "{events:?}"
    );
    let (code, events) = run_events(
        dir.path(),
        r#"pipeline "malformed"
stage "build" { outputs "version"; run "echo 'version 1.0' >> \"$BUILDIT_OUTPUT\""; }
"#,
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        reason_of(&events, "build").contains("line 1: expected `NAME=value` or `NAME<<DELIMITER`")
            && !reason_of(&events, "build").contains("version 1.0"),
        "{events:?}"
    );
}

#[test]
fn a_stage_that_fails_after_writing_its_outputs_hands_none_on() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (code, events) = run_events(
        dir.path(),
        r#"pipeline "failed-producer"
stage "package" {
    allow-failure #true
    outputs "version"
    run "echo version=9.9 >> \"$BUILDIT_OUTPUT\""
    artifacts "dist/missing.tar"
}
stage "publish" {
    needs "package"
    run "echo publishing {needs.package.outputs.version}"
}
"#,
        &[],
    );
    assert_eq!(code, Some(1), "{events:?}");
    assert!(
        !events.iter().any(|event| event["type"] == "stage-outputs"),
        "{events:?}"
    );
    assert!(
        reason_of(&events, "publish")
            .contains("stage `package` has no output `version`: it did not succeed"),
        "{events:?}"
    );
    let shown = buildit(dir.path(), &["runs", "show", "1", "--format", "json"], &[]);
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(shown["outputs"], serde_json::json!({}), "{shown}");
}

fn reason_of(events: &[serde_json::Value], stage: &str) -> String {
    events
        .iter()
        .find(|event| event["type"] == "stage-finished" && event["stage"] == stage)
        .and_then(|event| event["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn output_mistakes_are_reported_where_they_are() {
    let found = diagnostics(
        r#"pipeline "p"
stage "build" {
    matrix { os "a" "b"; }
    outputs "version" "version"
    run "true"
}
stage "lint" {
    outputs "x-y" "ok"
    run "true"
}
stage "deploy" {
    needs "build" "lint"
    run "echo {needs.lint.outputs.okk}"
    run "echo {needs.biuld.outputs.version}"
    run "echo {needs.build.outputs.version}"
    image "alpine:{needs.lint.outputs.ok}"
}
stage "notes" {
    run "echo {needs.lint.output.ok}"
}
stage "a-b" {
    outputs "c" "C"
    run "true"
}
stage "a_b" {
    outputs "c"
    run "true"
}
stage "both" {
    needs "a-b" "a_b"
    run "true"
}
"#,
    );
    insta::assert_debug_snapshot!(found);
}

/// A pipeline with the new language at once: a matrix with `exclude` and `include`, instances paired by
/// `matrix="same"`, and outputs, paired ones among them.
const COMBINED_PIPELINE: &str = r#"pipeline "combined"
stage "build" {
    matrix {
        os "linux" "macos"
        exclude { os "macos"; }
        include { os "bsd"; }
    }
    outputs "artifact"
    run "echo artifact=app-{matrix.os}.tar >> \"$BUILDIT_OUTPUT\""
}
stage "test" {
    matrix {
        os "linux" "macos"
        exclude { os "macos"; }
        include { os "bsd"; }
    }
    needs "build" matrix="same"
    run "echo testing {needs.build.outputs.artifact}"
}
"#;

#[test]
fn the_same_pipeline_runs_alike_locally_and_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("daemon");
    let daemon = support::Daemon::on_free_port(&data, &[]);
    let token = support::create_token(dir.path(), &data, "acme", "language");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(work.join("buildit.kdl"), COMBINED_PIPELINE)
        .unwrap_or_else(|error| panic!("{error}"));
    let remote = buildit(
        &work,
        &["pipelines", "trigger", "--follow"],
        &[
            ("BUILDIT_SERVER", daemon.address.as_str()),
            ("BUILDIT_TOKEN", token.as_str()),
        ],
    );
    let local = buildit(&work, &["run", "--plain"], &[]);
    for (how, output) in [("through the daemon", &remote), ("locally", &local)] {
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{how}: {stdout}\n{}",
            text(&output.stderr)
        );
        for os in ["linux", "bsd"] {
            assert!(
                stdout.contains(&format!("| testing app-{os}.tar")),
                "{how}: {stdout}"
            );
        }
        assert!(!stdout.contains("macos"), "{how}: {stdout}");
    }
}

#[test]
fn the_plan_lists_the_outputs_a_stage_declares() {
    let output = buildit(
        &repo_root(),
        &["plan", "examples/outputs.kdl", "--format", "json"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    let version = plan["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|stage| stage["name"] == "version")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        version["outputs"],
        serde_json::json!(["version", "notes"]),
        "{plan}"
    );
    let text_plan = buildit(&repo_root(), &["plan", "examples/outputs.kdl"], &[]);
    assert!(
        text(&text_plan.stdout).contains("version  [local]  outputs version, notes"),
        "{}",
        text(&text_plan.stdout)
    );
}
