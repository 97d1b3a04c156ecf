//! Concurrency groups through `buildit`: real `buildit run` processes of one workspace (one store) that wait for
//! each other's group, cancel the run in progress, take over from a killed holder, and hold stage groups; what
//! `plan` shows and what `validate` says of each mistake.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its processes or files cannot be set up"
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{Daemon, buildit, buildit_command, create_token, text};

/// A run of the group `deploy-BRANCH`: its stage notes its start and end in `order.log`, sleeping `{env.NAP}`
/// seconds between (`{env.TAG}` names the run), and its shell's process id in `TAG.pid`.
const RUN_GROUP: &str = r#"pipeline "deploy"
concurrency group="deploy-{branch}"
stage "deploy" {
    run "echo start-{env.TAG} >> order.log; echo $$ > {env.TAG}.pid; sleep {env.NAP}; echo end-{env.TAG} >> order.log"
}
"#;

/// The same, with a stage group, a stage before it, and a timeout the wait must not count in.
const STAGE_GROUP: &str = r#"pipeline "deploy"
stage "build" {
    run "echo build-{env.TAG} >> build.log"
}
stage "deploy" {
    needs "build"
    concurrency group="deploy-{pipeline.name}"
    timeout "4s"
    run "echo start-{env.TAG} >> order.log; echo $$ > {env.TAG}.pid; sleep {env.NAP}; echo end-{env.TAG} >> order.log"
}
"#;

/// `buildit run --plain` of `file` in `dir` in the background, on branch `main`, its output in `TAG.out` and
/// `TAG.err`.
fn start_run(dir: &Path, file: &str, tag: &str, nap: u32) -> Child {
    let log = |suffix: &str| {
        std::fs::File::create(dir.join(format!("{tag}.{suffix}"))).expect("log file")
    };
    buildit_command(dir)
        .args(["run", "--plain", file, "--branch", "main"])
        .args([
            "--env",
            &format!("TAG={tag}"),
            "--env",
            &format!("NAP={nap}"),
        ])
        .stdout(Stdio::from(log("out")))
        .stderr(Stdio::from(log("err")))
        .spawn()
        .expect("buildit run starts")
}

