//! Test reports as a user meets them through `buildit`: what `validate` says of each mistake in `reports`, what
//! `plan` shows, and what `run`, `runs show` and a daemon's follower say of a stage's JUnit XML, on the host and
//! in containers.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use std::path::Path;

use support::{buildit, diagnostics, json_lines, text};

/// A stage that writes a JUnit report (a passed, a failed, an errored and a skipped test, one named after a
/// secret) and a file that is not one, then fails; and a stage whose pattern matches nothing.
const REPORTS_PIPELINE: &str = r#"pipeline "reports"
stage "test" {
    secrets "TOKEN"
    reports junit="out/*.xml"
    run "mkdir -p out"
    run "printf '<?xml version=\"1.0\"?><testsuite name=\"app\" tests=\"4\"><testcase classname=\"app\" name=\"passes\"/><testcase classname=\"app\" name=\"fails_with_%s\"><failure message=\"no\"/></testcase><testcase classname=\"app\" name=\"breaks\"><error/></testcase><testcase classname=\"app\" name=\"later\"><skipped/></testcase></testsuite>' \"$TOKEN\" > out/junit.xml"
    run "echo not xml > out/broken.xml"
    run "exit 1"
}
stage "lint" {
    reports junit="nothing/*.xml"
    run "true"
}
"#;

const SECRET: (&str, &str) = ("BUILDIT_SECRET_TOKEN", "hunter2-tests");

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

fn logged_containing(events: &[serde_json::Value], stage: &str, part: &str) -> bool {
    events.iter().any(|event| {
        event["type"] == "log-line"
            && event["stage"] == stage
            && event["text"]
                .as_str()
                .is_some_and(|text| text.contains(part))
    })
}

/// Checks a run of [`REPORTS_PIPELINE`] (on the host, or with `defaults { image ... }` in a container).
fn check_reports_run(dir: &Path, pipeline: &str) {
    let (code, events) = run_events(dir, pipeline, &[SECRET]);
    // The stage's own exit decides its outcome; its reports are read all the same.
    assert_eq!(code, Some(1), "{events:?}");
    let finished = events
        .iter()
        .find(|event| event["type"] == "stage-finished" && event["stage"] == "test")
        .unwrap_or_else(|| panic!("test never finished: {events:?}"));
    assert_eq!(finished["outcome"], "failed", "{finished}");
    assert_eq!(finished["reason"], "exited with code 1", "{finished}");
    let counted = events
        .iter()
        .find(|event| event["type"] == "stage-tests" && event["stage"] == "test")
        .unwrap_or_else(|| panic!("no stage-tests event: {events:?}"));
    let tests = &counted["tests"];
    assert_eq!(tests["files"], 1, "{counted}");
    assert_eq!(tests["tests"], 4, "{counted}");
    assert_eq!(tests["failures"], 1, "{counted}");
    assert_eq!(tests["errors"], 1, "{counted}");
    assert_eq!(tests["skipped"], 1, "{counted}");
    assert_eq!(tests["unreadable"], 1, "{counted}");
    assert_eq!(
        tests["failed"],
        serde_json::json!(["app::fails_with_***", "app::breaks"]),
        "{counted}"
    );
    assert!(
        logged_containing(&events, "test", "report `out/broken.xml` is not JUnit XML"),
        "{events:?}"
    );
    // A pattern that matches nothing is said, and counts nothing.
    assert!(
        logged_containing(&events, "lint", "no report file matches `nothing/*.xml`"),
        "{events:?}"
    );
    let nothing = events
        .iter()
        .find(|event| event["type"] == "stage-tests" && event["stage"] == "lint")
        .unwrap_or_else(|| panic!("no stage-tests event for lint: {events:?}"));
    assert_eq!(nothing["tests"]["files"], 0, "{nothing}");
    assert_eq!(nothing["tests"]["tests"], 0, "{nothing}");
    let all = serde_json::to_string(&events).unwrap_or_default();
    assert!(!all.contains(SECRET.1), "{all}");
    // `runs show` has them, in text and JSON.
    let shown = text(&buildit(dir, &["runs", "show", "1"], &[]).stdout);
    assert!(
        shown.contains(
            "tests\n  lint: no report file found\n  test: 2 failed of 4 tests (1 error, 1 skipped, 1 report unreadable)\n    app::fails_with_***\n    app::breaks\n"
        ),
        "{shown}"
    );
    assert!(!shown.contains(SECRET.1), "{shown}");
    let shown = buildit(dir, &["runs", "show", "1", "--format", "json"], &[]);
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(shown["tests"]["test"]["failures"], 1, "{shown}");
    assert_eq!(
        shown["tests"]["test"]["failed"][1], "app::breaks",
        "{shown}"
    );
    assert_eq!(shown["tests"]["lint"]["files"], 0, "{shown}");
}

