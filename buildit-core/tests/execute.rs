//! The scheduler and the host executor, on real processes: outcomes, skips, retries, timeouts, cancellation,
//! concurrency, logs and secret masking.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildit_core::RunContext;
use buildit_core::events::{
    FailureKind, LogStreamKind, RunEvent, RunEventKind, RunOutcome, StageOutcome,
};
use buildit_core::exec::{ArtifactStore, LocalExecutor, RunOptions, RunReport};
use buildit_core::runner::Runner;
use buildit_core::store::{MemoryStore, Store};
use tokio_util::sync::CancellationToken;

mod support;

struct Run {
    report: RunReport,
    events: Vec<RunEvent>,
}

impl Run {
    fn outcome(&self, stage: &str) -> StageOutcome {
        match self.report.stages.iter().find(|s| s.name == stage) {
            Some(report) => report.outcome,
            None => panic!("no stage {stage}"),
        }
    }

    fn reason(&self, stage: &str) -> Option<&str> {
        self.report
            .stages
            .iter()
            .find(|s| s.name == stage)
            .and_then(|s| s.reason.as_deref())
    }

    fn lines(&self, stage: &str) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|event| match &event.kind {
                RunEventKind::LogLine {
                    stage: s,
                    text,
                    stream: LogStreamKind::Stdout,
                    ..
                } if s == stage => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

async fn run_with(
    text: &str,
    workspace: &Path,
    options: RunOptions,
    cancel: CancellationToken,
    secrets: &[(&str, &str)],
) -> Run {
    let plan = support::plan(
        text,
        &RunContext::new()
            .with_branch("main")
            .with_sha("0123456789abcdef"),
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let secrets = secrets
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let runner = Runner::new("run-1", plan, LocalExecutor::new(), store)
        .workspace(workspace)
        .options(options)
        .cancel_token(cancel)
        .secrets(secrets);
    let (report, events) = support::run_to_end(runner).await;
    Run { report, events }
}

/// A run with default options, no cancellation and no secrets, in `workspace`.
async fn run_in(text: &str, workspace: &Path) -> Run {
    run_with(
        text,
        workspace,
        RunOptions::default(),
        CancellationToken::new(),
        &[],
    )
    .await
}

async fn run(text: &str) -> Run {
    let dir = support::temp_dir();
    run_in(text, dir.path()).await
}

#[tokio::test]
async fn commands_share_one_shell_and_stop_at_the_first_failure() {
    let run = run(r#"
pipeline "p"
env { GREETING "hello" }
stage "a" {
    env { WHO "world" }
    run "mkdir sub && cd sub"
    run "echo \"$GREETING $WHO from $(basename $(pwd)) as $BUILDIT_STAGE run $BUILDIT_RUN_NUMBER on {branch}\""
    run "exit 3"
    run "echo never"
}
"#)
    .await;
    assert_eq!(run.outcome("a"), StageOutcome::Failed);
    assert_eq!(run.report.stages[0].exit_code, Some(3));
    assert_eq!(
        run.lines("a"),
        [
            "$ mkdir sub && cd sub",
            "$ echo \"$GREETING $WHO from $(basename $(pwd)) as $BUILDIT_STAGE run $BUILDIT_RUN_NUMBER on main\"",
            "hello world from sub as a run 1 on main",
            "$ exit 3",
        ]
    );
    assert_eq!(run.report.status, RunOutcome::Failed);
}

#[tokio::test]
async fn a_failure_skips_dependents_and_independent_stages_go_on() {
    let run = run(r#"
pipeline "p"
stage "bad" { run "false" }
stage "after-bad" { needs "bad"; run "echo no" }
stage "later" { needs "after-bad"; run "echo no" }
stage "independent" { run "echo yes" }
stage "on-failure" { needs "bad"; when status="failure"; run "echo cleanup" }
stage "always" { needs "later"; when status="always"; run "echo always" }
"#)
    .await;
    assert_eq!(run.outcome("bad"), StageOutcome::Failed);
    assert_eq!(run.outcome("after-bad"), StageOutcome::Skipped);
    assert_eq!(run.reason("after-bad"), Some("dependency failed"));
    assert_eq!(run.reason("later"), Some("dependency skipped"));
    assert_eq!(run.outcome("independent"), StageOutcome::Succeeded);
    assert_eq!(run.outcome("on-failure"), StageOutcome::Succeeded);
    assert_eq!(run.outcome("always"), StageOutcome::Succeeded);
    assert_eq!(run.report.status, RunOutcome::Failed);
}

/// Every subscriber sees a stage's last end before anything that follows from it: its dependents' starts and the
/// skips it causes. Checked on the daemon's many-thread runtime, where a dependent's task may run at once on
/// another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_ends_before_its_dependents_start_or_are_skipped() {
    let run = run(r#"
pipeline "p"
stage "root" { run "echo root" }
stage "fan" {
    needs "root"
    matrix { n "1" "2" "3" "4" "5" "6" }
    run "echo {matrix.n}"
}
stage "join" { needs "fan"; run "echo join" }
stage "flaky" { needs "root"; retry 1; run "exit 1" }
stage "after-flaky" { needs "flaky"; run "echo never" }
stage "cleanup" { needs "after-flaky"; when status="always"; run "echo cleanup" }
"#)
    .await;
    assert_eq!(run.outcome("join"), StageOutcome::Succeeded);
    assert_eq!(run.outcome("after-flaky"), StageOutcome::Skipped);
    assert_eq!(run.outcome("cleanup"), StageOutcome::Succeeded);
    // Where each stage's last end, and its first start or skip, fall in the sequence.
    let mut last_end: HashMap<String, u64> = HashMap::new();
    let mut first_news: HashMap<String, u64> = HashMap::new();
    for event in &run.events {
        match &event.kind {
            RunEventKind::StageFinished { stage, attempt, .. } => {
                last_end.insert(stage.clone(), event.seq);
                if *attempt == 0 {
                    first_news.entry(stage.clone()).or_insert(event.seq);
                }
            }
            RunEventKind::StageStarted { stage, .. } => {
                first_news.entry(stage.clone()).or_insert(event.seq);
            }
            _ => {}
        }
    }
    let fans: Vec<String> = (1..=6).map(|n| format!("fan (n={n})")).collect();
    let mut edges: Vec<(&str, &str)> = vec![("flaky", "after-flaky"), ("after-flaky", "cleanup")];
    for fan in &fans {
        edges.push(("root", fan));
        edges.push((fan, "join"));
    }
    for (need, dependent) in edges {
        assert!(
            last_end[need] < first_news[dependent],
            "`{dependent}` began (event {}) before `{need}` ended (event {})",
            first_news[dependent],
            last_end[need]
        );
    }
    // Both attempts of the flaky stage were reported, the first before the second began.
    let flaky_ends = run
        .events
        .iter()
        .filter(|event| matches!(&event.kind, RunEventKind::StageFinished { stage, .. } if stage == "flaky"))
        .count();
    assert_eq!(flaky_ends, 2);
    let seqs: Vec<u64> = run.events.iter().map(|event| event.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "events out of sequence"
    );
}

#[tokio::test]
async fn allow_failure_keeps_the_run_green_and_dependents_run() {
    let run = run(r#"
pipeline "p"
stage "flaky" { allow-failure; run "exit 1" }
stage "next" { needs "flaky"; run "echo ok" }
stage "if-failed" { needs "flaky"; when status="failure"; run "echo no" }
"#)
    .await;
    assert_eq!(run.outcome("flaky"), StageOutcome::FailedAllowed);
    assert_eq!(run.outcome("next"), StageOutcome::Succeeded);
    assert_eq!(run.outcome("if-failed"), StageOutcome::Skipped);
    assert_eq!(run.report.status, RunOutcome::Succeeded);
}

#[tokio::test]
async fn retry_runs_new_attempts_each_with_its_own_record() {
    let run = run(r#"
pipeline "p"
stage "flaky" {
    retry 2
    run "n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; echo attempt $BUILDIT_STAGE_ATTEMPT"
    run "[ $(cat count) -ge 2 ]"
}
"#)
    .await;
    assert_eq!(run.outcome("flaky"), StageOutcome::Succeeded);
    assert_eq!(run.report.stages[0].attempts, 2);
    let finished: Vec<(u32, StageOutcome)> = run
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::StageFinished {
                attempt, outcome, ..
            } => Some((*attempt, *outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [(1, StageOutcome::Failed), (2, StageOutcome::Succeeded)]
    );
    assert!(run.lines("flaky").contains(&"attempt 2"));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = support::temp_dir();
    let started = Instant::now();
    let run = run_with(
        r#"
pipeline "p"
stage "slow" {
    timeout "1s"
    run "sleep 30 & echo $! > child.pid; wait"
}
"#,
        dir.path(),
        RunOptions::default(),
        CancellationToken::new(),
        &[],
    )
    .await;
    assert_eq!(run.outcome("slow"), StageOutcome::TimedOut);
    assert_eq!(run.reason("slow"), Some("timed out after 1s"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_process_gone(&dir.path().join("child.pid"));
}

fn assert_process_gone(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap_or_default();
    let pid = pid.trim();
    assert!(!pid.is_empty(), "the stage did not record its child");
    // Give the kernel a moment to reap.
    for _ in 0..50 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if status.is_empty() || status.contains(") Z ") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} survived its stage");
}

#[tokio::test]
async fn background_processes_do_not_outlive_their_stage() {
    let dir = support::temp_dir();
    let run = run_in(
        "pipeline \"p\"\nstage \"a\" { run \"sleep 60 >/dev/null 2>&1 & echo $! > bg.pid\" }\n",
        dir.path(),
    )
    .await;
    assert_eq!(run.outcome("a"), StageOutcome::Succeeded);
    assert_process_gone(&dir.path().join("bg.pid"));
}

#[tokio::test]
async fn a_background_process_holding_the_output_neither_holds_up_its_stage_nor_outlives_it() {
    let dir = support::temp_dir();
    let started = Instant::now();
    // The background sleep keeps the stage's stdout and stderr open after the shell has exited.
    let run = run_in(
        "pipeline \"p\"\nstage \"a\" { run \"sleep 60 & echo $! > bg.pid; echo started\" }\n",
        dir.path(),
    )
    .await;
    assert_eq!(run.outcome("a"), StageOutcome::Succeeded);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the stage waited for its background process: {:?}",
        started.elapsed()
    );
    assert_process_gone(&dir.path().join("bg.pid"));
}

#[tokio::test]
async fn cancellation_stops_running_stages_gracefully_and_starts_nothing_new() {
    let dir = support::temp_dir();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let run = run_with(
        r#"
pipeline "p"
stage "long" { run "trap 'echo got-term > term.txt; exit 143' TERM; sleep 30 & wait" }
stage "next" { needs "long"; run "echo never" }
"#,
        dir.path(),
        RunOptions::default(),
        cancel,
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.report.status, RunOutcome::Cancelled);
    assert_eq!(run.outcome("long"), StageOutcome::Cancelled);
    assert_eq!(run.outcome("next"), StageOutcome::Skipped);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("term.txt")).unwrap_or_default(),
        "got-term\n"
    );
}

#[tokio::test]
async fn fail_fast_cancels_what_is_still_running() {
    let dir = support::temp_dir();
    let options = RunOptions {
        fail_fast: true,
        concurrency: Some(2),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let run = run_with(
        "pipeline \"p\"\nstage \"slow\" { run \"sleep 30\" }\nstage \"bad\" { run \"sleep 0.2; false\" }\nstage \"waiting\" { run \"true\" }\n",
        dir.path(),
        options,
        CancellationToken::new(),
        &[],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(run.outcome("bad"), StageOutcome::Failed);
    assert_eq!(run.outcome("slow"), StageOutcome::Cancelled);
    assert_eq!(run.outcome("waiting"), StageOutcome::Skipped);
    assert_eq!(
        run.reason("waiting"),
        Some("fail-fast: another stage failed")
    );
    assert_eq!(run.report.status, RunOutcome::Failed);
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let dir = support::temp_dir();
    let options = RunOptions {
        concurrency: Some(2),
        ..RunOptions::default()
    };
    let stages: String = (0..6)
        .map(|i| format!("stage \"s{i}\" {{ run \"sleep 0.2\" }}\n"))
        .collect();
    let run = run_with(
        &format!("pipeline \"p\"\n{stages}"),
        dir.path(),
        options,
        CancellationToken::new(),
        &[],
    )
    .await;
    let mut running = 0i32;
    let mut most = 0;
    for event in &run.events {
        match event.kind {
            RunEventKind::StageStarted { .. } => running += 1,
            RunEventKind::StageFinished { attempt, .. } if attempt > 0 => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert_eq!(most, 2);
    assert!(run.report.duration >= Duration::from_millis(600));
}

#[tokio::test]
async fn secrets_are_injected_and_masked_in_every_form() {
    let dir = support::temp_dir();
    let run = run_with(
        r#"
pipeline "p"
stage "a" {
    secrets "TOKEN"
    run "echo token=$TOKEN"
    run "printf 'x%s' \"$TOKEN\" | base64"
    run "echo \"$TOKEN\" >&2"
}
"#,
        dir.path(),
        RunOptions::default(),
        CancellationToken::new(),
        &[("TOKEN", "s3cr3t-v4lue-123")],
    )
    .await;
    assert_eq!(run.outcome("a"), StageOutcome::Succeeded);
    let all: Vec<&str> = run
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::LogLine { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(all.contains(&"token=***"), "{all:?}");
    assert!(all.iter().all(|line| !line.contains("s3cr3t")), "{all:?}");
    assert!(
        all.iter()
            .any(|line| line.starts_with('e') && line.contains("***")),
        "base64 not masked: {all:?}"
    );
    let missing = run_in(
        "pipeline \"p\"\nstage \"a\" { secrets \"NOPE\"; run \"true\" }\n",
        dir.path(),
    )
    .await;
    assert_eq!(missing.outcome("a"), StageOutcome::Failed);
    assert_eq!(
        missing.reason("a"),
        Some("secret `NOPE` is not set in the runner's secret store")
    );
}

#[tokio::test]
async fn secrets_too_short_to_mask_are_refused_and_never_reach_a_stage() {
    let dir = support::temp_dir();
    let run = run_with(
        r#"
pipeline "p"
stage "pin" { secrets "PIN"; run "echo pin=$PIN; touch pin-ran" }
stage "after-pin" { needs "pin"; run "true" }
stage "empty" { secrets "EMPTY"; run "touch empty-ran" }
stage "lines" { secrets "KEY"; run "echo \"$KEY\"; touch lines-ran" }
stage "pem" { secrets "PEM"; run "echo \"$PEM\"" }
stage "plain" { run "echo a b c" }
"#,
        dir.path(),
        RunOptions::default(),
        CancellationToken::new(),
        &[
            ("PIN", "a"),
            ("EMPTY", ""),
            ("KEY", "first-line\nxy\n"),
            (
                "PEM",
                "-----BEGIN KEY-----\nAAAABBBB\n\n-----END KEY-----\n",
            ),
        ],
    )
    .await;
    for (stage, reason) in [
        (
            "pin",
            "secret `PIN` is 1 byte long; values shorter than 4 bytes cannot be masked in logs; BuildIt does not hand it to the stage",
        ),
        (
            "empty",
            "secret `EMPTY` is empty; BuildIt does not hand it to the stage",
        ),
        (
            "lines",
            "secret `KEY` has a line of 2 bytes; each line of a secret is masked on its own, and lines shorter than 4 bytes cannot be; BuildIt does not hand it to the stage",
        ),
    ] {
        assert_eq!(run.outcome(stage), StageOutcome::Failed, "{stage}");
        assert_eq!(run.reason(stage), Some(reason), "{stage}");
        assert!(
            !dir.path().join(format!("{stage}-ran")).exists(),
            "{stage} ran"
        );
    }
    assert_eq!(run.outcome("after-pin"), StageOutcome::Skipped);
    assert_eq!(
        run.outcome("pem"),
        StageOutcome::Succeeded,
        "{:?}",
        run.reason("pem")
    );
    assert!(
        run.lines("pem")
            .iter()
            .all(|line| !line.contains("AAAABBBB")),
        "{:?}",
        run.lines("pem")
    );
    assert_eq!(run.outcome("plain"), StageOutcome::Succeeded);
    assert_eq!(run.lines("plain")[1], "a b c", "nothing short is masked");
    assert_eq!(run.report.status, RunOutcome::Failed);
    // One refusal per stage that asked, each recorded as the stage's end with its reason.
    let refusals = run
        .events
        .iter()
        .filter(|event| {
            matches!(&event.kind, RunEventKind::StageFinished { reason: Some(reason), .. } if reason.contains("does not hand it"))
        })
        .count();
    assert_eq!(refusals, 3);
}

#[tokio::test]
async fn every_line_reaches_a_lossless_subscriber_in_order() {
    let run = run("pipeline \"p\"\nstage \"a\" { run \"seq 1 20000; printf tail\" }\n").await;
    let lines = run.lines("a");
    assert_eq!(lines.len(), 1 + 20000 + 1);
    for (i, line) in lines[1..20001].iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string());
    }
    assert_eq!(lines[20001], "tail", "the partial last line is flushed");
    let seqs: Vec<u64> = run.events.iter().map(|event| event.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless, in order"
    );
}

#[tokio::test]
async fn plan_skips_and_matrix_values_reach_the_stage() {
    let run = run(r#"
pipeline "p"
stage "m" { matrix { n "1" "2" }; run "echo n={matrix.n} env=$BUILDIT_MATRIX_N" }
stage "tag-only" { when tag="v*"; run "echo no" }
stage "manual" { manual; run "echo no" }
"#)
    .await;
    assert_eq!(run.lines("m (n=2)")[1], "n=2 env=2");
    assert_eq!(run.outcome("tag-only"), StageOutcome::Skipped);
    assert_eq!(run.outcome("manual"), StageOutcome::Skipped);
    assert_eq!(run.report.status, RunOutcome::Succeeded);
}

#[tokio::test]
async fn artifacts_are_collected_and_restored_for_dependents() {
    let dir = support::temp_dir();
    let store_root = dir.path().join(".buildit/artifacts");
    let options = RunOptions {
        artifacts: Some(ArtifactStore::new(&store_root)),
        concurrency: Some(1),
        ..RunOptions::default()
    };
    let run = run_with(
        r#"
pipeline "p"
stage "make" { run "mkdir -p out && echo built > out/app.txt && echo junk > out/junk.log"; artifacts "out/*.txt" }
stage "wipe" { needs "make"; run "rm -rf out" }
stage "use" { needs "make" "wipe"; run "cat out/app.txt; test ! -e out/junk.log" }
stage "empty" { run "true"; artifacts "dist/**" }
"#,
        dir.path(),
        options,
        CancellationToken::new(),
        &[],
    )
    .await;
    assert_eq!(run.outcome("make"), StageOutcome::Succeeded);
    assert_eq!(
        run.outcome("use"),
        StageOutcome::Succeeded,
        "{:?}",
        run.reason("use")
    );
    assert_eq!(run.lines("use")[1], "built");
    assert!(store_root.join("run-1/make/out/app.txt").is_file());
    assert_eq!(run.outcome("empty"), StageOutcome::Failed);
    assert_eq!(
        run.reason("empty"),
        Some("artifact `dist/**` matched no files")
    );
}

#[tokio::test]
async fn caches_are_saved_once_and_restored_by_key_or_prefix() {
    let dir = support::temp_dir();
    let options = || RunOptions {
        caches: Some(buildit_core::exec::CacheStore::new(
            dir.path().join(".buildit/cache"),
        )),
        ..RunOptions::default()
    };
    let pipeline = r#"
pipeline "p"
cache "deps" { path "deps"; key "deps-{hash:lock.txt}"; restore-keys "deps-" }
stage "build" { cache "deps"; run "test -f deps/fetched && echo warm || { mkdir -p deps; echo v1 > deps/fetched; echo cold; }" }
"#;
    let _ = std::fs::write(dir.path().join("lock.txt"), "1");
    let first = run_with(
        pipeline,
        dir.path(),
        options(),
        CancellationToken::new(),
        &[],
    )
    .await;
    assert_eq!(first.lines("build").last().copied(), Some("cold"));
    let notes: Vec<String> = first
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::LogLine {
                text,
                stream: LogStreamKind::Stderr,
                ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect();
    support::assert_line_starting(&notes, "buildit: cache `deps` not found");
    support::assert_line_starting(&notes, "buildit: cache `deps` saved");
    // A fresh workspace state: the cache brings `deps` back.
    let _ = std::fs::remove_dir_all(dir.path().join("deps"));
    let second = run_with(
        pipeline,
        dir.path(),
        options(),
        CancellationToken::new(),
        &[],
    )
    .await;
    assert_eq!(second.lines("build").last().copied(), Some("warm"));
    // A changed lock file changes the key; the prefix still restores the newest archive.
    let _ = std::fs::remove_dir_all(dir.path().join("deps"));
    let _ = std::fs::write(dir.path().join("lock.txt"), "2");
    let third = run_with(
        pipeline,
        dir.path(),
        options(),
        CancellationToken::new(),
        &[],
    )
    .await;
    assert_eq!(third.lines("build").last().copied(), Some("warm"));
    let archives = std::fs::read_dir(dir.path().join(".buildit/cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(archives, 2, "one archive per key");
}

#[tokio::test]
async fn a_secret_split_across_reads_is_still_masked() {
    let dir = support::temp_dir();
    let run = run_with(
        "pipeline \"p\"\nstage \"a\" { run \"printf 'token: s3cr'; sleep 0.2; printf 'et-value\\\\n'\" }\n",
        dir.path(),
        RunOptions::default(),
        CancellationToken::new(),
        &[("UNUSED", "s3cret-value")],
    )
    .await;
    assert_eq!(run.lines("a")[1], "token: ***");
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried_when_retry_allows() {
    let run = run(r#"
pipeline "p"
stage "slow-once" {
    timeout "1s"
    retry 1
    run "if [ -f marker ]; then echo fast; else touch marker; sleep 30; fi"
}
"#)
    .await;
    assert_eq!(run.outcome("slow-once"), StageOutcome::Succeeded);
    let finished: Vec<StageOutcome> = run
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::StageFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [StageOutcome::TimedOut, StageOutcome::Succeeded]);
}

#[tokio::test]
async fn the_kill_token_cuts_the_grace_period_short() {
    let dir = support::temp_dir();
    let cancel = CancellationToken::new();
    let options = RunOptions {
        grace: Duration::from_secs(60),
        ..RunOptions::default()
    };
    let kill = options.kill.clone();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill.cancel();
    });
    let started = Instant::now();
    // The stage ignores SIGTERM: only the kill stops it, long before the 60 s grace period.
    let run = run_with(
        "pipeline \"p\"\nstage \"stubborn\" { run \"trap '' TERM; sleep 30 & wait; sleep 30\" }\n",
        dir.path(),
        options,
        cancel,
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.outcome("stubborn"), StageOutcome::Cancelled);
    assert_eq!(run.report.status, RunOutcome::Cancelled);
}

#[tokio::test]
async fn children_get_the_grace_period_when_a_stage_is_stopped() {
    let dir = support::temp_dir();
    // The child cleans up for half a second after SIGTERM; the shell dies at once. The grace period is the
    // group's, not the shell's.
    let run = run_in(
        "pipeline \"p\"\nstage \"a\" {\n    timeout \"1s\"\n    run \"sh -c 'trap \\\"sleep 0.5; echo cleaned > cleanup.txt; exit 0\\\" TERM; sleep 30 & wait' & wait\"\n}\n",
        dir.path(),
    )
    .await;
    assert_eq!(run.outcome("a"), StageOutcome::TimedOut);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cleanup.txt")).unwrap_or_default(),
        "cleaned\n"
    );
}

#[tokio::test]
async fn output_held_open_by_an_escaped_process_does_not_hang_the_run() {
    let dir = support::temp_dir();
    let options = RunOptions {
        log_drain: Duration::from_millis(500),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let run = run_with(
        "pipeline \"p\"\nstage \"a\" { run \"setsid sleep 5 & echo done\" }\nstage \"b\" { needs \"a\"; run \"echo next\" }\n",
        dir.path(),
        options,
        CancellationToken::new(),
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.outcome("b"), StageOutcome::Succeeded);
    let finished_at = run
        .events
        .iter()
        .position(|e| matches!(e.kind, RunEventKind::RunFinished { .. }));
    assert_eq!(
        finished_at,
        Some(run.events.len() - 1),
        "nothing arrives after run-finished"
    );
}

#[tokio::test]
async fn workdir_that_climbs_back_inside_is_fine() {
    let dir = support::temp_dir();
    let _ = std::fs::create_dir_all(dir.path().join("a/b"));
    let run = run_in(
        "pipeline \"p\"\nstage \"s\" { workdir \"a/../a/b\"; run \"pwd\" }\n",
        dir.path(),
    )
    .await;
    assert_eq!(
        run.outcome("s"),
        StageOutcome::Succeeded,
        "{:?}",
        run.reason("s")
    );
}

/// Every failure says why for machines: the command's exit code, a timeout, the stage's own definition (a
/// `workdir` that is not there), an announced retry; and the run's end counts them.
#[tokio::test]
async fn failures_carry_their_kind_and_the_run_counts_them() {
    let run = run(r#"
pipeline "p"
stage "exits" { run "exit 4" }
stage "slow" { timeout "1s"; run "sleep 5" }
stage "nowhere" { workdir "not-there"; run "true" }
stage "flaky" { retry 1; run "test -e marker || { touch marker; exit 1; }" }
"#)
    .await;
    let failure = |stage: &str| {
        run.report
            .stages
            .iter()
            .find(|report| report.name == stage)
            .and_then(|report| report.failure)
    };
    assert_eq!(failure("exits"), Some(FailureKind::ExitCode));
    assert_eq!(failure("slow"), Some(FailureKind::Timeout));
    assert_eq!(failure("nowhere"), Some(FailureKind::Config));
    assert_eq!(failure("flaky"), None);
    let flaky: Vec<(u32, Option<FailureKind>, bool)> = run
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::StageFinished {
                stage,
                attempt,
                failure,
                retrying,
                ..
            } if stage == "flaky" => Some((*attempt, *failure, *retrying)),
            _ => None,
        })
        .collect();
    assert_eq!(
        flaky,
        [(1, Some(FailureKind::ExitCode), true), (2, None, false)]
    );
    let Some(RunEventKind::RunFinished {
        counts, failures, ..
    }) = run.events.last().map(|event| &event.kind)
    else {
        panic!("the last event is not run-finished");
    };
    assert_eq!(
        (counts.succeeded, counts.failed, counts.timed_out),
        (1, 2, 1)
    );
    assert_eq!(
        failures
            .iter()
            .map(|(kind, count)| (*kind, *count))
            .collect::<Vec<_>>(),
        [
            (FailureKind::ExitCode, 1),
            (FailureKind::Timeout, 1),
            (FailureKind::Config, 1)
        ]
    );
}