/// Waits until `path` holds `wanted`, or fails after `within`.
fn wait_for(path: &Path, wanted: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(wanted) {
            return text;
        }
        assert!(
            started.elapsed() < within,
            "`{wanted}` never appeared in `{}`: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to end, or kills it and fails after `within`.
fn finish(mut child: Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn lines(dir: &Path, name: &str) -> Vec<String> {
    read(dir, name).lines().map(str::to_owned).collect()
}

/// Kills what a stage of a killed runner left behind (its shell's process group).
fn kill_stage(dir: &Path, tag: &str) {
    let pid = read(dir, &format!("{tag}.pid"));
    if !pid.trim().is_empty() {
        // Already gone when the stage was stopped as it should be: nothing to say then.
        for target in [format!("-{}", pid.trim()), pid.trim().to_owned()] {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &target])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn workspace(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("buildit.kdl"), pipeline).expect("pipeline");
    dir
}

#[test]
fn a_second_run_of_a_group_waits_until_the_first_ends() {
    // Each stage goes on once the test says so (`go-TAG`), so that the second run is seen waiting; after 60 s
    // it goes on anyway, so that a failed test leaves nothing behind.
    let dir = workspace(&RUN_GROUP.replace(
        "sleep {env.NAP}",
        "for i in $(seq 1200); do [ -f go-{env.TAG} ] && break; sleep 0.05; done",
    ));
    std::fs::write(dir.path().join("go-two"), "").expect("gate opened");
    let first = start_run(dir.path(), "buildit.kdl", "one", 0);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    // While it waits, `runs list` says so (once its events are stored).
    let started = Instant::now();
    loop {
        let listed = buildit(dir.path(), &["runs", "list", "--format", "json"], &[]);
        let listed: serde_json::Value =
            serde_json::from_slice(&listed.stdout).unwrap_or(serde_json::Value::Null);
        let waiting = listed
            .as_array()
            .and_then(|runs| runs.iter().find(|run| run["number"] == 2))
            .map(|run| run["waiting_for_group"].clone())
            .unwrap_or(serde_json::Value::Null);
        if !waiting.is_null() {
            assert_eq!(waiting["group"], "deploy-main", "{waiting}");
            assert_eq!(waiting["holder_number"], 1, "{waiting}");
            let first_listed = listed
                .as_array()
                .and_then(|runs| runs.iter().find(|run| run["number"] == 1))
                .cloned()
                .unwrap_or_default();
            assert!(
                first_listed.get("waiting_for_group").is_none(),
                "{first_listed}"
            );
            let table = text(&buildit(dir.path(), &["runs", "list"], &[]).stdout);
            assert!(table.contains("waiting (deploy-main)"), "{table}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run #2 never listed as waiting: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(dir.path().join("go-one"), "").expect("gate opened");
    assert!(
        finish(first, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "one.err")
    );
    assert!(
        finish(second, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "two.err")
    );
    // The second started only once the first had ended.
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "end-one", "start-two", "end-two"]
    );
    let said = read(dir.path(), "two.out");
    assert!(
        said.contains("waiting for group deploy-main (held by run #1)"),
        "{said}"
    );
    assert!(!read(dir.path(), "one.out").contains("waiting"));
}

#[test]
fn cancel_in_progress_cancels_the_run_in_progress_and_the_newer_one_runs() {
    let dir = workspace(&RUN_GROUP.replace(
        "group=\"deploy-{branch}\"",
        "group=\"deploy-{branch}\" cancel-in-progress=#true",
    ));
    let first = start_run(dir.path(), "buildit.kdl", "one", 120);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    let first_status = finish(first, Duration::from_secs(60));
    assert!(
        finish(second, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "two.err")
    );
    kill_stage(dir.path(), "one");
    assert_eq!(
        first_status.code(),
        Some(130),
        "{}",
        read(dir.path(), "one.out")
    );
    let first_said = read(dir.path(), "one.out");
    assert!(first_said.contains("run cancelled"), "{first_said}");
    assert!(first_said.contains("deploy | ✗ cancelled"), "{first_said}");
    assert!(
        read(dir.path(), "two.out")
            .contains("waiting for group deploy-main (held by run #1): cancelling it"),
        "{}",
        read(dir.path(), "two.out")
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "start-two", "end-two"]
    );
    let shown = buildit(dir.path(), &["runs", "show", "1", "--format", "json"], &[]);
    let run: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(run["state"], "cancelled", "{run}");
}

#[test]
fn a_holder_killed_with_sigkill_does_not_block_the_group() {
    let dir = workspace(RUN_GROUP);
    let mut first = start_run(dir.path(), "buildit.kdl", "one", 120);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    wait_for(
        &dir.path().join("two.out"),
        "waiting for group deploy-main (held by run #1)",
        Duration::from_secs(30),
    );
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let killed = Instant::now();
    let status = finish(second, Duration::from_secs(60));
    kill_stage(dir.path(), "one");
    assert!(status.success(), "{}", read(dir.path(), "two.err"));
    // Taken over as soon as the holder's process was found gone, not after the minute a silent remote runner gets.
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "start-two", "end-two"]
    );
    let listed = buildit(dir.path(), &["runs", "show", "1", "--format", "json"], &[]);
    let run: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(run["state"], "interrupted", "{run}");
}

#[test]
fn a_run_stopped_while_it_waits_ends_cancelled_and_holds_nothing() {
    let dir = workspace(RUN_GROUP);
    let first = start_run(dir.path(), "buildit.kdl", "one", 5);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    wait_for(
        &dir.path().join("two.out"),
        "waiting for group",
        Duration::from_secs(30),
    );
    // Ctrl-C while it waits.
    let _ = Command::new("kill")
        .args(["-INT", &second.id().to_string()])
        .status();
    let status = finish(second, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", read(dir.path(), "two.out"));
    // The group is still the first run's: a third run waits for it, then runs.
    let third = start_run(dir.path(), "buildit.kdl", "three", 0);
    assert!(finish(first, Duration::from_secs(60)).success());
    assert!(
        finish(third, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "three.err")
    );
    assert!(
        read(dir.path(), "three.out").contains("(held by run #1)"),
        "{}",
        read(dir.path(), "three.out")
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "end-one", "start-three", "end-three"]
    );
}

#[test]
fn a_stage_group_is_held_across_runs_and_the_wait_is_not_in_its_timeout() {
    let dir = workspace(STAGE_GROUP);
    let first = start_run(dir.path(), "buildit.kdl", "one", 3);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 3);
    assert!(
        finish(first, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "one.out")
    );
    assert!(
        finish(second, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "two.out")
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "end-one", "start-two", "end-two"]
    );
    // Only the grouped stage waited: the second run's `build` ran while the first deployed.
    assert_eq!(lines(dir.path(), "build.log"), ["build-one", "build-two"]);
    let said = read(dir.path(), "two.out");
    assert!(
        said.contains("deploy | waiting for group deploy-deploy (held by run #1, stage deploy)"),
        "{said}"
    );
}

