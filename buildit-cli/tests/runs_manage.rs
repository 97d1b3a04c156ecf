//! `buildit runs cancel|delete|prune` on a local store, end to end: real `buildit run` processes, cancelled from
//! another process through the store, deleted and pruned with their artifacts, outputs files and caches.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its processes or files cannot be set up"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod support;

use support::buildit_command;

fn buildit(dir: &Path, args: &[&str]) -> Output {
    buildit_command(dir)
        .args(args)
        .output()
        .expect("buildit runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A stage that records its process id and sleeps (the `exec` keeps that id), after one that collects an artifact.
const SLOW: &str = r#"pipeline "slow"
stage "build" {
    run "mkdir -p out && echo built > out/built.txt"
    artifacts "out/built.txt"
}
stage "sleep" {
    needs "build"
    run "echo $$ > sleep.pid && exec sleep 300"
}
"#;

/// A quick run that collects an artifact.
const QUICK: &str = r#"pipeline "quick"
stage "build" {
    run "mkdir -p out && echo built > out/built.txt && echo building"
    artifacts "out/built.txt"
}
"#;

/// `buildit run` of `file`, in the background, its output in files beside it.
fn start_run(dir: &Path, file: &str) -> Child {
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    buildit_command(dir)
        .args(["run", "--plain", file])
        .stdout(Stdio::from(log("run.out")))
        .stderr(Stdio::from(log("run.err")))
        .spawn()
        .expect("buildit run starts")
}

fn run_to_end(dir: &Path, file: &str) -> Output {
    let output = buildit(dir, &["run", "--plain", file]);
    assert!(output.status.success(), "{}", stderr(&output));
    output
}

/// Waits until `path` holds text, or fails after `within`.
fn wait_for_file(path: &Path, within: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text;
        }
        assert!(
            started.elapsed() < within,
            "`{}` never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit, or kills it and fails after `within`.
fn wait_child(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("buildit run did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// The run `reference`'s JSON from `runs show`.
fn show(dir: &Path, reference: &str) -> serde_json::Value {
    let output = buildit(dir, &["runs", "show", reference, "--format", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("runs show prints JSON")
}

fn run_id(dir: &Path, reference: &str) -> String {
    show(dir, reference)["id"]
        .as_str()
        .expect("a run has an id")
        .to_owned()
}

fn artifacts_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(".buildit/artifacts").join(id)
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("slow.kdl"), SLOW).expect("pipeline");
    std::fs::write(dir.path().join("quick.kdl"), QUICK).expect("pipeline");
    dir
}

#[test]
fn a_run_cancelled_from_another_process_ends_cancelled_with_its_stage_stopped() {
    let dir = workspace();
    let mut run = start_run(dir.path(), "slow.kdl");
    let pid: u32 = wait_for_file(&dir.path().join("sleep.pid"), Duration::from_secs(60))
        .trim()
        .parse()
        .expect("a process id");
    assert!(alive(pid), "the stage is not running");

    let asked = Instant::now();
    let cancel = buildit(dir.path(), &["runs", "cancel", "slow#1"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert!(
        stdout(&cancel).contains("cancel requested for run slow#1"),
        "{}",
        stdout(&cancel)
    );
    // Stopped as Ctrl-C stops it: the run ends cancelled (exit 130), its stage is stopped, within seconds.
    let status = wait_child(&mut run, Duration::from_secs(30));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?} to stop"
    );
    assert!(!alive(pid), "the stage's process {pid} is still running");
    let said = std::fs::read_to_string(dir.path().join("run.err")).expect("run's stderr");
    assert!(
        said.contains("cancel requested through the store"),
        "{said}"
    );
    let run = show(dir.path(), "slow#1");
    assert_eq!(run["state"], "cancelled", "{run}");
    let sleep = run["attempts"]
        .as_array()
        .and_then(|attempts| attempts.iter().find(|a| a["stage"] == "sleep"))
        .cloned()
        .expect("the sleep stage's attempt");
    assert_ne!(sleep["state"], "succeeded", "{sleep}");

    // A run that has ended is left as it is: said, and not an error.
    let again = buildit(dir.path(), &["runs", "cancel", "slow#1"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("has already ended (cancelled)"),
        "{}",
        stdout(&again)
    );
    let json = buildit(
        dir.path(),
        &["runs", "cancel", "slow#1", "--format", "json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(json["cancel_requested"], false, "{json}");
    assert_eq!(json["state"], "cancelled", "{json}");

    // Mistakes are clear errors.
    let unknown = buildit(dir.path(), &["runs", "cancel", "slow#9"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("no run `slow#9`"),
        "{}",
        stderr(&unknown)
    );
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let nothing = buildit(elsewhere.path(), &["runs", "cancel", "1"]);
    assert_eq!(nothing.status.code(), Some(2), "{}", stderr(&nothing));
    assert!(
        stderr(&nothing).contains("no run history"),
        "{}",
        stderr(&nothing)
    );
}

#[test]
fn a_deleted_run_leaves_no_record_nor_files_and_a_running_run_is_refused() {
    let dir = workspace();
    let dir = dir.path();
    run_to_end(dir, "quick.kdl");
    run_to_end(dir, "quick.kdl");
    let (first, second) = (run_id(dir, "quick#1"), run_id(dir, "quick#2"));
    for id in [&first, &second] {
        assert!(
            artifacts_of(dir, id).join("build/out/built.txt").is_file(),
            "no artifacts for {id}"
        );
    }
    // Outputs files a killed run left behind go with it.
    let outputs = dir.join(".buildit/outputs").join(&first);
    std::fs::create_dir_all(&outputs).expect("outputs directory");
    std::fs::write(outputs.join("build-0-1"), "NAME=value\n").expect("outputs file");

    let deleted = buildit(dir, &["runs", "delete", "quick#1"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    assert!(
        stdout(&deleted).contains(&format!("deleted run quick#1 ({first})")),
        "{}",
        stdout(&deleted)
    );
    for args in [
        vec!["runs", "show", first.as_str()],
        vec!["runs", "logs", first.as_str()],
        vec!["runs", "events", first.as_str()],
    ] {
        let gone = buildit(dir, &args);
        assert_eq!(gone.status.code(), Some(2), "{args:?}: {}", stdout(&gone));
        assert!(stderr(&gone).contains("no run"), "{}", stderr(&gone));
    }
    assert!(!artifacts_of(dir, &first).exists());
    assert!(!outputs.exists());
    // The other run is whole.
    assert!(
        artifacts_of(dir, &second)
            .join("build/out/built.txt")
            .is_file()
    );
    assert_eq!(show(dir, "quick#2")["state"], "succeeded");
    let logs = buildit(dir, &["runs", "logs", "quick#2"]);
    assert!(stdout(&logs).contains("building"), "{}", stdout(&logs));
    let listed = buildit(dir, &["runs", "list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let ids: Vec<&str> = listed
        .as_array()
        .map(|runs| runs.iter().filter_map(|run| run["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [second.as_str()]);
    // Its number is not given again.
    run_to_end(dir, "quick.kdl");
    assert!(show(dir, "quick#3")["id"].is_string());

    let again = buildit(dir, &["runs", "delete", &first]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("no run"), "{}", stderr(&again));

    // A running run is refused, and keeps everything; cancelled and ended, it can go.
    let mut run = start_run(dir, "slow.kdl");
    wait_for_file(&dir.join("sleep.pid"), Duration::from_secs(60));
    let slow = run_id(dir, "slow#1");
    let refused = buildit(dir, &["runs", "delete", "slow#1"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("is still running") && stderr(&refused).contains("runs cancel"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(show(dir, "slow#1")["state"], "running");
    assert!(artifacts_of(dir, &slow).exists());
    let cancel = buildit(dir, &["runs", "cancel", "slow#1"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert_eq!(
        wait_child(&mut run, Duration::from_secs(30)).code(),
        Some(130)
    );
    let deleted = buildit(dir, &["runs", "delete", &slow]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    assert!(!artifacts_of(dir, &slow).exists());

    // A run whose `buildit run` was killed has no live owner: it is interrupted, and can go.
    std::fs::remove_file(dir.join("sleep.pid")).expect("pid file");
    let mut run = start_run(dir, "slow.kdl");
    wait_for_file(&dir.join("sleep.pid"), Duration::from_secs(60));
    run.kill().expect("SIGKILL");
    run.wait().expect("killed");
    let deleted = buildit(dir, &["runs", "delete", "slow#2"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    let gone = buildit(dir, &["runs", "show", "slow#2"]);
    assert_eq!(gone.status.code(), Some(2), "{}", stdout(&gone));

    // Not against a daemon.
    let remote = buildit(
        dir,
        &[
            "runs",
            "delete",
            "quick#2",
            "--server",
            "http://127.0.0.1:1",
        ],
    );
    assert_eq!(remote.status.code(), Some(2), "{}", stderr(&remote));
    assert!(
        stderr(&remote).contains("only for a local store"),
        "{}",
        stderr(&remote)
    );
    assert!(artifacts_of(dir, &second).exists());
}

/// Sets `path`'s modification time `age` ago (creating it with `bytes` bytes).
fn old_file(path: &Path, bytes: usize, age: Duration) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("directory");
    }
    std::fs::write(path, "x".repeat(bytes)).expect("file");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now() - age))
        .expect("modification time");
}

#[test]
fn prune_deletes_the_runs_that_ended_long_enough_ago_and_old_caches() {
    let dir = workspace();
    let dir = dir.path();
    run_to_end(dir, "quick.kdl");
    // The first run ended at least this long before the second starts.
    std::thread::sleep(Duration::from_secs(6));
    run_to_end(dir, "quick.kdl");
    let (first, second) = (run_id(dir, "quick#1"), run_id(dir, "quick#2"));
    let day = Duration::from_secs(86_400);
    let cache = dir.join(".buildit/cache");
    old_file(&cache.join("old.tar"), 100, day * 40);
    old_file(&cache.join("fresh.tar"), 100, Duration::ZERO);
    old_file(&cache.join("readme"), 10, day * 40);

    // A dry run says what would go, and removes nothing.
    let dry = buildit(dir, &["runs", "prune", "--older-than", "4s", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains(&format!("would delete run quick#1 ({first}")),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("would delete 1 run") && stdout(&dry).contains("1 cache archive"),
        "{}",
        stdout(&dry)
    );
    assert!(artifacts_of(dir, &first).exists());
    assert!(cache.join("old.tar").exists());
    assert_eq!(show(dir, "quick#1")["state"], "succeeded");

    let pruned = buildit(
        dir,
        &["runs", "prune", "--older-than", "4s", "--format", "json"],
    );
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let pruned: serde_json::Value = serde_json::from_slice(&pruned.stdout).expect("JSON");
    assert_eq!(pruned["runs"], serde_json::json!([first]), "{pruned}");
    assert!(
        pruned["run_bytes"].as_u64().is_some_and(|bytes| bytes > 0),
        "{pruned}"
    );
    assert_eq!(pruned["caches"], 1, "{pruned}");
    assert_eq!(pruned["cache_bytes"], 100, "{pruned}");
    let gone = buildit(dir, &["runs", "show", &first]);
    assert_eq!(gone.status.code(), Some(2), "{}", stderr(&gone));
    assert!(!artifacts_of(dir, &first).exists());
    assert!(!cache.join("old.tar").exists());
    // What ended recently, fresh caches and files that are not BuildIt's stay.
    assert_eq!(show(dir, &second)["state"], "succeeded");
    assert!(
        artifacts_of(dir, &second)
            .join("build/out/built.txt")
            .is_file()
    );
    assert!(cache.join("fresh.tar").exists());
    assert!(cache.join("readme").exists());

    // Mistakes are clear errors, before anything is touched.
    let bad = buildit(dir, &["runs", "prune", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid `--older-than`"),
        "{}",
        stderr(&bad)
    );
    let missing = buildit(dir, &["runs", "prune"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let remote = buildit(
        dir,
        &[
            "runs",
            "prune",
            "--older-than",
            "0s",
            "--server",
            "http://127.0.0.1:1",
        ],
    );
    assert_eq!(remote.status.code(), Some(2), "{}", stderr(&remote));
    assert!(
        stderr(&remote).contains("only for a local store"),
        "{}",
        stderr(&remote)
    );
    assert_eq!(show(dir, &second)["state"], "succeeded");
}

#[test]
fn cancel_with_server_asks_the_daemon_not_the_local_store() {
    // `--server` keeps the daemon's path: an unreachable daemon is an error of its own, not a local lookup.
    let dir = workspace();
    let output = buildit(
        dir.path(),
        &[
            "runs",
            "cancel",
            "abc",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ],
    );
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        !stderr(&output).contains("no run history"),
        "{}",
        stderr(&output)
    );
}

/// A fresh database on the test PostgreSQL server (`BUILDIT_TEST_DATABASE_URL`), or `None` outside CI.
fn postgres_database(name: &str) -> Option<String> {
    let Ok(server) = std::env::var("BUILDIT_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "BUILDIT_TEST_DATABASE_URL is not set: CI must start PostgreSQL for these tests"
        );
        eprintln!("skipped: set BUILDIT_TEST_DATABASE_URL to run the PostgreSQL end-to-end test");
        return None;
    };
    let database = format!("{name}_{}", std::process::id());
    let created = std::process::Command::new("psql")
        .args([server.as_str(), "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {database}"))
        .status();
    assert!(
        matches!(created, Ok(status) if status.success()),
        "psql: {created:?}"
    );
    server
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{database}"))
}

/// Rows of every table of the run's that name `id`.
fn rows_of_run(url: &str, id: &str) -> u64 {
    let query = format!(
        "SELECT (SELECT count(*) FROM pipeline_runs WHERE id = '{id}') \
         + (SELECT count(*) FROM attempt_rows WHERE run_id = '{id}') \
         + (SELECT count(*) FROM logs WHERE run_id = '{id}') \
         + (SELECT count(*) FROM run_events WHERE run_id = '{id}') \
         + (SELECT count(*) FROM run_requests WHERE run_id = '{id}')"
    );
    let output = std::process::Command::new("psql")
        .args([url, "-AtXc", &query])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).trim().parse().expect("a count")
}

#[test]
fn cancel_delete_and_prune_work_on_a_postgresql_store() {
    let Some(url) = postgres_database("buildit_runs_manage") else {
        return;
    };
    let dir = workspace();
    let dir = dir.path();
    let with_store = |args: &[&str]| -> Output {
        buildit_command(dir)
            .args(args)
            .env("BUILDIT_DATABASE_URL", &url)
            .output()
            .expect("buildit runs")
    };
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    let mut run = buildit_command(dir)
        .args(["run", "--plain", "slow.kdl"])
        .env("BUILDIT_DATABASE_URL", &url)
        .stdout(Stdio::from(log("run.out")))
        .stderr(Stdio::from(log("run.err")))
        .spawn()
        .expect("buildit run starts");
    let pid: u32 = wait_for_file(&dir.join("sleep.pid"), Duration::from_secs(60))
        .trim()
        .parse()
        .expect("a process id");
    let cancel = with_store(&["runs", "cancel", "slow#1"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert_eq!(
        wait_child(&mut run, Duration::from_secs(30)).code(),
        Some(130)
    );
    assert!(!alive(pid), "the stage's process {pid} is still running");
    let shown = with_store(&["runs", "show", "slow#1", "--format", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["state"], "cancelled", "{shown}");
    let slow = shown["id"].as_str().expect("an id").to_owned();

    let quick = with_store(&["run", "--plain", "quick.kdl"]);
    assert!(quick.status.success(), "{}", stderr(&quick));
    let shown = with_store(&["runs", "show", "quick#1", "--format", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    let quick = shown["id"].as_str().expect("an id").to_owned();
    assert!(rows_of_run(&url, &slow) > 0);

    let deleted = with_store(&["runs", "delete", &slow]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    assert_eq!(
        rows_of_run(&url, &slow),
        0,
        "rows of the deleted run are left"
    );
    assert!(!artifacts_of(dir, &slow).exists());
    let kept = rows_of_run(&url, &quick);
    assert!(kept > 0);

    // The quick run ended a moment ago: a day's age leaves it, a second's takes it.
    let pruned = with_store(&["runs", "prune", "--older-than", "1d"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("deleted 0 runs"),
        "{}",
        stdout(&pruned)
    );
    assert_eq!(rows_of_run(&url, &quick), kept);
    std::thread::sleep(Duration::from_millis(1100));
    let pruned = with_store(&["runs", "prune", "--older-than", "1s"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("deleted 1 run "),
        "{}",
        stdout(&pruned)
    );
    assert_eq!(rows_of_run(&url, &quick), 0);
    assert!(!artifacts_of(dir, &quick).exists());
}
