//! The pipeline language as a user meets it through `buildit`: what `validate` says of each mistake, what `plan`
//! shows, and what `run` does, for matrices with `exclude` and `include` and instances paired by `matrix="same"`.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use std::path::{Path, PathBuf};

use support::buildit;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON lines of `text`, every one of which must be JSON.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
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
    assert_ne!(finished("test (os=linux)").as_deref(), Some("succeeded"));
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

/// The diagnostics of `pipeline` as `validate --format json` gives them: severity, code, line, column, message,
/// help.
fn diagnostics(pipeline: &str) -> Vec<(String, String, u64, u64, String, String)> {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.path().join("buildit.kdl"), pipeline)
        .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["validate", "--format", "json"], &[]);
    let records: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(&output.stdout)));
    records
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|record| {
            let field = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
            (
                field("severity"),
                field("code"),
                record["line"].as_u64().unwrap_or_default(),
                record["column"].as_u64().unwrap_or_default(),
                field("message"),
                field("help"),
            )
        })
        .collect()
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
"#,
    );
    insta::assert_debug_snapshot!(found);
}
