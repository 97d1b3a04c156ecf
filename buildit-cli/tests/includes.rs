//! Included files as a user meets them through `buildit`: a template from an included file used by a pipeline
//! with a matrix, outputs and changed paths, alike locally and through the daemon; and mistakes reported in the
//! file they are in, under its name.

#![expect(
    clippy::expect_used,
    reason = "the shared helpers fail loudly when buildit cannot be run"
)]

mod support;

use support::{buildit, git, text, write_file as write};

const PIPELINE: &str = r#"pipeline "combined"
include "ci/common.kdl"

stage "build" template="package" {
    matrix {
        os "linux" "macos"
        exclude { os "macos"; }
        include { os "bsd"; }
    }
}
stage "test" {
    matrix { os "linux" "bsd"; }
    needs "build" matrix="same"
    run "echo testing {needs.build.outputs.artifact}"
}
stage "docs" {
    when changes="docs/**"
    run "echo building the docs"
}
"#;

const COMMON: &str = r#"// Shared by the pipelines of this repository.
include "steps.kdl"
template "package" {
    outputs "artifact"
    run "echo packaging for {matrix.os}"
    run "echo artifact=app-{matrix.os}.tar >> \"$BUILDIT_OUTPUT\""
}
"#;

const STEPS: &str = r#"stage "lint" template="package" {
    run "echo linting"
    outputs
}
"#;

#[test]
fn a_template_from_an_included_file_runs_alike_locally_and_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("daemon");
    let daemon = support::Daemon::on_free_port(&data, &[]);
    let token = support::create_token(dir.path(), &data, "acme", "includes");
    let repo = dir.path().join("repo");
    git(dir.path(), &["init", "-q", "-b", "main", "repo"]);
    write(&repo, "buildit.kdl", PIPELINE);
    write(&repo, "ci/common.kdl", COMMON);
    write(
        &repo,
        "ci/steps.kdl",
        STEPS.replace("    outputs\n", "").as_str(),
    );
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "start"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    write(&repo, "src/lib.rs", "\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "code"]);

    let validated = buildit(&repo, &["validate"], &[]);
    assert_eq!(
        validated.status.code(),
        Some(0),
        "{}",
        text(&validated.stderr)
    );
    let plan = buildit(&repo, &["plan"], &[]);
    let shown = text(&plan.stdout);
    assert!(
        shown.contains("build (os=bsd)") && shown.contains("lint"),
        "{shown}"
    );
    assert!(!shown.contains("build (os=macos)"), "{shown}");

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
        for os in ["linux", "bsd"] {
            assert!(
                stdout.contains(&format!("| testing app-{os}.tar")),
                "{how}: {stdout}"
            );
        }
        assert!(stdout.contains("| linting"), "{how}: {stdout}");
        assert!(!stdout.contains("packaging for macos"), "{how}: {stdout}");
        // Only `src/` changed on the branch: the docs stage is skipped.
        assert!(!stdout.contains("building the docs"), "{how}: {stdout}");
    }
    // `runs show` of the daemon's run lists the outputs, as a local one does.
    let listed = buildit(&repo, &["runs", "list", "--format", "json"], &env);
    let runs: serde_json::Value =
        serde_json::from_slice(&listed.stdout).unwrap_or_else(|error| panic!("{error}"));
    let id = runs[0]["id"].as_str().unwrap_or_default().to_owned();
    for (how, shown) in [
        (
            "through the daemon",
            buildit(&repo, &["runs", "show", &id], &env),
        ),
        ("locally", buildit(&repo, &["runs", "show", "1"], &[])),
    ] {
        let shown = text(&shown.stdout);
        assert!(
            shown.contains("outputs\n") && shown.contains("build (os=bsd): artifact=app-bsd.tar"),
            "{how}: {shown}"
        );
    }
}

#[test]
fn include_mistakes_are_reported_in_the_file_they_are_in() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\ninclude \"ci/common.kdl\"\ninclude \"missing.kdl\"\ninclude \"../outside.kdl\"\nstage \"a\" template=\"shared\"\n",
    );
    write(
        dir.path(),
        "ci/common.kdl",
        "include \"../buildit.kdl\"\ntemplate \"shared\" {\n    run \"true\"\n    timout \"5m\"\n}\n",
    );
    let output = buildit(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    insta::assert_snapshot!(text(&output.stderr));
    let json = buildit(dir.path(), &["validate", "--format", "json"], &[]);
    let records: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|error| panic!("{error}"));
    let places: Vec<String> = records
        .as_array()
        .into_iter()
        .flatten()
        .map(|record| {
            format!(
                "{}:{}:{}",
                record["file"].as_str().unwrap_or_default(),
                record["line"],
                record["column"]
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            "buildit.kdl:3:9",
            "buildit.kdl:4:9",
            "ci/common.kdl:1:9",
            "ci/common.kdl:4:5"
        ],
        "{records}"
    );
}

#[test]
fn an_include_through_a_link_or_broken_on_its_own_is_said_in_its_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let root = dir.path().join("repo");
    write(
        dir.path(),
        "secret.kdl",
        "stage \"x\" { run \"token-4242\"; timout \"1s\"; }\n",
    );
    write(
        &root,
        "buildit.kdl",
        "pipeline \"p\"\ninclude \"ci/linked.kdl\"\nstage \"a\" { run \"true\"; }\n",
    );
    std::fs::create_dir_all(root.join("ci")).unwrap_or_else(|error| panic!("{error}"));
    std::os::unix::fs::symlink(dir.path().join("secret.kdl"), root.join("ci/linked.kdl"))
        .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(&root, &["validate"], &[]);
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("is a symbolic link"), "{said}");
    assert!(!said.contains("token-4242"), "{said}");

    // A file that leaves a block open is refused in that file, not closed by the next one.
    write(
        &root,
        "buildit.kdl",
        "pipeline \"p\"\ninclude \"ci/open.kdl\"\ninclude \"ci/close.kdl\"\n",
    );
    write(&root, "ci/open.kdl", "stage \"a\" {\n    run \"true\"\n");
    write(&root, "ci/close.kdl", "}\n");
    let output = buildit(&root, &["validate", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    let records: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    let files: Vec<&str> = records
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|record| record["file"].as_str())
        .collect();
    assert!(files.contains(&"ci/open.kdl"), "{records}");

    // A stage defined in the pipeline and again in an included file: the other place is named.
    write(
        &root,
        "buildit.kdl",
        "pipeline \"p\"\ninclude \"ci/more.kdl\"\nstage \"a\" { run \"true\"; }\n",
    );
    write(&root, "ci/more.kdl", "stage \"a\" { run \"false\"; }\n");
    let output = buildit(&root, &["validate"], &[]);
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("buildit.kdl:3:"), "{said}");
    assert!(said.contains("ci/more.kdl:1:"), "{said}");
}
