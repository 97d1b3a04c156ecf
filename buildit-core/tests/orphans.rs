//! What host stages leave behind: reaped orphans (exact timeouts) and processes that left their group, stopped
//! once the executor is gone. A test binary of its own: it makes the whole process a child subreaper.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildit_core::RunContext;
use buildit_core::events::{EventBus, StageOutcome};
use buildit_core::exec::{
    LocalExecutor, RunIdentity, RunOptions, RunReport, adopt_orphans, execute,
};
use tokio_util::sync::CancellationToken;

#[expect(dead_code, reason = "this binary uses part of the shared helpers")]
mod support;

/// Runs `text` in `workspace` with an executor of its own, dropped when the run ends.
async fn run(text: &str, workspace: &Path) -> RunReport {
    let plan = support::plan(text, &RunContext::new());
    let bus = EventBus::new("run-1");
    let identity = RunIdentity::new("run-1", 1, workspace);
    execute(
        &plan,
        Arc::new(LocalExecutor::new()),
        &identity,
        &RunOptions::default(),
        &bus,
        &CancellationToken::new(),
    )
    .await
}

fn outcome(report: &RunReport, stage: &str) -> StageOutcome {
    match report.stages.iter().find(|s| s.name == stage) {
        Some(report) => report.outcome,
        None => panic!("no stage {stage}"),
    }
}

/// Makes this test process adopt the orphans of its descendants.
fn adopt() {
    if let Err(error) = adopt_orphans() {
        panic!("cannot become a child subreaper: {error}");
    }
}

/// The process ids written one per line into `file`.
fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits up to `bound` for none of `pids` to run; the ones still running then.
fn survivors(pids: &[i32], bound: Duration) -> Vec<i32> {
    let deadline = Instant::now() + bound;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|pid| running(*pid)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what a failed test left running.
fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn a_timeout_ends_when_the_stage_is_stopped_not_when_its_zombies_are_reaped_by_someone_else()
{
    // This process adopts the stage's orphans: the shell's `sleep`, killed with it, becomes a zombie child of
    // this process, which nothing but the executor reaps. Before, the executor waited for the group to be
    // empty, zombie included, until the end of the grace period (10 s); `init` does the same to a runner that
    // does not adopt, only sooner or later depending on `init`.
    adopt();
    let dir = support::temp_dir();
    let started = Instant::now();
    let report = run(
        "pipeline \"p\"\nstage \"slow\" {\n    timeout \"1s\"\n    run \"sleep 10\"\n}\n",
        dir.path(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(outcome(&report, "slow"), StageOutcome::TimedOut);
    assert!(
        elapsed < Duration::from_millis(1500),
        "a 1 s timeout took {elapsed:?}"
    );
}

#[tokio::test]
async fn processes_that_left_the_stages_group_are_stopped_once_the_executor_is_gone() {
    adopt();
    let dir = support::temp_dir();
    // A new session (out of the group's reach), and a daemon in one (its parent gone at once). The stage ends
    // successfully while both run on.
    let report = run(
        r#"
pipeline "p"
stage "daemons" {
    run "setsid sh -c 'echo $$ >> pids; exec sleep 60' >/dev/null 2>&1 &"
    run "(setsid sh -c 'echo $$ >> pids; exec sleep 60' >/dev/null 2>&1 &)"
    run "i=0; while [ \"$(cat pids 2>/dev/null | wc -l)\" -lt 2 ] && [ $i -lt 1000 ]; do i=$((i + 1)); sleep 0.01; done"
}
"#,
        dir.path(),
    )
    .await;
    assert_eq!(outcome(&report, "daemons"), StageOutcome::Succeeded);
    let pids = pids_in(&dir.path().join("pids"));
    assert_eq!(pids.len(), 2, "{pids:?}");
    let left = survivors(&pids, Duration::from_secs(10));
    kill_all(&left);
    assert!(left.is_empty(), "still running: {left:?}");
}
