//! Stage templates as a user meets them through `buildit`: what a stage takes from its template and what it
//! replaces, in a real run, and what `validate` says of each mistake.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use support::{buildit, text};

const PIPELINE: &str = r#"pipeline "templates"
stage "unit" template="rust" {
    env { PROFILE "test"; }
    run "echo unit $TOOL $PROFILE $EXTRA"
}
stage "lint" template="rust" {
    needs "unit"
}
template "rust" {
    env {
        TOOL "cargo"
        PROFILE "dev"
        EXTRA "from-template"
    }
    timeout "5m"
    run "echo lint $TOOL $PROFILE"
    outputs "tool"
    run "echo tool=$TOOL >> \"$BUILDIT_OUTPUT\""
}
"#;

#[test]
fn a_stage_takes_its_templates_children_and_replaces_those_it_gives() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.path().join("buildit.kdl"), PIPELINE)
        .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["run", "--plain"], &[]);
    let stdout = text(&output.stdout);
    // `unit` gave its own `run` (the template's commands are replaced) and its own PROFILE; the rest of the
    // template's environment stays.
    assert!(
        stdout.contains("| unit cargo test from-template"),
        "{stdout}"
    );
    assert!(!stdout.contains("lint cargo test"), "{stdout}");
    // `lint` gave no `run`: the template's commands run, with the template's environment.
    assert!(stdout.contains("| lint cargo dev"), "{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    let shown = buildit(dir.path(), &["runs", "show", "1", "--format", "json"], &[]);
    let run: serde_json::Value =
        serde_json::from_slice(&shown.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(run["outputs"]["lint"]["tool"], "cargo", "{run}");
}

#[test]
fn template_mistakes_are_reported_where_they_are() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "p"
stage "a" template="rusty" { run "true"; }
stage "b" template="rust"
stage "c" template="rust" { run "true"; }
template "rust" {
    imag "rust:1.82"
    run "true"
}
template "rust" { run "false"; }
template "unused" { run "true"; }
template "bad name!" { run "true"; }
template "empty"
"#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    insta::assert_snapshot!(text(&output.stderr));
}

#[test]
fn a_need_written_by_both_template_and_stage_keeps_its_pairing() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(
        dir.path().join("buildit.kdl"),
        r#"pipeline "p"
stage "build" {
    matrix { os "linux" "macos"; }
    run "true"
}
template "paired" {
    needs "build" matrix="same"
    run "true"
}
stage "test" template="paired" {
    matrix { os "linux" "macos"; }
    needs "build" matrix="same"
}
"#,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["plan", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    for stage in plan["stages"].as_array().into_iter().flatten() {
        if let Some(values) = stage["name"]
            .as_str()
            .and_then(|name| name.strip_prefix("test "))
        {
            assert_eq!(
                stage["needs"],
                serde_json::json!([format!("build {values}")]),
                "{plan}"
            );
        }
    }
}