#[test]
fn plan_shows_the_groups_rendered_for_the_run() {
    let dir = workspace(
        r#"pipeline "deploy"
concurrency 2 group="deploy-{branch}" cancel-in-progress=#true
stage "migrate" {
    matrix { db "main" "audit"; }
    concurrency group="db-{matrix.db}-{env.SITE}"
    run "true"
}
"#,
    );
    let output = buildit(
        dir.path(),
        &["plan", "--branch", "release", "--env", "SITE=eu"],
        &[],
    );
    let said = text(&output.stdout);
    assert!(output.status.success(), "{said}{}", text(&output.stderr));
    assert!(
        said.contains("concurrency group `deploy-release`: cancels the one in progress"),
        "{said}"
    );
    assert!(
        said.contains(
            "migrate (db=main)  [local]  group db-main-eu (waits for the one in progress)"
        ),
        "{said}"
    );
    assert!(said.contains("group db-audit-eu"), "{said}");
    let json = buildit(
        dir.path(),
        &["plan", "--branch", "release", "--format", "json"],
        &[],
    );
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(plan["group"]["name"], "deploy-release", "{plan}");
    assert_eq!(plan["group"]["cancel_in_progress"], true, "{plan}");
    assert_eq!(
        plan["stages"][0]["group"]["cancel_in_progress"], false,
        "{plan}"
    );
}

