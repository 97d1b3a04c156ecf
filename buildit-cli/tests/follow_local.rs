//! `buildit runs logs --follow` without a daemon: the lines of a run that another `buildit run` records in the
//! same store, live until it ends, the same lines `runs logs` prints once it has ended.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its processes or files cannot be set up"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::buildit_command;

fn buildit(dir: &Path, args: &[&str]) -> Command {
    let mut command = buildit_command(dir);
    command.args(args);
    command
}

const PIPELINE: &str = r#"pipeline "live"
stage "first" { run "echo one" }
stage "slow" {
    needs "first"
    run "echo two; sleep 1; echo three >&2; sleep 1; echo four"
}
"#;

#[test]
fn a_run_recorded_by_another_process_is_followed_to_its_end() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("buildit.kdl"), PIPELINE).expect("pipeline");
    let mut run = buildit(dir.path(), &["run", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("buildit run starts");
    // Followed as soon as the run is recorded.
    let started = Instant::now();
    let database = dir.path().join(".buildit").join("buildit.db");
    let followed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run was never recorded"
        );
        if database.exists() {
            let output = buildit(dir.path(), &["runs", "logs", "1", "--follow"])
                .output()
                .expect("runs logs runs");
            if output.status.success() {
                break output;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let followed_at = started.elapsed();
    let status = run.wait().expect("buildit run ends");
    assert!(status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&followed.stdout);
    for line in ["first | one", "slow | two", "slow | three", "slow | four"] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in {text}");
    }
    assert!(
        followed_at >= Duration::from_secs(2),
        "the follower ended after {followed_at:?}, before the run could have"
    );

    // The same lines, numbers and times as the stored ones.
    let json = |args: &[&str]| {
        let output = buildit(dir.path(), args).output().expect("runs logs runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(
        json(&[
            "runs", "logs", "1", "--stage", "slow", "--format", "json", "--follow"
        ]),
        json(&["runs", "logs", "1", "--stage", "slow", "--format", "json"])
    );
}
