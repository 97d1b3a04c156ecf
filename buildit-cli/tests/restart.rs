//! A `buildit daemon` killed while it runs a run, and started again on the same data directory: the run is
//! marked interrupted and starts again as a new run (or, with `--no-restart`, stays interrupted), and a
//! `pipelines trigger --follow` that was following it follows the new run to its end.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or files cannot be set up"
)]

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

mod support;

use std::time::{Duration, Instant};
use support::{Daemon, buildit_command, create_token};

/// A free loopback port: both daemons of a test listen on it, as a restarted service would.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A pipeline whose first run starts a long stage (and leaves `marker`), and whose next run ends at once.
fn pipeline(marker: &Path) -> String {
    let marker = marker.display();
    format!(
        r#"pipeline "restartable"
stage "work" {{
    run "if [ -e {marker} ]; then echo second; else touch {marker}; echo first; sleep 60; fi"
}}
"#
    )
}

/// A follower whose output lines are collected as they come.
struct Follower {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(mut kept) = kept.lock() {
                kept.push(line);
            }
        }
    });
    lines
}

impl Follower {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the follower starts");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn printed(&self, line: &str) -> bool {
        self.stdout
            .lock()
            .map(|lines| lines.iter().any(|printed| printed == line))
            .unwrap_or(false)
    }

    /// Waits until it printed `line`.
    fn wait_for(&self, line: &str, within: Duration) {
        let started = Instant::now();
        while !self.printed(line) {
            assert!(
                started.elapsed() < within,
                "the follower did not print {line:?} within {within:?}: {:?}",
                self.stdout.lock().map(|lines| lines.clone())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit code, stdout and stderr once it exits, at most `within` from now.
    fn finish(mut self, within: Duration) -> (Option<i32>, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "the follower did not exit within {within:?}: {:?}",
                    self.stdout.lock().map(|lines| lines.clone())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Its pipes close with it: what is left is read by then.
        std::thread::sleep(Duration::from_millis(200));
        let text = |lines: &Arc<Mutex<Vec<String>>>| {
            lines
                .lock()
                .map(|lines| lines.join("\n"))
                .unwrap_or_default()
        };
        (status.code(), text(&self.stdout), text(&self.stderr))
    }
}

/// The runs the daemon lists, newest first, each as `runs show` gives it in JSON (which the list agrees with).
fn runs(work: &Path, address: &str, token: &str) -> Vec<serde_json::Value> {
    let remote = |args: &[&str]| {
        let output = buildit_command(work)
            .args(args)
            .args(["--format", "json"])
            .env("BUILDIT_SERVER", address)
            .env("BUILDIT_TOKEN", token)
            .output()
            .expect("buildit runs");
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&remote(&["runs", "list"])).expect("runs as JSON");
    listed
        .iter()
        .map(|run| {
            let id = run["id"].as_str().expect("a run id");
            let shown = remote(&["runs", "show", id]);
            let first_line = shown
                .split(|byte| *byte == b'\n')
                .next()
                .unwrap_or_default();
            let shown: serde_json::Value =
                serde_json::from_slice(first_line).expect("a run as JSON");
            // The list says what `show` says of a run's restarts.
            for field in ["restart_of", "restarted_as"] {
                assert_eq!(run[field], shown[field], "{field}: {run} against {shown}");
            }
            shown
        })
        .collect()
}

/// Starts a run, kills its daemon while the run's stage sleeps, starts another daemon with `extra` arguments on
/// the same data directory and port; the follower's output and the runs listed afterwards.
fn kill_while_running(extra: &[&str]) -> ((Option<i32>, String, String), Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    let marker = dir.path().join("started-once");
    std::fs::write(work.join("buildit.kdl"), pipeline(&marker)).expect("pipeline");
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let mut first = Daemon::start(&data, &format!("127.0.0.1:{port}"), &[]);
    let token = create_token(dir.path(), &data, "acme", "test");
    let mut trigger = buildit_command(&work);
    trigger
        .args(["pipelines", "trigger", "--follow"])
        .env("BUILDIT_SERVER", &address)
        .env("BUILDIT_TOKEN", &token);
    let follower = Follower::start(trigger);
    follower.wait_for("work | first", Duration::from_secs(30));
    first.child.kill().expect("the daemon is killed");
    first.child.wait().expect("the killed daemon is reaped");
    let _second = Daemon::start(&data, &format!("127.0.0.1:{port}"), extra);
    let output = follower.finish(Duration::from_secs(40));
    let listed = runs(&work, &address, &token);
    (output, listed)
}

#[test]
fn a_killed_daemons_run_starts_again_and_its_follower_follows_it_to_the_end() {
    let ((code, stdout, stderr), runs) = kill_while_running(&[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("work | first"), "{stdout}");
    assert!(stdout.contains("work | second"), "{stdout}");
    assert!(stderr.contains("it starts again as run"), "{stderr}");

    assert_eq!(runs.len(), 2, "{runs:?}");
    let (restart, interrupted) = (&runs[0], &runs[1]);
    assert_eq!(interrupted["state"], "interrupted", "{runs:?}");
    assert_eq!(restart["state"], "succeeded", "{runs:?}");
    assert_eq!(interrupted["restarted_as"], restart["id"], "{runs:?}");
    assert_eq!(restart["restart_of"], interrupted["id"], "{runs:?}");
}

#[test]
fn with_no_restart_a_killed_daemons_run_stays_interrupted() {
    let ((code, stdout, stderr), runs) = kill_while_running(&["--no-restart"]);
    assert_eq!(code, Some(4), "{stdout}{stderr}");
    assert!(stdout.contains("work | first"), "{stdout}");
    assert!(!stdout.contains("work | second"), "{stdout}");
    assert!(stderr.contains("did not start it again"), "{stderr}");

    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["state"], "interrupted", "{runs:?}");
    assert_eq!(runs[0]["restarted_as"], serde_json::Value::Null, "{runs:?}");
}
