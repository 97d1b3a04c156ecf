//! Registered pipelines from the command line against a real `buildit daemon` on loopback: `pipelines register`,
//! `list` and `show`, a run of a registered pipeline triggered by name and followed to its end, and `runs list`
//! filtered by state and branch.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or files cannot be set up"
)]

use std::process::Output;

mod support;

use support::{Daemon, buildit};

const PIPELINE: &str = r#"pipeline "hello"
stage "greet" { run "cat greeting.txt" }
stage "check" { needs "greet"; run "echo built {branch}" }
"#;

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_registered_pipeline_is_listed_shown_and_triggered_by_name() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let daemon = Daemon::on_free_port(&data, &[]);
    let created = buildit(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--name",
            "ci bot",
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
        &[],
    );
    assert!(created.status.success(), "{created:?}");
    let token = text(&created).trim().to_owned();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    std::fs::write(work.join("ci.kdl"), PIPELINE).expect("pipeline");
    std::fs::write(work.join("greeting.txt"), "hello from the workspace\n").expect("a file");
    let remote = [
        ("BUILDIT_SERVER", daemon.address.as_str()),
        ("BUILDIT_TOKEN", token.as_str()),
    ];

    // Registered, then registered again unchanged.
    let registered = buildit(&work, &["pipelines", "register", "ci.kdl"], &remote);
    assert!(registered.status.success(), "{registered:?}");
    assert!(
        text(&registered)
            .starts_with("registered pipeline `hello` from ci.kdl: 2 stages (greet, check)"),
        "{registered:?}"
    );
    let again = buildit(
        &work,
        &["pipelines", "register", "ci.kdl", "--format", "json"],
        &remote,
    );
    assert!(again.status.success(), "{again:?}");
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["registered_by"], "ci bot", "{again}");
    let unchanged = buildit(&work, &["pipelines", "register", "ci.kdl"], &remote);
    assert!(
        text(&unchanged).starts_with("pipeline `hello` unchanged"),
        "{unchanged:?}"
    );

    // An invalid one is refused with the daemon's diagnostics, exit 3; a wrong name, exit 2.
    std::fs::write(
        work.join("bad.kdl"),
        "pipeline \"bad\"\nstage \"a\" { run \"true\"; needs \"nope\" }\n",
    )
    .expect("a bad pipeline");
    let bad = buildit(&work, &["pipelines", "register", "bad.kdl"], &remote);
    assert_eq!(bad.status.code(), Some(3), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad.kdl:2:"),
        "{bad:?}"
    );
    let misnamed = buildit(
        &work,
        &["pipelines", "register", "ci.kdl", "--name", "other"],
        &remote,
    );
    assert_eq!(misnamed.status.code(), Some(2), "{misnamed:?}");

    // Listed and shown.
    let listed = buildit(&work, &["pipelines", "list"], &remote);
    assert!(listed.status.success(), "{listed:?}");
    let listed_text = text(&listed);
    assert!(listed_text.starts_with("NAME"), "{listed_text}");
    assert!(
        listed_text.lines().any(|line| line.starts_with("hello")
            && line.contains("ci bot")
            && line.contains("ci.kdl")),
        "{listed_text}"
    );
    assert!(!listed_text.contains("bad"), "{listed_text}");
    let listed_json = buildit(&work, &["pipelines", "list", "--format", "json"], &remote);
    let listed_json: serde_json::Value = serde_json::from_slice(&listed_json.stdout).expect("JSON");
    assert_eq!(
        listed_json[0]["stages"],
        serde_json::json!(["greet", "check"])
    );
    let shown = buildit(&work, &["pipelines", "show", "hello"], &remote);
    assert!(shown.status.success(), "{shown:?}");
    let shown_text = text(&shown);
    assert!(shown_text.starts_with("pipeline hello\n"), "{shown_text}");
    assert!(shown_text.contains("by ci bot"), "{shown_text}");
    assert!(shown_text.ends_with(PIPELINE), "{shown_text}");
    let unknown = buildit(&work, &["pipelines", "show", "nope"], &remote);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");

    // Triggered by name with no pipeline file around: the daemon's text runs in the uploaded workspace.
    std::fs::remove_file(work.join("ci.kdl")).expect("the file goes");
    std::fs::remove_file(work.join("bad.kdl")).expect("the file goes");
    let run = buildit(
        &work,
        &[
            "pipelines",
            "trigger",
            "--registered",
            "hello",
            "--follow",
            "--branch",
            "feature-x",
        ],
        &remote,
    );
    let run_text = text(&run);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(
        run_text.contains("greet | hello from the workspace"),
        "{run_text}"
    );
    assert!(run_text.contains("check | built feature-x"), "{run_text}");
    // A file and a registered name at once is a usage error.
    let both = buildit(
        &work,
        &["pipelines", "trigger", "ci.kdl", "--registered", "hello"],
        &remote,
    );
    assert_eq!(both.status.code(), Some(2), "{both:?}");

    // The daemon's runs, filtered by state and branch.
    let runs = |args: &[&str]| {
        let mut all = vec!["runs", "list", "--format", "json"];
        all.extend_from_slice(args);
        let listed = buildit(&work, &all, &remote);
        assert!(listed.status.success(), "{listed:?}");
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).expect("runs as JSON")
    };
    let found = runs(&["--state", "succeeded", "--branch", "feature-x"]);
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["pipeline"], "hello", "{found}");
    assert_eq!(runs(&["--branch", "main"]), serde_json::json!([]));
    assert_eq!(runs(&["--state", "failed"]), serde_json::json!([]));
    let refused = buildit(&work, &["runs", "list", "--state", "sleeping"], &remote);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    // Locally, runs not recorded yet are the daemon's to list.
    let local = buildit(
        &work,
        &[
            "runs",
            "list",
            "--state",
            "queued",
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
        &[],
    );
    assert_eq!(local.status.code(), Some(2), "{local:?}");
    // A recorded state and a branch filter a local store as well.
    std::fs::write(
        work.join("local.kdl"),
        "pipeline \"local\"\nstage \"a\" { run \"true\" }\n",
    )
    .expect("a local pipeline");
    for branch in ["b1", "b2"] {
        let ran = buildit(&work, &["run", "local.kdl", "--branch", branch], &[]);
        assert!(ran.status.success(), "{ran:?}");
    }
    let local = |args: &[&str]| {
        let mut all = vec!["runs", "list", "--format", "json"];
        all.extend_from_slice(args);
        let listed = buildit(&work, &all, &[]);
        assert!(listed.status.success(), "{listed:?}");
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).expect("runs as JSON")
    };
    assert_eq!(local(&[]).as_array().map(Vec::len), Some(2));
    let b1 = local(&["--state", "succeeded", "--branch", "b1"]);
    assert_eq!(b1.as_array().map(Vec::len), Some(1), "{b1}");
    assert_eq!(b1[0]["branch"], "b1", "{b1}");
    assert_eq!(local(&["--state", "failed"]), serde_json::json!([]));
    drop(daemon);
}