#[test]
fn concurrency_mistakes_are_reported_where_they_are() {
    let dir = workspace(
        r#"pipeline "p"
concurrency group="deploy-{run.number}-{stage.name}" cancel-in-progres=#true
concurrency 4
stage "a" {
    run "true"
    concurrency 2 group="x"
}
stage "b" {
    run "true"
    concurrency cancel-in-progress=#true
}
stage "c" {
    matrix { region "eu"; }
    run "true"
    concurrency group="db-{matrix.regoin}" cancel-in-progress="yes"
}
stage "d" {
    run "true"
    concurrency group=""
}
stage "e" {
    run "true"
    concurrency group="deploy-{git.brnch}-{needs.a.outputs.x}"
    concurency group="x"
}
"#,
    );
    let output = buildit(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    insta::assert_snapshot!(text(&output.stderr));
}

/// The `at_ms` of the first event of `run_id` of `kind`, read through the daemon once the run has ended.
fn event_time(dir: &Path, env: &[(&str, &str)], run_id: &str, kind: &str) -> Option<u64> {
    let events = buildit(dir, &["runs", "events", run_id], env);
    text(&events.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == kind)
        .and_then(|event| event["at_ms"].as_u64())
}

#[test]
fn runs_of_a_daemon_wait_for_their_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("daemon");
    let daemon = Daemon::on_free_port(&data, &["--workers", "2"]);
    let token = create_token(dir.path(), &data, "acme", "ci");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    std::fs::write(work.join("buildit.kdl"), RUN_GROUP).expect("pipeline");
    let env = [
        ("BUILDIT_SERVER", daemon.address.as_str()),
        ("BUILDIT_TOKEN", token.as_str()),
    ];
    let trigger = |tag: &str, nap: &str, follow: bool| {
        let mut args = vec!["pipelines", "trigger", "--branch", "main"];
        let (tag, nap) = (format!("TAG={tag}"), format!("NAP={nap}"));
        args.extend(["--env", &tag, "--env", &nap]);
        if follow {
            args.push("--follow");
        }
        buildit(&work, &args, &env)
    };
    let first = trigger("one", "8", false);
    assert!(first.status.success(), "{first:?}");
    // `queued run ID of `deploy` (queued)`
    let first_id = text(&first.stdout)
        .split_whitespace()
        .nth(2)
        .expect("a run id")
        .to_owned();
    // Recorded (`runs events` would follow it to its end): it takes its group right after.
    let started = Instant::now();
    loop {
        let listed = buildit(&work, &["runs", "list", "--format", "json"], &env);
        let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("runs");
        if runs[0]["id"] == first_id.as_str() && runs[0]["state"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first run never started: {runs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let second = trigger("two", "0", true);
    let said = text(&second.stdout);
    assert!(second.status.success(), "{said}{}", text(&second.stderr));
    assert!(
        said.contains("waiting for group deploy-main (held by run #1)"),
        "{said}{}",
        text(&buildit(&work, &["runs", "list", "--format", "json"], &env).stdout)
    );
    let listed = buildit(&work, &["runs", "list", "--format", "json"], &env);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("runs");
    let second_id = runs[0]["id"].as_str().expect("a run id").to_owned();
    assert_ne!(second_id, first_id);
    // The second run's stage started only once the first run's had finished.
    let first_end = event_time(&work, &env, &first_id, "stage-finished").expect("first ended");
    let second_start =
        event_time(&work, &env, &second_id, "stage-started").expect("second started");
    assert!(second_start >= first_end, "{second_start} < {first_end}");
}

#[test]
fn a_newer_waiting_run_cancels_an_older_one_that_waits() {
    let dir = workspace(RUN_GROUP);
    let first = start_run(dir.path(), "buildit.kdl", "one", 6);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    wait_for(
        &dir.path().join("two.out"),
        "waiting for group",
        Duration::from_secs(30),
    );
    let third = start_run(dir.path(), "buildit.kdl", "three", 0);
    // One running, one pending: the second, older, waiting run is cancelled without running its stage.
    let second_status = finish(second, Duration::from_secs(30));
    assert_eq!(
        second_status.code(),
        Some(130),
        "{}",
        read(dir.path(), "two.out")
    );
    assert!(read(dir.path(), "two.out").contains("deploy | ○ skipped (run cancelled)"));
    assert!(finish(first, Duration::from_secs(60)).success());
    assert!(
        finish(third, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "three.err")
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "end-one", "start-three", "end-three"]
    );
}

#[test]
fn a_stage_group_that_cancels_in_progress_cancels_the_holders_run() {
    let dir = workspace(
        &STAGE_GROUP
            .replace(
                "concurrency group=\"deploy-{pipeline.name}\"",
                "concurrency group=\"deploy-{pipeline.name}\" cancel-in-progress=#true",
            )
            .replace("timeout \"4s\"", "timeout \"5m\""),
    );
    let first = start_run(dir.path(), "buildit.kdl", "one", 120);
    wait_for(
        &dir.path().join("order.log"),
        "start-one",
        Duration::from_secs(30),
    );
    let second = start_run(dir.path(), "buildit.kdl", "two", 0);
    let first_status = finish(first, Duration::from_secs(60));
    assert!(
        finish(second, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "two.out")
    );
    kill_stage(dir.path(), "one");
    assert_eq!(
        first_status.code(),
        Some(130),
        "{}",
        read(dir.path(), "one.out")
    );
    assert!(
        read(dir.path(), "two.out").contains(
            "deploy | waiting for group deploy-deploy (held by run #1, stage deploy): cancelling it"
        ),
        "{}",
        read(dir.path(), "two.out")
    );
    assert_eq!(
        lines(dir.path(), "order.log"),
        ["start-one", "start-two", "end-two"]
    );
}

#[test]
fn an_older_run_that_finds_a_newer_one_in_its_group_gives_way() {
    let dir = workspace(
        r#"pipeline "deploy"
stage "build" {
    run "echo build-{env.TAG} >> build.log; sleep {env.BUILD}"
}
stage "deploy" {
    needs "build"
    concurrency group="deploy-{pipeline.name}" cancel-in-progress=#true
    run "echo start-{env.TAG} >> order.log; echo $$ > {env.TAG}.pid; sleep {env.NAP}; echo end-{env.TAG} >> order.log"
}
"#,
    );
    let start = |tag: &str, build: u32, nap: u32| {
        let log = |suffix: &str| {
            std::fs::File::create(dir.path().join(format!("{tag}.{suffix}"))).expect("log file")
        };
        buildit_command(dir.path())
            .args(["run", "--plain", "--branch", "main"])
            .args([
                "--env",
                &format!("TAG={tag}"),
                "--env",
                &format!("NAP={nap}"),
            ])
            .args(["--env", &format!("BUILD={build}")])
            .stdout(Stdio::from(log("out")))
            .stderr(Stdio::from(log("err")))
            .spawn()
            .expect("buildit run starts")
    };
    // The older run's build is slow: the newer run's deploy takes the group first.
    let older = start("old", 6, 0);
    wait_for(
        &dir.path().join("build.log"),
        "build-old",
        Duration::from_secs(30),
    );
    let newer = start("new", 0, 12);
    wait_for(
        &dir.path().join("order.log"),
        "start-new",
        Duration::from_secs(30),
    );
    let older_status = finish(older, Duration::from_secs(60));
    assert_eq!(
        older_status.code(),
        Some(130),
        "{}",
        read(dir.path(), "old.out")
    );
    assert!(
        finish(newer, Duration::from_secs(60)).success(),
        "{}",
        read(dir.path(), "new.out")
    );
    kill_stage(dir.path(), "new");
    // The newer deploy was not cancelled, and the older one never started.
    assert_eq!(lines(dir.path(), "order.log"), ["start-new", "end-new"]);
}