#[test]
fn reports_of_a_failing_stage_are_counted_and_shown() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    check_reports_run(dir.path(), REPORTS_PIPELINE);
    // The summary of a run names the failed tests.
    let plain = buildit(dir.path(), &["run", "--plain"], &[SECRET]);
    let stdout = text(&plain.stdout);
    assert!(
        stdout.contains(
            "test | tests: 2 failed of 4 tests (1 error, 1 skipped, 1 report unreadable): app::fails_with_***, app::breaks"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\ntest: 2 failed of 4 tests (1 error, 1 skipped, 1 report unreadable): app::fails_with_***, app::breaks\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nlint: no report file found\n"),
        "{stdout}"
    );
}

#[test]
fn reports_are_copied_out_of_containers_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let pipeline = REPORTS_PIPELINE.replace(
        "pipeline \"reports\"\n",
        "pipeline \"reports\"\ndefaults { image \"buildit-test/busybox:latest\"; }\n",
    );
    check_reports_run(dir.path(), &pipeline);
}

#[test]
fn reports_are_shown_by_the_plan() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let pipeline = r#"pipeline "p"
stage "test" {
    matrix { os "linux" "bsd"; }
    reports junit="target/{matrix.os}/*.xml"
    reports junit="more.xml"
    run "true"
}
stage "lint" { run "true"; }
"#;
    std::fs::write(dir.path().join("buildit.kdl"), pipeline)
        .unwrap_or_else(|error| panic!("{error}"));
    let plan = text(&buildit(dir.path(), &["plan"], &[]).stdout);
    assert!(
        plan.contains("test (os=linux)  [local]  reports junit target/linux/*.xml, more.xml\n"),
        "{plan}"
    );
    assert!(plan.contains("  lint  [local]\n"), "{plan}");
    let json = buildit(dir.path(), &["plan", "--format", "json"], &[]);
    let json: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|error| panic!("{error}"));
    let stages = json["stages"].as_array().cloned().unwrap_or_default();
    let bsd = stages
        .iter()
        .find(|stage| stage["name"] == "test (os=bsd)")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(
        bsd["reports"],
        serde_json::json!(["target/bsd/*.xml", "more.xml"])
    );
    let lint = stages
        .iter()
        .find(|stage| stage["name"] == "lint")
        .unwrap_or_else(|| panic!("{json}"));
    assert!(lint.get("reports").is_none(), "{lint}");
}

#[test]
fn a_daemons_follower_shows_the_reports_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("daemon");
    let daemon = support::Daemon::on_free_port(&data, &[]);
    let token = support::create_token(dir.path(), &data, "acme", "reports");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap_or_else(|error| panic!("{error}"));
    // The daemon has no secret to give: the test is named without one.
    let pipeline = REPORTS_PIPELINE.replace("    secrets \"TOKEN\"\n", "");
    std::fs::write(work.join("buildit.kdl"), pipeline).unwrap_or_else(|error| panic!("{error}"));
    let remote = buildit(
        &work,
        &["pipelines", "trigger", "--follow"],
        &[
            ("BUILDIT_SERVER", daemon.address.as_str()),
            ("BUILDIT_TOKEN", token.as_str()),
        ],
    );
    let stdout = text(&remote.stdout);
    assert!(
        stdout.contains("test: 2 failed of 4 tests (1 error, 1 skipped, 1 report unreadable): app::fails_with_, app::breaks"),
        "{stdout}\n{}",
        text(&remote.stderr)
    );
}

#[test]
fn report_mistakes_are_reported_where_they_are() {
    let found = diagnostics(
        r#"pipeline "p"
stage "up" {
    reports junit="../results/*.xml"
    reports junit="/tmp/junit.xml"
    reports junit="~/junit.xml"
    run "true"
}
stage "typo" {
    reports junti="junit.xml"
    report junit="junit.xml"
    run "true"
}
stage "empty" {
    reports junit=""
    reports junit="."
    reports junit="{git.tag}/junit.xml"
    run "true"
}
stage "shape" {
    reports
    reports "junit.xml"
    reports junit=1
    reports junit="out/[x.xml"
    reports junit="a.xml" junit="b.xml"
    run "true"
}
"#,
    );
    insta::assert_debug_snapshot!(found);
}
